//! Anti-entropy in the core: rounds of runs with every peer that shares partitions with
//! this node (fills as soon as it takes a partition's writes, background runs on the
//! schedule, `vergent repair` on demand), each run the [`Run`] state machine with one
//! peer; the books they keep (agreements, per-peer state, progress); what the books then
//! allow (handoff and purges, in `upkeep`); and the answers to the peers' exchanges (in
//! `respond`).
//!
//! One round at a time: a repair asked for during a background round waits for it and
//! reports what it moved meanwhile. A round's runs with its peers go one after the
//! other: entries one peer sends land on this node while it compares with another
//! (the same entries, often, from both), and a change after an agreement undoes it
//! (the partition is not confirmed until the replicas compare again).

mod confirm;
mod respond;
mod rounds;
mod steps;
mod upkeep;

pub(super) use self::respond::HeldSync;

use super::io::{Landing, Pending, Purpose, StorePurpose};
use super::*;
use crate::antientropy::local::entry_bytes;
use crate::antientropy::messages::{ROOTS_PER_REQUEST_MAX, SyncLimits, SyncRequest, SyncResponse};
use crate::antientropy::report::{
    PartitionDifference, PeerSync, RUN_PEERS_GOSSIPED_MAX, RepairProgress, RepairReport, RunKind,
    RunSummary, SyncCounts,
};
use crate::antientropy::respond::check_entries;
use crate::antientropy::run::{Run, RunConfig, RunStep, Tag};
use crate::membership::MemberState;
use crate::placement::PartitionId;
use crate::policy::{Agreements, RunDue, RunInputs, RunScope, plan_runs};
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::Entry;

/// Times a compare is put off by a millisecond for a change made in the same one.
const COMPARE_TRIES: u32 = 4;

/// Anti-entropy's books: per-peer state for `status`, per-(partition, peer) agreements
/// for purges, handoff and fills, the progress of a running round.
#[derive(Default)]
pub(super) struct SyncBooks {
    pub(super) peers: BTreeMap<String, PeerSync>,
    /// The start of the last exchange of (partition, peer) that ended with both in
    /// sync, in both clocks: wall ms for status and the confirmations, monotonic ms for
    /// purges, handoff and fills (a wall clock that jumped ahead and came back would
    /// leave wall stamps in the future); and the placement seen.
    pub(super) agreements: Agreements,
    pub(super) progress: Option<RepairProgress>,
    /// The round in progress, as this node's status tells the cluster.
    pub(super) run: Option<RunSummary>,
    /// The last round that ended: when (wall ms), and what it moved.
    pub(super) last_run: Option<(u64, SyncCounts)>,
    /// Partitions being exchanged right now.
    pub(super) in_flight: BTreeSet<PartitionId>,
}

/// A repair waiting for the round in progress.
pub(super) struct RepairAsk {
    ask: AskId,
    partition: Option<PartitionId>,
    peer: Option<String>,
    dry_run: bool,
    asked_wall: u64,
}

/// One run with one peer, and the driver's books on it.
pub(super) struct PeerRun {
    run: Run<Agreed>,
    partitions: usize,
    /// When it began.
    began: Agreed,
    /// Bytes and round trips, which only the driver sees.
    counts: SyncCounts,
    /// A compare put off for a change made in the same millisecond: when to try again,
    /// and how many tries are left.
    compare_at: Option<(Millis, u32)>,
}

/// How a run with a peer ended: its counts, what differed, the partitions in sync at
/// its end, when it began, and how many partitions it compared.
type PeerOutcome = (
    SyncCounts,
    Vec<PartitionDifference>,
    Vec<PartitionId>,
    Agreed,
    usize,
);

/// A round of runs with every peer.
pub(super) struct Round {
    kind: RunKind,
    due: Option<RunDue>,
    dry_run: bool,
    ask: Option<AskId>,
    asked_wall: u64,
    started_mono: Millis,
    /// The run going (one at a time).
    runs: BTreeMap<String, PeerRun>,
    /// The runs still to go, in plan order.
    waiting: VecDeque<(String, PeerRun)>,
    /// The peers in plan order, and how each run ended.
    order: Vec<String>,
    ended: BTreeMap<String, Result<PeerOutcome, String>>,
    report: RepairReport,
    progress: RepairProgress,
}

impl Round {
    /// The next compare put off.
    pub(super) fn poll_timeout(&self) -> Option<Millis> {
        self.runs
            .values()
            .filter_map(|r| r.compare_at.map(|(at, _)| at))
            .min()
    }
}

impl NodeCore {
    /// What this node accepts and answers in an exchange.
    pub(super) fn sync_limits(&self) -> SyncLimits {
        SyncLimits {
            value_bytes_max: self.config.value_bytes_max,
        }
    }

    /// `partitions` compared equal with `peer` in an exchange begun at `began`, on
    /// either side of it.
    pub(super) fn agreed(&mut self, peer: &str, partitions: &[PartitionId], began: Agreed) {
        if partitions.is_empty() {
            return;
        }
        self.books.agreements.agreed(peer, partitions, began);
        for &p in partitions {
            // Agreement with every other replica now: the writes before the oldest of
            // those exchanges are on all of them.
            let set = self.view.replica_set_of(p);
            let others = set
                .targets
                .iter()
                .map(String::as_str)
                .filter(|t| *t != self.me.name);
            if let Some(oldest) = self.books.agreements.oldest_wall(p, others) {
                self.write_marks.confirmed(p, oldest);
            }
        }
    }

    /// When the last agreement of `partition` with `peer` began (monotonic ms).
    pub fn agreed_at(&self, partition: PartitionId, peer: &str) -> Option<Millis> {
        self.books
            .agreements
            .get(partition, peer)
            .map(|at| Millis(at.mono))
    }

    /// Whether a change was made to any of `partitions` at or after this wall ms.
    fn changed_since(&self, partitions: &[PartitionId], wall_ms: u64) -> bool {
        partitions
            .iter()
            .any(|&p| self.write_marks.last(p).is_some_and(|c| c >= wall_ms))
    }

    /// Entries received from a peer, checked: the ones to apply.
    pub(super) fn received(&mut self, entries: Vec<Entry>, now: Now) -> Result<Vec<Entry>, String> {
        if entries.is_empty() {
            return Ok(entries);
        }
        check_entries(&entries, &self.sync_limits()).map_err(|e| e.to_string())?;
        let entries = self.without_gone(entries);
        let cluster_ms = self.cluster_wall_ms(now);
        let mut keep = Vec::with_capacity(entries.len());
        for e in entries {
            match self
                .clock
                .observe_against(e.record.version.hlc, now.wall_ms(), cluster_ms)
            {
                Ok(_) => keep.push(e),
                Err(err) => self.clock_refused("anti-entropy entry", err.to_string()),
            }
        }
        Ok(keep)
    }
}
