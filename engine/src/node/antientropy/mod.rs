//! Anti-entropy in a running node: runs exchanges with co-replicas (in the background
//! on a jittered interval, soon after a start, a join or a member's return, on
//! placement changes, and for `vergent repair`), hands partitions off to their new
//! owners, purges old tombstones, and answers the peers' exchange steps.
//!
//! The exchanges themselves are [`Exchange`] state machines; this module only moves
//! their messages, applies what they receive, and keeps the books.

mod books;
mod serve;
mod steps;
mod upkeep;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::Shared;
use super::peers::{PeerError, exchange as send_request};
use crate::antientropy::error::SyncError;
use crate::antientropy::local::entry_bytes;
use crate::antientropy::messages::{ROOTS_PER_REQUEST_MAX, SyncLimits, SyncRequest, SyncResponse};
use crate::antientropy::report::{
    PartitionDifference, RUN_PEERS_GOSSIPED_MAX, RepairProgress, RepairReport, RunKind, RunSummary,
    SyncCounts,
};
use crate::antientropy::respond::{check_entries, check_push};
use crate::antientropy::run::{Run, RunConfig, RunStep};
use crate::base::Millis;
use crate::placement::PartitionId;
use crate::policy::{RunDue, RunInputs, RunSchedule, RunScope, plan_runs};
use crate::protocol::{ErrorCode, ErrorReply, Request, Response};
use crate::record::Entry;
use crate::wallclock::system_wall_ms;

pub(crate) use self::serve::respond;
pub(crate) mod confirmations;
mod moments;

pub(crate) use self::books::AntiEntropy;
pub(crate) use self::moments::Moment;
use self::moments::{agreed, grace_horizon};
use self::steps::sync_with;
use self::upkeep::upkeep;

/// Partitions in one roots message: as many as a peer answers.
const ROOTS_PER_MESSAGE: usize = ROOTS_PER_REQUEST_MAX;
/// Time allowed for one exchange step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What this node accepts and answers in an exchange.
fn sync_limits(shared: &Shared) -> SyncLimits {
    SyncLimits {
        value_bytes_max: shared.config.value_bytes_max,
    }
}

/// Applies entries received from a peer, pushed or answered. They pass the same checks
/// as a `Replicate`: key and value limits (a batch with one bad entry is refused
/// whole), and entries from a clock too far ahead are left out.
async fn apply_received(shared: &Arc<Shared>, entries: Vec<Entry>) -> Result<u32, SyncError> {
    if entries.is_empty() {
        return Ok(0);
    }
    check_entries(&entries, &sync_limits(shared))?;
    let entries: Vec<Entry> = {
        let cluster_ms = shared.cluster_wall_ms();
        let mut clock = shared.clock.lock().expect("clock lock");
        let now = system_wall_ms();
        entries
            .into_iter()
            .filter(
                |e| match clock.observe_against(e.record.version.hlc, now, cluster_ms) {
                    Ok(_) => true,
                    Err(err) => {
                        shared.clock_refused("anti-entropy entry", &err);
                        false
                    }
                },
            )
            .collect()
    };
    let outcomes = shared.apply_noted(entries).await?;
    Ok(outcomes.iter().filter(|o| o.applied()).count() as u32)
}

/// What to compare with one peer.
struct Plan {
    peer: String,
    partitions: Vec<PartitionId>,
}

/// Every live peer and the partitions this node exchanges with it, by the node's rule
/// ([`plan_runs`]).
fn plan(shared: &Shared, scope: RunScope<'_>, only_peer: Option<&str>) -> Vec<Plan> {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let with_data = shared.store.partitions_with_data();
    let replica_set = |p: PartitionId| view.replica_set_of(p);
    let peer = |name: &str| {
        only_peer.is_none_or(|only| only == name)
            && view.member(name).is_some_and(|m| m.state.is_live())
    };
    let inputs = RunInputs {
        me,
        partitions: shared.settings.partitions,
        replica_set: &replica_set,
        with_data: &with_data,
        statuses_known: view.statuses_known(),
        holders: &|p| view.holders_by_word(p),
        peer: &peer,
    };
    plan_runs(&inputs, scope)
        .into_iter()
        .map(|(peer, partitions)| Plan { peer, partitions })
        .collect()
}

/// The background task: fills this node's partitions as soon as it takes their writes,
/// and (unless turned off) compares everything on a jittered interval. When is the
/// schedule's ([`RunSchedule`], the simulator's too); this carries the runs out.
pub(crate) async fn run(shared: Arc<Shared>) {
    let interval = shared.config.anti_entropy_interval;
    if interval.is_none() {
        tracing::info!(
            "background anti-entropy is off; repair runs on demand only (partitions this node must fill are still filled)"
        );
    }
    let mut schedule = RunSchedule::new(interval.map(|i| i.as_millis() as u64), shared.now().0);
    loop {
        let filling: Vec<PartitionId> = shared.fill.lock().expect("fill lock").filling().collect();
        match schedule.poll(shared.now().0, !filling.is_empty()) {
            Some(RunDue::Fill) => {
                note_placement(&shared);
                fill_run(&shared, &filling).await;
                let still = shared.fill.lock().expect("fill lock").filling().count() > 0;
                schedule.done(RunDue::Fill, shared.now().0, still, 0);
                continue;
            }
            Some(RunDue::Full) => {
                note_placement(&shared);
                full_run(&shared).await;
                let still = shared.fill.lock().expect("fill lock").filling().count() > 0;
                let jitter = {
                    let mut bytes = [0u8; 8];
                    let _ = getrandom::fill(&mut bytes);
                    u64::from_le_bytes(bytes)
                };
                schedule.done(RunDue::Full, shared.now().0, still, jitter);
                continue;
            }
            None => {}
        }
        let deadline = schedule
            .poll_timeout()
            .map(|at| tokio::time::Instant::from_std(shared.started + Millis(at).duration()));
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = sleep_until(deadline) => {}
            _ = shared.anti_entropy.wake.notified() => schedule.wake(shared.now().0),
            _ = shared.anti_entropy.fill_wake.notified() => schedule.fill_wake(shared.now().0),
        }
    }
}

/// Exchanges the partitions this node fills with the replicas they fill from.
async fn fill_run(shared: &Arc<Shared>, filling: &[PartitionId]) {
    let report = background_run(shared, RunKind::Fill, RunScope::Fill(filling)).await;
    super::fill::update(shared);
    let left = shared.fill.lock().expect("fill lock").filling().count();
    tracing::info!(
        compared = report.counts.partitions_compared,
        keys_received = report.counts.keys_received,
        filled = filling.len().saturating_sub(left),
        still_filling = left,
        problems = ?report.problems,
        "fill run"
    );
    upkeep(shared, false).await;
}

/// Compares every partition with every peer that shares it, then hands off and purges
/// what the agreements allow.
async fn full_run(shared: &Arc<Shared>) {
    let report = background_run(shared, RunKind::Background, RunScope::All(None)).await;
    if report.counts.partitions_differing > 0 || !report.problems.is_empty() {
        tracing::info!(
            compared = report.counts.partitions_compared,
            differing = report.counts.partitions_differing,
            keys_sent = report.counts.keys_sent,
            keys_received = report.counts.keys_received,
            problems = ?report.problems,
            "anti-entropy run"
        );
    }
    super::fill::update(shared);
    upkeep(shared, true).await;
}

/// One run of the schedule's, once no repair is running.
async fn background_run(shared: &Arc<Shared>, kind: RunKind, scope: RunScope<'_>) -> RepairReport {
    let _running = shared.anti_entropy.running.lock().await;
    run_once(shared, kind, scope, None, false, &|_| {}).await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Remembers when the placement last changed (handoff waits for exchanges after it).
fn note_placement(shared: &Shared) {
    let digest = shared.view().placement.digest();
    let now = shared.now().0;
    let mut books = shared.anti_entropy.books.lock().expect("books lock");
    books.agreements.note_placement(&digest, now);
}

/// `vergent repair`: one run, reporting progress.
pub(crate) async fn repair(
    shared: &Arc<Shared>,
    partition: Option<PartitionId>,
    peer: Option<String>,
    dry_run: bool,
    progress: &(dyn Fn(RepairProgress) + Sync),
) -> RepairReport {
    note_placement(shared);
    let asked = Instant::now();
    let asked_ms = system_wall_ms();
    let (mut report, waited_for) = {
        let _running = shared.anti_entropy.running.lock().await;
        // A run that was going when the repair was asked for did the work the repair
        // waited for: the report says what happened to the data from the asking on.
        let waited_for = shared
            .anti_entropy
            .books
            .lock()
            .expect("books lock")
            .last_run
            .clone()
            .filter(|(ended, _)| *ended >= asked_ms)
            .map(|(_, counts)| counts);
        let report = run_once(
            shared,
            RunKind::Repair,
            RunScope::All(partition),
            peer.as_deref(),
            dry_run,
            progress,
        )
        .await;
        (report, waited_for)
    };
    if let Some(counts) = waited_for.filter(|c| c.keys_sent + c.keys_received > 0) {
        report.waited_for = Some(counts.clone());
        report.counts.keys_sent += counts.keys_sent;
        report.counts.keys_received += counts.keys_received;
        report.counts.entry_bytes_sent += counts.entry_bytes_sent;
        report.counts.entry_bytes_received += counts.entry_bytes_received;
    }
    report.duration_ms = asked.elapsed().as_millis() as u64;
    if !dry_run {
        super::fill::update(shared);
    }
    report
}

async fn run_once(
    shared: &Arc<Shared>,
    kind: RunKind,
    scope: RunScope<'_>,
    peer: Option<&str>,
    dry_run: bool,
    progress: &(dyn Fn(RepairProgress) + Sync),
) -> RepairReport {
    let started = Instant::now();
    let partition = match scope {
        RunScope::All(partition) => partition,
        RunScope::Fill(_) => None,
    };
    let plans = plan(shared, scope, peer);
    let mut report = RepairReport {
        node: shared.me.name.clone(),
        dry_run,
        peers: plans.iter().map(|p| p.peer.clone()).collect(),
        in_sync: true,
        ..RepairReport::default()
    };
    if let Some(peer) = peer
        && plans.is_empty()
    {
        report.problems.push(format!(
            "{peer} is not a live member sharing a partition with {}",
            shared.me.name
        ));
        report.in_sync = false;
    }
    let view = shared.view();
    // A node that knows nobody else (it has just joined and not heard from anyone, or
    // every other member left) has compared nothing: that is not "in sync".
    if plans.is_empty()
        && !view
            .members
            .iter()
            .any(|m| m.id.name != shared.me.name && m.state != crate::membership::MemberState::Left)
    {
        report.problems.push(format!(
            "{} knows no other member of the cluster: nothing was compared",
            shared.me.name
        ));
        report.in_sync = false;
    }
    // A co-replica that is down cannot be compared: the repair is not complete.
    for member in view
        .members
        .iter()
        .filter(|m| m.id.name != shared.me.name && !m.state.is_live())
    {
        let name = member.id.name.as_str();
        if member.state == crate::membership::MemberState::Left
            || peer.is_some_and(|only| only != name)
        {
            continue;
        }
        let shares = view.placement.partitions_of(name).any(|p| {
            view.placement.holds(&shared.me.name, p) && partition.is_none_or(|only| only == p)
        });
        if shares {
            report.problems.push(format!(
                "{name} is {}: its partitions were not compared",
                member.state.as_str()
            ));
            report.in_sync = false;
        }
    }
    let total: u64 = plans.iter().map(|p| p.partitions.len() as u64).sum();
    let state = Mutex::new(RepairProgress {
        done: 0,
        total,
        keys_moved: 0,
    });
    shared.anti_entropy.books.lock().expect("books lock").run = Some(RunSummary {
        kind,
        peers: plans
            .iter()
            .take(RUN_PEERS_GOSSIPED_MAX)
            .map(|p| p.peer.clone())
            .collect(),
        peers_total: plans.len().min(usize::from(u16::MAX)) as u16,
        total,
        started_ms: system_wall_ms(),
        ..RunSummary::default()
    });
    let tick = |done: u64, moved: u64| {
        let snapshot = {
            let mut state = state.lock().expect("progress lock");
            state.done += done;
            state.keys_moved += moved;
            *state
        };
        let mut books = shared.anti_entropy.books.lock().expect("books lock");
        books.progress = Some(snapshot);
        if let Some(run) = books.run.as_mut() {
            run.done = snapshot.done;
            run.keys_moved = snapshot.keys_moved;
        }
        drop(books);
        progress(snapshot);
    };
    tick(0, 0);
    for plan in &plans {
        let began = Moment::now(shared);
        match sync_with(shared, &plan.peer, &plan.partitions, dry_run, &tick).await {
            Ok((counts, differences, in_sync)) => {
                super::metrics::exchange(&counts, true);
                let all_in_sync = differences.iter().all(|d| !d.still_differing)
                    && (dry_run || in_sync.len() == plan.partitions.len());
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
                if !dry_run {
                    shared
                        .anti_entropy
                        .agreed(shared, &plan.peer, &in_sync, began);
                }
                let mut books = shared.anti_entropy.books.lock().expect("books lock");
                let entry = books.peers.entry(plan.peer.clone()).or_default();
                entry.peer = plan.peer.clone();
                entry.last_exchange_ms = Some(system_wall_ms());
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
                if let Some(run) = books.run.as_mut() {
                    run.bytes_moved += moved;
                }
                drop(books);
                report.counts.add(&counts);
                report.differences.extend(differences);
            }
            Err(err) => {
                super::metrics::exchange(&SyncCounts::default(), false);
                report.in_sync = false;
                report.problems.push(format!("{}: {err}", plan.peer));
                let mut books = shared.anti_entropy.books.lock().expect("books lock");
                let entry = books.peers.entry(plan.peer.clone()).or_default();
                entry.peer = plan.peer.clone();
                entry.last_error = Some(err);
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let mut books = shared.anti_entropy.books.lock().expect("books lock");
    books.progress = None;
    books.run = None;
    books.last_run = Some((system_wall_ms(), report.counts.clone()));
    drop(books);
    report
}
