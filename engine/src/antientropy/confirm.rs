//! What anti-entropy has confirmed: which partitions are known to be in sync and since
//! when, and how far behind a replica may be.
//!
//! Two replicas of a partition *agree* when a compare found their roots equal after
//! both last changed it (a client write, replication, a hint, an entry anti-entropy
//! brought): they hold the same records now. A partition is *confirmed in sync* when
//! those agreements connect all its replicas; Vergent checks the simplest such shape,
//! a star: one replica (the hub) compared equal with every other since it last changed
//! the partition, and each of the others compared equal with the hub since it last
//! changed it. A `vergent repair` on one node makes it the hub of its partitions;
//! background anti-entropy, where every replica compares with every other, makes each
//! one a hub. With background anti-entropy on, agreements older than about two of its
//! periods no longer count: the next run should have renewed them.
//!
//! "Not differing at the last compare" is not enough: after a write one replica
//! missed, nothing says so until the next compare, so such a partition is
//! *unconfirmed*, not in sync.
//!
//! *Sync lag* of a replica, as this node sees it, is the age of the oldest write the
//! replica may not hold: its oldest hint here, and the oldest change this node made to
//! a partition they share since their last agreement on it. An idle cluster in sync has
//! no lag, however long ago the last exchange was.
//!
//! Everything here is plain data and arithmetic over times the caller passes in.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::placement::PartitionId;

/// A partition's state as every node reports it, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionSyncState {
    /// A replica is down (suspect or dead).
    ReplicaDown,
    /// Being exchanged right now.
    Repairing,
    /// Differed at the last compare and was not brought into agreement.
    Differing,
    /// Not confirmed in sync: written since its replicas last compared equal, not
    /// compared within the interval, or not known (a replica's word is missing or old).
    Unconfirmed,
    /// Every replica confirmed in sync; see the module documentation.
    InSync,
}

impl PartitionSyncState {
    /// The word `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionSyncState::ReplicaDown => "replica-down",
            PartitionSyncState::Repairing => "repairing",
            PartitionSyncState::Differing => "differing",
            PartitionSyncState::Unconfirmed => "unconfirmed",
            PartitionSyncState::InSync => "in-sync",
        }
    }
}

/// One partition's state, with when its replicas were confirmed in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The state.
    pub state: PartitionSyncState,
    /// Wall ms of the confirmation (the start of the oldest exchange it rests on); for a
    /// partition the answering node does not hold, the oldest confirmation its replicas
    /// reported, a bound. `None` when not confirmed.
    pub confirmed_ms: Option<u64>,
}

/// The last write and the oldest unconfirmed write this node took for each partition,
/// wall ms (0: none). Every write path notes one, so these are atomics rather than a
/// lock.
#[derive(Debug)]
pub struct WriteMarks {
    last: Vec<AtomicU64>,
    first_unconfirmed: Vec<AtomicU64>,
}

impl WriteMarks {
    /// Marks for `partitions` partitions, none written.
    pub fn new(partitions: u16) -> WriteMarks {
        let zeros = || (0..partitions).map(|_| AtomicU64::new(0)).collect();
        WriteMarks {
            last: zeros(),
            first_unconfirmed: zeros(),
        }
    }

    /// This node took a write for `partition` at `wall_ms`.
    pub fn note(&self, partition: PartitionId, wall_ms: u64) {
        let Some(last) = self.last.get(usize::from(partition)) else {
            return;
        };
        let wall_ms = wall_ms.max(1);
        // The last mark first: `confirmed` reads it after clearing the first.
        last.fetch_max(wall_ms, Ordering::SeqCst);
        let _ = self.first_unconfirmed[usize::from(partition)].compare_exchange(
            0,
            wall_ms,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The last write for `partition`.
    pub fn last(&self, partition: PartitionId) -> Option<u64> {
        read(&self.last, partition)
    }

    /// The oldest write for `partition` not known to be on every replica.
    pub fn first_unconfirmed(&self, partition: PartitionId) -> Option<u64> {
        read(&self.first_unconfirmed, partition)
    }

    /// Every other replica of `partition` agreed with this node in exchanges begun at
    /// `began` or later: writes before then are on all of them. Writes since keep the
    /// mark, at `began` (the oldest they can be).
    pub fn confirmed(&self, partition: PartitionId, began: u64) {
        let Some(first) = self.first_unconfirmed.get(usize::from(partition)) else {
            return;
        };
        let current = first.load(Ordering::SeqCst);
        if current == 0 || current >= began {
            return;
        }
        if first
            .compare_exchange(current, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        // A write noted meanwhile either set the mark again or raised the last one.
        if self.last(partition).is_some_and(|last| last >= began) {
            let _ = first.compare_exchange(0, began.max(1), Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

fn read(marks: &[AtomicU64], partition: PartitionId) -> Option<u64> {
    marks
        .get(usize::from(partition))
        .map(|m| m.load(Ordering::SeqCst))
        .filter(|&ms| ms != 0)
}

/// When a replica became a hub for a partition it takes writes for, if it still is:
/// the oldest of its agreements with each other replica (`agreed`, wall ms), provided
/// every one came after its last change here and, when `valid_for_ms` is set, not
/// longer ago than that. With no other replica there is nothing to differ from.
pub fn confirmed_at(
    agreed: impl IntoIterator<Item = Option<u64>>,
    last_change: Option<u64>,
    now_ms: u64,
    valid_for_ms: Option<u64>,
) -> Option<u64> {
    let mut oldest: Option<u64> = None;
    for at in agreed {
        let at = agreed_since(at, last_change, now_ms, valid_for_ms)?;
        oldest = Some(oldest.map_or(at, |o| o.min(at)));
    }
    Some(oldest.unwrap_or_else(|| last_change.unwrap_or(now_ms).clamp(1, now_ms.max(1))))
}

/// An agreement (wall ms) that still stands on this side: after the last change here
/// and, when `valid_for_ms` is set, recent enough.
pub fn agreed_since(
    agreed: Option<u64>,
    last_change: Option<u64>,
    now_ms: u64,
    valid_for_ms: Option<u64>,
) -> Option<u64> {
    let at = agreed?;
    if last_change.is_some_and(|c| c >= at) {
        return None;
    }
    if valid_for_ms.is_some_and(|valid| now_ms.saturating_sub(at) > valid) {
        return None;
    }
    Some(at)
}

/// The age of the oldest write a peer may not hold (see the module documentation):
/// `oldest_hint_ms` is when the oldest hint for it here was kept; `shared` gives, for
/// each partition both take writes for, this node's oldest unconfirmed write, its last
/// write, and the start of the last exchange of it with the peer that ended in
/// agreement.
pub fn sync_lag_ms(
    now_ms: u64,
    oldest_hint_ms: Option<u64>,
    shared: impl IntoIterator<Item = (Option<u64>, Option<u64>, Option<u64>)>,
) -> u64 {
    let mut oldest = oldest_hint_ms.filter(|&t| t > 0);
    for (first_unconfirmed, last_write, in_sync) in shared {
        let Some(last) = last_write else { continue };
        if in_sync.is_some_and(|s| last < s) {
            continue;
        }
        // The oldest write since the agreement: the oldest unconfirmed one, but never
        // earlier than the agreement itself, which covered what came before.
        let write = first_unconfirmed.unwrap_or(last).max(in_sync.unwrap_or(0));
        oldest = Some(oldest.map_or(write, |o| o.min(write)));
    }
    oldest.map_or(0, |t| now_ms.saturating_sub(t))
}

/// A partition's state from what its replicas say: `down` (a replica is suspect or
/// dead), `repairing` and `differing` as the answering node's exchanges know them,
/// whether some replica is a hub for it, and each replica's confirmation (a hub's, or
/// its agreement with a hub; `None`: not confirmed, or not known).
pub fn partition_status(
    down: bool,
    repairing: bool,
    differing: bool,
    hub: bool,
    confirmations: impl IntoIterator<Item = Option<u64>>,
) -> PartitionStatus {
    let mut confirmed_ms: Option<u64> = None;
    let mut all = true;
    for c in confirmations {
        match c {
            Some(at) => confirmed_ms = Some(confirmed_ms.map_or(at, |o| o.min(at))),
            None => all = false,
        }
    }
    let confirmed_ms = confirmed_ms.filter(|_| all && hub);
    let state = if down {
        PartitionSyncState::ReplicaDown
    } else if repairing {
        PartitionSyncState::Repairing
    } else if differing {
        PartitionSyncState::Differing
    } else if confirmed_ms.is_none() {
        PartitionSyncState::Unconfirmed
    } else {
        PartitionSyncState::InSync
    };
    PartitionStatus {
        state,
        confirmed_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_the_last_agreement_unconfirms_until_the_next() {
        // Agreed with both others at 100 and 120; nothing written: confirmed at 100.
        assert_eq!(
            confirmed_at([Some(100), Some(120)], None, 200, None),
            Some(100)
        );
        // Written at 150: one exchange began before it.
        assert_eq!(
            confirmed_at([Some(100), Some(160)], Some(150), 200, None),
            None
        );
        assert_eq!(
            confirmed_at([Some(170), Some(160)], Some(150), 200, None),
            Some(160)
        );
        // Never compared with one of them.
        assert_eq!(confirmed_at([Some(170), None], None, 200, None), None);
        // Too long ago for the interval.
        assert_eq!(confirmed_at([Some(100)], None, 1_000, Some(500)), None);
        assert_eq!(confirmed_at([Some(600)], None, 1_000, Some(500)), Some(600));
        // One agreement stands on its own where the rest do not.
        assert_eq!(agreed_since(Some(170), Some(150), 200, None), Some(170));
        assert_eq!(agreed_since(Some(140), Some(150), 200, None), None);
        assert_eq!(agreed_since(None, None, 200, None), None);
    }

    #[test]
    fn marks_keep_the_oldest_write_not_yet_on_every_replica() {
        let marks = WriteMarks::new(4);
        assert_eq!(marks.last(1), None);
        marks.note(1, 100);
        marks.note(1, 150);
        assert_eq!(marks.first_unconfirmed(1), Some(100));
        assert_eq!(marks.last(1), Some(150));
        // An agreement begun before the last write: the writes since stay, at its start.
        marks.confirmed(1, 120);
        assert_eq!(marks.first_unconfirmed(1), Some(120));
        // One begun after every write: nothing unconfirmed.
        marks.confirmed(1, 200);
        assert_eq!(marks.first_unconfirmed(1), None);
        assert_eq!(marks.last(1), Some(150));
        // A partition past the end is ignored, not a panic.
        marks.note(9, 5);
        marks.confirmed(9, 5);
        assert_eq!(marks.last(9), None);
    }

    #[test]
    fn sync_lag_is_the_oldest_write_a_peer_may_miss_not_the_time_since_an_exchange() {
        // Idle and in sync long ago: no lag.
        assert_eq!(sync_lag_ms(100_000, None, [(None, Some(10), Some(20))]), 0);
        // A write at 90,000 after the agreement at 20: 10 s.
        assert_eq!(
            sync_lag_ms(100_000, None, [(Some(90_000), Some(95_000), Some(20))]),
            10_000
        );
        // Never agreed: since the oldest write.
        assert_eq!(
            sync_lag_ms(100_000, None, [(Some(40_000), Some(95_000), None)]),
            60_000
        );
        // An older hint wins.
        assert_eq!(
            sync_lag_ms(
                100_000,
                Some(30_000),
                [(Some(90_000), Some(95_000), Some(20))]
            ),
            70_000
        );
        // The unconfirmed write predates the agreement with this peer: bounded by it.
        assert_eq!(
            sync_lag_ms(100_000, None, [(Some(50_000), Some(95_000), Some(80_000))]),
            20_000
        );
    }

    #[test]
    fn the_worst_state_wins_and_one_unconfirmed_replica_unconfirms_the_partition() {
        let s = partition_status(false, false, false, true, [Some(5), Some(3)]);
        assert_eq!(s.state, PartitionSyncState::InSync);
        assert_eq!(s.confirmed_ms, Some(3));
        let s = partition_status(false, false, false, true, [Some(5), None]);
        assert_eq!(s.state, PartitionSyncState::Unconfirmed);
        assert_eq!(s.confirmed_ms, None);
        // Every replica agreed with someone, but none with all: no hub, no confirmation.
        let s = partition_status(false, false, false, false, [Some(5), Some(3)]);
        assert_eq!(s.state, PartitionSyncState::Unconfirmed);
        assert_eq!(
            partition_status(false, false, true, true, [Some(5)]).state,
            PartitionSyncState::Differing
        );
        assert_eq!(
            partition_status(false, true, true, true, [None]).state,
            PartitionSyncState::Repairing
        );
        assert_eq!(
            partition_status(true, true, true, true, [Some(1)]).state,
            PartitionSyncState::ReplicaDown
        );
    }
}
