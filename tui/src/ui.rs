//! Rendering: `impl Widget for &App`. The layout fits 80×24 and grows with the terminal:
//! members first, then the partition map until every cell shows, then one line per
//! running repair; the event log takes what is left and keeps a few lines whatever
//! the cluster's size.

mod overlay;
mod text;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Widget, Wrap};

use crate::app::{App, Panel, Viewport};
use crate::model::{Connection, MemberRow, MemberState, PartitionState, RepairRow, Severity};
use crate::style::Theme;

pub(crate) use text::skew_text;
pub use text::{age, bytes, cut, rate, wrap};

/// Columns of the partition map at 80 columns; ↑↓ move by a row of the map as drawn.
pub const MAP_COLUMNS_HINT: usize = 52;
/// Width of the panel beside the map.
const SIDE_WIDTH: u16 = 26;
/// Smallest size the layout is designed for.
pub const MIN_SIZE: (u16, u16) = (80, 24);
/// Event lines kept however many members and partitions compete for the rows.
const EVENT_LINES_MIN: u16 = 3;
/// Height of the map's row: less leaves the sparkline beside it without a line to draw.
const MAP_HEIGHT_MIN: u16 = 4;
/// Lines the notice may take before it is cut; it is usually one.
const NOTICE_LINES_MAX: usize = 2;
/// Cells of a repair's progress bar below which the bar is left out for the text.
const BAR_MIN: usize = 10;

/// Where the panels of a frame go.
struct Areas {
    header: Rect,
    members: Rect,
    map: Rect,
    side: Rect,
    repairs: Rect,
    events: Rect,
    footer: Rect,
    /// The notice's lines in the header.
    notice: Vec<String>,
    /// Columns of the partition map.
    map_columns: usize,
}

/// The sizes keys move by in a frame of `area` showing `app`: the map's columns and the
/// event log's lines. `None` when the terminal is too small to show them.
pub fn viewport(app: &App, area: Rect) -> Option<Viewport> {
    let areas = areas(app, area)?;
    Some(Viewport {
        map_columns: areas.map_columns,
        event_rows: (areas.events.height.saturating_sub(2) as usize).max(1),
    })
}

/// The layout of a frame of `area` showing `app`; `None` when `area` is too small.
fn areas(app: &App, area: Rect) -> Option<Areas> {
    if area.width < 40 || area.height < 12 {
        return None;
    }
    let model = &app.model;
    let map_columns = area.width.saturating_sub(SIDE_WIDTH + 2).max(8) as usize;
    let notice = model
        .notice
        .as_deref()
        .map_or_else(Vec::new, |n| notice_lines(n, area.width as usize));
    let header_height = 2 + notice.len() as u16;
    let room = area.height.saturating_sub(header_height + 1);
    let members_want = (model.members.len().max(1) as u16).saturating_add(3);
    let map_rows = model.cells.len().div_ceil(map_columns).max(1) as u16;
    let repairs_want = model.repairs.len().min(u16::MAX as usize) as u16;
    let [members_height, map_height, repairs_height] = share(
        room,
        [
            // A large cluster scrolls its members rather than take every row.
            (members_want.min(4), members_want.min((room / 2).max(4))),
            (MAP_HEIGHT_MIN, (map_rows + 2).max(MAP_HEIGHT_MIN)),
            (repairs_want.min(1), repairs_want),
        ],
        EVENT_LINES_MIN + 2,
    );
    let [header, members, middle, repairs, events, footer] = Layout::vertical([
        Constraint::Length(header_height),
        Constraint::Length(members_height),
        Constraint::Length(map_height),
        Constraint::Length(repairs_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let [map, side] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(SIDE_WIDTH)]).areas(middle);
    Some(Areas {
        header,
        members,
        map,
        side,
        repairs,
        events,
        footer,
        notice,
        map_columns,
    })
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme::new(self.colour);
        let Some(areas) = areas(self, area) else {
            Paragraph::new(format!(
                "the dashboard needs at least {}×{} (this terminal is {}×{})",
                MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
            ))
            .wrap(Wrap { trim: true })
            .render(area, buf);
            return;
        };
        let Areas {
            header,
            members,
            map,
            side,
            repairs,
            events,
            footer,
            notice,
            map_columns: _,
        } = areas;
        self.render_header(header, buf, &theme, notice);
        self.render_members(members, buf, &theme);
        self.render_map(map, buf, &theme);
        self.render_side(side, buf, &theme);
        self.render_repairs(repairs, buf, &theme);
        self.render_events(events, buf, &theme);
        Paragraph::new(Line::from(
            " q quit  ↑↓ select  Tab panel  Enter details  r repair  b buckets  ? help",
        ))
        .style(theme.dim())
        .render(footer, buf);
        if let Some(overlay) = &self.overlay {
            self.render_overlay(overlay, area, buf, &theme);
        }
    }
}

/// Splits `room` rows: each part gets its minimum in turn, then `reserve` rows are kept
/// for what comes after the parts, then each part grows in turn up to what it wants.
fn share<const N: usize>(room: u16, parts: [(u16, u16); N], reserve: u16) -> [u16; N] {
    let mut left = room;
    let mut got = parts.map(|(min, _)| {
        let take = min.min(left);
        left -= take;
        take
    });
    left = left.saturating_sub(reserve);
    for (got, (_, want)) in got.iter_mut().zip(parts) {
        let more = want.saturating_sub(*got).min(left);
        *got += more;
        left -= more;
    }
    got
}

/// The notice as lines of the header: whole when the terminal is wide enough, wrapped
/// when not, and cut only past [`NOTICE_LINES_MAX`] lines.
fn notice_lines(notice: &str, width: usize) -> Vec<String> {
    let width = width.saturating_sub(1).max(1);
    let mut lines = wrap(notice.trim(), width);
    if lines.len() > NOTICE_LINES_MAX {
        let rest = lines.split_off(NOTICE_LINES_MAX - 1).join(" ");
        lines.push(cut(&rest, width));
    }
    lines.into_iter().map(|l| format!(" {l}")).collect()
}

/// The map's legend, in the longest words that fit `width`; every symbol is always there.
fn legend(width: usize) -> String {
    const STATES: [PartitionState; 5] = [
        PartitionState::InSync,
        PartitionState::Unconfirmed,
        PartitionState::Repairing,
        PartitionState::Diverged,
        PartitionState::UnderReplicated,
    ];
    // Longest first; the last are the model's own short labels, then symbols alone.
    // `u down` reads the same at every width; the help spells it out.
    const WORDS: [[&str; 5]; 2] = [
        ["in sync", "unconfirmed", "repairing", "diverged", "down"],
        ["sync", "unconfirmed", "repair", "diverged", "down"],
    ];
    let labels = STATES.map(PartitionState::label);
    let forms = WORDS
        .iter()
        .chain([&labels])
        .map(|words| {
            STATES
                .iter()
                .zip(words)
                .map(|(s, w)| format!("{} {w}", s.symbol()))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .chain([STATES.map(PartitionState::symbol).join(" ")]);
    let mut text = String::new();
    for form in forms {
        text = form;
        if text.chars().count() <= width {
            break;
        }
    }
    match width.saturating_sub(text.chars().count()) {
        0 => text,
        1 => format!(" {text}"),
        _ => format!(" {text} "),
    }
}

impl App {
    fn block<'a>(&self, title: String, panel: Option<Panel>, theme: &Theme) -> Block<'a> {
        let block = Block::new()
            .borders(Borders::ALL)
            .title(Span::styled(title, theme.title()));
        if panel.is_some_and(|p| p == self.panel) {
            block.border_style(theme.focused())
        } else {
            block
        }
    }

    fn render_header(&self, area: Rect, buf: &mut Buffer, theme: &Theme, notice: Vec<String>) {
        let m = &self.model;
        let cluster = if m.cluster_id.is_empty() {
            "connecting…".to_string()
        } else {
            format!("cluster {}", cut(&m.cluster_id, 8))
        };
        let first = Line::from(vec![
            Span::styled(" Vergent ", theme.title()),
            Span::raw(format!(
                " {cluster} · {} partitions · RF {} · watching {} · {} UTC",
                m.partitions,
                m.replication_factor,
                cut(&m.watched, 16),
                m.time
            )),
        ]);
        let mut second = Vec::new();
        if self.paused {
            second.push(Span::styled(" PAUSED ", theme.alert()));
        }
        // A lost connection is the most important thing on the screen: it takes the line.
        if let Connection::Lost { reason, stale_s } = &m.connection {
            second.push(Span::styled(
                format!(
                    " {} UNREACHABLE: {reason}; last view {stale_s}s old ",
                    cut(&m.watched, 12)
                ),
                theme.alert(),
            ));
        } else {
            second.push(Span::raw(format!(
                " nodes {} alive · {} suspect · {} dead · {} left │ writes {}/s  reads {}/s",
                m.count(MemberState::Alive),
                m.count(MemberState::Suspect),
                m.count(MemberState::Dead),
                m.count(MemberState::Left),
                rate(m.write_rate),
                rate(m.read_rate)
            )));
        }
        let mut lines = vec![first, Line::from(second)];
        lines.extend(
            notice
                .into_iter()
                .map(|l| Line::from(Span::styled(l, theme.title()))),
        );
        Paragraph::new(lines).render(area, buf);
    }

    fn render_members(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let columns = MemberColumns::new(area.width.saturating_sub(2));
        let mut header = vec![
            "",
            "NAME",
            "STATE",
            "INC",
            "HLC (UTC)",
            "SKEW",
            "W/S",
            "HINTS",
            "LAG",
        ];
        let mut widths = vec![
            Constraint::Length(1),
            Constraint::Length(columns.name),
            Constraint::Length(9),
            Constraint::Length(3),
            Constraint::Length(columns.hlc),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(14),
            Constraint::Length(6),
        ];
        if let Some(address) = columns.address {
            widths[8] = Constraint::Length(8);
            header.extend(["ADDRESS", "HELD", "LAST AE", "DIFF"]);
            header[8] = "SYNC LAG";
            widths.extend([
                Constraint::Length(address),
                Constraint::Length(4),
                Constraint::Length(7),
                Constraint::Length(4),
            ]);
        }
        let visible = area.height.saturating_sub(3) as usize;
        let first = self.member.saturating_sub(visible.saturating_sub(1));
        let rows = self
            .model
            .members
            .iter()
            .enumerate()
            .skip(first)
            .take(visible)
            .map(|(i, m)| {
                let mut row = member_cells(m, &columns, theme);
                if i == self.member {
                    row[0] = Cell::from("›");
                }
                let row = Row::new(row);
                if i == self.member && self.panel == Panel::Members {
                    row.style(theme.selected())
                } else {
                    row
                }
            });
        let title = format!("Members ({})", self.model.members.len());
        let table = Table::new(rows, widths)
            .header(Row::new(header).style(theme.title()))
            .column_spacing(1)
            .block(self.block(title, Some(Panel::Members), theme));
        Widget::render(table, area, buf);
    }

    fn render_map(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let cells = &self.model.cells;
        let columns = area.width.saturating_sub(2).max(1) as usize;
        let visible = area.height.saturating_sub(2) as usize;
        let rows = cells.len().div_ceil(columns);
        // Rows that do not fit scroll so that the selected partition stays in view.
        let first_row = (self.partition / columns)
            .saturating_sub(visible.saturating_sub(1))
            .min(rows.saturating_sub(visible));
        let mut title = format!("Partitions ({})", cells.len());
        if rows > visible && visible > 0 {
            title.push_str(&format!(
                " rows {}–{} of {rows}",
                first_row + 1,
                first_row + visible
            ));
        }
        let legend = legend(area.width.saturating_sub(2) as usize);
        let block = self
            .block(title, Some(Panel::Partitions), theme)
            .title_bottom(Span::styled(legend, theme.dim()));
        let inner = block.inner(area);
        block.render(area, buf);
        let shown = cells
            .iter()
            .enumerate()
            .skip(first_row * columns)
            .take(visible * columns);
        for (i, cell) in shown {
            let x = (i % columns) as u16;
            let y = (i / columns - first_row) as u16;
            let mut style = theme.partition(cell.state);
            if i == self.partition && self.panel == Panel::Partitions {
                style = style.patch(theme.selected());
            }
            buf.set_string(inner.x + x, inner.y + y, cell.state.symbol(), style);
        }
        if cells.is_empty() {
            buf.set_string(inner.x, inner.y, "no partitions yet", theme.dim());
        }
    }

    fn render_side(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let m = &self.model;
        let max = m.throughput.iter().copied().max().unwrap_or(0);
        let title = format!("writes/s {} (max {})", rate(m.write_rate), rate(max as f64));
        let data: Vec<u64> = m
            .throughput
            .iter()
            .rev()
            .take(area.width.saturating_sub(2) as usize)
            .rev()
            .copied()
            .collect();
        Sparkline::default()
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(Span::styled(title, theme.title())),
            )
            .data(&data)
            .style(theme.sparkline())
            .render(area, buf);
    }

    /// One line per running repair, as many as the rows allow; the last line shown
    /// counts those left out.
    fn render_repairs(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let repairs = &self.model.repairs;
        let shown = repairs.len().min(area.height as usize);
        let hidden = repairs.len() - shown;
        for (i, repair) in repairs.iter().take(shown).enumerate() {
            let more = if hidden > 0 && i + 1 == shown {
                format!("  +{hidden} more")
            } else {
                String::new()
            };
            let line = repair_line(repair, &more, area.width as usize, theme);
            let row = Rect {
                y: area.y + i as u16,
                height: 1,
                ..area
            };
            Paragraph::new(line).render(row, buf);
        }
    }

    fn render_events(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let height = area.height.saturating_sub(2) as usize;
        let width = area.width.saturating_sub(2) as usize;
        let events = &self.model.events;
        let focused = self.panel == Panel::Events;
        let selected = self.selected_event();
        // Scrolled up, the window keeps the selection in view; following, it shows the
        // newest at the bottom.
        let last_window = events.len().saturating_sub(height);
        let first = self.event.map_or(last_window, |i| i.min(last_window));
        let lines: Vec<Line> = events
            .iter()
            .enumerate()
            .skip(first)
            .take(height)
            .map(|(i, e)| {
                let mark = Some(i) == selected && (focused || self.event.is_some());
                let line = Line::from(vec![
                    Span::raw(if mark { "›" } else { " " }),
                    Span::styled(format!("{} ", e.at), theme.dim()),
                    Span::styled(
                        cut(&e.text, width.saturating_sub(e.at.chars().count() + 2)),
                        theme.event(e.severity),
                    ),
                ]);
                if mark && focused {
                    line.style(theme.selected())
                } else {
                    line
                }
            })
            .collect();
        let newer = selected.map_or(0, |i| events.len() - 1 - i);
        let title = if self.event.is_some() && newer > 0 {
            format!("Events ({}, {newer} newer below)", events.len())
        } else {
            format!("Events ({})", events.len())
        };
        let mut block = self.block(title, Some(Panel::Events), theme);
        if focused && !events.is_empty() {
            block = block.title_bottom(Span::styled(
                " ↑↓ PgUp PgDn scroll  Enter read in full ",
                theme.dim(),
            ));
        }
        let body = if lines.is_empty() {
            Paragraph::new(Span::styled("nothing has happened yet", theme.dim()))
        } else {
            Paragraph::new(lines)
        };
        body.block(block).render(area, buf);
    }
}

/// One repair: who repairs whom, how far, how fast, then a bar. Words are dropped, the
/// least needed first, before the bar shrinks below [`BAR_MIN`].
fn repair_line(r: &RepairRow, more: &str, width: usize, theme: &Theme) -> Line<'static> {
    const PREFIX: &str = " repair ";
    let ratio = if r.total == 0 {
        0.0
    } else {
        (r.done as f64 / r.total as f64).clamp(0.0, 1.0)
    };
    // Floored, so that 100% is only said when it is done.
    let percent = format!(" {:>3}%", (ratio * 100.0).floor() as u64);
    // A run that has not yet picked its peers still says who runs it.
    let peers = if r.peers.is_empty() {
        "…".to_string()
    } else {
        r.peers.join(",")
    };
    let who = format!("{} → {peers}", r.node);
    let progress = format!("{}/{}", r.done, r.total);
    let speed = r.keys_per_s.map(|k| format!("{} keys/s", rate(k)));
    let moved = (r.bytes_moved > 0).then(|| format!("{} moved", bytes(r.bytes_moved)));
    let eta = format!(
        "ETA {}",
        r.eta_s
            .map_or("…".to_string(), |s| age((s * 1000.0) as u64))
    );
    let forms = [
        vec![
            Some(progress.clone()),
            speed.clone(),
            moved,
            Some(eta.clone()),
        ],
        vec![Some(progress.clone()), speed, Some(eta.clone())],
        vec![Some(progress), Some(eta)],
    ];
    let tail = |form: &[Option<String>]| {
        let words: Vec<&str> = form.iter().flatten().map(String::as_str).collect();
        format!("  {}{more}", words.join("  "))
    };
    let with_bar = width.saturating_sub(PREFIX.len() + BAR_MIN + 1 + percent.len());
    let chars = |s: &str| s.chars().count();
    let fitting = forms
        .iter()
        .map(|f| tail(f))
        .find(|t| chars(&who) + chars(t) <= with_bar);
    let (label, bar) = match fitting {
        Some(t) => {
            let label = format!("{who}{t}");
            let bar = width - PREFIX.len() - chars(&label) - 1 - percent.len();
            (label, bar)
        }
        None => {
            // No room for everything and a bar: the words matter more.
            let t = tail(&forms[2]);
            let room = width.saturating_sub(PREFIX.len());
            let who = cut(&who, room.saturating_sub(chars(&t)).max(2));
            (cut(&format!("{who}{t}"), room), 0)
        }
    };
    let mut spans = vec![Span::styled(PREFIX, theme.title()), Span::raw(label)];
    if bar > 0 {
        let filled = (ratio * bar as f64).round() as usize;
        spans.push(Span::raw(" "));
        spans.push(Span::styled("█".repeat(filled), theme.gauge()));
        spans.push(Span::styled("░".repeat(bar - filled), theme.dim()));
        spans.push(Span::raw(percent));
    }
    Line::from(spans)
}

/// Widths of the members table's columns for the width inside its borders.
struct MemberColumns {
    name: u16,
    hlc: u16,
    /// The address column's width, when the exchange columns fit too.
    address: Option<u16>,
}

impl MemberColumns {
    fn new(inner: u16) -> MemberColumns {
        // 1 + 9 + 9 + 3 + 16 + 6 + 5 + 14 + 6 columns and 8 spaces fit the 78 inside 80.
        if inner < 118 {
            return MemberColumns {
                name: 9,
                hlc: 16,
                address: None,
            };
        }
        // Past 158 a stale HLC keeps its milliseconds and the age in words.
        let (name, hlc) = if inner >= 158 { (16, 24) } else { (12, 18) };
        // Everything but the address: 1 + name + 9 + 3 + hlc + 6 + 5 + 14 + 8 + 4 + 7
        // + 4 columns and 12 spaces.
        let rest = 1 + name + 9 + 3 + hlc + 6 + 5 + 14 + 8 + 4 + 7 + 4 + 12;
        MemberColumns {
            name,
            hlc,
            address: Some(inner.saturating_sub(rest).min(40)),
        }
    }
}

/// A dead or left member's HLC as it last said it, with its age, in the longest form
/// that fits `width`: `12:34:56.789 (40s ago)`, `12:34:56 (40s ago)`, `12:34:56 40s
/// ago`, `40s ago`.
fn stale_hlc(hlc: &str, age_ms: u64, width: usize) -> String {
    let ago = age(age_ms);
    let millis = hlc.split('+').next().unwrap_or(hlc);
    let seconds = millis.split('.').next().unwrap_or(millis);
    [
        format!("{millis} ({ago} ago)"),
        format!("{seconds} ({ago} ago)"),
        format!("{seconds} {ago} ago"),
    ]
    .into_iter()
    .find(|form| form.chars().count() <= width)
    .unwrap_or_else(|| cut(&format!("{ago} ago"), width))
}

fn member_cells<'a>(m: &MemberRow, columns: &MemberColumns, theme: &Theme) -> Vec<Cell<'a>> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let hints = if m.hints == 0 {
        "0".to_string()
    } else {
        let clear = m
            .hints_clear_s
            .map_or(String::new(), |s| format!("→{}", age((s * 1000.0) as u64)));
        format!("{} {}{clear}", m.hints, age(m.hints_oldest_age_ms))
    };
    // What a member that is gone said last is not its clock now: the HLC carries its
    // age and the skew a `~`, which read without colour.
    let (hlc, skew, clock_style) = match m.stale_age_ms {
        Some(ms) => (
            m.hlc
                .as_deref()
                .map_or("-".into(), |h| stale_hlc(h, ms, columns.hlc.into())),
            format!("~{}", opt(m.skew_ms.map(skew_text))),
            theme.dim(),
        ),
        None => (
            opt(m.hlc.clone()),
            opt(m.skew_ms.map(skew_text)),
            Style::new(),
        ),
    };
    let mut cells = vec![
        Cell::from(" "),
        Cell::from(cut(&m.name, columns.name.into())),
        Cell::from(format!("{} {}", m.state.symbol(), m.state_word())).style(if m.unreachable {
            theme.event(Severity::Warning)
        } else {
            theme.member(m.state)
        }),
        Cell::from(m.incarnation.to_string()),
        Cell::from(hlc).style(clock_style),
        Cell::from(skew).style(clock_style),
        Cell::from(opt(m.writes_per_s.map(rate))),
        Cell::from(hints).style(if m.hints > 0 {
            theme.event(Severity::Warning)
        } else {
            Style::new()
        }),
        Cell::from(opt(m.sync_lag_ms.map(age))),
    ];
    if let Some(address) = columns.address {
        cells.extend([
            Cell::from(cut(&m.address, address.into())),
            Cell::from(m.partitions_held.to_string()),
            Cell::from(opt(m.last_exchange_age_ms.map(age))),
            Cell::from(opt(m.partitions_differing.map(|d| d.to_string()))),
        ]);
    }
    cells
}
