//! The actions: what the operator asks for on the dashboard (a repair, a partition's
//! details), carried out against the nodes; what comes of it goes to the builder.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vergent_tui::app::Command;
use vergent_tui::model::{PartitionDetail, ReplicaDetail, Severity};

use super::view::Builder;
use super::{POLL_TIMEOUT, now};
use crate::client::Client;
use crate::net::TlsMaterial;
use crate::protocol::{Request, Response};

/// Carries out what the operator asked for; the outcome goes to the builder (an event,
/// a partition's details) and shows with the next model.
pub(super) async fn carry_out(
    command: Command,
    builder: Arc<Mutex<Builder>>,
    material: Arc<TlsMaterial>,
) {
    match command {
        Command::Quit => {}
        Command::Repair { node } => {
            let Some(addr) = builder.lock().expect("builder lock").address_of(&node) else {
                return;
            };
            // Its start shows with the node's status; its end with the report here.
            builder
                .lock()
                .expect("builder lock")
                .reported_here
                .insert(node.clone());
            let outcome = async {
                let mut client = Client::connect(&addr, &material)
                    .await
                    .map_err(|e| e.to_string())?;
                client.set_request_timeout(Duration::from_secs(3600));
                let request = Request::Repair {
                    partition: None,
                    peer: None,
                    dry_run: false,
                };
                let mut answers = client.stream(&request).await.map_err(|e| e.to_string())?;
                loop {
                    match answers.next().await.map_err(|e| e.to_string())? {
                        Some(Response::RepairProgress(_)) => {}
                        Some(Response::Repaired(report)) => return Ok(report),
                        Some(Response::Error(reply)) => return Err(reply.message),
                        _ => return Err("the node ended the repair without a report".into()),
                    }
                }
            }
            .await;
            let mut b = builder.lock().expect("builder lock");
            b.reported_here.remove(&node);
            match outcome {
                Ok(report) => {
                    let c = &report.counts;
                    let text = format!(
                        "repair on {node} ended: {} compared, {} differed, {} keys moved in {:.1}s{}",
                        c.partitions_compared,
                        c.partitions_differing,
                        c.keys_sent + c.keys_received,
                        report.duration_ms as f64 / 1000.0,
                        if report.in_sync { "" } else { "; NOT in sync" }
                    );
                    let severity = if report.in_sync {
                        Severity::Info
                    } else {
                        Severity::Warning
                    };
                    b.event(text, severity, now());
                }
                Err(err) => b.event(
                    format!("repair on {node} failed: {err}"),
                    Severity::Alert,
                    now(),
                ),
            }
        }
        Command::Inspect { partition } => {
            let (replicas, watched_sync) = {
                let b = builder.lock().expect("builder lock");
                (b.replicas_of(partition), b.sync_ages(now()))
            };
            let mut details = Vec::new();
            for (name, state, addr) in replicas {
                let root = async {
                    let client = Client::connect(addr.as_deref()?, &material).await.ok()?;
                    let status = tokio::time::timeout(POLL_TIMEOUT, client.status())
                        .await
                        .ok()?
                        .ok()?;
                    client.close().await;
                    status.roots.get(usize::from(partition)).cloned()
                };
                let root = tokio::time::timeout(POLL_TIMEOUT * 2, root)
                    .await
                    .ok()
                    .flatten();
                details.push(ReplicaDetail {
                    last_exchange_age_ms: watched_sync.get(&name).copied().flatten(),
                    name,
                    state,
                    count: root.as_ref().map(|r| r.count),
                    root: root.map(|r| r.digest),
                });
            }
            builder.lock().expect("builder lock").detail = Some(PartitionDetail {
                partition,
                replicas: details,
            });
        }
    }
}
