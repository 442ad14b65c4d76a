//! Overlays drawn over the panels: key help, a repair's confirmation, the details of
//! the selected member or partition, and one event in full.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};

use super::{age, cut, rate, skew_text, wrap};
use crate::app::{App, Overlay, Panel};
use crate::model::{EventRow, Severity};
use crate::style::Theme;

/// Columns between an overlay's text and the terminal's edge on each side: one of the
/// panels behind, so the overlay reads as one, the border, and a blank.
const MARGIN: u16 = 3;

const HELP: &[&str] = &[
    "q, Esc      quit",
    "↑ ↓         select a member, a row of partitions or an event",
    "← →         select a partition",
    "PgUp PgDn   a page of events up or down (Home, End: oldest, newest)",
    "Tab         next panel",
    "Enter       details of the selection; on an event, read it in full",
    "r           start a repair on the selected member",
    "b           buckets: type, records, TTL, lost writes, most conflicted keys, linearizable ops",
    "p           pause / resume updates",
    "?           this help",
    "",
    "partitions: · confirmed in sync (compared equal since the last write)",
    "            ? unconfirmed (written since, or not compared lately)",
    "            ~ repairing  ! diverged  u under-replicated (replica down)",
    "members:    ● alive  ◐ suspect  ✕ dead  ○ left",
];

impl App {
    pub(super) fn render_overlay(
        &self,
        overlay: &Overlay,
        area: Rect,
        buf: &mut Buffer,
        theme: &Theme,
    ) {
        let text_width = area.width.saturating_sub(2 * MARGIN) as usize;
        let text_height = area.height.saturating_sub(2) as usize;
        let (title, lines): (String, Vec<Line>) = match overlay {
            Overlay::Help => ("keys".into(), help()),
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
            Overlay::Event(i) => match self.model.events.get(*i) {
                Some(event) => event_details(event, text_width, text_height),
                None => ("event".into(), vec![Line::from("no such event")]),
            },
            Overlay::Buckets => {
                let mut lines = buckets(&self.model.buckets, text_width);
                if let Some(lin) = &self.model.linearizable {
                    lines.push(Line::from(""));
                    lines.push(Line::from(cut(lin, text_width)));
                }
                ("buckets".into(), lines)
            }
        };
        let width = (lines.iter().map(Line::width).max().unwrap_or(20) as u16 + 4)
            .max(title.chars().count() as u16 + 4)
            .min(area.width);
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
        // A dead or left member's clock is what it said last: say how long ago.
        let said = |v: String| match m.stale_age_ms {
            Some(ms) => format!("{v} (as said {} ago)", age(ms)),
            None => v,
        };
        let mut lines = vec![
            format!("state            {} {}", m.state.symbol(), m.state.word()),
            format!("address          {}", m.address),
            format!("incarnation      {}", m.incarnation),
            format!("HLC              {}", opt(m.hlc.clone().map(said))),
            format!(
                "clock skew       {}",
                opt(m.skew_ms.map(skew_text).map(said))
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
        let confirmed = match cell.confirmed_age_ms {
            Some(ms) => format!("confirmed in sync {} ago", age(ms)),
            None => "never confirmed in sync".to_string(),
        };
        let mut lines = vec![
            Line::from(format!(
                "state  {} {}",
                cell.state.symbol(),
                cell.state.meaning()
            )),
            Line::from(confirmed),
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

/// The buckets as a table: the conflicts column says what concurrent writes did (lost
/// writes per second in a lww bucket, the most siblings in a siblings bucket; counters
/// and sets merge them), and the hottest keys follow as far as the width allows.
fn buckets(rows: &[crate::model::BucketRow], width: usize) -> Vec<Line<'static>> {
    if rows.is_empty() {
        return vec![Line::from("no buckets known yet")];
    }
    let header = [
        "BUCKET",
        "TYPE",
        "RECORDS",
        "TTL",
        "CONFLICTS",
        "MOST CONFLICTED",
    ];
    let mut table: Vec<[String; 6]> = vec![header.map(str::to_string)];
    for b in rows {
        let conflicts = match b.kind.as_str() {
            "linearizable" => "agreed".into(),
            "lww" => match b.lost_per_s {
                Some(r) if r < 10.0 => format!("{r:.1} lost/s ({} in all)", b.lost),
                Some(r) => format!("{} lost/s ({} in all)", rate(r), b.lost),
                None => format!("{} lost", b.lost),
            },
            "siblings" if b.siblings_max > 1 => format!("up to {} siblings", b.siblings_max),
            "siblings" => "no siblings".into(),
            _ => "merged".into(),
        };
        let hot = b
            .hot
            .iter()
            .map(|(k, n)| format!("{k} ({n})"))
            .collect::<Vec<_>>()
            .join(", ");
        table.push([
            b.name.clone(),
            b.kind.clone(),
            b.keys.map_or("-".into(), |k| k.to_string()),
            b.ttl.clone().unwrap_or_else(|| "-".into()),
            conflicts,
            if hot.is_empty() { "-".into() } else { hot },
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    table
        .into_iter()
        .map(|r| {
            let mut line = String::new();
            for (c, w) in widths.iter().enumerate() {
                line.push_str(&format!("{:<w$}  ", r[c], w = w));
            }
            line.push_str(&r[5]);
            Line::from(cut(&line, width))
        })
        .collect()
}

fn help() -> Vec<Line<'static>> {
    HELP.iter().map(|l| Line::from(*l)).collect()
}

/// An event's whole text, wrapped to `width`; past `height` lines the last is cut, as
/// nothing longer fits the terminal.
fn event_details(event: &EventRow, width: usize, height: usize) -> (String, Vec<Line<'static>>) {
    let severity = match event.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Alert => "alert",
    };
    let mut lines = wrap(&event.text, width);
    if lines.len() > height.max(1) {
        let rest = lines.split_off(height.max(1) - 1).join(" ");
        lines.push(cut(&rest, width));
    }
    (
        format!("event {} · {severity}", event.at),
        lines.into_iter().map(Line::from).collect(),
    )
}
