//! The feed: polls the watched node, fails over to another member when it stops
//! answering and goes back to it once it answers again, and sends each new model to the
//! dashboard.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vergent_tui::model::{Dashboard, Severity};

use super::view::Builder;
use super::{POLL_TIMEOUT, now};
use crate::client::Client;
use crate::net::TlsMaterial;

/// Time between polls of the watched node.
const REFRESH: Duration = Duration::from_millis(250);
/// Time between tries to go back to the node asked for, after failing over.
const RETURN_TRY: Duration = Duration::from_secs(2);

/// Polls `node` until `stop`, feeding each status to the builder with the time it came
/// and sending the model that results; fails over and back as the nodes answer.
pub(super) async fn poll(
    builder: Arc<Mutex<Builder>>,
    material: Arc<TlsMaterial>,
    mut node: String,
    models: std_mpsc::Sender<Dashboard>,
    stop: tokio_util::sync::CancellationToken,
) {
    let asked = node.clone();
    let mut asked_name: Option<String> = None;
    let mut last_return_try = Instant::now();
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if client.is_none() {
            client = tokio::time::timeout(POLL_TIMEOUT, Client::connect(&node, &material))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let answer = match &client {
            Some(c) => tokio::time::timeout(POLL_TIMEOUT, c.status())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        // Watching another node since the one asked for stopped answering: go back to
        // it once it answers again.
        if node != asked && last_return_try.elapsed() >= RETURN_TRY {
            last_return_try = Instant::now();
            if let Ok(Ok(c)) =
                tokio::time::timeout(POLL_TIMEOUT, Client::connect(&asked, &material)).await
                && let Ok(Ok(status)) = tokio::time::timeout(POLL_TIMEOUT, c.status()).await
            {
                let mut b = builder.lock().expect("builder lock");
                let text = format!("{} is back; watching it again", status.node);
                b.event(text, Severity::Info, now());
                b.watched = status.node.clone();
                b.observe(status, now());
                node = asked.clone();
                client = Some(c);
                failures = 0;
                drop(b);
                let model = builder.lock().expect("builder lock").model(now());
                if models.send(model).is_err() {
                    break;
                }
                continue;
            }
        }
        match answer {
            Some(status) => {
                failures = 0;
                if node == asked {
                    asked_name.get_or_insert_with(|| status.node.clone());
                }
                builder.lock().expect("builder lock").observe(status, now());
            }
            None => {
                failures += 1;
                client = None;
                builder
                    .lock()
                    .expect("builder lock")
                    .lost("no answer", now());
                if failures >= 2 {
                    // Fail over to a member the last view showed alive.
                    let candidates = builder.lock().expect("builder lock").failover_candidates();
                    for (name, addr) in candidates {
                        let connect =
                            tokio::time::timeout(POLL_TIMEOUT, Client::connect(&addr, &material))
                                .await;
                        if let Ok(Ok(c)) = connect {
                            let mut b = builder.lock().expect("builder lock");
                            let text = format!("{} unreachable; now watching {name}", b.watched);
                            b.event(text, Severity::Alert, now());
                            b.watched = name;
                            node = addr;
                            client = Some(c);
                            failures = 0;
                            break;
                        }
                    }
                }
            }
        }
        let model = builder.lock().expect("builder lock").model(now());
        if models.send(model).is_err() {
            break;
        }
    }
}
