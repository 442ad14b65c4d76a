//! Anti-entropy's books (per-peer state, agreements in both clocks, the placement
//! seen, a repair's progress) and the rate limit on the bytes repair moves.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Moment;
use crate::antientropy::report::{PeerSync, RepairProgress, RunSummary, SyncCounts};
use crate::base::Millis;
use crate::node::Shared;
use crate::placement::PartitionId;
use crate::policy::{Agreed, Agreements};

/// Anti-entropy's books: per-peer state for `status`, per-(partition, peer) in-sync
/// times for purges and handoff, the progress of a running repair.
#[derive(Default)]
pub(crate) struct AntiEntropy {
    pub(crate) wake: Notify,
    /// Partitions to fill: exchanges for them run at once and are retried until done,
    /// whether or not background runs are on.
    pub(crate) fill_wake: Notify,
    pub(super) books: Mutex<Books>,
    /// One run at a time: a repair waits for a background run and the other way round.
    pub(super) running: tokio::sync::Mutex<()>,
    pub(super) limiter: RateLimiter,
}

#[derive(Default)]
pub(super) struct Books {
    pub(super) peers: BTreeMap<String, PeerSync>,
    /// The start of the last exchange of (partition, peer) that ended with both in
    /// sync, in both clocks: wall ms for status and the confirmations, monotonic ms for
    /// purges, handoff and fills (a wall clock that jumped ahead and came back would
    /// leave wall stamps in the future, and a purge would take them for agreements
    /// after a tombstone that the peer never had); and the placement seen.
    pub(super) agreements: Agreements,
    pub(super) progress: Option<RepairProgress>,
    /// The run in progress, as this node's status tells the cluster.
    pub(super) run: Option<RunSummary>,
    /// The last run that ended: when (wall ms), and what it moved. A repair that had to
    /// wait for it reports what it did in the meantime.
    pub(super) last_run: Option<(u64, SyncCounts)>,
    /// Partitions being exchanged right now.
    pub(super) in_flight: std::collections::BTreeSet<PartitionId>,
}

impl AntiEntropy {
    /// This node's state with each peer, for `status`.
    pub(crate) fn peer_syncs(&self) -> Vec<PeerSync> {
        self.books
            .lock()
            .expect("books lock")
            .peers
            .values()
            .cloned()
            .collect()
    }

    /// The progress of the repair running now, if any.
    pub(crate) fn progress(&self) -> Option<RepairProgress> {
        self.books.lock().expect("books lock").progress
    }

    /// Monotonic ms at the start of the last exchange of `partition` with `peer` that
    /// ended with both in agreement.
    pub(crate) fn agreed_at(&self, partition: PartitionId, peer: &str) -> Option<Millis> {
        self.books
            .lock()
            .expect("books lock")
            .agreements
            .get(partition, peer)
            .map(|at| Millis(at.mono))
    }

    /// `partitions` compared equal with `peer` in an exchange begun at `began`, on
    /// either side of it.
    pub(crate) fn agreed(
        &self,
        shared: &Shared,
        peer: &str,
        partitions: &[PartitionId],
        began: Moment,
    ) {
        if partitions.is_empty() {
            return;
        }
        let view = shared.view();
        let mut books = self.books.lock().expect("books lock");
        books.agreements.agreed(
            peer,
            partitions,
            Agreed {
                mono: began.mono.0,
                wall: began.wall,
            },
        );
        for &p in partitions {
            // Agreement with every other replica now: the writes before the oldest of
            // those exchanges are on all of them.
            let set = view.replica_set_of(p);
            let others = set
                .targets
                .iter()
                .map(String::as_str)
                .filter(|t| *t != shared.me.name);
            if let Some(oldest) = books.agreements.oldest_wall(p, others) {
                shared.write_marks.confirmed(p, oldest);
            }
        }
    }

    /// A time for a compare of `partitions` that comes after every change made to
    /// them so far: a change and a compare in the same millisecond cannot be told
    /// apart, and the agreement would not count.
    pub(crate) async fn compare_time(shared: &Shared, partitions: &[PartitionId]) -> Moment {
        // Under writes every millisecond this gives up after a few: the compare then
        // goes on, and only its agreement on the busiest partitions does not count.
        for _ in 0..4 {
            let now = Moment::now(shared);
            if partitions
                .iter()
                .all(|&p| shared.write_marks.last(p).is_none_or(|c| c < now.wall))
            {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Moment::now(shared)
    }

    /// Notes that an exchange of `partition` began (`true`) or ended.
    pub(crate) fn books_in_flight(&self, partition: PartitionId, running: bool) {
        let mut books = self.books.lock().expect("books lock");
        if running {
            books.in_flight.insert(partition);
        } else {
            books.in_flight.remove(&partition);
        }
    }

    /// The run in progress, if any, for this node's status.
    pub(crate) fn run(&self) -> Option<RunSummary> {
        self.books.lock().expect("books lock").run.clone()
    }

    /// Partitions being exchanged right now.
    pub(crate) fn repairing(&self) -> Vec<PartitionId> {
        self.books
            .lock()
            .expect("books lock")
            .in_flight
            .iter()
            .copied()
            .collect()
    }
}

/// A token bucket over the bytes of entries moved, so repair never starves clients.
#[derive(Default)]
pub(super) struct RateLimiter {
    state: Mutex<Option<(f64, Instant)>>,
}

impl RateLimiter {
    pub(super) async fn take(&self, bytes: u64, per_sec: u64) {
        if per_sec == 0 || bytes == 0 {
            return;
        }
        let wait = {
            let mut state = self.state.lock().expect("limiter lock");
            let now = Instant::now();
            let (tokens, last) = state.unwrap_or((per_sec as f64, now));
            let refilled = (tokens + now.duration_since(last).as_secs_f64() * per_sec as f64)
                .min(per_sec as f64);
            let left = refilled - bytes as f64;
            *state = Some((left, now));
            if left >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-left / per_sec as f64))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}
