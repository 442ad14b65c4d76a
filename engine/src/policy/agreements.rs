//! Anti-entropy's books of agreement, kept the same way by the runtime and the
//! simulator: for each partition and peer, when the last exchange that ended with both
//! in sync began, and when this node first saw the placement it has now. Fills,
//! handoff and purges are decided from these ([`super::plan_upkeep`],
//! [`crate::placement::Fill::update`]).

use std::collections::HashMap;

use super::Agreed;
use crate::placement::PartitionId;

/// The books; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agreements {
    at: HashMap<(PartitionId, String), Agreed>,
    /// The placement digest seen last, and when it was first seen (monotonic ms).
    placement: Option<(String, u64)>,
}

impl Agreements {
    /// `partitions` compared equal with `peer` in an exchange begun at `began` (on
    /// either side of it). An earlier agreement never replaces a later one.
    pub fn agreed(&mut self, peer: &str, partitions: &[PartitionId], began: Agreed) {
        for &p in partitions {
            let at = self.at.entry((p, peer.to_string())).or_insert(began);
            at.mono = at.mono.max(began.mono);
            at.wall = at.wall.max(began.wall);
        }
    }

    /// When the last agreement of `partition` with `peer` began, as it was recorded.
    pub fn get(&self, partition: PartitionId, peer: &str) -> Option<Agreed> {
        self.at.get(&(partition, peer.to_string())).copied()
    }

    /// As [`Agreements::get`], its wall time as the rules go by: its monotonic age
    /// taken back from `rules_wall` (so a wall clock that jumped since cannot move it).
    pub fn as_of(
        &self,
        partition: PartitionId,
        peer: &str,
        now_mono: u64,
        rules_wall: u64,
    ) -> Option<Agreed> {
        let at = self.get(partition, peer)?;
        Some(Agreed {
            mono: at.mono,
            wall: rules_wall.saturating_sub(now_mono.saturating_sub(at.mono)),
        })
    }

    /// The wall time of the oldest last agreement of `partition` with each of `peers`,
    /// if every one has agreed: what was written before it is on all of them.
    pub fn oldest_wall<'a>(
        &self,
        partition: PartitionId,
        mut peers: impl Iterator<Item = &'a str>,
    ) -> Option<u64> {
        peers.try_fold(u64::MAX, |oldest, peer| {
            Some(oldest.min(self.get(partition, peer)?.wall))
        })
    }

    /// Notes the placement seen now (its digest), keeping when it was first seen.
    pub fn note_placement(&mut self, digest: &str, now_mono: u64) {
        if self
            .placement
            .as_ref()
            .is_none_or(|(seen, _)| seen != digest)
        {
            self.placement = Some((digest.to_string(), now_mono));
        }
    }

    /// When this node first saw the placement it has now (monotonic ms), if it noted
    /// one: handoff waits for agreements after it.
    pub fn placement_since(&self) -> Option<u64> {
        self.placement.as_ref().map(|(_, since)| *since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono: u64, wall: u64) -> Agreed {
        Agreed { mono, wall }
    }

    #[test]
    fn a_later_agreement_wins_in_each_clock_and_the_oldest_covers_all_peers() {
        let mut books = Agreements::default();
        books.agreed("n2", &[1, 2], at(100, 5_000));
        books.agreed("n2", &[1], at(50, 6_000));
        assert_eq!(books.get(1, "n2"), Some(at(100, 6_000)));
        assert_eq!(books.get(3, "n2"), None);
        books.agreed("n3", &[1], at(200, 4_000));
        assert_eq!(books.oldest_wall(1, ["n2", "n3"].into_iter()), Some(4_000));
        assert_eq!(
            books.oldest_wall(2, ["n2", "n3"].into_iter()),
            None,
            "n3 never agreed on 2"
        );
        // 900 ms of monotonic age, whatever the wall clock did meanwhile.
        assert_eq!(books.as_of(1, "n2", 1_000, 20_000), Some(at(100, 19_100)));
    }

    #[test]
    fn the_placement_is_dated_from_when_it_was_first_seen() {
        let mut books = Agreements::default();
        assert_eq!(books.placement_since(), None);
        books.note_placement("a", 10);
        books.note_placement("a", 20);
        assert_eq!(books.placement_since(), Some(10));
        books.note_placement("b", 30);
        assert_eq!(books.placement_since(), Some(30));
    }
}
