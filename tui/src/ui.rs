//! Rendering: `impl Widget for &App`. The layout fits 80×24 and grows with the terminal.

use std::cell::Cell as StdCell;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, Widget, Wrap,
};

use crate::app::{App, Overlay, Panel};
use crate::model::{Connection, MemberRow, MemberState, PartitionState};
use crate::style::Theme;

/// Columns of the partition map at 80 columns; ↑↓ move by a row of the map as drawn.
pub const MAP_COLUMNS_HINT: usize = 52;
/// Width of the panel beside the map.
const SIDE_WIDTH: u16 = 26;
/// Gauges the layout makes room for (more fit on a tall terminal).
const GAUGES_MAX: usize = 3;
/// Rows the event log keeps, borders included, however large the map.
const EVENTS_MIN_HEIGHT: u16 = 5;
/// Smallest size the layout is designed for.
pub const MIN_SIZE: (u16, u16) = (80, 24);

thread_local! {
    static MAP_COLUMNS: StdCell<usize> = const { StdCell::new(MAP_COLUMNS_HINT) };
}

/// Columns of the partition map as last drawn.
pub fn map_columns() -> usize {
    MAP_COLUMNS.with(StdCell::get)
}

/// `3s`, `2m05s`, `1h02m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `950`, `1.2k`, `3.4M`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 999_500.0 {
        format!("{:.1}M", per_s / 1e6)
    } else if per_s >= 999.5 {
        format!("{:.1}k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme::new(self.colour);
        if area.width < 40 || area.height < 12 {
            Paragraph::new(format!(
                "the dashboard needs at least {}×{} (this terminal is {}×{})",
                MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
            ))
            .wrap(Wrap { trim: true })
            .render(area, buf);
            return;
        }
        let model = &self.model;
        let map_inner = area.width.saturating_sub(SIDE_WIDTH + 2).max(8) as usize;
        MAP_COLUMNS.with(|c| c.set(map_inner));
        let header_height = if model.notice.is_some() { 3 } else { 2 };
        let map_rows = model.cells.len().div_ceil(map_inner).max(1) as u16;
        // The side panel beside the map holds the sparkline and a gauge per run.
        let side_min = 3 + 3 * (model.repairs.len().min(GAUGES_MAX) as u16);
        let members_cap = (area.height / 3).saturating_sub(3).max(1) as usize;
        let members_height = model.members.len().clamp(1, members_cap) as u16 + 3;
        // The map takes what it needs to show every cell; events keep at least 3 rows.
        let left = area
            .height
            .saturating_sub(header_height + members_height + 1 + EVENTS_MIN_HEIGHT);
        let map_height = (map_rows + 2).min(left).max(side_min.max(5));
        let [header, members, middle, events, footer] = Layout::vertical([
            Constraint::Length(header_height),
            Constraint::Length(members_height),
            Constraint::Length(map_height),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf, &theme);
        self.render_members(members, buf, &theme);
        let [map, side] =
            Layout::horizontal([Constraint::Min(10), Constraint::Length(SIDE_WIDTH)]).areas(middle);
        self.render_map(map, buf, &theme);
        self.render_side(side, buf, &theme);
        self.render_events(events, buf, &theme);
        Paragraph::new(Line::from(
            " q quit  ↑↓ select  Tab panel  Enter details  r repair  p pause  ? help",
        ))
        .style(theme.dim())
        .render(footer, buf);
        if let Some(overlay) = &self.overlay {
            self.render_overlay(overlay, area, buf, &theme);
        }
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

    fn render_header(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
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
        if let Some(notice) = &m.notice {
            lines.push(Line::from(Span::styled(
                format!(" {}", cut(notice, area.width.saturating_sub(1) as usize)),
                theme.title(),
            )));
        }
        Paragraph::new(lines).render(area, buf);
    }

    fn render_members(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let wide = area.width >= 120;
        // 1 + 9 + 9 + 3 + 14 + 6 + 5 + 14 + 6 columns and 8 spaces fit the 78 inside 80.
        let name_width = if wide { 16 } else { 9 };
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
            Constraint::Length(name_width),
            Constraint::Length(9),
            Constraint::Length(3),
            Constraint::Length(14),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(14),
            Constraint::Length(6),
        ];
        if wide {
            widths[8] = Constraint::Length(8);
            header.extend(["ADDRESS", "HELD", "LAST AE", "DIFF"]);
            header[8] = "SYNC LAG";
            widths.extend([
                Constraint::Length(21),
                Constraint::Length(5),
                Constraint::Length(8),
                Constraint::Length(5),
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
                let mut row = member_cells(m, name_width as usize, wide, theme);
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
        let legend = [
            PartitionState::InSync,
            PartitionState::Unconfirmed,
            PartitionState::Repairing,
            PartitionState::Diverged,
            PartitionState::UnderReplicated,
        ]
        .iter()
        .map(|s| format!("{} {}", s.symbol(), s.label()))
        .collect::<Vec<_>>()
        .join("  ");
        let title = format!("Partitions ({})", self.model.cells.len());
        let block = self
            .block(title, Some(Panel::Partitions), theme)
            .title_bottom(Span::styled(format!(" {legend} "), theme.dim()));
        let inner = block.inner(area);
        block.render(area, buf);
        let columns = inner.width.max(1) as usize;
        for (i, cell) in self.model.cells.iter().enumerate() {
            let (x, y) = ((i % columns) as u16, (i / columns) as u16);
            if y >= inner.height {
                break;
            }
            let mut style = theme.partition(cell.state);
            if i == self.partition && self.panel == Panel::Partitions {
                style = style.patch(theme.selected());
            }
            buf.set_string(inner.x + x, inner.y + y, cell.state.symbol(), style);
        }
        if self.model.cells.is_empty() {
            buf.set_string(inner.x, inner.y, "no partitions yet", theme.dim());
        }
    }

    fn render_side(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let m = &self.model;
        let max = m.throughput.iter().copied().max().unwrap_or(0);
        // As many gauges as fit under a sparkline of at least 3 rows, at least one.
        let shown = m
            .repairs
            .len()
            .min((area.height.saturating_sub(3) / 3).max(1) as usize);
        let gauges_height = (3 * shown as u16).min(area.height);
        let [spark, gauges] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(gauges_height)]).areas(area);
        let title = format!("writes/s {} (max {})", rate(m.write_rate), rate(max as f64));
        let data: Vec<u64> = m
            .throughput
            .iter()
            .rev()
            .take(spark.width.saturating_sub(2) as usize)
            .rev()
            .copied()
            .collect();
        if spark.height >= 3 {
            Sparkline::default()
                .block(
                    Block::new()
                        .borders(Borders::ALL)
                        .title(Span::styled(title, theme.title())),
                )
                .data(&data)
                .style(theme.sparkline())
                .render(spark, buf);
        }
        let rows = Layout::vertical(vec![Constraint::Length(3); shown]).split(gauges);
        let inner = area.width.saturating_sub(2) as usize;
        for (repair, row) in m.repairs.iter().zip(rows.iter()) {
            let ratio = if repair.total == 0 {
                0.0
            } else {
                repair.done as f64 / repair.total as f64
            };
            let mut label = format!("{}/{}", repair.done, repair.total);
            if let Some(k) = repair.keys_per_s {
                label.push_str(&format!(" {}/s", rate(k)));
            }
            if let Some(eta) = repair.eta_s {
                label.push_str(&format!(" ETA {}", age((eta * 1000.0) as u64)));
            }
            let peers = if repair.peers.is_empty() {
                "…".to_string()
            } else {
                repair.peers.join(",")
            };
            let title = cut(&format!("{} → {peers}", repair.node), inner);
            Gauge::default()
                .block(
                    Block::new()
                        .borders(Borders::ALL)
                        .title(Span::styled(title, theme.title())),
                )
                .gauge_style(theme.gauge())
                .ratio(ratio.clamp(0.0, 1.0))
                .label(cut(&label, inner))
                .render(*row, buf);
        }
    }

    fn render_events(&self, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let height = area.height.saturating_sub(2) as usize;
        let width = area.width.saturating_sub(2) as usize;
        let events = &self.model.events;
        let selected = self.selected_event();
        // The window ends at the selection (the newest unless one was picked).
        let end = selected.map_or(events.len(), |s| s + 1);
        let first = end.saturating_sub(height);
        let lines: Vec<Line> = events
            .iter()
            .enumerate()
            .skip(first)
            .take(height)
            .map(|(i, e)| {
                let line = Line::from(vec![
                    Span::styled(format!("{} ", e.at), theme.dim()),
                    Span::styled(
                        cut(&e.text, width.saturating_sub(e.at.len() + 1)),
                        theme.event(e.severity),
                    ),
                ]);
                if self.panel == Panel::Events && Some(i) == selected {
                    line.style(theme.selected())
                } else {
                    line
                }
            })
            .collect();
        let block = self.block(
            format!("Events ({})", events.len()),
            Some(Panel::Events),
            theme,
        );
        let body = if lines.is_empty() {
            Paragraph::new(Span::styled("nothing has happened yet", theme.dim()))
        } else {
            Paragraph::new(lines)
        };
        body.block(block).render(area, buf);
    }

    fn render_overlay(&self, overlay: &Overlay, area: Rect, buf: &mut Buffer, theme: &Theme) {
        let (title, lines): (String, Vec<Line>) = match overlay {
            Overlay::Help => (
                "keys".into(),
                [
                    "q, Esc     quit",
                    "↑ ↓        select a member (or a row of partitions)",
                    "← →        select a partition",
                    "Tab        next panel",
                    "Enter      details of the selection",
                    "r          start a repair on the selected member",
                    "p          pause / resume updates",
                    "?          this help",
                    "",
                    "Enter on an event: read it in full",
                    "",
                    "partitions: · confirmed in sync (compared equal since the last write)",
                    "            ? unconfirmed (written since, or not compared lately)",
                    "            ~ repairing  ! diverged  u under-replicated (replica down)",
                    "members:    ● alive  ◐ suspect  ✕ dead  ○ left",
                ]
                .into_iter()
                .map(Line::from)
                .collect(),
            ),
            Overlay::ConfirmRepair(node) => (
                "repair".into(),
                vec![
                    Line::from(format!("Start a repair on {node}?")),
                    Line::from("It compares every partition it holds with every co-replica."),
                    Line::from(""),
                    Line::from("y to start, any other key to cancel"),
                ],
            ),
            Overlay::Details => match self.panel {
                Panel::Partitions => self.partition_details(),
                _ => self.member_details(),
            },
            Overlay::Event(i) => {
                let Some(e) = self.model.events.get(*i) else {
                    return;
                };
                let width = area.width.saturating_sub(4).clamp(20, 100);
                let popup_height = area.height.saturating_sub(2);
                let popup = Rect {
                    x: area.x + (area.width - width) / 2,
                    y: area.y + 1,
                    width,
                    height: popup_height,
                };
                Clear.render(popup, buf);
                Paragraph::new(vec![
                    Line::from(Span::styled(format!("{} UTC", e.at), theme.dim())),
                    Line::from(Span::styled(e.text.clone(), theme.event(e.severity))),
                ])
                .wrap(Wrap { trim: false })
                .block(
                    Block::new()
                        .borders(Borders::ALL)
                        .border_style(theme.focused())
                        .title(Span::styled("event", theme.title())),
                )
                .render(popup, buf);
                return;
            }
        };
        let width = (lines.iter().map(Line::width).max().unwrap_or(20) as u16 + 4).min(area.width);
        let height = (lines.len() as u16 + 2).min(area.height);
        let popup = Rect {
            x: area.x + (area.width - width) / 2,
            y: area.y + (area.height - height) / 2,
            width,
            height,
        };
        Clear.render(popup, buf);
        Paragraph::new(lines)
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .border_style(theme.focused())
                    .title(Span::styled(title, theme.title())),
            )
            .render(popup, buf);
    }

    fn member_details(&self) -> (String, Vec<Line<'static>>) {
        let Some(m) = self.model.members.get(self.member) else {
            return ("member".into(), vec![Line::from("no member selected")]);
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let mut lines = vec![
            format!("state            {} {}", m.state.symbol(), m.state.word()),
            format!("address          {}", m.address),
            format!("incarnation      {}", m.incarnation),
            format!("HLC              {}{}", opt(m.hlc.clone()), stale_suffix(m)),
            format!(
                "clock skew       {}{}",
                opt(m.skew_ms.map(skew_text)),
                stale_suffix(m)
            ),
            format!("writes/s         {}", opt(m.writes_per_s.map(rate))),
            format!("partitions held  {}", m.partitions_held),
            format!(
                "hints            {} (oldest {}, clear in {})",
                m.hints,
                age(m.hints_oldest_age_ms),
                opt(m.hints_clear_s.map(|s| age((s * 1000.0) as u64)))
            ),
            format!("last exchange    {}", opt(m.last_exchange_age_ms.map(age))),
            format!(
                "differing        {}",
                opt(m.partitions_differing.map(|d| d.to_string()))
            ),
            format!("sync lag         {}", opt(m.sync_lag_ms.map(age))),
        ];
        if m.filling > 0 {
            lines.push(format!(
                "filling          {} of {} partitions (not counted for them yet)",
                m.filling, m.partitions_held
            ));
        }
        if m.unreachable {
            lines.push(format!(
                "reachable        no: unreachable from {} (writes to it are hinted)",
                self.model.watched
            ));
        }
        (m.name.clone(), lines.into_iter().map(Line::from).collect())
    }

    fn partition_details(&self) -> (String, Vec<Line<'static>>) {
        let title = format!("partition {}", self.partition);
        let Some(cell) = self.model.cells.get(self.partition) else {
            return (title, vec![Line::from("no partition selected")]);
        };
        let mut lines = vec![
            Line::from(format!(
                "state  {} {}",
                cell.state.symbol(),
                cell.state.meaning()
            )),
            Line::from(match cell.confirmed_age_ms {
                Some(ms) => format!("confirmed in sync {} ago", age(ms)),
                None => "never confirmed in sync".to_string(),
            }),
        ];
        match self
            .model
            .detail
            .as_ref()
            .filter(|d| usize::from(d.partition) == self.partition)
        {
            None => {
                lines.push(Line::from(format!(
                    "replicas  {}",
                    cell.replicas.join(", ")
                )));
                lines.push(Line::from("asking the replicas for their roots…"));
            }
            Some(detail) => {
                lines.push(Line::from(
                    "replica           root              keys  last exchange",
                ));
                for r in &detail.replicas {
                    lines.push(Line::from(format!(
                        "{} {:<15} {:<16} {:>5}  {}",
                        r.state.symbol(),
                        cut(&r.name, 15),
                        r.root.clone().unwrap_or_else(|| "unreachable".into()),
                        r.count.map_or("-".into(), |c| c.to_string()),
                        r.last_exchange_age_ms.map_or("-".into(), age)
                    )));
                }
            }
        }
        (title, lines)
    }
}

fn member_cells<'a>(m: &MemberRow, name_width: usize, wide: bool, theme: &Theme) -> Vec<Cell<'a>> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let hints = if m.hints == 0 {
        "0".to_string()
    } else {
        let clear = m
            .hints_clear_s
            .map_or(String::new(), |s| format!("→{}", age((s * 1000.0) as u64)));
        format!("{} {}{clear}", m.hints, age(m.hints_oldest_age_ms))
    };
    let mut cells = vec![
        Cell::from(" "),
        Cell::from(cut(&m.name, name_width)),
        Cell::from(format!("{} {}", m.state.symbol(), m.state_word())).style(if m.unreachable {
            theme.event(crate::model::Severity::Warning)
        } else {
            theme.member(m.state)
        }),
        Cell::from(m.incarnation.to_string()),
        // What a member that is gone said last is not its clock now: its age comes
        // first, where a narrow column keeps it.
        match m.stale_age_ms {
            Some(ms) => {
                Cell::from(format!("{} ago {}", age(ms), opt(m.hlc.clone()))).style(theme.dim())
            }
            None => Cell::from(opt(m.hlc.clone())),
        },
        match m.stale_age_ms {
            Some(_) => Cell::from(format!("~{}", opt(m.skew_ms.map(skew_text)))).style(theme.dim()),
            None => Cell::from(opt(m.skew_ms.map(skew_text))),
        },
        Cell::from(opt(m.writes_per_s.map(rate))),
        Cell::from(hints).style(if m.hints > 0 {
            theme.event(crate::model::Severity::Warning)
        } else {
            Style::new()
        }),
        Cell::from(opt(m.sync_lag_ms.map(age))),
    ];
    if wide {
        cells.extend([
            Cell::from(cut(&m.address, 21)),
            Cell::from(m.partitions_held.to_string()),
            Cell::from(opt(m.last_exchange_age_ms.map(age))),
            Cell::from(opt(m.partitions_differing.map(|d| d.to_string()))),
        ]);
    }
    cells
}

/// ` (as said 40s ago)` for a member that is gone, nothing for a live one.
fn stale_suffix(m: &MemberRow) -> String {
    m.stale_age_ms
        .map_or(String::new(), |ms| format!(" (as said {} ago)", age(ms)))
}

/// A clock offset in at most six characters, in the unit that fits it: `+12ms`,
/// `-1.99s`, `+12.3s`, `+14m`, `+11.7h`.
pub(crate) fn skew_text(ms: i64) -> String {
    let sign = if ms < 0 { '-' } else { '+' };
    let abs = ms.unsigned_abs();
    if abs < 1_000 {
        format!("{sign}{abs}ms")
    } else if abs < 9_995 {
        format!("{sign}{:.2}s", abs as f64 / 1e3)
    } else if abs < 99_950 {
        format!("{sign}{:.1}s", abs as f64 / 1e3)
    } else if abs < 3_600_000 {
        format!("{sign}{}m", abs / 60_000)
    } else if abs < 359_820_000 {
        format!("{sign}{:.1}h", abs as f64 / 3.6e6)
    } else {
        format!("{sign}{}h", abs / 3_600_000)
    }
}
