//! Which partitions an anti-entropy run compares with which peer, decided in one place
//! for the runtime and the simulator.

use std::collections::BTreeMap;

use crate::placement::{PartitionId, ReplicaSet};

/// Which partitions a run covers.
#[derive(Debug, Clone, Copy)]
pub enum RunScope<'a> {
    /// Every partition (or one, for `vergent repair --partition`).
    All(Option<PartitionId>),
    /// Only these, with only the replicas that count: filling this node's partitions.
    Fill(&'a [PartitionId]),
}

/// What the plan is made from: the node's view at the start of a run.
pub struct RunInputs<'a> {
    /// This node's name.
    pub me: &'a str,
    /// How many partitions the cluster has.
    pub partitions: u16,
    /// A partition's replica set, as the node sees it now.
    pub replica_set: &'a dyn Fn(PartitionId) -> ReplicaSet,
    /// The partitions this node holds data of.
    pub with_data: &'a [PartitionId],
    /// Whether this node knows every member's status (see [`ReplicaSet::fill_sources`]).
    pub statuses_known: bool,
    /// The other members that may hold data of a partition by their word (see
    /// [`ReplicaSet::fill_sources`]).
    pub holders: &'a dyn Fn(PartitionId) -> Vec<String>,
    /// Whether a peer may be compared with now (live, and not excluded).
    pub peer: &'a dyn Fn(&str) -> bool,
}

/// Every peer to compare with and its partitions, by peer name: those both take writes
/// for (owners and stand-ins), plus those this node holds data of without taking their
/// writes any more, with the replicas that count for them (handoff); for a fill, only
/// the replicas the partition fills from.
pub fn plan_runs(
    inputs: &RunInputs<'_>,
    scope: RunScope<'_>,
) -> BTreeMap<String, Vec<PartitionId>> {
    let partitions: Vec<PartitionId> = match scope {
        RunScope::All(None) => (0..inputs.partitions).collect(),
        RunScope::All(Some(p)) => vec![p],
        RunScope::Fill(partitions) => partitions.to_vec(),
    };
    let me = inputs.me;
    let mut per_peer: BTreeMap<String, Vec<PartitionId>> = BTreeMap::new();
    for p in partitions {
        let set = (inputs.replica_set)(p);
        let mine = set.targets.iter().any(|t| t == me);
        let peers: Vec<String> = match scope {
            RunScope::Fill(_) => set.fill_sources(me, inputs.statuses_known, &(inputs.holders)(p)),
            RunScope::All(_) if mine => set.targets,
            RunScope::All(_) if inputs.with_data.contains(&p) => set.counted,
            RunScope::All(_) => continue,
        };
        for peer in peers {
            if peer != me && (inputs.peer)(&peer) {
                per_peer.entry(peer).or_default().push(p);
            }
        }
    }
    per_peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::set;

    #[test]
    fn owners_compare_with_every_target_and_an_old_owner_with_the_counted_ones() {
        // Partition 0: n1 owns it with n2 and n3 (n4 filling, a target). Partition 1: n1
        // let it go to n2, n3, n4 and still holds its data. Partition 2: n1 never held it.
        let sets = [
            set(&["n1", "n2", "n3", "n4"], &["n1", "n2", "n3"]),
            set(&["n2", "n3", "n4"], &["n2", "n3", "n4"]),
            set(&["n2", "n3", "n5"], &["n2", "n3", "n5"]),
        ];
        let replica_set = |p: PartitionId| sets[usize::from(p)].clone();
        let live = |peer: &str| peer != "n3";
        let inputs = RunInputs {
            me: "n1",
            partitions: 3,
            replica_set: &replica_set,
            with_data: &[0, 1],
            statuses_known: true,
            holders: &|_| Vec::new(),
            peer: &live,
        };
        let plan = plan_runs(&inputs, RunScope::All(None));
        let expected: BTreeMap<String, Vec<PartitionId>> = [
            ("n2".to_string(), vec![0, 1]),
            ("n4".to_string(), vec![0, 1]),
        ]
        .into_iter()
        .collect();
        assert_eq!(plan, expected, "n3 is not live; n5 shares nothing n1 holds");
        let fill = plan_runs(&inputs, RunScope::Fill(&[0]));
        let expected: BTreeMap<String, Vec<PartitionId>> =
            [("n2".to_string(), vec![0])].into_iter().collect();
        assert_eq!(fill, expected, "a fill asks only the replicas that count");
    }
}
