//! What anti-entropy's books allow once exchanges have confirmed it: handing a
//! partition off to its new owners, and purging tombstones past the horizon.

use super::*;

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
        if set.targets.iter().any(|t| t == me) {
            continue;
        }
        let Some(released) = shared
            .fill
            .lock()
            .expect("fill lock")
            .released_at(partition)
        else {
            continue;
        };
        let since = released.max(placement_since);
        let confirmed = !set.counted.is_empty()
            && set.counted.iter().all(|o| {
                shared
                    .anti_entropy
                    .in_sync_at(partition, o)
                    .is_some_and(|t| t >= since)
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
    let grace_horizon = purge_horizon(shared);
    for partition in 0..shared.settings.partitions {
        let set = view.replica_set_of(partition);
        if !set.targets.iter().any(|t| t == me) {
            continue;
        }
        let horizon = {
            let books = shared.anti_entropy.books.lock().expect("books lock");
            set.targets
                .iter()
                .filter(|r| *r != me)
                .map(|r| {
                    books
                        .in_sync
                        .get(&(partition, r.to_string()))
                        .copied()
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(grace_horizon)
                .min(grace_horizon)
        };
        if horizon == 0 {
            continue;
        }
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
