//! What anti-entropy's confirmations allow after a run, decided in one place for the
//! runtime and the simulator: which partitions to hand off ([`may_hand_off`]) and below
//! which horizon each partition's tombstones may be purged ([`purge_horizon`]). The
//! plan changes nothing; its driver drops and purges, each through its own store path.

use super::{Agreed, TombstoneArrivals, may_hand_off, purge_horizon};
use crate::placement::{PartitionId, ReplicaSet};

/// What the plan is made from: the node's view and books at the end of a run.
pub struct UpkeepInputs<'a> {
    /// This node's name.
    pub me: &'a str,
    /// How many partitions the cluster has.
    pub partitions: u16,
    /// The partitions this node holds data of.
    pub with_data: &'a [PartitionId],
    /// A partition's replica set, as the node sees it now.
    pub replica_set: &'a dyn Fn(PartitionId) -> ReplicaSet,
    /// The other members that may hold data of a partition beyond its replicas.
    pub holders: &'a dyn Fn(PartitionId) -> Vec<String>,
    /// When this node stopped taking a partition's writes (wall ms), if it did.
    pub released_at: &'a dyn Fn(PartitionId) -> Option<u64>,
    /// When this node first saw the placement it has now (wall ms), if it noted one.
    pub placement_since: Option<u64>,
    /// Tombstones older than this (wall ms) are past the grace period.
    pub grace_horizon: u64,
    /// When the last exchange in agreement with a peer on a partition began.
    pub agreed: &'a dyn Fn(PartitionId, &str) -> Option<Agreed>,
    /// Whether to plan purges too (after a run that only filled, handoffs only).
    pub purge: bool,
}

/// What may be done now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// Partitions to drop: every replica that counts for them agreed with this node
    /// since it let them go.
    pub hand_off: Vec<PartitionId>,
    /// Partitions whose tombstones below the horizon (wall ms) may be purged.
    pub purge_below: Vec<(PartitionId, u64)>,
}

/// The upkeep `inputs` allow; `arrivals` forgets what every counted agreement covers.
pub fn plan_upkeep(inputs: &UpkeepInputs<'_>, arrivals: &mut TombstoneArrivals) -> Upkeep {
    let mut plan = Upkeep::default();
    if let Some(placement_since) = inputs.placement_since {
        for &p in inputs.with_data {
            let set = (inputs.replica_set)(p);
            let landed = arrivals.partition(p).and_then(|book| book.last_landed());
            let agreed_mono = |owner: &str| (inputs.agreed)(p, owner).map(|a| a.mono);
            if may_hand_off(
                inputs.me,
                &set,
                (inputs.released_at)(p),
                placement_since,
                landed,
                agreed_mono,
            ) {
                plan.hand_off.push(p);
            }
        }
    }
    for p in (0..inputs.partitions).filter(|_| inputs.purge) {
        let Some(book) = arrivals.partition(p) else {
            continue;
        };
        let set = (inputs.replica_set)(p);
        let holders = (inputs.holders)(p);
        let horizon = purge_horizon(
            inputs.me,
            &set,
            holders.iter().map(String::as_str),
            inputs.grace_horizon,
            book,
            |replica| (inputs.agreed)(p, replica),
        );
        if let Some(horizon) = horizon {
            plan.purge_below.push((p, horizon));
        }
    }
    plan
}
