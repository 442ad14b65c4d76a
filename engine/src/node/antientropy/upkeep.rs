//! What anti-entropy's books allow once exchanges have confirmed it: handing a
//! partition off to its new owners, and purging tombstones past the horizon.

use super::*;
use crate::policy::{PURGE_BATCH_MAX, may_hand_off, purge_horizon};

/// Drops partitions this node holds data of but no longer takes writes for, once every
/// replica that counts for them has completed an exchange in agreement with it since it
/// stopped (and since the placement changed): handoff is repair.
pub(super) async fn hand_off(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let placement_since = match &shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .placement
    {
        Some((_, since)) => *since,
        None => return,
    };
    for partition in shared.store.partitions_with_data() {
        let set = view.replica_set_of(partition);
        let released = shared
            .fill
            .lock()
            .expect("fill lock")
            .released_at(partition);
        let landed = shared
            .arrivals
            .with(|a| a.partition(partition).and_then(|b| b.last_landed()));
        let confirmed = may_hand_off(me, &set, released, placement_since, landed, |owner| {
            shared
                .anti_entropy
                .agreed_at(partition, owner)
                .map(|at| at.0)
        });
        if !confirmed {
            continue;
        }
        match shared.store.drop_partition(partition).await {
            Ok(removed) => {
                shared.fill.lock().expect("fill lock").handed_off(partition);
                tracing::info!(partition, removed, owners = ?set.counted, "partition handed off to its owners; dropped here")
            }
            Err(err) => tracing::error!(partition, "handoff drop failed: {err}"),
        }
    }
}

/// Purges tombstones past the grace period from partitions whose every co-replica has
/// completed an in-sync exchange with this node after them.
pub(super) async fn purge(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let grace_horizon = grace_horizon(shared);
    for partition in 0..shared.settings.partitions {
        let set = view.replica_set_of(partition);
        let holders = view.holders_of(partition);
        let horizon = shared.arrivals.with(|arrivals| {
            let arrivals = arrivals.partition(partition)?;
            purge_horizon(me, &set, holders, grace_horizon, arrivals, |replica| {
                agreed(shared, partition, replica)
            })
        });
        let Some(horizon) = horizon else {
            continue;
        };
        let Ok(tombstones) = shared
            .store
            .tombstones_before(partition, horizon, PURGE_BATCH_MAX)
        else {
            continue;
        };
        if tombstones.is_empty() {
            continue;
        }
        match shared.store.purge(tombstones).await {
            Ok(purged) if purged > 0 => tracing::info!(partition, purged, "tombstones purged"),
            Ok(_) => {}
            Err(err) => tracing::error!(partition, "purge failed: {err}"),
        }
    }
}
