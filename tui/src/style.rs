//! Every colour and emphasis of the dashboard, in one place. Without colour, symbols
//! and words carry the same meaning.

use ratatui::style::{Color, Modifier, Style};

use crate::model::{MemberState, PartitionState, Severity};

/// The styles in use.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    colour: bool,
}

impl Theme {
    /// With or without colour.
    pub fn new(colour: bool) -> Theme {
        Theme { colour }
    }

    fn fg(&self, color: Color) -> Style {
        if self.colour {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// Titles and headers.
    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Secondary text.
    pub fn dim(&self) -> Style {
        if self.colour {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    /// The border of the focused panel.
    pub fn focused(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// A selected row or cell.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// A member's state.
    pub fn member(&self, state: MemberState) -> Style {
        match state {
            MemberState::Alive => self.fg(Color::Green),
            MemberState::Suspect => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
            MemberState::Dead => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            MemberState::Left => self.dim(),
        }
    }

    /// A partition's state.
    pub fn partition(&self, state: PartitionState) -> Style {
        match state {
            PartitionState::InSync => self.fg(Color::Green),
            PartitionState::Unconfirmed => self.fg(Color::Gray),
            PartitionState::Repairing => self.fg(Color::Blue).add_modifier(Modifier::BOLD),
            PartitionState::Diverged => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            PartitionState::UnderReplicated => self.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        }
    }

    /// An event.
    pub fn event(&self, severity: Severity) -> Style {
        match severity {
            Severity::Info => Style::new(),
            Severity::Warning => self.fg(Color::Yellow),
            Severity::Alert => self.fg(Color::Red).add_modifier(Modifier::BOLD),
        }
    }

    /// Something that needs attention (a lost connection, a pause).
    pub fn alert(&self) -> Style {
        self.fg(Color::Red)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED)
    }

    /// The throughput sparkline.
    pub fn sparkline(&self) -> Style {
        self.fg(Color::Cyan)
    }

    /// The repair gauge.
    pub fn gauge(&self) -> Style {
        self.fg(Color::Blue)
    }
}
