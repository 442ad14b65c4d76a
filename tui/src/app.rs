//! The dashboard's state apart from what it shows: which panel has focus, what is
//! selected, whether updates are paused, which overlay is open. Keys change it; the
//! model comes from outside.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::model::{Dashboard, EventRow};

/// A panel that can have focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The members table.
    Members,
    /// The partition map.
    Partitions,
    /// The event log.
    Events,
}

/// What the dashboard asks its feeder to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Leave.
    Quit,
    /// Start a repair on this node (confirmed by the operator).
    Repair {
        /// The node.
        node: String,
    },
    /// Fetch the details of this partition.
    Inspect {
        /// The partition.
        partition: u16,
    },
}

/// An overlay on top of the panels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Key help.
    Help,
    /// Details of the selected member or partition.
    Details,
    /// "Start a repair on NODE?"
    ConfirmRepair(String),
    /// One event in full (index into the events).
    Event(usize),
    /// The buckets: type, records, TTL, conflicts.
    Buckets,
}

/// Sizes of the screen as last drawn, which keys move by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    /// Columns of the partition map; ↑↓ move by a row of it.
    pub map_columns: usize,
    /// Lines of the event log; PageUp and PageDown move by as many.
    pub event_rows: usize,
}

impl Default for Viewport {
    /// The sizes before anything is drawn: the map's columns at 80 columns.
    fn default() -> Viewport {
        Viewport {
            map_columns: crate::ui::MAP_COLUMNS_HINT,
            event_rows: 10,
        }
    }
}

/// The dashboard.
#[derive(Debug, Clone)]
pub struct App {
    /// What is shown.
    pub model: Dashboard,
    /// The panel with focus.
    pub panel: Panel,
    /// The selected member (index into the members).
    pub member: usize,
    /// The selected partition.
    pub partition: usize,
    /// The selected event (index into the events); `None` follows the newest.
    pub event: Option<usize>,
    /// Whether model updates are held back.
    pub paused: bool,
    /// The open overlay.
    pub overlay: Option<Overlay>,
    /// Whether colours are used.
    pub colour: bool,
    /// The screen's sizes as last drawn; the loop stores them from
    /// [`ui::viewport`](crate::ui::viewport) at each draw.
    pub viewport: Viewport,
}

impl App {
    /// A dashboard showing `model`.
    pub fn new(model: Dashboard) -> App {
        App {
            model,
            panel: Panel::Members,
            member: 0,
            partition: 0,
            event: None,
            paused: false,
            overlay: None,
            colour: true,
            viewport: Viewport::default(),
        }
    }

    /// A new view from the feeder; held back while paused (the connection state and
    /// the details asked for still get through).
    pub fn update(&mut self, model: Dashboard) {
        if self.paused {
            self.model.connection = model.connection;
            if model.detail.is_some() {
                self.model.detail = model.detail;
            }
            return;
        }
        // The feeder keeps a bounded log, so indices shift as old events drop off: the
        // selection and an open event follow the event they pointed at (an overlay whose
        // event dropped off closes rather than show another).
        let newest = model.events.len().saturating_sub(1);
        self.event = self
            .event
            .map(|i| same_event(&self.model.events, &model.events, i).unwrap_or(0))
            .filter(|&i| i < newest);
        if let Some(Overlay::Event(i)) = self.overlay {
            self.overlay = same_event(&self.model.events, &model.events, i).map(Overlay::Event);
        }
        self.model = model;
        self.member = self.member.min(self.model.members.len().saturating_sub(1));
        self.partition = self.partition.min(self.model.cells.len().saturating_sub(1));
    }

    /// The event selected, as shown: the chosen one, or the newest.
    pub fn selected_event(&self) -> Option<usize> {
        let n = self.model.events.len();
        (n > 0).then(|| self.event.unwrap_or(n - 1).min(n - 1))
    }

    /// The selected member's name.
    pub fn selected_member(&self) -> Option<&str> {
        self.model.members.get(self.member).map(|m| m.name.as_str())
    }

    /// Reacts to a key; returns what the feeder should do, if anything.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        if let Some(overlay) = self.overlay.clone() {
            return self.handle_overlay_key(overlay, key.code);
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Command::Quit),
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('b') => self.overlay = Some(Overlay::Buckets),
            KeyCode::Tab => {
                self.panel = match self.panel {
                    Panel::Members => Panel::Partitions,
                    Panel::Partitions => Panel::Events,
                    Panel::Events => Panel::Members,
                }
            }
            KeyCode::BackTab => {
                self.panel = match self.panel {
                    Panel::Members => Panel::Events,
                    Panel::Partitions => Panel::Members,
                    Panel::Events => Panel::Partitions,
                }
            }
            KeyCode::Up => self.step(-1, true),
            KeyCode::Down => self.step(1, true),
            KeyCode::Left => self.step(-1, false),
            KeyCode::Right => self.step(1, false),
            KeyCode::PageUp if self.panel == Panel::Events => {
                self.step(-(self.viewport.event_rows as i64), true)
            }
            KeyCode::PageDown if self.panel == Panel::Events => {
                self.step(self.viewport.event_rows as i64, true)
            }
            KeyCode::PageUp => self.step(-10, true),
            KeyCode::PageDown => self.step(10, true),
            KeyCode::Home if self.panel == Panel::Events => {
                self.step(-(self.model.events.len() as i64), true)
            }
            KeyCode::End if self.panel == Panel::Events => self.event = None,
            KeyCode::Enter if self.panel == Panel::Events => {
                if let Some(e) = self.selected_event() {
                    self.overlay = Some(Overlay::Event(e));
                }
            }
            KeyCode::Enter => {
                self.overlay = Some(Overlay::Details);
                if self.panel == Panel::Partitions && !self.model.cells.is_empty() {
                    self.model.detail = None;
                    return Some(Command::Inspect {
                        partition: self.partition as u16,
                    });
                }
            }
            KeyCode::Char('r') => {
                if let Some(name) = self.selected_member() {
                    self.overlay = Some(Overlay::ConfirmRepair(name.to_string()));
                }
            }
            _ => {}
        }
        None
    }

    fn handle_overlay_key(&mut self, overlay: Overlay, code: KeyCode) -> Option<Command> {
        match (overlay, code) {
            (Overlay::ConfirmRepair(node), KeyCode::Char('y') | KeyCode::Char('Y')) => {
                self.overlay = None;
                Some(Command::Repair { node })
            }
            (_, KeyCode::Char('q')) => Some(Command::Quit),
            _ => {
                self.overlay = None;
                None
            }
        }
    }

    /// Moves the selection of the focused panel: members by one; partitions by one
    /// across, or by a row of the map when `vertical`.
    fn step(&mut self, by: i64, vertical: bool) {
        match self.panel {
            Panel::Members if vertical => {
                let n = self.model.members.len() as i64;
                if n > 0 {
                    self.member = (self.member as i64 + by).rem_euclid(n) as usize;
                }
            }
            Panel::Partitions => {
                let n = self.model.cells.len() as i64;
                if n > 0 {
                    let stride = if vertical {
                        self.viewport.map_columns as i64
                    } else {
                        1
                    };
                    self.partition = (self.partition as i64 + by * stride).clamp(0, n - 1) as usize;
                }
            }
            // Up from the newest picks older events; back down to the newest follows
            // new ones again.
            Panel::Events if vertical => {
                let n = self.model.events.len() as i64;
                if let Some(current) = self.selected_event() {
                    let next = (current as i64 + by).clamp(0, n - 1);
                    self.event = (next < n - 1).then_some(next as usize);
                }
            }
            _ => {}
        }
    }
}

/// Where the event at `i` in `old` is in `new`: at `i` or before it, as the log only
/// grows at the end and drops at the front; `None` once it dropped off.
fn same_event(old: &[EventRow], new: &[EventRow], i: usize) -> Option<usize> {
    let event = old.get(i)?;
    let end = (i + 1).min(new.len());
    new[..end].iter().rposition(|e| e == event)
}
