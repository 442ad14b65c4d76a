//! Requests answered by a stream of responses: `watch` and `repair`.

use std::sync::Arc;

use quinn::SendStream;
use tokio::sync::broadcast::error::RecvError;

use crate::core::{Answer, Ask};
use crate::node::Shared;
use crate::protocol::frame;
use crate::protocol::{ErrorCode, ErrorReply, Response};

/// Streams changes to a `watch` client until it goes away or the node stops.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    prefix: &[u8],
    limit: usize,
) {
    let mut changes = shared.store.subscribe();
    loop {
        let change = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = send.stopped() => break,
            change = changes.recv() => change,
        };
        let response = match change {
            Ok(entry) if entry.key.starts_with(prefix) => Response::Change {
                key: entry.key.clone(),
                value: entry.record.payload.value().map(<[u8]>::to_vec),
                version: shared.describe(entry.record.version),
            },
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => Response::Error(ErrorReply::new(
                ErrorCode::Overloaded,
                format!("watch fell behind: {missed} changes were not shown"),
            )),
            Err(RecvError::Closed) => break,
        };
        if frame::write_message(send, &response, limit).await.is_err() {
            break;
        }
    }
}

/// Runs a repair for an admin, streaming its progress and then its report.
pub(crate) async fn repair(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    partition: Option<u16>,
    peer: Option<String>,
    dry_run: bool,
    limit: usize,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let ask = Ask::Repair {
        partition,
        peer,
        dry_run,
    };
    let run = shared.core.ask_with(ask, Some(tx));
    tokio::pin!(run);
    let answer = loop {
        tokio::select! {
            answer = &mut run => break answer,
            Some(p) = rx.recv() => {
                // Progress is best effort: a slow reader misses some updates, never the report.
                let _ = frame::write_message(send, &Response::RepairProgress(p), limit).await;
            }
        }
    };
    let report = match answer {
        Answer::Repaired(report) => *report,
        other => {
            let reply = super::unexpected(other);
            let _ = frame::write_message(send, &Response::Error(reply), limit).await;
            return;
        }
    };
    tracing::info!(
        dry_run,
        compared = report.counts.partitions_compared,
        differing = report.counts.partitions_differing,
        keys_sent = report.counts.keys_sent,
        keys_received = report.counts.keys_received,
        in_sync = report.in_sync,
        "repair finished"
    );
    let _ = frame::write_message(send, &Response::Repaired(report), limit).await;
}
