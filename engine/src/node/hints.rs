//! Hinted handoff: delivers the writes a replica missed once it is alive again.
//!
//! Hints drain oldest first, in batches, over the same `Replicate` message as push
//! replication; a batch is deleted only after the replica acknowledged it, so a crash
//! at any point delivers a hint at most once more (applying is idempotent). Hints older
//! than the hint window are dropped with a log line and left to anti-entropy; hints for
//! a member that left are dropped too (its partitions have new owners). The rules are
//! [`crate::policy`]'s, which the simulator applies too.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::peers::{PeerError, request};
use crate::policy::{HINT_BATCH_BYTES_MAX, HINT_BATCH_MAX, HintTarget, hint_target, split_expired};
use crate::protocol::{Request, Response};
use crate::storage::StoredHint;
use crate::wallclock::system_wall_ms;

/// How often the backlog is looked at when nothing wakes the task.
const DRAIN_PERIOD: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = shared.hints_wake.notified() => {}
            _ = tokio::time::sleep(DRAIN_PERIOD) => {}
        }
        let backlog = match shared.store.hint_backlog() {
            Ok(backlog) => backlog,
            Err(err) => {
                tracing::error!("cannot read the hint backlog: {err}");
                continue;
            }
        };
        for target in backlog {
            if shared.shutdown.is_cancelled() {
                break;
            }
            let view = shared.view();
            let state = view.member(&target.target).map(|m| m.state);
            let reachable = shared.peers.unreachable_reason(&target.target).is_none();
            // Waiting out a timeout per batch would hold every other target's hints
            // back; the reachability pings say when it answers again.
            match hint_target(&shared.me.name, &target.target, state, reachable) {
                HintTarget::Drop => {
                    drop_all(&shared, &target.target, "the member left the cluster").await;
                }
                HintTarget::Wait => {}
                HintTarget::Deliver => {
                    if let Err(err) = drain(&shared, &target.target).await {
                        tracing::debug!(target = %target.target, "hint delivery paused: {err}");
                    }
                }
            }
        }
    }
}

async fn drain(shared: &Arc<Shared>, target: &str) -> Result<(), PeerError> {
    let window_ms = shared.config.hint_window.as_millis() as u64;
    loop {
        let batch = shared
            .store
            .hints_for(target, HINT_BATCH_MAX, HINT_BATCH_BYTES_MAX)
            .map_err(|e| PeerError(e.to_string()))?;
        if batch.is_empty() {
            return Ok(());
        }
        let (expired, live) = split_expired(batch, system_wall_ms(), window_ms);
        if !expired.is_empty() {
            tracing::warn!(
                target = %target,
                count = expired.len(),
                window = %humantime::format_duration(shared.config.hint_window),
                "dropped hints older than the hint window; anti-entropy repairs those keys"
            );
            delete(shared, &expired).await?;
        }
        if live.is_empty() {
            continue;
        }
        let entries: Vec<_> = live.iter().map(|h| h.hint.entry.clone()).collect();
        if target == shared.me.name {
            let landing = shared.note_writes(&entries);
            let applied = shared.store.apply(entries).await;
            drop(landing);
            applied.map_err(|e| PeerError(e.to_string()))?;
        } else {
            let id = shared
                .view()
                .member(target)
                .map(|m| m.id.clone())
                .ok_or_else(|| PeerError(format!("{target} is not a known member")))?;
            let sent = tokio::time::timeout(shared.config.replica_timeout, async {
                let connection = shared.peers.connection(&id).await?;
                request(&connection, &Request::Replicate { entries }).await
            })
            .await;
            let sent = match sent {
                Ok(Ok(sent)) => sent,
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    let why = format!(
                        "no answer within {} ms",
                        shared.config.replica_timeout.as_millis()
                    );
                    super::reach::lost(shared, target, &why);
                    return Err(PeerError(why));
                }
            };
            if !matches!(sent, Response::Replicated { .. }) {
                return Err(PeerError(format!("unexpected answer {sent:?}")));
            }
        }
        tracing::debug!(target = %target, count = live.len(), "hints delivered");
        delete(shared, &live).await?;
    }
}

async fn delete(shared: &Shared, hints: &[StoredHint]) -> Result<(), PeerError> {
    shared
        .store
        .delete_hints(hints.iter().map(|h| h.key.clone()).collect())
        .await
        .map_err(|e| PeerError(e.to_string()))
}

async fn drop_all(shared: &Shared, target: &str, why: &str) {
    let mut dropped = 0;
    while let Ok(batch) = shared
        .store
        .hints_for(target, HINT_BATCH_MAX, HINT_BATCH_BYTES_MAX)
    {
        if batch.is_empty() || delete(shared, &batch).await.is_err() {
            break;
        }
        dropped += batch.len();
    }
    if dropped > 0 {
        tracing::warn!(target = %target, count = dropped, "dropped hints: {why}");
    }
}
