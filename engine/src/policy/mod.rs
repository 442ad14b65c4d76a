//! The rules a node lives by between the mechanisms: which hints to deliver, in what
//! batches, and which to drop; when a partition it no longer owns may be dropped
//! (handoff); which tombstones may be purged; which partitions a run compares with
//! which peer. Each rule is a pure function of the
//! node's books and the time it is given, so the runtime and the simulator apply the
//! same rule to the same inputs: a rule the simulator runs is the rule that ships.
//!
//! Times are the node's wall milliseconds (exchange starts, releases, tombstone
//! versions) unless named `mono`: the node's monotonic milliseconds, which agreements
//! and arrivals are kept in.

mod agreements;
mod arrivals;
mod hints;
mod runs;
mod schedule;
mod upkeep;

pub use self::agreements::Agreements;
pub use self::arrivals::{PartitionArrivals, SPAN_MS, SPANS_MAX, TombstoneArrivals};
pub use self::hints::{HINT_SET_ASIDE_MS, HintContext, HintPump, HintWork, HintsDeleted};
pub use self::runs::{RunInputs, RunScope, plan_runs};
pub use self::schedule::{FILL_RETRY_MS, FIRST_RUN_DELAY_MS, RunDue, RunSchedule, WAKE_DELAY_MS};
pub use self::upkeep::{Upkeep, UpkeepInputs, plan_upkeep};

use crate::membership::{MemberState, MemberView};
use crate::placement::{PartitionId, PartitionSet, ReplicaSet};
use crate::storage::StoredHint;

/// Most partitions a status lists in `also_holding`; past it the status says "any".
pub const ALSO_HOLDING_LISTED_MAX: usize = 32;

/// Hints sent in one delivery batch.
pub const HINT_BATCH_MAX: usize = 256;
/// Value bytes sent in one delivery batch.
pub const HINT_BATCH_BYTES_MAX: usize = 1 << 20;
/// Tombstones purged per partition per anti-entropy run.
pub const PURGE_BATCH_MAX: usize = 10_000;

/// What to do with the hints waiting for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintTarget {
    /// Send them now.
    Deliver,
    /// Keep them: the target is down or cannot be reached; delivery resumes when it
    /// answers again.
    Wait,
    /// Drop them all: the target left the cluster (or is unknown), and its partitions
    /// have new owners that anti-entropy fills.
    Drop,
}

/// The rule for `target`'s hints, from this node's view of it: its state (`None`
/// when the view does not know it) and whether it answers.
pub fn hint_target(
    me: &str,
    target: &str,
    state: Option<MemberState>,
    reachable: bool,
) -> HintTarget {
    if target == me {
        // Hints for oneself are writes this node's own store refused for a moment.
        return HintTarget::Deliver;
    }
    match state {
        None | Some(MemberState::Left) => HintTarget::Drop,
        Some(state) if !state.is_live() => HintTarget::Wait,
        Some(_) if !reachable => HintTarget::Wait,
        Some(_) => HintTarget::Deliver,
    }
}

/// Splits a batch into the hints past the window (`wall_now - window_ms`), which are
/// dropped and left to anti-entropy, and those still to deliver.
pub fn split_expired(
    batch: Vec<StoredHint>,
    wall_now: u64,
    window_ms: u64,
) -> (Vec<StoredHint>, Vec<StoredHint>) {
    let horizon = wall_now.saturating_sub(window_ms);
    batch.into_iter().partition(|h| h.hint.created_ms < horizon)
}

/// Whether this node may drop `partition`, which it holds data of but no longer takes
/// writes for: every replica that counts for it has completed an exchange in agreement
/// with this node since it was released here, since the placement last changed, and
/// since the last write landed here (`last_landed`, monotonic ms from
/// [`PartitionArrivals::last_landed`]; `None` while a write is in flight): a late hint
/// or a write from a member with an old placement lands after the release. Handoff is
/// repair: the new owners have everything this node held.
pub fn may_hand_off(
    me: &str,
    set: &ReplicaSet,
    released_at: Option<u64>,
    placement_since: u64,
    last_landed: Option<u64>,
    in_sync_at: impl Fn(&str) -> Option<u64>,
) -> bool {
    if set.targets.iter().any(|t| t == me) {
        return false;
    }
    let (Some(released), Some(landed)) = (released_at, last_landed) else {
        return false;
    };
    // An agreement that began in the millisecond a write landed may not have seen it.
    let since = released.max(placement_since).max(landed + 1);
    !set.counted.is_empty()
        && set
            .counted
            .iter()
            .all(|owner| in_sync_at(owner).is_some_and(|t| t >= since))
}

/// What another member may hold data of, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// These partitions.
    Partitions(PartitionSet),
    /// Possibly any: it is not alive here (down or suspected, it may have taken data
    /// since its last word), its word for its current data is not known, or it had too much to list.
    Any,
}

impl Holding {
    /// Whether it may hold data of `partition`.
    pub fn may_hold(&self, partition: PartitionId) -> bool {
        match self {
            Holding::Partitions(set) => set.contains(partition),
            Holding::Any => true,
        }
    }
}

/// Why this node may not coordinate a write yet, as far as the cluster's knowledge of it
/// goes: its view lists other members (`others_known`) and none has spoken to it since
/// it started (`heard`). It may be a node nobody knows of, admitted by a seed and cut
/// off before its announcement reached anyone: the others purge tombstones without
/// waiting for it, and a value it stored would come back over deletes they
/// acknowledged. A node alone in its cluster is not held back.
pub fn unheard_refusal(others_known: bool, heard: bool) -> Option<&'static str> {
    (others_known && !heard).then_some(
        "unavailable: no other member has spoken to this node since it started, so the cluster may not know of it yet; it coordinates no writes until one does",
    )
}

/// The partitions `member` says it holds the data of, if its word counts: its last
/// status speaks for the data it was said of (a node back with an empty disk has a new
/// data epoch, and holds nothing until it says so; a node restarted on its data holds
/// what it held), and fits the cluster's partitions.
pub fn filled_word(member: &MemberView, partitions: u16) -> Option<&PartitionSet> {
    member
        .status
        .as_ref()
        .filter(|s| member.id.same_data(s.data_epoch) && s.filled.fits(partitions))
        .map(|s| &s.filled)
}

/// Whether `member` may hold data of `partition` by its last word, alive or not: the
/// partitions its status lists (filled, or held beyond that), or any when it has no
/// word for its current data (never heard from, another process under its name, a
/// status for other data) or had too much to list. A member that left holds nothing
/// that counts. What a fill waits for beyond the replicas that count: a member that
/// kept a write on its disk while it stopped counting may be the only one that has it.
pub fn may_hold_by_word(member: &MemberView, partitions: u16, partition: PartitionId) -> bool {
    if member.state == MemberState::Left {
        return false;
    }
    let Some(filled) = filled_word(member, partitions) else {
        return true;
    };
    let also = member.status.as_ref().and_then(|s| s.also_holding.as_ref());
    filled.contains(partition) || also.is_none_or(|also| also.contains(&partition))
}

/// What `member` may hold, from its state and last status. `None` for a member that
/// left: what it kept does not count (a name that comes back refills).
pub fn holding_of(member: &MemberView, partitions: u16) -> Option<Holding> {
    if member.state == MemberState::Left {
        return None;
    }
    let status = member
        .status
        .as_ref()
        .filter(|s| member.state == MemberState::Alive && member.id.same_data(s.data_epoch))
        .filter(|s| s.filled.fits(partitions));
    let Some(status) = status else {
        return Some(Holding::Any);
    };
    let Some(also) = &status.also_holding else {
        return Some(Holding::Any);
    };
    let mut set = status.filled.clone();
    for &p in also.iter().filter(|&&p| p < partitions) {
        set.insert(p);
    }
    Some(Holding::Partitions(set))
}

/// What a node's status lists as held beyond `filled`: the partitions `with_data` it
/// does not count as filled, or `None` past [`ALSO_HOLDING_LISTED_MAX`].
pub fn also_holding(
    with_data: impl IntoIterator<Item = PartitionId>,
    filled: &PartitionSet,
) -> Option<Vec<PartitionId>> {
    let extra: Vec<PartitionId> = with_data
        .into_iter()
        .filter(|&p| !filled.contains(p))
        .collect();
    (extra.len() <= ALSO_HOLDING_LISTED_MAX).then_some(extra)
}

/// When an exchange in agreement began, in the node's two clocks: `mono` is what the
/// books keep, `wall` its age taken back from the rules' wall time now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Monotonic ms.
    pub mono: u64,
    /// Wall ms.
    pub wall: u64,
}

/// The horizon below which `partition`'s tombstones may be purged on this node: the
/// oldest start of an exchange in agreement with each other replica it takes writes
/// with and each member that says it holds the partition's data without taking its
/// writes (`holders`: an old owner waiting to hand it off, a stand-in that has not),
/// never later than `grace_horizon` (`wall_now - grace`), and below every tombstone
/// that arrived here since the oldest of those agreements (`arrivals`). `None` when
/// this node does not take the partition's writes or one of them was never in
/// agreement.
///
/// The holders count because a holder's data goes back to the owners when it hands
/// off: a put it kept from before a delete would come back once every owner had
/// purged the tombstone, had it been away longer than the grace. A member that is down
/// counts as holding everything ([`holding_of`]): while one is down, purges wait for it
/// to return or be removed, as a repair that cannot reach every replica cannot end.
pub fn purge_horizon<'a>(
    me: &str,
    set: &ReplicaSet,
    holders: impl IntoIterator<Item = &'a str>,
    grace_horizon: u64,
    arrivals: &mut PartitionArrivals,
    in_sync_at: impl Fn(&str) -> Option<Agreed>,
) -> Option<u64> {
    if !set.targets.iter().any(|t| t == me) {
        return None;
    }
    let mut oldest: Option<Agreed> = None;
    let mut count = |other: &str| -> Option<()> {
        if other != me {
            let at = in_sync_at(other)?;
            oldest = Some(match oldest {
                Some(o) if o.mono <= at.mono => o,
                _ => at,
            });
        }
        Some(())
    };
    for replica in &set.targets {
        count(replica)?;
    }
    for holder in holders {
        count(holder)?;
    }
    let mut horizon = grace_horizon;
    if let Some(oldest) = oldest {
        horizon = horizon
            .min(oldest.wall)
            .min(arrivals.purge_cap(oldest.mono)?);
    }
    (horizon > 0).then_some(horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica set of these targets, counting these.
    pub(super) fn set(targets: &[&str], counted: &[&str]) -> ReplicaSet {
        ReplicaSet {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            counted: counted.iter().map(|s| s.to_string()).collect(),
            copies: counted.len(),
        }
    }

    #[test]
    fn hints_for_a_member_that_left_are_dropped_and_for_a_dead_one_kept() {
        use MemberState::*;
        assert_eq!(hint_target("n1", "n2", Some(Left), true), HintTarget::Drop);
        assert_eq!(hint_target("n1", "n9", None, true), HintTarget::Drop);
        assert_eq!(hint_target("n1", "n2", Some(Dead), true), HintTarget::Wait);
        assert_eq!(
            hint_target("n1", "n2", Some(Alive), false),
            HintTarget::Wait
        );
        assert_eq!(
            hint_target("n1", "n2", Some(Alive), true),
            HintTarget::Deliver
        );
        assert_eq!(hint_target("n1", "n1", None, false), HintTarget::Deliver);
    }

    #[test]
    fn a_released_partition_waits_for_every_counted_owner_after_the_release() {
        let s = set(&["n2", "n3"], &["n2", "n3"]);
        fn hand_off(
            set: &ReplicaSet,
            released: Option<u64>,
            since: u64,
            landed: Option<u64>,
            synced: impl Fn(&str) -> Option<u64>,
        ) -> bool {
            may_hand_off("n1", set, released, since, landed, synced)
        }
        let synced =
            |at2: Option<u64>, at3: Option<u64>| move |o: &str| if o == "n2" { at2 } else { at3 };
        assert!(!hand_off(
            &s,
            Some(100),
            50,
            Some(0),
            synced(Some(120), None)
        ));
        assert!(!hand_off(
            &s,
            Some(100),
            50,
            Some(0),
            synced(Some(120), Some(90))
        ));
        assert!(hand_off(
            &s,
            Some(100),
            50,
            Some(0),
            synced(Some(120), Some(100))
        ));
        // A placement change after the release restarts the wait.
        assert!(!hand_off(
            &s,
            Some(100),
            130,
            Some(0),
            synced(Some(120), Some(140))
        ));
        // Never released here, or still a target: kept.
        assert!(!hand_off(&s, None, 0, Some(0), synced(Some(9), Some(9))));
        let mine = set(&["n1", "n2"], &["n2"]);
        assert!(!hand_off(
            &mine,
            Some(1),
            0,
            Some(0),
            synced(Some(9), Some(9))
        ));
        // A write that landed after the agreements (a late hint): kept until they agree
        // again; and while one is in flight, kept.
        assert!(!hand_off(
            &s,
            Some(100),
            50,
            Some(120),
            synced(Some(120), Some(130))
        ));
        assert!(hand_off(
            &s,
            Some(100),
            50,
            Some(119),
            synced(Some(120), Some(130))
        ));
        assert!(!hand_off(
            &s,
            Some(100),
            50,
            None,
            synced(Some(120), Some(130))
        ));
    }

    #[test]
    fn the_purge_horizon_is_the_oldest_agreement_and_at_most_the_grace() {
        let s = set(&["n1", "n2", "n3"], &["n1", "n2", "n3"]);
        let at = |o: &str| agreed(o, &[("n2", 500), ("n3", 300)]);
        let none: [&str; 0] = [];
        let book = &mut PartitionArrivals::default();
        assert_eq!(purge_horizon("n1", &s, none, 1_000, book, at), Some(300));
        assert_eq!(purge_horizon("n1", &s, none, 200, book, at), Some(200));
        assert_eq!(
            purge_horizon("n1", &s, none, 1_000, book, |o| at(o).filter(|_| o != "n3")),
            None
        );
        assert_eq!(purge_horizon("n4", &s, none, 1_000, book, at), None);
        assert_eq!(purge_horizon("n1", &s, none, 0, book, at), None);
    }

    #[test]
    fn a_tombstone_that_landed_after_the_oldest_agreement_is_not_purged() {
        let s = set(&["n1", "n2", "n3"], &["n1", "n2", "n3"]);
        let at = |o: &str| agreed(o, &[("n2", 500), ("n3", 300)]);
        let none: [&str; 0] = [];
        let book = &mut PartitionArrivals::default();
        // Timestamped 120, it landed after n3's agreement: n3 may still hold the value.
        book.note(120, 400);
        assert_eq!(purge_horizon("n1", &s, none, 1_000, book, at), Some(120));
        // Landed before every agreement: both replicas held it when they agreed.
        let book = &mut PartitionArrivals::default();
        book.note(120, 250);
        assert_eq!(purge_horizon("n1", &s, none, 1_000, book, at), Some(300));
    }

    /// Agreements where the monotonic and the wall clock read the same.
    fn agreed(o: &str, at: &[(&str, u64)]) -> Option<Agreed> {
        at.iter()
            .find(|(name, _)| *name == o)
            .map(|&(_, t)| Agreed { mono: t, wall: t })
    }

    fn member(state: MemberState, status: Option<crate::membership::GossipStatus>) -> MemberView {
        MemberView {
            id: crate::membership::MemberId {
                name: "n2".into(),
                addr: "127.0.0.1:7002".parse().expect("an address"),
                incarnation: 1,
                epoch_ms: 10,
                token: None,
                data_epoch: 10,
            },
            state,
            swim_incarnation: 0,
            status,
            status_at: crate::base::Millis(0),
            since: crate::base::Millis(0),
        }
    }

    fn status(
        filled: &[PartitionId],
        also: Option<Vec<PartitionId>>,
    ) -> crate::membership::GossipStatus {
        let mut set = PartitionSet::empty();
        for &p in filled {
            set.insert(p);
        }
        crate::membership::GossipStatus {
            data_epoch: 10,
            filled: set,
            also_holding: also,
            ..Default::default()
        }
    }

    #[test]
    fn a_node_no_member_has_spoken_to_coordinates_no_writes_unless_it_is_alone() {
        assert!(unheard_refusal(true, false).is_some_and(|why| why.contains("no other member")));
        assert_eq!(unheard_refusal(true, true), None);
        assert_eq!(unheard_refusal(false, false), None, "a cluster of one");
    }

    #[test]
    fn what_a_member_may_hold_is_its_word_only_while_it_is_live() {
        use MemberState::*;
        let said = status(&[1], Some(vec![4]));
        let live = holding_of(&member(Alive, Some(said.clone())), 8).expect("a member");
        assert!(live.may_hold(1) && live.may_hold(4) && !live.may_hold(2));
        // Down or suspected: it may have taken data since it last spoke.
        assert_eq!(
            holding_of(&member(Dead, Some(said.clone())), 8),
            Some(Holding::Any)
        );
        assert_eq!(
            holding_of(&member(Suspect, Some(said)), 8),
            Some(Holding::Any)
        );
        // Not heard from, or too much to list: anything.
        assert_eq!(holding_of(&member(Alive, None), 8), Some(Holding::Any));
        assert_eq!(
            holding_of(&member(Alive, Some(status(&[1], None))), 8),
            Some(Holding::Any)
        );
        // A word about another life's data does not count.
        let mut other = status(&[1], Some(vec![]));
        other.data_epoch = 9;
        assert_eq!(
            holding_of(&member(Alive, Some(other)), 8),
            Some(Holding::Any)
        );
        assert_eq!(holding_of(&member(Left, None), 8), None);
    }

    #[test]
    fn a_status_lists_what_it_holds_beyond_its_fills_up_to_the_bound() {
        let mut filled = PartitionSet::empty();
        filled.insert(2);
        assert_eq!(also_holding([1, 2, 3], &filled), Some(vec![1, 3]));
        let many = 0..(ALSO_HOLDING_LISTED_MAX as u16 + 1);
        assert_eq!(also_holding(many.map(|p| p + 10), &filled), None);
    }

    #[test]
    fn a_member_holding_old_data_holds_purges_back_until_it_agreed() {
        let s = set(&["n1", "n2"], &["n1", "n2"]);
        let at = |o: &str| agreed(o, &[("n2", 500), ("n5", 200)]);
        let book = &mut PartitionArrivals::default();
        assert_eq!(purge_horizon("n1", &s, ["n5"], 1_000, book, at), Some(200));
        // A holder never in agreement (away since before the delete) stops them.
        assert_eq!(purge_horizon("n1", &s, ["n6"], 1_000, book, at), None);
        // This node's own word about holding counts for nothing.
        assert_eq!(purge_horizon("n1", &s, ["n1"], 1_000, book, at), Some(500));
    }
}
