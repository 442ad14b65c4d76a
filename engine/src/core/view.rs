//! The cluster as this node believes it: members, placement, which members hold
//! which partitions' data, and who takes part in an operation. Built by the membership
//! task ([`super::cluster`]) and read by everything else.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::membership::{MemberId, MemberState, MemberView};
use crate::placement::{PartitionId, PartitionSet, Placement, ReplicaSet, partition_of};
use crate::policy::{Holding, may_hold_by_word};
use crate::storage::ClusterSettings;

/// What this node believes about the cluster: members, placement, and which members
/// hold which partitions' data.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This node's name.
    pub me: String,
    /// The cluster's settings.
    pub settings: ClusterSettings,
    /// Every member known, by name.
    pub members: Vec<MemberView>,
    /// Which members hold which partitions.
    pub placement: Arc<Placement>,
    /// The partitions each member holds the data of, as it last said (this node's own
    /// from its books). A member whose word is not known for its current life has none.
    pub filled: HashMap<String, PartitionSet>,
    /// What each other member (but those that left) may hold data of (see
    /// [`crate::policy::purge_horizon`]).
    pub holding: HashMap<String, Holding>,
    /// The fills among `filled` this node learned of lately: the stand-ins they ended
    /// stay write targets until the news has settled (see
    /// [`Placement::replica_set_settling`]).
    pub settling: HashMap<String, PartitionSet>,
    /// Members this node cannot reach directly although membership says they are
    /// alive.
    pub unreachable: BTreeSet<String>,
    /// Whether another member has spoken to this node since it started
    /// ([`crate::policy::unheard_refusal`]).
    pub heard: bool,
}

impl ClusterView {
    pub(crate) fn initial(
        me: &MemberId,
        settings: &ClusterSettings,
        filled: PartitionSet,
    ) -> ClusterView {
        ClusterView {
            me: me.name.clone(),
            settings: *settings,
            members: vec![MemberView {
                id: me.clone(),
                state: MemberState::Alive,
                swim_incarnation: 0,
                status: None,
                status_at: crate::base::Millis(0),
                since: crate::base::Millis(0),
            }],
            placement: Arc::new(Placement::compute_with_tokens(
                [(me.name.clone(), me.token().to_string())],
                settings.partitions,
                settings.replication_factor,
            )),
            filled: HashMap::from([(me.name.clone(), filled)]),
            holding: HashMap::new(),
            settling: HashMap::new(),
            unreachable: BTreeSet::new(),
            heard: false,
        }
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id.name == name)
    }

    /// The owners of `key` in placement.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<String> {
        let partition = partition_of(key, self.settings.partitions);
        self.placement
            .replicas(partition)
            .map(str::to_string)
            .collect()
    }

    /// Whether this node knows the status (the filled partitions) of every member in
    /// placement.
    pub fn statuses_known(&self) -> bool {
        self.placement
            .members()
            .iter()
            .all(|m| self.filled.contains_key(m))
    }

    /// The other members that may hold data of `partition`: those that say so, and
    /// those whose word this node cannot trust now (down, or not heard from).
    pub fn holders_of(&self, partition: PartitionId) -> impl Iterator<Item = &str> + '_ {
        self.holding
            .iter()
            .filter(move |(_, holding)| holding.may_hold(partition))
            .map(|(name, _)| name.as_str())
    }

    /// The other members that may hold data of `partition` by their last word, alive
    /// or not ([`may_hold_by_word`]): what a fill waits for beyond the counted replicas.
    pub fn holders_by_word(&self, partition: PartitionId) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.id.name != self.me)
            .filter(|m| may_hold_by_word(m, self.settings.partitions, partition))
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// Whether `name` holds the data of `partition`.
    pub fn is_filled(&self, name: &str, partition: PartitionId) -> bool {
        self.filled
            .get(name)
            .is_some_and(|set| set.contains(partition))
    }

    /// Who takes part in an operation on `key`.
    pub fn replica_set(&self, key: &[u8]) -> ReplicaSet {
        self.replica_set_of(partition_of(key, self.settings.partitions))
    }

    /// Who takes part in an operation on `partition`.
    pub fn replica_set_of(&self, partition: PartitionId) -> ReplicaSet {
        self.placement.replica_set_settling(
            partition,
            |n| self.is_filled(n, partition) && self.may_stand_in(n, partition),
            |n| self.is_settling(n, partition),
        )
    }

    /// Whether this node answers reads and prepares of `partition` as one of its
    /// replicas: when it owns it, or holds its data. Its word that it held the data
    /// may reach a coordinator after it let the partition go (it stopped taking the
    /// partition's writes then), and an answer from what it kept would hide every
    /// write made since.
    pub fn answers_for(&self, partition: PartitionId) -> bool {
        self.placement.holds(&self.me, partition) || self.is_filled(&self.me, partition)
    }

    /// Whether `name` may count for `partition` by its word: an owner always; any
    /// other member only while alive. A member that is not an owner gets the
    /// partition's writes only while it stands in, so the word of one that went down
    /// may be long out of date (it stopped being a target when the owners filled, and
    /// never came back to let the partition go); counted again when an owner loses its
    /// data, it would make quorums that miss values chosen since.
    fn may_stand_in(&self, name: &str, partition: PartitionId) -> bool {
        name == self.me
            || self.placement.holds(name, partition)
            || self
                .members
                .iter()
                .any(|m| m.id.name == name && m.state == MemberState::Alive)
    }

    /// Whether this node learned lately that `name` filled `partition`.
    pub fn is_settling(&self, name: &str, partition: PartitionId) -> bool {
        self.settling
            .get(name)
            .is_some_and(|set| set.contains(partition))
    }

    /// Partitions `name` takes writes for but does not hold the data of yet.
    pub fn filling_of(&self, name: &str) -> usize {
        (0..self.settings.partitions)
            .filter(|&p| !self.is_filled(name, p) && self.placement.holds(name, p))
            .count()
    }

    /// Members in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: MemberState) -> MemberView {
        MemberView {
            id: MemberId {
                name: name.to_string(),
                addr: "127.0.0.1:7000".parse().unwrap(),
                incarnation: 1,
                epoch_ms: 0,
                token: None,
                data_epoch: 0,
            },
            state,
            swim_incarnation: 0,
            status: None,
            status_at: crate::base::Millis(0),
            since: crate::base::Millis(0),
        }
    }

    /// A partition whose owner lost its data: a member that does not own it stands in
    /// while alive, and not once it is down (its word that it holds the data may be
    /// from before every write the owners took since).
    #[test]
    fn a_member_that_is_down_never_stands_in_for_an_owner() {
        let settings = ClusterSettings {
            cluster_id: [7; 16],
            partitions: 16,
            replication_factor: 3,
            tree_key: [9; 32],
        };
        let names = ["n1", "n2", "n3", "n4"];
        let placement = Placement::compute(names, 16, 3);
        let (p, owners, other) = (0..16)
            .find_map(|p| {
                let owners: Vec<String> = placement.replicas(p).map(str::to_string).collect();
                let other = names.iter().find(|n| !owners.iter().any(|o| o == *n))?;
                owners
                    .iter()
                    .any(|o| o == "n1")
                    .then(|| (p, owners.clone(), other.to_string()))
            })
            .expect("a partition n1 owns");
        let wiped = owners.iter().find(|o| *o != "n1").unwrap().clone();
        let me = member("n1", MemberState::Alive).id;
        let mut view = ClusterView::initial(&me, &settings, PartitionSet::all(16));
        view.placement = Arc::new(placement);
        for name in names {
            let mut filled = PartitionSet::all(16);
            if name == wiped {
                filled = PartitionSet::empty();
            }
            view.filled.insert(name.to_string(), filled);
        }
        view.members = names
            .iter()
            .map(|n| member(n, MemberState::Alive))
            .collect();
        let alive = view.replica_set_of(p);
        assert!(alive.counted.contains(&other), "{alive:?}");
        assert!(!alive.counted.contains(&wiped));

        for m in &mut view.members {
            if m.id.name == other {
                m.state = MemberState::Dead;
            }
        }
        let down = view.replica_set_of(p);
        assert!(!down.counted.contains(&other), "{down:?}");
        assert_eq!(down.counted.len(), 2, "{down:?}");
        // An owner's word counts whatever its state: it takes every write.
        for m in &mut view.members {
            if owners.contains(&m.id.name) && m.id.name != "n1" && m.id.name != wiped {
                m.state = MemberState::Dead;
            }
        }
        assert_eq!(view.replica_set_of(p).counted.len(), 2);
    }

    /// A former owner answers for a partition while it holds its data, and refuses once
    /// it let it go (a coordinator whose news is late may still count it).
    #[test]
    fn a_former_owner_answers_only_while_it_holds_the_data() {
        let settings = ClusterSettings {
            cluster_id: [7; 16],
            partitions: 16,
            replication_factor: 3,
            tree_key: [9; 32],
        };
        let before = Placement::compute(["n1", "n2", "n3"], 16, 3);
        let after = Placement::compute(["n1", "n2", "n3", "n4"], 16, 3);
        let (p, former) = (0..16)
            .find_map(|p| {
                let gone = before.replicas(p).find(|o| !after.holds(o, p))?;
                Some((p, gone.to_string()))
            })
            .expect("the join moves some partition");
        let names = ["n1", "n2", "n3", "n4"];
        let me = member("n1", MemberState::Alive).id;
        let mut view = ClusterView::initial(&me, &settings, PartitionSet::all(16));
        view.placement = Arc::new(after.clone());
        view.members = names
            .iter()
            .map(|n| member(n, MemberState::Alive))
            .collect();
        for name in names {
            view.filled.insert(name.to_string(), PartitionSet::all(16));
        }
        view.filled.insert(former.clone(), PartitionSet::empty());
        // As seen by the former owner itself: it answers while it holds the data.
        let mut own = view.clone();
        own.me = former.clone();
        assert!(!own.answers_for(p), "let go: refuses");
        own.filled.insert(former.clone(), PartitionSet::all(16));
        assert!(own.answers_for(p), "holds the data: answers");
    }
}
