//! `vergent top`: the live dashboard. This side polls a node's status four times a
//! second, turns it into the dashboard's model (rates, events, partition states), fails
//! over to another member when the watched node stops answering, and carries out what
//! the operator asks (a repair, a partition's details). The `vergent-tui` crate draws.
//!
//! - [`feed`]: the polling loop and the fail-over;
//! - [`actions`]: what the operator asks for, carried out;
//! - [`view`]: the builder that turns statuses into the model, given the time.

mod actions;
mod feed;
mod view;

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use vergent_tui::app::Command;
use vergent_tui::model::Severity;

use super::{ClientArgs, Failure};
use crate::net::TlsMaterial;
use view::{Builder, Now};

/// Time allowed for one status request.
const POLL_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(args: TopArgs) -> Result<(), Failure> {
    let runtime = super::runtime()?;
    let node = args.client.node()?.to_owned();
    let material = Arc::new(TlsMaterial::load(&args.client.certs, &args.client.user)?);
    dashboard(&runtime, material, node, None)
}

/// Runs the dashboard against `node` until the operator quits.
pub(crate) fn dashboard(
    runtime: &tokio::runtime::Runtime,
    material: Arc<TlsMaterial>,
    node: String,
    notice: Option<String>,
) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            "the dashboard needs a terminal (stdout is not one)",
        ));
    }
    let builder = Arc::new(Mutex::new(Builder::new(&node, now())));
    if let Some(notice) = notice {
        let mut b = builder.lock().expect("builder lock");
        b.event(notice.clone(), Severity::Info, now());
        b.notice = Some(notice);
    }
    let (models, model_rx) = std_mpsc::channel();
    let (commands, command_rx) = std_mpsc::channel::<Command>();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = runtime.spawn(feed::poll(
        builder.clone(),
        material.clone(),
        node,
        models,
        stop.clone(),
    ));
    let handle = runtime.handle().clone();
    let (b, m) = (builder.clone(), material.clone());
    std::thread::spawn(move || {
        while let Ok(command) = command_rx.recv() {
            handle.spawn(actions::carry_out(command, b.clone(), m.clone()));
        }
    });
    let first = builder.lock().expect("builder lock").model(now());
    let colour = std::env::var_os("NO_COLOR").is_none();
    let result = vergent_tui::terminal::run(first, model_rx, commands, colour);
    stop.cancel();
    let _ = runtime.block_on(poller);
    result.map_err(|e| Failure::new(format!("terminal: {e}")))
}

/// The clocks, read here for the builder, which reads none itself.
fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
    }
}
