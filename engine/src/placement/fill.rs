//! Which partitions a node holds the data of: the books behind [`ReplicaSet`]'s rule
//! that a quorum never rests on a replica that holds nothing.
//!
//! A node holds a partition's data ("has filled it") when it owned the partition since
//! the cluster began, or when, after it started taking the partition's writes, it
//! completed exchanges that ended in agreement with every replica then counted for the
//! partition: every write acknowledged before is on those replicas (a quorum of them
//! for `quorum`, one for `one`), and each exchange brought over everything its peer
//! holds. Every write after reaches the node itself, as a target.
//!
//! Every counted replica, not only a quorum of them: a quorum would do when the rest
//! are healthy, but a node refilling a wiped disk while another replica is down would
//! then count after copying from the one left, which may lack writes only the down one
//! and the old disk had. So a counted replica that is down holds the fill back until it
//! returns or is removed (`vergent remove`), as Cassandra's bootstrap refuses to stream
//! from fewer sources than the range's replicas. A node that stops taking a
//! partition's writes (placement moved it away, or a stand-in is no longer needed)
//! forgets that it held the data, since from then on it misses writes.
//!
//! When no member counts for a partition (each owner lost track of its data and no
//! earlier holder is left to stand in), a node fills it from every other owner instead:
//! their union is all the cluster has, and otherwise the partition would refuse every
//! quorum for good.
//!
//! The exact rule for counting is in [`Placement::replica_set`]. The books are pure:
//! the node feeds them its view, the other members' filled sets, the times of its
//! exchanges and the time, and stores what they say.

use std::collections::{BTreeMap, HashMap};

use super::{PartitionId, PartitionSet, Placement, ReplicaSet};

/// One node's fill state; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fill {
    filled: PartitionSet,
    /// Partitions this node takes writes for without holding their data, with the
    /// time (ms) it started taking them.
    filling_since: BTreeMap<PartitionId, u64>,
    /// Partitions this node stopped taking writes for while it still holds data of
    /// them, with the time (ms) it stopped: handoff waits for exchanges after that.
    released_at: BTreeMap<PartitionId, u64>,
}

/// What [`Fill::update`] changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FillChange {
    /// Partitions this node now holds the data of.
    pub filled: Vec<PartitionId>,
    /// Partitions it no longer counts for.
    pub released: Vec<PartitionId>,
}

impl FillChange {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.filled.is_empty() && self.released.is_empty()
    }
}

impl Fill {
    /// Books starting from the partitions a node is known to hold.
    pub fn new(filled: PartitionSet) -> Fill {
        Fill {
            filled,
            ..Fill::default()
        }
    }

    /// The partitions this node holds the data of.
    pub fn filled(&self) -> &PartitionSet {
        &self.filled
    }

    /// Partitions this node takes writes for and is still filling.
    pub fn filling(&self) -> impl Iterator<Item = PartitionId> + '_ {
        self.filling_since.keys().copied()
    }

    /// When this node stopped taking `partition`'s writes, if it did and holds data of it.
    pub fn released_at(&self, partition: PartitionId) -> Option<u64> {
        self.released_at.get(&partition).copied()
    }

    /// Forgets `partition`'s release once its data is gone.
    pub fn handed_off(&mut self, partition: PartitionId) {
        self.released_at.remove(&partition);
    }

    /// Forgets holding the data of every partition `owns` says this node does not own,
    /// as released now (see `NodeCore::forget_unowned_fills`); how many.
    pub fn forget_unowned(&mut self, owns: impl Fn(PartitionId) -> bool, now: u64) -> usize {
        let unowned: Vec<PartitionId> = self.filled.iter().filter(|&p| !owns(p)).collect();
        for &p in &unowned {
            self.filled.remove(p);
            self.filling_since.remove(&p);
            self.released_at.entry(p).or_insert(now);
        }
        unowned.len()
    }

    /// Forgets everything: this node's data cannot be trusted (it was removed from the
    /// cluster in an earlier life, or left it, and writes went on without it).
    pub fn clear(&mut self) {
        self.filled = PartitionSet::empty();
        self.filling_since.clear();
    }

    /// The replica set of `partition` as the rest of the cluster computes it
    /// (`settling`: fills this node learned of lately, see [`FillNews`]).
    pub fn replica_set(
        &self,
        me: &str,
        placement: &Placement,
        others_filled: impl Fn(&str, PartitionId) -> bool,
        settling: impl Fn(&str, PartitionId) -> bool,
        partition: PartitionId,
    ) -> ReplicaSet {
        placement.replica_set_settling(
            partition,
            |n| {
                if n == me {
                    self.filled.contains(partition)
                } else {
                    others_filled(n, partition)
                }
            },
            |n| settling(n, partition),
        )
    }

    /// Brings the books up to date: partitions this node no longer takes writes for are
    /// released, partitions it newly takes writes for start filling, and a filling
    /// partition is filled once every counted replica has ended an exchange with this
    /// node in agreement (`in_sync(partition, peer)`, the time the exchange began) since,
    /// and so has every other member that may hold data of it (`holders(partition)`). `statuses_known`: whether every member's status is
    /// known (see [`ReplicaSet::fill_sources`]).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        me: &str,
        placement: &Placement,
        others_filled: impl Fn(&str, PartitionId) -> bool,
        settling: impl Fn(&str, PartitionId) -> bool,
        holders: impl Fn(PartitionId) -> Vec<String>,
        in_sync: impl Fn(PartitionId, &str) -> Option<u64>,
        statuses_known: bool,
        now: u64,
    ) -> FillChange {
        let mut change = FillChange::default();
        for partition in 0..placement.partitions() {
            let set = self.replica_set(me, placement, &others_filled, &settling, partition);
            let target = set.targets.iter().any(|t| t == me);
            if target {
                self.released_at.remove(&partition);
            } else {
                self.filling_since.remove(&partition);
                if self.filled.remove(partition) {
                    change.released.push(partition);
                }
                self.released_at.entry(partition).or_insert(now);
                continue;
            }
            if self.filled.contains(partition) {
                continue;
            }
            let since = *self.filling_since.entry(partition).or_insert(now);
            let sources = set.fill_sources(me, statuses_known, &holders(partition));
            let caught_up = !sources.is_empty()
                && sources
                    .iter()
                    .all(|s| in_sync(partition, s).is_some_and(|t| t >= since));
            if caught_up {
                self.filled.insert(partition);
                self.filling_since.remove(&partition);
                change.filled.push(partition);
            }
        }
        change
    }

    /// The replicas to exchange `partition` with to fill it: the ones that count and the
    /// other members that may hold data of it ([`ReplicaSet::fill_sources`]).
    #[allow(clippy::too_many_arguments)]
    pub fn sources(
        &self,
        me: &str,
        placement: &Placement,
        others_filled: impl Fn(&str, PartitionId) -> bool,
        settling: impl Fn(&str, PartitionId) -> bool,
        holders: &[String],
        partition: PartitionId,
        statuses_known: bool,
    ) -> Vec<String> {
        self.replica_set(me, placement, others_filled, settling, partition)
            .fill_sources(me, statuses_known, holders)
    }
}

/// How long after this node learns that a member filled a partition it keeps writing
/// to the stand-in that fill ended: time for the news to reach every member by its
/// status (published every second and gossiped), so that none counts the stand-in
/// while this node no longer writes to it. Cassandra waits out a ring delay for the
/// same reason.
pub const FILL_SETTLE_MS: u64 = 10_000;

/// When this node learned of each member's fills, until the news has settled
/// ([`FILL_SETTLE_MS`]). A fill is news when the partition was not in what the member
/// said before (or the member was not heard from before: a node that has just started
/// cannot tell an old fill from a new one, and news it learns all at once ends no
/// stand-in in its own view).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillNews {
    seen: HashMap<String, PartitionSet>,
    learned: HashMap<String, BTreeMap<PartitionId, u64>>,
}

impl FillNews {
    /// Takes in what every member (this one included) holds now, by name.
    pub fn observe(&mut self, filled: &HashMap<String, PartitionSet>, now: u64) {
        for (name, set) in filled {
            let before = self.seen.get(name);
            if before == Some(set) {
                continue;
            }
            for partition in set.iter() {
                if !before.is_some_and(|b| b.contains(partition)) {
                    self.learned
                        .entry(name.clone())
                        .or_default()
                        .insert(partition, now);
                }
            }
            self.seen.insert(name.clone(), set.clone());
        }
        self.seen.retain(|name, _| filled.contains_key(name));
        self.learned.retain(|name, learned| {
            let Some(set) = filled.get(name) else {
                return false;
            };
            learned.retain(|&p, at| now < at.saturating_add(FILL_SETTLE_MS) && set.contains(p));
            !learned.is_empty()
        });
    }

    /// Whether this node learned lately that `name` filled `partition`.
    pub fn settling(&self, name: &str, partition: PartitionId, now: u64) -> bool {
        self.learned
            .get(name)
            .and_then(|learned| learned.get(&partition))
            .is_some_and(|&at| now < at.saturating_add(FILL_SETTLE_MS))
    }

    /// The partitions each member filled lately, by name.
    pub fn settling_sets(&self, now: u64) -> HashMap<String, PartitionSet> {
        self.learned
            .iter()
            .map(|(name, learned)| {
                let mut set = PartitionSet::empty();
                for (&p, &at) in learned {
                    if now < at.saturating_add(FILL_SETTLE_MS) {
                        set.insert(p);
                    }
                }
                (name.clone(), set)
            })
            .filter(|(_, set)| !set.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsettled(_: &str, _: PartitionId) -> bool {
        false
    }

    /// No member that does not count holds any data.
    fn empty(_: PartitionId) -> Vec<String> {
        Vec::new()
    }

    /// At start a node keeps counting only for the partitions it owns: the others it
    /// held as a stand-in or a former owner, and took no writes for while it was down.
    #[test]
    fn a_restart_forgets_the_partitions_this_node_does_not_own() {
        let placement = Placement::compute(["n1", "n2", "n3", "n4"], 8, 3);
        let mut fill = Fill::new(PartitionSet::all(8));
        let forgotten = fill.forget_unowned(|p| placement.holds("n4", p), 7);
        let owned: Vec<PartitionId> = placement.partitions_of("n4").collect();
        assert_eq!(forgotten, 8 - owned.len());
        assert_eq!(fill.filled().iter().collect::<Vec<_>>(), owned);
        for p in (0..8).filter(|p| !owned.contains(p)) {
            assert_eq!(fill.released_at(p), Some(7), "kept as data to hand off");
        }
    }

    #[test]
    fn a_new_owner_fills_after_exchanges_with_every_counted_replica_since_it_started() {
        let before = Placement::compute(["n1", "n2", "n3"], 8, 3);
        let after = Placement::compute(["n1", "n2", "n3", "n4"], 8, 3);
        let old = |n: &str, p: PartitionId| before.holds(n, p);
        let update = |fill: &mut Fill, in_sync: &dyn Fn(PartitionId, &str) -> Option<u64>, now| {
            fill.update("n4", &after, old, unsettled, empty, in_sync, true, now)
        };
        let mut fill = Fill::new(PartitionSet::empty());
        // Exchanges before it took writes do not count.
        let change = update(&mut fill, &|_, _| Some(5), 10);
        assert!(change.filled.is_empty());
        let held: Vec<PartitionId> = after.partitions_of("n4").collect();
        assert_eq!(fill.filling().collect::<Vec<_>>(), held);
        for &p in &held {
            let mut sources = fill.sources("n4", &after, old, unsettled, &[], p, true);
            sources.sort();
            let mut owners: Vec<String> = before.replicas(p).map(str::to_string).collect();
            owners.sort();
            assert_eq!(sources, owners);
        }
        // One source short (down, or not yet exchanged with): still filling.
        let change = update(&mut fill, &|_, s| (s != "n1").then_some(20), 30);
        assert!(change.filled.iter().all(|&p| !before.holds("n1", p)));
        let change = update(&mut fill, &|_, _| Some(40), 50);
        assert_eq!(fill.filled().len(), held.len());
        assert_eq!(fill.filling().count(), 0);
        assert!(change.released.is_empty());
    }

    #[test]
    fn a_stand_in_releases_a_partition_once_the_new_owner_has_filled_it() {
        let before = Placement::compute(["n1", "n2", "n3"], 8, 3);
        let after = Placement::compute(["n1", "n2", "n3", "n4"], 8, 3);
        let moved: Vec<PartitionId> = (0..8).filter(|&p| after.holds("n4", p)).collect();
        let displaced = |p: PartitionId| {
            before
                .replicas(p)
                .find(|r| !after.holds(r, p))
                .unwrap()
                .to_string()
        };
        let p = moved[0];
        let stand_in = displaced(p);
        let mut fill = Fill::new(before.partitions_of(&stand_in).fold(
            PartitionSet::empty(),
            |mut s, p| {
                s.insert(p);
                s
            },
        ));
        // n4 still filling: the stand-in keeps counting.
        let n4_filling = |n: &str, q: PartitionId| n != "n4" && before.holds(n, q);
        let change = fill.update(
            &stand_in,
            &after,
            n4_filling,
            unsettled,
            empty,
            |_, _| None,
            true,
            10,
        );
        assert!(!change.released.contains(&p));
        assert!(fill.filled().contains(p));
        // n4 filled: released, and handoff waits for exchanges after now.
        let n4_done = |n: &str, q: PartitionId| n == "n4" || before.holds(n, q);
        let change = fill.update(
            &stand_in,
            &after,
            n4_done,
            unsettled,
            empty,
            |_, _| None,
            true,
            20,
        );
        assert!(change.released.contains(&p));
        assert!(!fill.filled().contains(p));
        assert_eq!(fill.released_at(p), Some(20));
    }

    /// Every owner of a partition lost track of its data and nobody stands in: an owner
    /// fills it from the other owners, once it has exchanged with each of them.
    #[test]
    fn with_nobody_counted_an_owner_fills_from_every_other_owner() {
        let placement = Placement::compute(["n1", "n2", "n3", "n4", "n5"], 16, 3);
        let p = 2;
        let owners: Vec<String> = placement.replicas(p).map(str::to_string).collect();
        let me = owners[0].clone();
        let nobody = |_: &str, _: PartitionId| false;
        let mut fill = Fill::new(PartitionSet::empty());
        fill.update(
            &me,
            &placement,
            nobody,
            unsettled,
            empty,
            |_, _| None,
            true,
            10,
        );
        assert!(fill.filling().any(|q| q == p));
        let mut sources = fill.sources(&me, &placement, nobody, unsettled, &[], p, true);
        sources.sort();
        assert_eq!(sources, owners[1..].to_vec());
        // One owner not yet exchanged with: still filling.
        let change = fill.update(
            &me,
            &placement,
            nobody,
            unsettled,
            empty,
            |_, s| (s == owners[1]).then_some(20),
            true,
            30,
        );
        assert!(!change.filled.contains(&p));
        // Not every member's status known yet: "nobody counts" may only mean unheard
        // of, so the owners alone do not fill it.
        assert!(
            fill.sources(&me, &placement, nobody, unsettled, &[], p, false)
                .is_empty()
        );
        let change = fill.update(
            &me,
            &placement,
            nobody,
            unsettled,
            empty,
            |_, _| Some(40),
            false,
            45,
        );
        assert!(!change.filled.contains(&p));
        let change = fill.update(
            &me,
            &placement,
            nobody,
            unsettled,
            empty,
            |_, _| Some(40),
            true,
            50,
        );
        assert!(change.filled.contains(&p));
        assert!(fill.filled().contains(p));
    }

    /// The seed-285 shape: a write acknowledged by two owners, one of which then refills
    /// (its name was used by another process; it kept its disk) while the other loses its
    /// word. The owner filling now must wait for the refilling one, which alone may still
    /// hold the write: filling from the one counted replica would count it without it.
    #[test]
    fn an_owner_that_refills_on_its_disk_holds_a_fill_back_until_exchanged_with() {
        let placement = Placement::compute(["n1", "n2", "n3", "n4", "n5"], 16, 3);
        let p = 5;
        let owners: Vec<String> = placement.replicas(p).map(str::to_string).collect();
        let (me, counted, refilling) = (&owners[0], &owners[1], &owners[2]);
        // Only `counted` holds the data as far as the books know; nobody stands in.
        let filled = |n: &str, _: PartitionId| n == counted;
        let kept_disk = |_: PartitionId| vec![refilling.clone()];
        let nobody_else = |_: PartitionId| Vec::new();
        let update = |fill: &mut Fill,
                      holders: &dyn Fn(PartitionId) -> Vec<String>,
                      in_sync: &dyn Fn(PartitionId, &str) -> Option<u64>,
                      now: u64| {
            fill.update(
                me, &placement, filled, unsettled, holders, in_sync, true, now,
            )
        };
        let mut fill = Fill::new(PartitionSet::empty());
        update(&mut fill, &kept_disk, &|_, _| None, 10);
        let mut sources = fill.sources(me, &placement, filled, unsettled, &kept_disk(p), p, true);
        sources.sort();
        let mut expected = vec![counted.clone(), refilling.clone()];
        expected.sort();
        assert_eq!(sources, expected);
        let only_counted = |_: PartitionId, s: &str| (s == counted).then_some(20);
        let change = update(&mut fill, &kept_disk, &only_counted, 30);
        assert!(
            !change.filled.contains(&p),
            "filled without the owner that kept its disk"
        );
        // An owner that refills on an empty disk holds nothing back.
        let change = update(&mut fill, &nobody_else, &only_counted, 40);
        assert!(change.filled.contains(&p));
        // Exchanged with both: filled.
        let mut fill = Fill::new(PartitionSet::empty());
        update(&mut fill, &kept_disk, &|_, _| None, 10);
        let change = update(&mut fill, &kept_disk, &|_, _| Some(20), 30);
        assert!(change.filled.contains(&p));
    }
}
