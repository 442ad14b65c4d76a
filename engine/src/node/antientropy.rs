//! Anti-entropy in a running node: runs exchanges with co-replicas (in the background
//! on a jittered interval, soon after a start, a join or a member's return, on
//! placement changes, and for `vergent repair`), hands partitions off to their new
//! owners, purges old tombstones, and answers the peers' exchange steps.
//!
//! The exchanges themselves are [`Exchange`] state machines; this module only moves
//! their messages, applies what they receive, and keeps the books.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;

use super::Shared;
use super::peers::{PeerError, exchange as send_request};
use crate::antientropy::error::SyncError;
use crate::antientropy::exchange::{Exchange, purgeable, root_summary};
use crate::antientropy::local::entry_bytes;
use crate::antientropy::messages::{
    DifferingRoot, ROOTS_PER_REQUEST_MAX, SyncLimits, SyncRequest, SyncResponse,
};
use crate::antientropy::report::{
    PartitionDifference, PeerSync, RepairProgress, RepairReport, SyncCounts,
};
use crate::antientropy::respond::{check_entries, check_push, check_roots_answer};
use crate::placement::PartitionId;
use crate::protocol::{ErrorCode, ErrorReply, Request, Response};
use crate::record::Entry;
use crate::wallclock::system_wall_ms;

/// Partitions in one roots message: as many as a peer answers.
const ROOTS_PER_MESSAGE: usize = ROOTS_PER_REQUEST_MAX;
/// Time allowed for one exchange step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay before the first background run after a start.
const FIRST_RUN_DELAY: Duration = Duration::from_secs(3);
/// Tombstones purged per partition per run.
const PURGE_BATCH_MAX: usize = 10_000;

/// Anti-entropy's books: per-peer state for `status`, per-(partition, peer) in-sync
/// times for purges and handoff, the progress of a running repair.
#[derive(Default)]
pub(crate) struct AntiEntropy {
    pub(crate) wake: Notify,
    /// Partitions to fill: exchanges for them run at once and are retried until done,
    /// whether or not background runs are on.
    pub(crate) fill_wake: Notify,
    books: Mutex<Books>,
    /// One run at a time: a repair waits for a background run and the other way round.
    running: tokio::sync::Mutex<()>,
    limiter: RateLimiter,
}

#[derive(Default)]
struct Books {
    peers: BTreeMap<String, PeerSync>,
    /// Wall ms at the start of the last exchange of (partition, peer) that ended with
    /// both in sync: everything either held before then, the other holds.
    in_sync: HashMap<(PartitionId, String), u64>,
    /// The placement digest seen last, and when it was first seen.
    placement: Option<(String, u64)>,
    progress: Option<RepairProgress>,
    /// Partitions being exchanged right now.
    in_flight: std::collections::BTreeSet<PartitionId>,
}

impl AntiEntropy {
    /// Wall ms at the start of the last exchange of `partition` with `peer` that ended
    /// with both in agreement.
    pub(crate) fn in_sync_at(&self, partition: PartitionId, peer: &str) -> Option<u64> {
        self.books
            .lock()
            .expect("books lock")
            .in_sync
            .get(&(partition, peer.to_string()))
            .copied()
    }

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
struct RateLimiter {
    state: Mutex<Option<(f64, Instant)>>,
}

impl RateLimiter {
    async fn take(&self, bytes: u64, per_sec: u64) {
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

/// The responder's side: one step of a peer's exchange. The request is checked before
/// anything is read or applied; a failure of this node's own storage is reported as
/// such, not as the peer's fault.
pub(crate) async fn respond(
    shared: &Arc<Shared>,
    request: SyncRequest,
) -> Result<Response, ErrorReply> {
    let limits = sync_limits(shared);
    match request {
        SyncRequest::Push { partition, entries } => {
            check_push(partition, &entries, shared.settings.partitions, &limits)
                .map_err(sync_error)?;
            let bytes = entry_bytes(&entries);
            shared
                .anti_entropy
                .limiter
                .take(bytes, shared.config.repair_bytes_per_sec)
                .await;
            let horizon = purge_horizon(shared);
            // An old tombstone is accepted only where it deletes something.
            let mut keep = Vec::with_capacity(entries.len());
            for entry in entries {
                if purgeable(&entry, horizon)
                    && shared
                        .store
                        .get(&entry.key)
                        .map_err(|e| sync_error(e.into()))?
                        .is_none()
                {
                    continue;
                }
                keep.push(entry);
            }
            let applied = apply_received(shared, keep).await.map_err(sync_error)?;
            Ok(Response::Sync(SyncResponse::Pushed { applied }))
        }
        other => {
            let response = crate::antientropy::respond::respond(&shared.store, &other, &limits)
                .map_err(sync_error)?;
            if let SyncResponse::Compared { send, .. }
            | SyncResponse::Entries { entries: send, .. } = &response
            {
                let bytes = entry_bytes(send);
                shared
                    .anti_entropy
                    .limiter
                    .take(bytes, shared.config.repair_bytes_per_sec)
                    .await;
            }
            Ok(Response::Sync(response))
        }
    }
}

/// The answer to a peer whose step failed: whose fault it was, and why.
fn sync_error(err: SyncError) -> ErrorReply {
    match err {
        SyncError::Storage(err) => super::service::storage_error(err),
        SyncError::LimitExceeded { .. } | SyncError::BadEntry(_) => {
            ErrorReply::new(ErrorCode::LimitExceeded, format!("sync: {err}"))
        }
        SyncError::NoSuchPartition { .. }
        | SyncError::NoSuchNode { .. }
        | SyncError::BadRequest(_)
        | SyncError::Protocol(_) => ErrorReply::new(ErrorCode::BadRequest, format!("sync: {err}")),
    }
}

/// What this node accepts and answers in an exchange.
fn sync_limits(shared: &Shared) -> SyncLimits {
    SyncLimits {
        value_bytes_max: shared.config.value_bytes_max,
    }
}

/// Tombstones older than this (wall ms) may be purged.
fn purge_horizon(shared: &Shared) -> u64 {
    system_wall_ms().saturating_sub(shared.config.tombstone_grace.as_millis() as u64)
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
    let outcomes = shared.store.apply(entries).await?;
    Ok(outcomes.iter().filter(|o| o.applied()).count() as u32)
}

/// What to compare with one peer.
struct Plan {
    peer: String,
    partitions: Vec<PartitionId>,
}

/// Which partitions a run covers.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every partition (or one, for `vergent repair --partition`).
    All(Option<PartitionId>),
    /// Only these, with only the replicas that count: filling this node's partitions.
    Fill(&'a [PartitionId]),
}

/// Every live peer and the partitions this node exchanges with it: those both take
/// writes for (owners and stand-ins), plus those this node holds data of without taking
/// their writes any more, with the replicas that count for them (handoff).
fn plan(shared: &Shared, scope: Scope<'_>, only_peer: Option<&str>) -> Vec<Plan> {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let with_data = shared.store.partitions_with_data();
    let mut per_peer: BTreeMap<&str, Vec<PartitionId>> = BTreeMap::new();
    let live: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.id.name != me && m.state.is_live())
        .filter(|m| only_peer.is_none_or(|only| only == m.id.name))
        .map(|m| m.id.name.as_str())
        .collect();
    let partitions: Vec<PartitionId> = match scope {
        Scope::All(None) => (0..shared.settings.partitions).collect(),
        Scope::All(Some(p)) => vec![p],
        Scope::Fill(partitions) => partitions.to_vec(),
    };
    for p in partitions {
        let set = view.replica_set_of(p);
        let mine = set.targets.iter().any(|t| t == me);
        let peers: &[String] = match scope {
            Scope::Fill(_) => &set.counted,
            Scope::All(_) if mine => &set.targets,
            Scope::All(_) if with_data.contains(&p) => &set.counted,
            Scope::All(_) => continue,
        };
        for peer in peers {
            if let Some(peer) = live.iter().find(|l| **l == peer) {
                per_peer.entry(peer).or_default().push(p);
            }
        }
    }
    per_peer
        .into_iter()
        .map(|(peer, partitions)| Plan {
            peer: peer.to_string(),
            partitions,
        })
        .collect()
}

/// Delay before retrying partitions that did not fill.
const FILL_RETRY: Duration = Duration::from_secs(1);

/// The background task: fills this node's partitions as soon as it takes their writes,
/// and (unless turned off) compares everything on a jittered interval.
pub(crate) async fn run(shared: Arc<Shared>) {
    let interval = shared.config.anti_entropy_interval;
    if interval.is_none() {
        tracing::info!(
            "background anti-entropy is off; repair runs on demand only (partitions this node must fill are still filled)"
        );
    }
    let far = || tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut next = match interval {
        Some(_) => tokio::time::Instant::now() + FIRST_RUN_DELAY,
        None => far(),
    };
    let mut fill_at: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    loop {
        let mut full = false;
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next) => full = true,
            _ = shared.anti_entropy.wake.notified() => {
                // Let a burst of membership changes settle into one run.
                tokio::time::sleep(Duration::from_millis(500)).await;
                full = interval.is_some();
            }
            _ = shared.anti_entropy.fill_wake.notified() => {}
            _ = sleep_until(fill_at), if fill_at.is_some() => {}
        }
        note_placement(&shared);
        let filling: Vec<PartitionId> = shared.fill.lock().expect("fill lock").filling().collect();
        if !filling.is_empty() {
            let report = {
                let _running = shared.anti_entropy.running.lock().await;
                run_once(&shared, Scope::Fill(&filling), None, false, &|_| {}).await
            };
            super::fill::update(&shared);
            let left = shared.fill.lock().expect("fill lock").filling().count();
            tracing::info!(
                compared = report.counts.partitions_compared,
                keys_received = report.counts.keys_received,
                filled = filling.len().saturating_sub(left),
                still_filling = left,
                problems = ?report.problems,
                "fill run"
            );
            hand_off(&shared).await;
        }
        fill_at = (shared.fill.lock().expect("fill lock").filling().count() > 0)
            .then(|| tokio::time::Instant::now() + FILL_RETRY);
        if !full {
            continue;
        }
        let report = {
            let _running = shared.anti_entropy.running.lock().await;
            run_once(&shared, Scope::All(None), None, false, &|_| {}).await
        };
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
        super::fill::update(&shared);
        hand_off(&shared).await;
        purge(&shared).await;
        let Some(interval) = interval else {
            next = far();
            continue;
        };
        let interval = interval.as_millis() as u64;
        let jitter = {
            let mut bytes = [0u8; 8];
            let _ = getrandom::fill(&mut bytes);
            u64::from_le_bytes(bytes) % (interval / 5 + 1)
        };
        next =
            tokio::time::Instant::now() + Duration::from_millis(interval - interval / 10 + jitter);
    }
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
    let mut books = shared.anti_entropy.books.lock().expect("books lock");
    if books
        .placement
        .as_ref()
        .is_none_or(|(seen, _)| *seen != digest)
    {
        books.placement = Some((digest, system_wall_ms()));
    }
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
    let report = {
        let _running = shared.anti_entropy.running.lock().await;
        run_once(
            shared,
            Scope::All(partition),
            peer.as_deref(),
            dry_run,
            progress,
        )
        .await
    };
    if !dry_run {
        super::fill::update(shared);
    }
    report
}

async fn run_once(
    shared: &Arc<Shared>,
    scope: Scope<'_>,
    peer: Option<&str>,
    dry_run: bool,
    progress: &(dyn Fn(RepairProgress) + Sync),
) -> RepairReport {
    let started = Instant::now();
    let partition = match scope {
        Scope::All(partition) => partition,
        Scope::Fill(_) => None,
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
    let tick = |done: u64, moved: u64| {
        let snapshot = {
            let mut state = state.lock().expect("progress lock");
            state.done += done;
            state.keys_moved += moved;
            *state
        };
        shared
            .anti_entropy
            .books
            .lock()
            .expect("books lock")
            .progress = Some(snapshot);
        progress(snapshot);
    };
    tick(0, 0);
    for plan in &plans {
        let began = system_wall_ms();
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
                let mut books = shared.anti_entropy.books.lock().expect("books lock");
                if !dry_run {
                    for p in &in_sync {
                        books.in_sync.insert((*p, plan.peer.clone()), began);
                    }
                }
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
                entry.bytes_moved += counts.metadata_bytes_sent
                    + counts.metadata_bytes_received
                    + counts.entry_bytes_sent
                    + counts.entry_bytes_received;
                entry.last_error = None;
                if all_in_sync && !dry_run {
                    entry.last_in_sync_ms = Some(began);
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
    shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .progress = None;
    report
}

/// One exchange step over the wire, with its byte counts.
async fn step(
    shared: &Shared,
    connection: &quinn::Connection,
    request: SyncRequest,
    counts: &Mutex<SyncCounts>,
) -> Result<SyncResponse, String> {
    let pushed = match &request {
        SyncRequest::Push { entries, .. } => entry_bytes(entries),
        _ => 0,
    };
    shared
        .anti_entropy
        .limiter
        .take(pushed, shared.config.repair_bytes_per_sec)
        .await;
    let request = Request::Sync(request);
    let sent = postcard::experimental::serialized_size(&request).unwrap_or(0) as u64 + 4;
    let response = tokio::time::timeout(STEP_TIMEOUT, send_request(connection, &request))
        .await
        .map_err(|_| format!("no answer within {} s", STEP_TIMEOUT.as_secs()))?
        .map_err(|PeerError(e)| e)?;
    let received = postcard::experimental::serialized_size(&response).unwrap_or(0) as u64 + 4;
    let response = match response {
        Response::Sync(response) => response,
        Response::Error(reply) => return Err(reply.message),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let entries_in = match &response {
        SyncResponse::Compared { send, .. } => entry_bytes(send),
        SyncResponse::Entries { entries, .. } => entry_bytes(entries),
        _ => 0,
    };
    let mut c = counts.lock().expect("counts lock");
    c.round_trips += 1;
    c.entry_bytes_sent += pushed;
    c.metadata_bytes_sent += sent - pushed;
    c.entry_bytes_received += entries_in;
    c.metadata_bytes_received += received - entries_in;
    Ok(response)
}

type PeerOutcome = (SyncCounts, Vec<PartitionDifference>, Vec<PartitionId>);

/// Compares `partitions` with `peer` and, unless `dry_run`, repairs them. Returns the
/// counts, the partitions that differed, and the partitions in sync at the end.
async fn sync_with(
    shared: &Arc<Shared>,
    peer: &str,
    partitions: &[PartitionId],
    dry_run: bool,
    tick: &(dyn Fn(u64, u64) + Sync),
) -> Result<PeerOutcome, String> {
    let id = shared
        .view()
        .member(peer)
        .map(|m| m.id.clone())
        .ok_or_else(|| format!("{peer} is not a known member"))?;
    let connection = shared
        .peers
        .connection(&id)
        .await
        .map_err(|PeerError(e)| e)?;
    let counts = Mutex::new(SyncCounts::default());
    let salt = {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let differing = compare_roots(shared, &connection, partitions, salt, &counts).await?;
    check_roots_answer(partitions, &differing)?;
    counts.lock().expect("counts lock").partitions_compared += partitions.len() as u64;
    counts.lock().expect("counts lock").partitions_differing += differing.len() as u64;
    tick(partitions.len().saturating_sub(differing.len()) as u64, 0);
    let mut differences: BTreeMap<PartitionId, PartitionDifference> = BTreeMap::new();
    run_exchanges(
        shared,
        &connection,
        peer,
        &differing,
        salt,
        dry_run,
        &counts,
        &mut differences,
        tick,
    )
    .await;
    let mut still: Vec<PartitionId> = Vec::new();
    if !dry_run && !differing.is_empty() {
        // Verify, and give partitions written to during the exchange one more pass.
        let touched: Vec<PartitionId> = differing.iter().map(|d| d.partition).collect();
        let salt = salt.wrapping_add(1);
        let again = compare_roots(shared, &connection, &touched, salt, &counts).await?;
        check_roots_answer(&touched, &again)?;
        let mut ignored = BTreeMap::new();
        run_exchanges(
            shared,
            &connection,
            peer,
            &again,
            salt,
            false,
            &counts,
            &mut ignored,
            &|_, _| {},
        )
        .await;
        let retried: Vec<PartitionId> = again.iter().map(|d| d.partition).collect();
        let salt = salt.wrapping_add(1);
        let last = compare_roots(shared, &connection, &retried, salt, &counts).await?;
        check_roots_answer(&retried, &last)?;
        still = last
            .into_iter()
            .map(|d| d.partition)
            .filter(|p| {
                // Differences that are only pending purges are not divergence.
                differences.get(p).is_none_or(|d| d.keys > 0)
            })
            .collect();
        for p in &still {
            if let Some(d) = differences.get_mut(p) {
                d.still_differing = true;
            }
        }
    }
    let in_sync = partitions
        .iter()
        .copied()
        .filter(|p| !still.contains(p) && (!dry_run || !differences.contains_key(p)))
        .collect();
    let counts = counts.into_inner().expect("counts lock");
    Ok((counts, differences.into_values().collect(), in_sync))
}

async fn compare_roots(
    shared: &Shared,
    connection: &quinn::Connection,
    partitions: &[PartitionId],
    salt: u64,
    counts: &Mutex<SyncCounts>,
) -> Result<Vec<DifferingRoot>, String> {
    let mut differing = Vec::new();
    for chunk in partitions.chunks(ROOTS_PER_MESSAGE) {
        let roots = chunk
            .iter()
            .map(|&p| root_summary(&shared.store, p, salt))
            .collect::<Result<Vec<_>, _>>()?;
        match step(
            shared,
            connection,
            SyncRequest::Roots { salt, roots },
            counts,
        )
        .await?
        {
            SyncResponse::Roots { differing: d } => differing.extend(d),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(differing)
}

#[allow(clippy::too_many_arguments)]
async fn run_exchanges(
    shared: &Arc<Shared>,
    connection: &quinn::Connection,
    peer: &str,
    differing: &[DifferingRoot],
    salt: u64,
    dry_run: bool,
    counts: &Mutex<SyncCounts>,
    differences: &mut BTreeMap<PartitionId, PartitionDifference>,
    tick: &(dyn Fn(u64, u64) + Sync),
) {
    let horizon = purge_horizon(shared);
    let limit = shared.config.exchanges_in_flight.max(1);
    let mut pending = differing.iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < limit {
            let Some(root) = pending.next() else { break };
            running.push(exchange_one(
                shared, connection, root, salt, horizon, dry_run, counts,
            ));
        }
        let Some((partition, result)) = running.next().await else {
            break;
        };
        match result {
            Ok(stats) => {
                let mut c = counts.lock().expect("counts lock");
                c.keys_differing += stats.differing_keys;
                c.keys_sent += stats.keys_sent;
                c.keys_received += stats.keys_received;
                c.pending_purge += stats.pending_purge();
                drop(c);
                differences.insert(
                    partition,
                    PartitionDifference {
                        partition,
                        peer: peer.to_string(),
                        keys: stats.differing_keys,
                        still_differing: false,
                    },
                );
                tick(1, stats.keys_sent + stats.keys_received);
            }
            Err(err) => {
                tracing::warn!(peer, partition, "exchange failed: {err}");
                differences.insert(
                    partition,
                    PartitionDifference {
                        partition,
                        peer: peer.to_string(),
                        keys: 0,
                        still_differing: true,
                    },
                );
                tick(1, 0);
            }
        }
    }
}

async fn exchange_one(
    shared: &Arc<Shared>,
    connection: &quinn::Connection,
    root: &DifferingRoot,
    salt: u64,
    horizon: u64,
    dry_run: bool,
    counts: &Mutex<SyncCounts>,
) -> (
    PartitionId,
    Result<crate::antientropy::exchange::ExchangeStats, String>,
) {
    let partition = root.partition;
    shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .in_flight
        .insert(partition);
    let result = async {
        let limits = sync_limits(shared);
        let mut exchange = Exchange::new(&shared.store, root, salt, horizon, dry_run, limits)?;
        while let Some(request) = exchange.poll_request(&shared.store) {
            let response = step(shared, connection, request, counts).await?;
            exchange.handle_response(&shared.store, response);
            while let Some(entries) = exchange.poll_apply() {
                apply_received(shared, entries).await?;
            }
        }
        match exchange.failure() {
            Some(err) => Err(err.to_string()),
            None => Ok(exchange.stats()),
        }
    }
    .await;
    shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .in_flight
        .remove(&partition);
    (partition, result)
}

/// Drops partitions this node holds data of but no longer takes writes for, once every
/// replica that counts for them has completed an exchange in agreement with it since it
/// stopped (and since the placement changed): handoff is repair.
async fn hand_off(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let placement_since = match &shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .placement
    {
        Some((_, since)) => *since,
        None => return,
    };
    for partition in shared.store.partitions_with_data() {
        let set = view.replica_set_of(partition);
        if set.targets.iter().any(|t| t == me) {
            continue;
        }
        let Some(released) = shared
            .fill
            .lock()
            .expect("fill lock")
            .released_at(partition)
        else {
            continue;
        };
        let since = released.max(placement_since);
        let confirmed = !set.counted.is_empty()
            && set.counted.iter().all(|o| {
                shared
                    .anti_entropy
                    .in_sync_at(partition, o)
                    .is_some_and(|t| t >= since)
            });
        if !confirmed {
            continue;
        }
        match shared.store.drop_partition(partition).await {
            Ok(removed) => {
                shared.fill.lock().expect("fill lock").handed_off(partition);
                tracing::info!(partition, removed, owners = ?set.counted, "partition handed off to its owners; dropped here")
            }
            Err(err) => tracing::error!(partition, "handoff drop failed: {err}"),
        }
    }
}

/// Purges tombstones past the grace period from partitions whose every co-replica has
/// completed an in-sync exchange with this node after them.
async fn purge(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let grace_horizon = purge_horizon(shared);
    for partition in 0..shared.settings.partitions {
        let set = view.replica_set_of(partition);
        if !set.targets.iter().any(|t| t == me) {
            continue;
        }
        let horizon = {
            let books = shared.anti_entropy.books.lock().expect("books lock");
            set.targets
                .iter()
                .filter(|r| *r != me)
                .map(|r| {
                    books
                        .in_sync
                        .get(&(partition, r.to_string()))
                        .copied()
                        .unwrap_or(0)
                })
                .min()
                .unwrap_or(grace_horizon)
                .min(grace_horizon)
        };
        if horizon == 0 {
            continue;
        }
        let Ok(tombstones) = shared
            .store
            .tombstones_before(partition, horizon, PURGE_BATCH_MAX)
        else {
            continue;
        };
        if tombstones.is_empty() {
            continue;
        }
        match shared.store.purge(tombstones).await {
            Ok(purged) if purged > 0 => tracing::info!(partition, purged, "tombstones purged"),
            Ok(_) => {}
            Err(err) => tracing::error!(partition, "purge failed: {err}"),
        }
    }
}
