//! What anti-entropy's books allow once exchanges have confirmed it: handing a
//! partition off to its new owners, and purging tombstones past the horizon. The
//! decisions are [`plan_upkeep`]'s, which the simulator makes too; this carries them
//! out through the store's writer.

use std::collections::BTreeMap;

use super::*;
use crate::policy::{PURGE_BATCH_MAX, UpkeepInputs, plan_upkeep};

/// Drops partitions this node holds data of but no longer takes writes for, once every
/// replica that counts for them has completed an exchange in agreement with it since it
/// stopped (and since the placement changed): handoff is repair. With `purge`, also
/// purges tombstones past the grace period from partitions whose every co-replica has
/// completed an in-sync exchange with this node after them.
pub(super) async fn upkeep(shared: &Arc<Shared>, purge: bool) {
    let plan = {
        let view = shared.view();
        let with_data = shared.store.partitions_with_data();
        let released: BTreeMap<PartitionId, Option<u64>> = {
            let fill = shared.fill.lock().expect("fill lock");
            with_data
                .iter()
                .map(|&p| (p, fill.released_at(p)))
                .collect()
        };
        let placement_since = shared
            .anti_entropy
            .books
            .lock()
            .expect("books lock")
            .agreements
            .placement_since();
        let replica_set = |p: PartitionId| view.replica_set_of(p);
        let holders = |p: PartitionId| view.holders_of(p).map(str::to_string).collect();
        let released_at = |p: PartitionId| released.get(&p).copied().flatten();
        let agreed = |p: PartitionId, peer: &str| agreed(shared, p, peer);
        let inputs = UpkeepInputs {
            me: &shared.me.name,
            partitions: shared.settings.partitions,
            with_data: &with_data,
            replica_set: &replica_set,
            holders: &holders,
            released_at: &released_at,
            placement_since,
            grace_horizon: grace_horizon(shared),
            agreed: &agreed,
            purge,
        };
        shared
            .arrivals
            .with(|arrivals| plan_upkeep(&inputs, arrivals))
    };
    for partition in plan.hand_off {
        match shared.store.drop_partition(partition).await {
            Ok(removed) => {
                shared.fill.lock().expect("fill lock").handed_off(partition);
                let owners = shared.view().replica_set_of(partition).counted;
                tracing::info!(
                    partition,
                    removed,
                    ?owners,
                    "partition handed off to its owners; dropped here"
                )
            }
            Err(err) => tracing::error!(partition, "handoff drop failed: {err}"),
        }
    }
    for (partition, horizon) in plan.purge_below {
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
