//! The view-model: a [`Builder`] turns successive statuses into the dashboard's model
//! (rates, events, partition states). It reads no clock: the time comes in as a [`Now`]
//! with each call that needs it, so the model is a function of what was observed when.

mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vergent_tui::model::{Connection, EventRow, MemberState, PartitionDetail, Severity};

use crate::antientropy::report::{RunKind, RunSummary};
use crate::protocol::ClusterStatus;

/// Events kept.
const EVENTS_MAX: usize = 200;
/// Throughput samples kept (one a second).
const THROUGHPUT_MAX: usize = 300;

/// A reading of the clocks, taken by the caller.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    /// The monotonic clock: rates and the age of the last view.
    pub(super) instant: Instant,
    /// The wall clock: the times shown, and the ages of what a status dates.
    pub(super) wall: SystemTime,
}

impl Now {
    /// Milliseconds since the Unix epoch (0 before 1970).
    fn wall_ms(self) -> u64 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// `HH:MM:SS` of a wall time (UTC).
fn utc_time(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(11..19).unwrap_or(&text).to_string()
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
pub(super) struct Builder {
    /// The node watched, by name (its address until it first answers).
    pub(super) watched: String,
    status: Option<ClusterStatus>,
    last_fresh: Instant,
    connection: Connection,
    writes: BTreeMap<String, Meter>,
    reads: BTreeMap<String, Meter>,
    hints: BTreeMap<String, Meter>,
    /// Lost writes of each bucket on the watched node, by node and bucket.
    lost: BTreeMap<(String, String), Meter>,
    /// The watched node's linearizable operations, round trips, one-trip answers and
    /// retries.
    lin: [Meter; 4],
    throughput: VecDeque<u64>,
    last_sample: Instant,
    events: VecDeque<EventRow>,
    seen: BTreeMap<String, (MemberState, u32)>,
    clock_refusals: u64,
    /// The runs in progress at the last status, by node.
    runs: BTreeMap<String, RunSummary>,
    /// Nodes running a repair the operator started here: its report ends it.
    pub(super) reported_here: BTreeSet<String>,
    /// The details of the partition the operator asked about.
    pub(super) detail: Option<PartitionDetail>,
    /// A line the header shows under the cluster's.
    pub(super) notice: Option<String>,
}

impl Builder {
    /// A builder watching `watched`, started at `now`.
    pub(super) fn new(watched: &str, now: Now) -> Builder {
        Builder {
            watched: watched.to_string(),
            status: None,
            last_fresh: now.instant,
            connection: Connection::Live,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            hints: BTreeMap::new(),
            lost: BTreeMap::new(),
            lin: Default::default(),
            throughput: VecDeque::new(),
            last_sample: now.instant,
            events: VecDeque::new(),
            seen: BTreeMap::new(),
            clock_refusals: 0,
            runs: BTreeMap::new(),
            reported_here: BTreeSet::new(),
            detail: None,
            notice: None,
        }
    }

    /// Logs an event that happened at `now`.
    pub(super) fn event(&mut self, text: String, severity: Severity, now: Now) {
        self.events.push_back(EventRow {
            at: utc_time(now.wall),
            text,
            severity,
        });
        while self.events.len() > EVENTS_MAX {
            self.events.pop_front();
        }
    }

    /// The watched node did not answer at `now`.
    pub(super) fn lost(&mut self, reason: &str, now: Now) {
        if self.connection == Connection::Live && self.status.is_some() {
            self.event(
                format!("{} stopped answering; keeping its last view", self.watched),
                Severity::Alert,
                now,
            );
        }
        self.connection = Connection::Lost {
            reason: reason.to_string(),
            stale_s: self.stale_s(now),
        };
    }

    /// Seconds since the last status, at `now`.
    fn stale_s(&self, now: Now) -> u64 {
        now.instant
            .saturating_duration_since(self.last_fresh)
            .as_secs()
    }

    /// A status the watched node answered at `now`.
    pub(super) fn observe(&mut self, status: ClusterStatus, now: Now) {
        if let Connection::Lost { .. } = self.connection {
            self.event(
                format!("{} answers again", status.node),
                Severity::Info,
                now,
            );
        }
        self.connection = Connection::Live;
        self.last_fresh = now.instant;
        self.watched = status.node.clone();
        let lin = &status.linearizable;
        for (meter, value) in
            self.lin
                .iter_mut()
                .zip([lin.ops, lin.round_trips, lin.fast, lin.retries])
        {
            meter.record(now.instant, value);
        }
        for b in &status.bucket_stats {
            self.lost
                .entry((status.node.clone(), b.name.clone()))
                .or_default()
                .record(now.instant, b.lost_writes);
        }
        for m in &status.members {
            let state = MemberState::parse(&m.state).unwrap_or(MemberState::Dead);
            self.writes
                .entry(m.name.clone())
                .or_default()
                .record(now.instant, m.writes);
            self.reads
                .entry(m.name.clone())
                .or_default()
                .record(now.instant, m.reads);
            self.hints
                .entry(m.name.clone())
                .or_default()
                .record(now.instant, m.hints);
            let previous = self.seen.insert(m.name.clone(), (state, m.incarnation));
            let name = &m.name;
            match previous {
                None if self.status.is_some() => self.event(
                    format!("{name} joined ({})", m.address),
                    Severity::Info,
                    now,
                ),
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
                    self.event(text, severity, now);
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
                now,
            );
        }
        self.clock_refusals = status.clock_refusals;
        self.observe_runs(&status, now);
        if now.instant.duration_since(self.last_sample) >= Duration::from_secs(1) {
            self.last_sample = now.instant;
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
    fn observe_runs(&mut self, status: &ClusterStatus, now: Now) {
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
                    now,
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
                    vergent_tui::ui::age(now.wall_ms().saturating_sub(run.started_ms)),
                    run.done,
                    run.total,
                    run.keys_moved,
                    run.bytes_moved,
                ),
                Severity::Info,
                now,
            );
        }
        self.runs = runs;
    }

    /// The members the last view showed alive, other than the watched one: name and
    /// address.
    pub(super) fn failover_candidates(&self) -> Vec<(String, String)> {
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

    /// A member's address, as the last view showed it.
    pub(super) fn address_of(&self, name: &str) -> Option<String> {
        let status = self.status.as_ref()?;
        status
            .members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.address.clone())
    }

    /// The replicas of `partition` in the last view: name, state and address.
    pub(super) fn replicas_of(&self, partition: u16) -> Vec<(String, MemberState, Option<String>)> {
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

    /// Per peer, the age at `now` of the watched node's last exchange with it.
    pub(super) fn sync_ages(&self, now: Now) -> BTreeMap<String, Option<u64>> {
        let now = now.wall_ms();
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
