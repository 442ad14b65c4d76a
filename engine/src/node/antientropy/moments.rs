//! The two clocks anti-entropy's books are kept in, and the wall time the rules go by:
//! agreements in monotonic ms (a wall clock that jumps cannot move them), turned into
//! wall time against now only when a purge compares them with tombstone versions.

use super::Shared;
use crate::base::Millis;
use crate::placement::PartitionId;
use crate::policy::Agreed;
use crate::wallclock::system_wall_ms;

/// A moment as the books keep it: in wall ms (what status shows, and what the write
/// marks are compared with) and in this node's monotonic ms (what the rules rely on).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    pub(crate) wall: u64,
    pub(crate) mono: Millis,
}

impl Moment {
    pub(crate) fn now(shared: &Shared) -> Moment {
        Moment {
            wall: system_wall_ms(),
            mono: shared.now(),
        }
    }
}

/// The wall time the rules go by: this node's clock, or the cluster's when that is
/// behind it. A clock far ahead would purge tombstones before their grace is out.
pub(super) fn rules_wall_ms(shared: &Shared) -> u64 {
    system_wall_ms().min(shared.cluster_wall_ms())
}

/// Tombstones older than this (wall ms) may be purged.
pub(super) fn grace_horizon(shared: &Shared) -> u64 {
    rules_wall_ms(shared).saturating_sub(shared.config.tombstone_grace.as_millis() as u64)
}

/// When the last agreement of `partition` with `peer` began: in monotonic ms, and in
/// wall time as [`rules_wall_ms`] goes (its monotonic age taken back from now, so a
/// clock that jumped since cannot move it).
pub(super) fn agreed(shared: &Shared, partition: PartitionId, peer: &str) -> Option<Agreed> {
    let (now, rules_wall) = (shared.now().0, rules_wall_ms(shared));
    let books = shared.anti_entropy.books.lock().expect("books lock");
    books.agreements.as_of(partition, peer, now, rules_wall)
}
