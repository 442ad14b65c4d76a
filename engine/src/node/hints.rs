//! Hinted handoff: delivers the writes a replica missed once it is alive again.
//!
//! What to send, to whom, in what batches and what to drop is
//! [`crate::policy::HintPump`]'s, which the simulator drives too; this task moves its
//! batches over the same `Replicate` message as push replication, deletes what it says
//! through the store's writer, and logs what was dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::peers::{PeerError, request};
use crate::policy::{HintContext, HintPump, HintWork, HintsDeleted};
use crate::protocol::{Request, Response};
use crate::record::Entry;
use crate::wallclock::system_wall_ms;

/// How often the backlog is looked at when nothing wakes the task.
const DRAIN_PERIOD: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>) {
    // A batch is awaited for the replica timeout at most, so the pump's own timeout
    // (for an answer that never came) is only a backstop.
    let mut pump = HintPump::new(2 * shared.config.replica_timeout.as_millis() as u64);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = shared.hints_wake.notified() => {}
            _ = tokio::time::sleep(DRAIN_PERIOD) => {}
        }
        // Plans follow one another while they get somewhere; a target that fails
        // waits for the next wake or period, so a dead one is not hammered.
        let mut dropped = Dropped::new();
        while !shared.shutdown.is_cancelled() && pass(&shared, &mut pump, &mut dropped).await {}
        for ((target, why), count) in dropped {
            match why {
                HintsDeleted::Delivered => {}
                HintsDeleted::Expired => tracing::warn!(
                    target = %target,
                    count,
                    window = %humantime::format_duration(shared.config.hint_window),
                    "dropped hints older than the hint window; anti-entropy repairs those keys"
                ),
                HintsDeleted::TargetLeft => tracing::warn!(
                    target = %target,
                    count,
                    "dropped hints: the member left the cluster"
                ),
            }
        }
    }
}

/// Hints deleted without delivery, by target and reason, to log once.
type Dropped = BTreeMap<(String, HintsDeleted), usize>;

/// One plan, carried out; whether anything was delivered or deleted.
async fn pass(shared: &Arc<Shared>, pump: &mut HintPump, dropped: &mut Dropped) -> bool {
    let planned = {
        let view = shared.view();
        let state = |name: &str| view.member(name).map(|m| m.state);
        // Waiting out a timeout per batch would hold every other target's hints back;
        // the reachability pings say when a target answers again.
        let reachable = |name: &str| shared.peers.unreachable_reason(name).is_none();
        let cx = HintContext {
            me: &shared.me.name,
            state: &state,
            reachable: &reachable,
            wall_ms: system_wall_ms(),
            window_ms: shared.config.hint_window.as_millis() as u64,
            now: shared.now(),
        };
        pump.plan(&shared.store, &cx)
    };
    let work = match planned {
        Ok(work) => work,
        Err(err) => {
            tracing::error!("cannot read the hint backlog: {err}");
            return false;
        }
    };
    let mut progress = false;
    for step in work {
        match step {
            HintWork::Delete { target, keys, why } => {
                let count = keys.len();
                if delete(shared, &target, keys).await {
                    *dropped.entry((target, why)).or_default() += count;
                    progress = true;
                }
            }
            HintWork::Send {
                batch,
                target,
                entries,
            } => match send(shared, &target, entries).await {
                Ok(count) => {
                    tracing::debug!(target = %target, count, "hints delivered");
                    if let Some(HintWork::Delete { target, keys, .. }) = pump.delivered(batch) {
                        progress |= delete(shared, &target, keys).await;
                    }
                }
                Err(err) => {
                    pump.failed(batch);
                    tracing::debug!(target = %target, "hint delivery paused: {err}");
                }
            },
        }
    }
    progress
}

/// Delivers a batch: applied here when the target is this node (writes its store
/// refused for a moment), sent otherwise.
async fn send(shared: &Arc<Shared>, target: &str, entries: Vec<Entry>) -> Result<usize, PeerError> {
    let count = entries.len();
    if target == shared.me.name {
        shared
            .apply_noted(entries)
            .await
            .map_err(|e| PeerError(e.to_string()))?;
        return Ok(count);
    }
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
    match sent {
        Ok(Ok(Response::Replicated { .. })) => Ok(count),
        Ok(Ok(other)) => Err(PeerError(format!("unexpected answer {other:?}"))),
        Ok(Err(err)) => Err(err),
        Err(_) => {
            let why = format!(
                "no answer within {} ms",
                shared.config.replica_timeout.as_millis()
            );
            super::reach::lost(shared, target, &why);
            Err(PeerError(why))
        }
    }
}

/// Deletes hints; whether it could.
async fn delete(shared: &Shared, target: &str, keys: Vec<Vec<u8>>) -> bool {
    match shared.store.delete_hints(keys).await {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(target = %target, "hints not deleted: {err}");
            false
        }
    }
}
