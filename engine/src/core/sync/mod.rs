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
struct PeerRun {
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

    /// Starts the round the schedule says is due, when none is going.
    pub(super) fn poll_schedule(&mut self, now: Now, store: &Store) {
        if self.round.is_some() {
            return;
        }
        let filling: Vec<PartitionId> = self.fill.filling().collect();
        let mono = now.mono().0;
        match self.schedule.poll(mono, !filling.is_empty()) {
            Some(RunDue::Fill) => {
                self.start_round(
                    RunKind::Fill,
                    Some(RunDue::Fill),
                    RunScope::Fill(&filling),
                    None,
                    false,
                    None,
                    now,
                    store,
                );
            }
            Some(RunDue::Full) if self.background_paused => {
                // Stalled: background runs skip their turn; fills go on.
                let still = !filling.is_empty();
                let jitter = self.random();
                self.schedule.done(RunDue::Full, mono, still, jitter);
            }
            Some(RunDue::Full) => {
                self.start_round(
                    RunKind::Background,
                    Some(RunDue::Full),
                    RunScope::All(None),
                    None,
                    false,
                    None,
                    now,
                    store,
                );
            }
            None => {}
        }
    }

    /// `vergent repair`: a round now, or after the one going.
    pub(super) fn ask_repair(
        &mut self,
        ask: AskId,
        partition: Option<PartitionId>,
        peer: Option<String>,
        dry_run: bool,
        now: Now,
        store: &Store,
    ) {
        if let Some(p) = partition
            && p >= self.settings.partitions
        {
            let reply = ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "partition {p} does not exist: the cluster has partitions 0 to {}",
                    self.settings.partitions - 1
                ),
            );
            self.answer(ask, Answer::Failed(reply));
            return;
        }
        let repair = RepairAsk {
            ask,
            partition,
            peer,
            dry_run,
            asked_wall: now.wall_ms(),
        };
        self.repairs.push_back(repair);
        self.next_repair(now, store);
    }

    fn next_repair(&mut self, now: Now, store: &Store) {
        if self.round.is_some() {
            return;
        }
        let Some(repair) = self.repairs.pop_front() else {
            return;
        };
        self.start_round(
            RunKind::Repair,
            None,
            RunScope::All(repair.partition),
            repair.peer.as_deref(),
            repair.dry_run,
            Some((repair.ask, repair.asked_wall)),
            now,
            store,
        );
    }

    /// Starts a round: which peers, which partitions (the node's rule, [`plan_runs`]),
    /// what cannot be compared, the books told.
    #[allow(clippy::too_many_arguments)]
    fn start_round(
        &mut self,
        kind: RunKind,
        due: Option<RunDue>,
        scope: RunScope<'_>,
        only_peer: Option<&str>,
        dry_run: bool,
        ask: Option<(AskId, u64)>,
        now: Now,
        store: &Store,
    ) {
        // Handoff waits for exchanges after the placement changed.
        let digest = self.view.placement.digest();
        self.books.agreements.note_placement(&digest, now.mono().0);
        let partition = match scope {
            RunScope::All(partition) => partition,
            RunScope::Fill(_) => None,
        };
        let view = self.view.clone();
        let me = self.me.name.clone();
        let with_data = store.partitions_with_data();
        let plans = {
            let replica_set = |p: PartitionId| view.replica_set_of(p);
            let peer = |name: &str| {
                only_peer.is_none_or(|only| only == name)
                    && view.member(name).is_some_and(|m| m.state.is_live())
            };
            let inputs = RunInputs {
                me: &me,
                partitions: self.settings.partitions,
                replica_set: &replica_set,
                with_data: &with_data,
                statuses_known: view.statuses_known(),
                holders: &|p| view.holders_by_word(p),
                peer: &peer,
            };
            plan_runs(&inputs, scope)
        };
        let mut report = RepairReport {
            node: me.clone(),
            dry_run,
            peers: plans.keys().cloned().collect(),
            in_sync: true,
            ..RepairReport::default()
        };
        if let Some(peer) = only_peer
            && plans.is_empty()
        {
            report.problems.push(format!(
                "{peer} is not a live member sharing a partition with {me}"
            ));
            report.in_sync = false;
        }
        // A node that knows nobody else (it has just joined and not heard from anyone,
        // or every other member left) has compared nothing: that is not "in sync".
        if plans.is_empty()
            && !view
                .members
                .iter()
                .any(|m| m.id.name != me && m.state != MemberState::Left)
        {
            report.problems.push(format!(
                "{me} knows no other member of the cluster: nothing was compared"
            ));
            report.in_sync = false;
        }
        // A co-replica that is down cannot be compared: the round is not complete.
        for member in view
            .members
            .iter()
            .filter(|m| m.id.name != me && !m.state.is_live())
        {
            let name = member.id.name.as_str();
            if member.state == MemberState::Left || only_peer.is_some_and(|only| only != name) {
                continue;
            }
            let shares = view
                .placement
                .partitions_of(name)
                .any(|p| view.placement.holds(&me, p) && partition.is_none_or(|only| only == p));
            if shares {
                report.problems.push(format!(
                    "{name} is {}: its partitions were not compared",
                    member.state.as_str()
                ));
                report.in_sync = false;
            }
        }
        let total: u64 = plans.values().map(|p| p.len() as u64).sum();
        self.books.run = Some(RunSummary {
            kind,
            peers: plans
                .iter()
                .take(RUN_PEERS_GOSSIPED_MAX)
                .map(|(p, _)| p.clone())
                .collect(),
            peers_total: plans.len().min(usize::from(u16::MAX)) as u16,
            total,
            started_ms: now.wall_ms(),
            ..RunSummary::default()
        });
        let horizon_ms = self.grace_horizon(now);
        let mut round = Round {
            kind,
            due,
            dry_run,
            ask: ask.map(|(a, _)| a),
            asked_wall: ask.map_or(0, |(_, w)| w),
            started_mono: now.mono(),
            runs: BTreeMap::new(),
            waiting: VecDeque::new(),
            order: plans.keys().cloned().collect(),
            ended: BTreeMap::new(),
            report,
            progress: RepairProgress {
                done: 0,
                total,
                keys_moved: 0,
            },
        };
        for (peer, partitions) in plans {
            let config = RunConfig {
                salt: self.random(),
                dry_run,
                horizon_ms,
                limits: self.sync_limits(),
                exchanges_max: self.config.exchanges_in_flight.max(1),
                roots_per_request: ROOTS_PER_REQUEST_MAX,
            };
            let count = partitions.len();
            round.waiting.push_back((
                peer.clone(),
                PeerRun {
                    run: Run::new(&peer, partitions, config),
                    partitions: count,
                    began: now.moment(),
                    counts: SyncCounts::default(),
                    compare_at: None,
                },
            ));
        }
        self.round = Some(round);
        self.progress_tick(0, 0);
        self.next_run(now, store);
        self.end_round_if_done(now, store);
    }

    /// Starts the round's next runs, one at a time, until one is going or none is left
    /// (a run with nothing to compare is done at once).
    fn next_run(&mut self, now: Now, store: &Store) {
        loop {
            let Some(round) = self.round.as_mut() else {
                return;
            };
            if !round.runs.is_empty() {
                return;
            }
            let Some((peer, mut run)) = round.waiting.pop_front() else {
                return;
            };
            run.began = now.moment();
            round.runs.insert(peer.clone(), run);
            self.drive_run(&peer, now, store);
        }
    }

    /// Progress of the round: the books, and the asker of a repair.
    fn progress_tick(&mut self, done: u64, moved: u64) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.progress.done += done;
        round.progress.keys_moved += moved;
        let snapshot = round.progress;
        let ask = round.ask;
        self.books.progress = Some(snapshot);
        if let Some(run) = self.books.run.as_mut() {
            run.done = snapshot.done;
            run.keys_moved = snapshot.keys_moved;
        }
        if let Some(ask) = ask {
            self.outputs.push_back(Output::Progress {
                ask,
                progress: snapshot,
            });
        }
    }

    /// Carries out what the run with `peer` asks, until it waits.
    fn drive_run(&mut self, peer: &str, now: Now, store: &Store) {
        loop {
            let Some(round) = self.round.as_mut() else {
                return;
            };
            let Some(run) = round.runs.get_mut(peer) else {
                return;
            };
            if run.compare_at.is_some() {
                return;
            }
            let Some(step) = run.run.poll() else {
                return;
            };
            match step {
                RunStep::Compare(chunk) => {
                    // Taken after every change made to the partitions so far: a change
                    // and a compare in one millisecond cannot be told apart.
                    if self.changed_since(&chunk, now.wall_ms()) {
                        let run = self.round_run(peer).expect("the run polled");
                        run.compare_at = Some((Millis(now.mono().0 + 1), COMPARE_TRIES - 1));
                        return;
                    }
                    let run = self.round_run(peer).expect("the run polled");
                    run.run.compare(store, now.moment());
                }
                RunStep::Send { tag, request } => self.sync_send(peer, tag, request, now, store),
                RunStep::Apply { tag, entries } => self.sync_apply(peer, tag, entries, now, store),
                RunStep::Agreed { partitions, at } => self.agreed(peer, &partitions, at),
                RunStep::Began(partition) => {
                    self.books.in_flight.insert(partition);
                }
                RunStep::Ended { partition, error } => {
                    self.books.in_flight.remove(&partition);
                    if let Some(why) = error {
                        self.event(CoreEvent::ExchangeFailed {
                            peer: peer.to_string(),
                            partition,
                            why,
                        });
                    }
                }
                RunStep::Progress { partitions, keys } => self.progress_tick(partitions, keys),
                RunStep::Done => {
                    self.run_done(peer, now);
                    return;
                }
            }
        }
    }

    fn round_run(&mut self, peer: &str) -> Option<&mut PeerRun> {
        self.round.as_mut()?.runs.get_mut(peer)
    }

    /// Compares put off, due now.
    pub(super) fn round_timeout(&mut self, now: Now, store: &Store) {
        let due: Vec<String> = match &self.round {
            Some(round) => round
                .runs
                .iter()
                .filter(|(_, r)| r.compare_at.is_some_and(|(at, _)| at <= now.mono()))
                .map(|(p, _)| p.clone())
                .collect(),
            None => return,
        };
        for peer in due {
            let tries = self
                .round_run(&peer)
                .and_then(|r| r.compare_at.take())
                .map_or(0, |(_, tries)| tries);
            let chunk = self.pending_compare(&peer);
            if tries > 0 && self.changed_since(&chunk, now.wall_ms()) {
                if let Some(run) = self.round_run(&peer) {
                    run.compare_at = Some((Millis(now.mono().0 + 1), tries - 1));
                }
                continue;
            }
            // Under writes every millisecond this gives up after a few: the compare
            // then goes on, and only its agreement on the busiest partitions does not
            // count.
            if let Some(run) = self.round_run(&peer) {
                run.run.compare(store, now.moment());
            }
            self.drive_run(&peer, now, store);
        }
        self.end_round_if_done(now, store);
    }

    /// The partitions of the compare `peer`'s run waits to make.
    fn pending_compare(&self, peer: &str) -> Vec<PartitionId> {
        self.round
            .as_ref()
            .and_then(|r| r.runs.get(peer))
            .map(|r| r.run.to_compare().to_vec())
            .unwrap_or_default()
    }

    /// A step of a run to its peer, within the repair rate limit.
    fn sync_send(&mut self, peer: &str, tag: Tag, request: SyncRequest, now: Now, store: &Store) {
        let pushed = match &request {
            SyncRequest::Push { entries, .. } => entry_bytes(entries),
            _ => 0,
        };
        let request = Request::Sync(request);
        let sent = postcard::experimental::serialized_size(&request).unwrap_or(0) as u64 + 4;
        let Some(id) = self.live_id(peer) else {
            if let Some(run) = self.round_run(peer) {
                run.run
                    .handle_response(store, tag, Err(format!("{peer} is not a live member")));
            }
            return;
        };
        let at = self
            .pacer
            .take(pushed, self.config.repair_bytes_per_sec, now.mono());
        let timeout = self.config.sync_step_timeout_ms;
        let purpose = Purpose::Sync { tag, pushed, sent };
        if at <= now.mono() {
            self.send(&id, request, purpose, timeout, now);
        } else {
            self.send_at(at, &id, request, purpose, timeout);
        }
    }

    /// Entries a run received, after the checks a replication passes: key and value
    /// limits (a batch with one bad entry is refused whole), and entries from a clock
    /// too far ahead are left out.
    fn sync_apply(&mut self, peer: &str, tag: Tag, entries: Vec<Entry>, now: Now, store: &Store) {
        match self.received(entries, now) {
            Err(why) => {
                if let Some(run) = self.round_run(peer) {
                    run.run.applied(store, tag, Err(why));
                }
            }
            Ok(entries) if entries.is_empty() => {
                if let Some(run) = self.round_run(peer) {
                    run.run.applied(store, tag, Ok(()));
                }
            }
            Ok(entries) => {
                let landing = self.landing(&entries, now.wall_ms());
                self.store(
                    StoreWork::Apply(entries),
                    StorePurpose::SyncApply {
                        peer: peer.to_string(),
                        tag,
                        landing,
                    },
                );
            }
        }
    }

    /// Entries received from a peer, checked: the ones to apply.
    pub(super) fn received(&mut self, entries: Vec<Entry>, now: Now) -> Result<Vec<Entry>, String> {
        if entries.is_empty() {
            return Ok(entries);
        }
        check_entries(&entries, &self.sync_limits()).map_err(|e| e.to_string())?;
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

    /// Entries a run received are applied (or not).
    pub(super) fn sync_applied(
        &mut self,
        peer: &str,
        tag: Tag,
        landing: Landing,
        result: Result<(), String>,
        now: Now,
        store: &Store,
    ) {
        self.landed(landing, now);
        if let Some(run) = self.round_run(peer) {
            run.run.applied(store, tag, result);
        }
        self.drive_run(peer, now, store);
        self.end_round_if_done(now, store);
    }

    /// A step's answer, with its bytes counted.
    pub(super) fn sync_answered(
        &mut self,
        pending: Pending,
        response: Response,
        now: Now,
        store: &Store,
    ) {
        let Purpose::Sync { tag, pushed, sent } = pending.purpose else {
            return;
        };
        let peer = pending.to;
        let received = postcard::experimental::serialized_size(&response).unwrap_or(0) as u64 + 4;
        let response = match response {
            Response::Sync(response) => Ok(response),
            Response::Error(reply) => Err(reply.message),
            other => Err(format!("unexpected answer {other:?}")),
        };
        let entries_in = match &response {
            Ok(SyncResponse::Compared { send, .. }) => entry_bytes(send),
            Ok(SyncResponse::Entries { entries, .. }) => entry_bytes(entries),
            _ => 0,
        };
        // What this node pulls counts against its own limit too: the next step waits
        // until the bytes received fit.
        let _ = self
            .pacer
            .take(entries_in, self.config.repair_bytes_per_sec, now.mono());
        if let Some(run) = self.round_run(&peer) {
            if response.is_ok() {
                let c = &mut run.counts;
                c.round_trips += 1;
                c.entry_bytes_sent += pushed;
                c.metadata_bytes_sent += sent.saturating_sub(pushed);
                c.entry_bytes_received += entries_in;
                c.metadata_bytes_received += received.saturating_sub(entries_in);
            }
            run.run.handle_response(store, tag, response);
        }
        self.drive_run(&peer, now, store);
        self.end_round_if_done(now, store);
    }

    /// A step got no answer.
    pub(super) fn sync_failed(&mut self, pending: Pending, why: String, now: Now, store: &Store) {
        let Purpose::Sync { tag, .. } = pending.purpose else {
            return;
        };
        let peer = pending.to;
        if let Some(run) = self.round_run(&peer) {
            run.run.handle_response(store, tag, Err(why));
        }
        self.drive_run(&peer, now, store);
        self.end_round_if_done(now, store);
    }

    /// The run with `peer` is done: its outcome goes into the round's report and the
    /// books.
    fn run_done(&mut self, peer: &str, now: Now) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(run) = round.runs.remove(peer) else {
            return;
        };
        let dry_run = round.dry_run;
        let outcome = run
            .run
            .outcome()
            .cloned()
            .unwrap_or_else(|| Err("the run ended without an outcome".into()));
        let report = &mut round.report;
        let result = match outcome {
            Ok(outcome) => {
                let mut counts = run.counts.clone();
                counts.add(&outcome.counts);
                let differences = outcome.differences;
                let in_sync = outcome.in_sync;
                let all_in_sync = differences.iter().all(|d| !d.still_differing)
                    && (dry_run || in_sync.len() == run.partitions);
                if dry_run {
                    report.in_sync &= differences.is_empty();
                } else {
                    report.in_sync &= all_in_sync;
                    for d in differences.iter().filter(|d| d.still_differing) {
                        report.problems.push(format!(
                            "partition {} still differs from {} after repair",
                            d.partition, d.peer
                        ));
                    }
                }
                Ok((counts, differences, in_sync, run.began, run.partitions))
            }
            Err(why) => {
                report.in_sync = false;
                report.problems.push(format!("{peer}: {why}"));
                Err(why)
            }
        };
        round.ended.insert(peer.to_string(), result.clone());
        match result {
            Ok((counts, differences, in_sync, began, partitions)) => {
                self.event(CoreEvent::Exchanged {
                    counts: counts.clone(),
                    ok: true,
                });
                let all_in_sync = differences.iter().all(|d| !d.still_differing)
                    && (dry_run || in_sync.len() == partitions);
                if !dry_run {
                    self.agreed(peer, &in_sync, began);
                }
                let entry = self.books.peers.entry(peer.to_string()).or_default();
                entry.peer = peer.to_string();
                entry.last_exchange_ms = Some(now.wall_ms());
                // The last compare is the verification at the end of a repair, or the
                // comparison itself in a dry run.
                entry.differing_partitions = differences
                    .iter()
                    .filter(|d| {
                        if dry_run {
                            d.keys > 0
                        } else {
                            d.still_differing
                        }
                    })
                    .map(|d| d.partition)
                    .collect();
                entry.partitions_differing = entry.differing_partitions.len() as u64;
                let moved = counts.metadata_bytes_sent
                    + counts.metadata_bytes_received
                    + counts.entry_bytes_sent
                    + counts.entry_bytes_received;
                entry.bytes_moved += moved;
                entry.last_error = None;
                if all_in_sync && !dry_run {
                    entry.last_in_sync_ms = Some(began.wall);
                }
                if let Some(run) = self.books.run.as_mut() {
                    run.bytes_moved += moved;
                }
            }
            Err(why) => {
                self.event(CoreEvent::Exchanged {
                    counts: SyncCounts::default(),
                    ok: false,
                });
                let entry = self.books.peers.entry(peer.to_string()).or_default();
                entry.peer = peer.to_string();
                entry.last_error = Some(why);
            }
        }
    }

    /// Ends the round once every run is done: its report, the fill books, the upkeep
    /// the agreements allow (purges after a full round only), the schedule or the
    /// repair's asker told, and the next repair started.
    fn end_round_if_done(&mut self, now: Now, store: &Store) {
        self.next_run(now, store);
        if !self
            .round
            .as_ref()
            .is_some_and(|r| r.runs.is_empty() && r.waiting.is_empty())
        {
            return;
        }
        let mut round = self.round.take().expect("checked");
        let report = &mut round.report;
        for peer in &round.order {
            if let Some(Ok((counts, differences, ..))) = round.ended.get(peer) {
                report.counts.add(counts);
                report.differences.extend(differences.iter().cloned());
            }
        }
        report.duration_ms = now.mono().0.saturating_sub(round.started_mono.0);
        self.books.progress = None;
        self.books.run = None;
        let last_run = self
            .books
            .last_run
            .replace((now.wall_ms(), report.counts.clone()));
        let mut report = round.report;
        match round.kind {
            RunKind::Repair => {
                // A round that was going when the repair was asked for did the work the
                // repair waited for: the report says what happened to the data from the
                // asking on.
                let waited = last_run
                    .filter(|(ended, _)| *ended >= round.asked_wall)
                    .map(|(_, counts)| counts)
                    .filter(|c| c.keys_sent + c.keys_received > 0);
                if let Some(counts) = waited {
                    report.counts.keys_sent += counts.keys_sent;
                    report.counts.keys_received += counts.keys_received;
                    report.counts.entry_bytes_sent += counts.entry_bytes_sent;
                    report.counts.entry_bytes_received += counts.entry_bytes_received;
                    report.waited_for = Some(counts);
                }
                if !round.dry_run {
                    self.update_fill(now, store);
                }
            }
            RunKind::Fill | RunKind::Background => {
                self.update_fill(now, store);
                self.upkeep(round.kind == RunKind::Background, now, store);
            }
        }
        self.event(CoreEvent::RunEnded {
            kind: round.kind,
            report: Box::new(report.clone()),
        });
        if let Some(due) = round.due {
            let still = self.fill.filling().next().is_some();
            let jitter = if due == RunDue::Full {
                self.random()
            } else {
                0
            };
            self.schedule.done(due, now.mono().0, still, jitter);
        }
        if let Some(ask) = round.ask {
            self.answer(ask, Answer::Repaired(Box::new(report)));
        }
        self.next_repair(now, store);
        self.poll_schedule(now, store);
    }
}
