//! `vergent top`: the live dashboard. This side polls a node's status four times a
//! second, turns it into the dashboard's model (rates, events, partition states), fails
//! over to another member when the watched node stops answering, and carries out what
//! the operator asks (a repair, a partition's details). The `vergent-tui` crate draws.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use vergent_tui::app::Command;
use vergent_tui::model::{
    Connection, Dashboard, EventRow, MemberRow, MemberState, PartitionCell, PartitionDetail,
    PartitionState, RepairRow, ReplicaDetail, Severity,
};

use super::{ClientArgs, Failure};
use crate::antientropy::confirm::PartitionSyncState;
use crate::antientropy::report::{RunKind, RunSummary};
use crate::client::Client;
use crate::hlc::Timestamp;
use crate::net::TlsMaterial;
use crate::protocol::{ClusterStatus, Request, Response};

/// Time between polls of the watched node.
const REFRESH: Duration = Duration::from_millis(250);
/// Time allowed for one status request.
const POLL_TIMEOUT: Duration = Duration::from_millis(1500);
/// Events kept.
const EVENTS_MAX: usize = 200;
/// Time between tries to go back to the node asked for, after failing over.
const RETURN_TRY: Duration = Duration::from_secs(2);
/// Throughput samples kept (one a second).
const THROUGHPUT_MAX: usize = 300;

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(args: TopArgs) -> Result<(), Failure> {
    let runtime = super::runtime()?;
    let node = args.client.node()?.to_owned();
    let material = Arc::new(TlsMaterial::load(&args.client.certs, &args.client.user)?);
    dashboard(&runtime, material, node, None)
}

/// Runs the dashboard against `node` until the operator quits.
pub(crate) fn dashboard(
    runtime: &tokio::runtime::Runtime,
    material: Arc<TlsMaterial>,
    node: String,
    notice: Option<String>,
) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            "the dashboard needs a terminal (stdout is not one)",
        ));
    }
    let builder = Arc::new(Mutex::new(Builder::new(&node)));
    if let Some(notice) = notice {
        let mut b = builder.lock().expect("builder lock");
        b.event(notice.clone(), Severity::Info);
        b.notice = Some(notice);
    }
    let (models, model_rx) = std_mpsc::channel();
    let (commands, command_rx) = std_mpsc::channel::<Command>();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = runtime.spawn(poll(
        builder.clone(),
        material.clone(),
        node,
        models,
        stop.clone(),
    ));
    let handle = runtime.handle().clone();
    let (b, m) = (builder.clone(), material.clone());
    std::thread::spawn(move || {
        while let Ok(command) = command_rx.recv() {
            handle.spawn(carry_out(command, b.clone(), m.clone()));
        }
    });
    let first = builder.lock().expect("builder lock").model();
    let colour = std::env::var_os("NO_COLOR").is_none();
    let result = vergent_tui::terminal::run(first, model_rx, commands, colour);
    stop.cancel();
    let _ = runtime.block_on(poller);
    result.map_err(|e| Failure::new(format!("terminal: {e}")))
}

async fn poll(
    builder: Arc<Mutex<Builder>>,
    material: Arc<TlsMaterial>,
    mut node: String,
    models: std_mpsc::Sender<Dashboard>,
    stop: tokio_util::sync::CancellationToken,
) {
    let asked = node.clone();
    let mut asked_name: Option<String> = None;
    let mut last_return_try = Instant::now();
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if client.is_none() {
            client = tokio::time::timeout(POLL_TIMEOUT, Client::connect(&node, &material))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let answer = match &client {
            Some(c) => tokio::time::timeout(POLL_TIMEOUT, c.status())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        // Watching another node since the one asked for stopped answering: go back to
        // it once it answers again.
        if node != asked && last_return_try.elapsed() >= RETURN_TRY {
            last_return_try = Instant::now();
            if let Ok(Ok(c)) =
                tokio::time::timeout(POLL_TIMEOUT, Client::connect(&asked, &material)).await
                && let Ok(Ok(status)) = tokio::time::timeout(POLL_TIMEOUT, c.status()).await
            {
                let mut b = builder.lock().expect("builder lock");
                let text = format!("{} is back; watching it again", status.node);
                b.event(text, Severity::Info);
                b.watched = status.node.clone();
                b.observe(status);
                node = asked.clone();
                client = Some(c);
                failures = 0;
                drop(b);
                let model = builder.lock().expect("builder lock").model();
                if models.send(model).is_err() {
                    break;
                }
                continue;
            }
        }
        match answer {
            Some(status) => {
                failures = 0;
                if node == asked {
                    asked_name.get_or_insert_with(|| status.node.clone());
                }
                builder.lock().expect("builder lock").observe(status);
            }
            None => {
                failures += 1;
                client = None;
                builder.lock().expect("builder lock").lost("no answer");
                if failures >= 2 {
                    // Fail over to a member the last view showed alive.
                    let candidates = builder.lock().expect("builder lock").failover_candidates();
                    for (name, addr) in candidates {
                        let connect =
                            tokio::time::timeout(POLL_TIMEOUT, Client::connect(&addr, &material))
                                .await;
                        if let Ok(Ok(c)) = connect {
                            let mut b = builder.lock().expect("builder lock");
                            let text = format!("{} unreachable; now watching {name}", b.watched);
                            b.event(text, Severity::Alert);
                            b.watched = name;
                            node = addr;
                            client = Some(c);
                            failures = 0;
                            break;
                        }
                    }
                }
            }
        }
        let model = builder.lock().expect("builder lock").model();
        if models.send(model).is_err() {
            break;
        }
    }
}

async fn carry_out(command: Command, builder: Arc<Mutex<Builder>>, material: Arc<TlsMaterial>) {
    match command {
        Command::Quit => {}
        Command::Repair { node } => {
            let Some(addr) = builder.lock().expect("builder lock").address_of(&node) else {
                return;
            };
            // Its start shows with the node's status; its end with the report here.
            builder
                .lock()
                .expect("builder lock")
                .reported_here
                .insert(node.clone());
            let outcome = async {
                let mut client = Client::connect(&addr, &material)
                    .await
                    .map_err(|e| e.to_string())?;
                client.set_request_timeout(Duration::from_secs(3600));
                let request = Request::Repair {
                    partition: None,
                    peer: None,
                    dry_run: false,
                };
                let mut answers = client.stream(&request).await.map_err(|e| e.to_string())?;
                loop {
                    match answers.next().await.map_err(|e| e.to_string())? {
                        Some(Response::RepairProgress(_)) => {}
                        Some(Response::Repaired(report)) => return Ok(report),
                        Some(Response::Error(reply)) => return Err(reply.message),
                        _ => return Err("the node ended the repair without a report".into()),
                    }
                }
            }
            .await;
            let mut b = builder.lock().expect("builder lock");
            b.reported_here.remove(&node);
            match outcome {
                Ok(report) => {
                    let c = &report.counts;
                    let text = format!(
                        "repair on {node} ended: {} compared, {} differed, {} keys moved in {:.1}s{}",
                        c.partitions_compared,
                        c.partitions_differing,
                        c.keys_sent + c.keys_received,
                        report.duration_ms as f64 / 1000.0,
                        if report.in_sync { "" } else { "; NOT in sync" }
                    );
                    let severity = if report.in_sync {
                        Severity::Info
                    } else {
                        Severity::Warning
                    };
                    b.event(text, severity);
                }
                Err(err) => b.event(format!("repair on {node} failed: {err}"), Severity::Alert),
            }
        }
        Command::Inspect { partition } => {
            let (replicas, watched_sync) = {
                let b = builder.lock().expect("builder lock");
                (b.replicas_of(partition), b.sync_ages())
            };
            let mut details = Vec::new();
            for (name, state, addr) in replicas {
                let root = async {
                    let client = Client::connect(addr.as_deref()?, &material).await.ok()?;
                    let status = tokio::time::timeout(POLL_TIMEOUT, client.status())
                        .await
                        .ok()?
                        .ok()?;
                    client.close().await;
                    status.roots.get(usize::from(partition)).cloned()
                };
                let root = tokio::time::timeout(POLL_TIMEOUT * 2, root)
                    .await
                    .ok()
                    .flatten();
                details.push(ReplicaDetail {
                    last_exchange_age_ms: watched_sync.get(&name).copied().flatten(),
                    name,
                    state,
                    count: root.as_ref().map(|r| r.count),
                    root: root.map(|r| r.digest),
                });
            }
            builder.lock().expect("builder lock").detail = Some(PartitionDetail {
                partition,
                replicas: details,
            });
        }
    }
}

fn utc_time(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// `HH:MM:SS.mmm+logical` of a timestamp (UTC).
fn hlc_time(ts: Timestamp) -> String {
    let text = ts.to_string();
    let time = text.get(11..).unwrap_or(&text);
    time.replacen('Z', "", 1)
}

/// A counter's rate, from samples at least a second apart.
#[derive(Default)]
struct Meter {
    samples: VecDeque<(Instant, u64)>,
}

impl Meter {
    fn record(&mut self, at: Instant, value: u64) {
        if self.samples.back().is_some_and(|(_, v)| *v > value) {
            self.samples.clear(); // a restart reset the counter
        }
        self.samples.push_back((at, value));
        while self.samples.len() > 2
            && at.duration_since(self.samples[1].0) >= Duration::from_secs(3)
        {
            self.samples.pop_front();
        }
    }

    /// Change per second (negative when falling).
    fn rate(&self) -> Option<f64> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let dt = last.0.duration_since(first.0).as_secs_f64();
        (dt >= 1.0).then(|| (last.1 as f64 - first.1 as f64) / dt)
    }
}

/// Turns successive statuses into the dashboard's model.
struct Builder {
    watched: String,
    status: Option<ClusterStatus>,
    last_fresh: Instant,
    connection: Connection,
    writes: BTreeMap<String, Meter>,
    reads: BTreeMap<String, Meter>,
    hints: BTreeMap<String, Meter>,
    throughput: VecDeque<u64>,
    last_sample: Instant,
    events: VecDeque<EventRow>,
    seen: BTreeMap<String, (MemberState, u32)>,
    clock_refusals: u64,
    /// The runs in progress at the last status, by node.
    runs: BTreeMap<String, RunSummary>,
    /// Nodes running a repair the operator started here: its report ends it.
    reported_here: BTreeSet<String>,
    detail: Option<PartitionDetail>,
    notice: Option<String>,
}

impl Builder {
    fn new(watched: &str) -> Builder {
        Builder {
            watched: watched.to_string(),
            status: None,
            last_fresh: Instant::now(),
            connection: Connection::Live,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            hints: BTreeMap::new(),
            throughput: VecDeque::new(),
            last_sample: Instant::now(),
            events: VecDeque::new(),
            seen: BTreeMap::new(),
            clock_refusals: 0,
            runs: BTreeMap::new(),
            reported_here: BTreeSet::new(),
            detail: None,
            notice: None,
        }
    }

    fn event(&mut self, text: String, severity: Severity) {
        self.events.push_back(EventRow {
            at: utc_time(SystemTime::now()),
            text,
            severity,
        });
        while self.events.len() > EVENTS_MAX {
            self.events.pop_front();
        }
    }

    fn lost(&mut self, reason: &str) {
        if self.connection == Connection::Live && self.status.is_some() {
            self.event(
                format!("{} stopped answering; keeping its last view", self.watched),
                Severity::Alert,
            );
        }
        self.connection = Connection::Lost {
            reason: reason.to_string(),
            stale_s: self.last_fresh.elapsed().as_secs(),
        };
    }

    fn observe(&mut self, status: ClusterStatus) {
        let now = Instant::now();
        if let Connection::Lost { .. } = self.connection {
            self.event(format!("{} answers again", status.node), Severity::Info);
        }
        self.connection = Connection::Live;
        self.last_fresh = now;
        self.watched = status.node.clone();
        for m in &status.members {
            let state = MemberState::parse(&m.state).unwrap_or(MemberState::Dead);
            self.writes
                .entry(m.name.clone())
                .or_default()
                .record(now, m.writes);
            self.reads
                .entry(m.name.clone())
                .or_default()
                .record(now, m.reads);
            self.hints
                .entry(m.name.clone())
                .or_default()
                .record(now, m.hints);
            let previous = self.seen.insert(m.name.clone(), (state, m.incarnation));
            let name = &m.name;
            match previous {
                None if self.status.is_some() => {
                    self.event(format!("{name} joined ({})", m.address), Severity::Info)
                }
                None => {}
                Some((before, _)) if before == state => {}
                Some((before, incarnation)) => {
                    let (text, severity) = match state {
                        MemberState::Suspect => (format!("{name} suspected"), Severity::Warning),
                        MemberState::Dead => (format!("{name} declared dead"), Severity::Alert),
                        MemberState::Left => (format!("{name} left the cluster"), Severity::Info),
                        MemberState::Alive if m.incarnation > incarnation => (
                            format!(
                                "{name} alive again (restarted, incarnation {})",
                                m.incarnation
                            ),
                            Severity::Info,
                        ),
                        MemberState::Alive => (
                            format!("{name} alive again (was {})", before.word()),
                            Severity::Info,
                        ),
                    };
                    self.event(text, severity);
                }
            }
        }
        if status.clock_refusals > self.clock_refusals && self.status.is_some() {
            let n = status.clock_refusals - self.clock_refusals;
            self.event(
                format!(
                    "{} refused {n} peer timestamps too far ahead of its clock",
                    status.node
                ),
                Severity::Warning,
            );
        }
        self.clock_refusals = status.clock_refusals;
        self.observe_runs(&status);
        if now.duration_since(self.last_sample) >= Duration::from_secs(1) {
            self.last_sample = now;
            let total: f64 = self.writes.values().filter_map(Meter::rate).sum();
            self.throughput.push_back(total.max(0.0) as u64);
            while self.throughput.len() > THROUGHPUT_MAX {
                self.throughput.pop_front();
            }
        }
        self.status = Some(status);
    }

    /// Events for repairs that started or ended on any node; background runs and fills
    /// show in the gauge but would flood the log.
    fn observe_runs(&mut self, status: &ClusterStatus) {
        let runs: BTreeMap<String, RunSummary> = status
            .members
            .iter()
            .filter_map(|m| m.run.clone().map(|r| (m.name.clone(), r)))
            .collect();
        let first = self.status.is_none();
        for (node, run) in &runs {
            let same = self
                .runs
                .get(node)
                .is_some_and(|r| r.started_ms == run.started_ms);
            if !same && !first && run.kind == RunKind::Repair {
                self.event(
                    format!("repair started on {node} with {}", peers_text(run)),
                    Severity::Info,
                );
            }
        }
        let ended: Vec<(String, RunSummary)> = self
            .runs
            .iter()
            .filter(|(node, run)| {
                run.kind == RunKind::Repair
                    && !self.reported_here.contains(*node)
                    && runs
                        .get(*node)
                        .is_none_or(|r| r.started_ms != run.started_ms)
            })
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        for (node, run) in ended {
            self.event(
                format!(
                    "repair on {node} ended after about {}: {}/{} compared, {} keys and {} bytes moved (as last seen)",
                    vergent_tui::ui::age(
                        crate::wallclock::system_wall_ms().saturating_sub(run.started_ms)
                    ),
                    run.done,
                    run.total,
                    run.keys_moved,
                    run.bytes_moved,
                ),
                Severity::Info,
            );
        }
        self.runs = runs;
    }

    fn failover_candidates(&self) -> Vec<(String, String)> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        status
            .members
            .iter()
            .filter(|m| m.name != self.watched && m.state == "alive")
            .map(|m| (m.name.clone(), m.address.clone()))
            .collect()
    }

    fn address_of(&self, name: &str) -> Option<String> {
        let status = self.status.as_ref()?;
        status
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.address.clone())
    }

    fn replicas_of(&self, partition: u16) -> Vec<(String, MemberState, Option<String>)> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        status
            .placement
            .get(usize::from(partition))
            .into_iter()
            .flatten()
            .map(|name| {
                let member = status.members.iter().find(|m| &m.name == name);
                let state = member
                    .and_then(|m| MemberState::parse(&m.state))
                    .unwrap_or(MemberState::Dead);
                (name.clone(), state, member.map(|m| m.address.clone()))
            })
            .collect()
    }

    /// Per peer, the age of the watched node's last exchange with it.
    fn sync_ages(&self) -> BTreeMap<String, Option<u64>> {
        let now = crate::wallclock::system_wall_ms();
        self.status
            .iter()
            .flat_map(|s| s.sync.iter())
            .map(|s| {
                (
                    s.peer.clone(),
                    s.last_exchange_ms.map(|t| now.saturating_sub(t)),
                )
            })
            .collect()
    }

    fn model(&self) -> Dashboard {
        let mut model = Dashboard::empty(&self.watched);
        model.time = utc_time(SystemTime::now());
        model.events = self.events.iter().cloned().collect();
        model.throughput = self.throughput.iter().copied().collect();
        model.detail = self.detail.clone();
        model.connection = match &self.connection {
            Connection::Live => Connection::Live,
            Connection::Lost { reason, .. } => Connection::Lost {
                reason: reason.clone(),
                stale_s: self.last_fresh.elapsed().as_secs(),
            },
        };
        let Some(status) = &self.status else {
            return model;
        };
        let now_wall = crate::wallclock::system_wall_ms();
        model.cluster_id = status.cluster_id.clone();
        model.partitions = status.partitions;
        model.replication_factor = status.replication_factor;
        model.write_rate = self
            .writes
            .values()
            .filter_map(Meter::rate)
            .sum::<f64>()
            .max(0.0);
        model.read_rate = self
            .reads
            .values()
            .filter_map(Meter::rate)
            .sum::<f64>()
            .max(0.0);
        let sync: BTreeMap<&str, &crate::antientropy::report::PeerSync> =
            status.sync.iter().map(|s| (s.peer.as_str(), s)).collect();
        model.members = status
            .members
            .iter()
            .map(|m| {
                let peer = sync.get(m.name.as_str());
                let drain = self
                    .hints
                    .get(&m.name)
                    .and_then(Meter::rate)
                    .filter(|r| *r < -0.1);
                MemberRow {
                    name: m.name.clone(),
                    address: m.address.clone(),
                    state: MemberState::parse(&m.state).unwrap_or(MemberState::Dead),
                    incarnation: m.incarnation,
                    hlc: m.hlc.map(hlc_time),
                    skew_ms: m.clock_skew_ms,
                    writes_per_s: self
                        .writes
                        .get(&m.name)
                        .and_then(Meter::rate)
                        .map(|r| r.max(0.0)),
                    hints: m.hints,
                    hints_oldest_age_ms: m.hints_oldest_age_ms,
                    hints_clear_s: drain.map(|r| m.hints as f64 / -r),
                    partitions_held: m.partitions_held,
                    filling: m.partitions_filling,
                    unreachable: m.state == "alive" && !m.reachable,
                    last_exchange_age_ms: peer
                        .and_then(|p| p.last_exchange_ms)
                        .map(|t| now_wall.saturating_sub(t)),
                    partitions_differing: peer.map(|p| p.partitions_differing),
                    sync_lag_ms: m.sync_lag_ms,
                    stale_age_ms: (m.state == "dead" || m.state == "left")
                        .then_some(m.report_age_ms)
                        .flatten(),
                }
            })
            .collect();
        model.cells = status
            .placement
            .iter()
            .enumerate()
            .map(|(p, replicas)| {
                let known = status.partition_states.get(p);
                let state = match known.map(|k| k.state) {
                    Some(PartitionSyncState::ReplicaDown) => PartitionState::UnderReplicated,
                    Some(PartitionSyncState::Repairing) => PartitionState::Repairing,
                    Some(PartitionSyncState::Differing) => PartitionState::Diverged,
                    Some(PartitionSyncState::InSync) => PartitionState::InSync,
                    Some(PartitionSyncState::Unconfirmed) | None => PartitionState::Unconfirmed,
                };
                PartitionCell {
                    state,
                    replicas: replicas.clone(),
                    confirmed_age_ms: known
                        .and_then(|k| k.confirmed_ms)
                        .map(|t| now_wall.saturating_sub(t)),
                }
            })
            .collect();
        model.repairs = self
            .runs
            .iter()
            .map(|(node, run)| {
                let elapsed_s = now_wall.saturating_sub(run.started_ms) as f64 / 1000.0;
                let keys_per_s = (elapsed_s > 0.5).then(|| run.keys_moved as f64 / elapsed_s);
                let eta_s = (run.done > 0 && elapsed_s > 0.5).then(|| {
                    elapsed_s / run.done as f64 * run.total.saturating_sub(run.done) as f64
                });
                RepairRow {
                    node: node.clone(),
                    peers: run.peers.clone(),
                    done: run.done,
                    total: run.total,
                    keys_moved: run.keys_moved,
                    bytes_moved: run.bytes_moved,
                    keys_per_s,
                    eta_s,
                }
            })
            .collect();
        model.notice = self.notice.clone();
        model
    }
}

/// The peers of a run, for an event: a few names, then how many more.
fn peers_text(run: &RunSummary) -> String {
    let mut text = run.peers.join(",");
    let more = usize::from(run.peers_total).saturating_sub(run.peers.len());
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    if text.is_empty() {
        text.push_str("no peer");
    }
    text
}
