//! What anti-entropy's books allow once exchanges have confirmed it: handing a
//! partition off to its new owners, and purging tombstones past the horizon. The
//! decisions are [`plan_upkeep`]'s; this carries them out through the store.

use super::*;
use crate::policy::{PURGE_BATCH_MAX, UpkeepInputs, plan_upkeep};

impl NodeCore {
    /// Drops partitions this node holds data of but no longer takes writes for, once
    /// every replica that counts for them has completed an exchange in agreement with
    /// it since it stopped (and since the placement changed): handoff is repair. With
    /// `purge`, also purges tombstones past the grace period from partitions whose
    /// every co-replica has completed an in-sync exchange with this node after them.
    pub(in crate::core) fn upkeep(&mut self, purge: bool, now: Now, store: &Store) {
        let view = self.view.clone();
        let with_data = store.partitions_with_data();
        let rules_wall = self.rules_wall_ms(now);
        let mono = now.mono().0;
        let plan = {
            let fill = &self.fill;
            let agreements = &self.books.agreements;
            let replica_set = |p: PartitionId| view.replica_set_of(p);
            let holders = |p: PartitionId| view.holders_of(p).map(str::to_string).collect();
            let released_at = |p: PartitionId| fill.released_at(p);
            let agreed = |p: PartitionId, peer: &str| agreements.as_of(p, peer, mono, rules_wall);
            let inputs = UpkeepInputs {
                me: &self.me.name,
                partitions: self.settings.partitions,
                with_data: &with_data,
                replica_set: &replica_set,
                holders: &holders,
                released_at: &released_at,
                placement_since: agreements.placement_since(),
                grace_horizon: self.grace_horizon(now),
                agreed: &agreed,
                purge,
            };
            plan_upkeep(&inputs, &mut self.arrivals)
        };
        for partition in plan.hand_off {
            self.store(
                StoreWork::DropPartition(partition),
                StorePurpose::Dropped { partition },
            );
        }
        for (partition, horizon) in plan.purge_below {
            let tombstones = match store.tombstones_before(partition, horizon, PURGE_BATCH_MAX) {
                Ok(tombstones) => tombstones,
                Err(err) => {
                    self.event(CoreEvent::StoreFailed {
                        what: "tombstone read",
                        why: err.to_string(),
                    });
                    continue;
                }
            };
            if !tombstones.is_empty() {
                self.store(
                    StoreWork::Purge(tombstones),
                    StorePurpose::Purged { partition },
                );
            }
        }
    }

    /// A partition was dropped (handed off), or tombstones purged.
    pub(in crate::core) fn upkeep_done(&mut self, purpose: StorePurpose, done: StoreDone) {
        match (purpose, done) {
            (StorePurpose::Dropped { partition }, StoreDone::Count(removed)) => {
                self.fill.handed_off(partition);
                let owners = self.view.replica_set_of(partition).counted;
                self.event(CoreEvent::HandedOff {
                    partition,
                    removed,
                    owners,
                });
            }
            (StorePurpose::Purged { partition }, StoreDone::Count(count)) => {
                if count > 0 {
                    self.event(CoreEvent::Purged { partition, count });
                }
            }
            (StorePurpose::Dropped { .. }, done) => self.event(CoreEvent::StoreFailed {
                what: "handoff drop",
                why: format!("{done:?}"),
            }),
            (_, done) => self.event(CoreEvent::StoreFailed {
                what: "purge",
                why: format!("{done:?}"),
            }),
        }
    }
}
