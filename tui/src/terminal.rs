//! The terminal loop: input, updates from the feeder, and a redraw at least four times
//! a second. The terminal is restored on exit and on panic.

use std::io;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};

use crate::app::{App, Command};
use crate::model::Dashboard;
use crate::ui;

/// Time between redraws when nothing happens.
const TICK: Duration = Duration::from_millis(250);

/// Runs the dashboard until the operator quits or the feeder hangs up. `models` brings
/// new views; `commands` takes what the operator asked for.
pub fn run(
    first: Dashboard,
    models: Receiver<Dashboard>,
    commands: Sender<Command>,
    colour: bool,
) -> io::Result<()> {
    // `try_init` installs a panic hook that restores the terminal before the panic
    // message is printed.
    let mut terminal = ratatui::try_init()?;
    let result = run_loop(&mut terminal, first, models, commands, colour);
    ratatui::restore();
    result
}

fn run_loop(
    terminal: &mut ratatui::DefaultTerminal,
    first: Dashboard,
    models: Receiver<Dashboard>,
    commands: Sender<Command>,
    colour: bool,
) -> io::Result<()> {
    let mut app = App::new(first);
    app.colour = colour;
    let mut last_draw = Instant::now() - TICK;
    let mut dirty = true;
    loop {
        loop {
            match models.try_recv() {
                Ok(model) => {
                    app.update(model);
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            }
        }
        if dirty || last_draw.elapsed() >= TICK {
            terminal.draw(|frame| {
                let area = frame.area();
                // Keys move by what this frame shows; a terminal too small to show the
                // panels keeps the sizes last drawn.
                if let Some(viewport) = ui::viewport(&app, area) {
                    app.viewport = viewport;
                }
                frame.render_widget(&app, area);
            })?;
            last_draw = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => {
                    dirty = true;
                    if let Some(command) = app.handle_key(key) {
                        let quit = command == Command::Quit;
                        let _ = commands.send(command);
                        if quit {
                            return Ok(());
                        }
                    }
                }
                Event::Resize(_, _) => dirty = true,
                _ => {}
            }
        }
    }
}
