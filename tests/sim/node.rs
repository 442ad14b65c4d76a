//! A simulated node: its state, its life (start, crash, tick), its coordinator's
//! actions turned into messages, entries applied as a replica does, and the checks on
//! its clock.

use std::collections::BTreeMap;

use rand::RngExt;
use vergent::coordinator::{Action, Coordinator, CoordinatorConfig, Millis, OpId, Outcome};
use vergent::hlc::skew::SkewBook;
use vergent::hlc::{Clock, Timestamp};
use vergent::membership::{Membership, MembershipConfig};
use vergent::placement::{Fill, FillNews, PartitionSet, partition_of};
use vergent::policy::{Agreements, HintPump, RunDue, RunSchedule, TombstoneArrivals, also_holding};
use vergent::record::{Entry, Payload, Version};
use vergent::storage::{Hint, Store, StoreOptions};

use super::config::{
    ANTI_ENTROPY_MS, EPOCH_MS, MAX_OFFSET_MS, OPS_MAX, PROBE_MS, REPLICA_TIMEOUT_MS, TICK_MS,
};
use super::network::Msg;
use super::sync::SyncRun;
use super::{Event, Sim};

/// How a replica answered entries it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    Yes,
    /// A version from beyond the offset bound: refused for what it is.
    Refused,
    /// Not applied (no store).
    No,
}

/// One simulated node: its mechanisms, its store, and the runtime's books on them.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) dir: tempfile::TempDir,
    pub(super) store: Option<Store>,
    pub(super) up: bool,
    pub(super) life: u32,
    pub(super) skew_ms: i64,
    pub(super) clock: Clock,
    /// Its peers' clocks as its probes measured them.
    pub(super) skew: SkewBook,
    /// Each peer's true skew when it last answered a probe: what the probes can know.
    pub(super) seen_skew: BTreeMap<usize, i64>,
    pub(super) coordinator: Coordinator,
    pub(super) membership: Option<Membership>,
    /// Coordinator op → client op index.
    pub(super) ops: BTreeMap<OpId, usize>,
    /// Hint delivery, by the node's own pump.
    pub(super) hints: HintPump,
    pub(super) ticks: u64,
    pub(super) sync_runs: BTreeMap<u64, SyncRun>,
    /// When it runs anti-entropy, by the node's schedule.
    pub(super) schedule: RunSchedule,
    pub(super) last_issued: Option<Timestamp>,
    pub(super) last_clock: Timestamp,
    pub(super) epoch_ms: u64,
    /// Which partitions it holds the data of.
    pub(super) fill: Fill,
    /// When the node learned of each member's fills.
    pub(super) news: FillNews,
    /// Its books of agreement, as the node keeps them.
    pub(super) agreements: Agreements,
    /// When tombstones landed on it (virtual ms), which its purges stay below.
    pub(super) arrivals: TombstoneArrivals,
    /// Removed from the cluster (or replaced): never starts again.
    pub(super) removed: bool,
    /// Whether it has ever started (spares start during the run).
    pub(super) started_once: bool,
    /// Its placement token, when it replaced a member.
    pub(super) token: Option<String>,
    /// When it last came up with nothing (the cluster's start, a wipe, a join).
    pub(super) empty_since: u64,
    /// The epoch of the life that created its store.
    pub(super) data_epoch: u64,
    /// It stepped aside for a second process under its name at some point: it missed
    /// writes meanwhile, and refills.
    pub(super) stepped_aside: bool,
}

impl Sim {
    /// Starts (or restarts) node `i`: opens its store, builds its clock above the
    /// store's high-water mark, installs what a live member knows of the cluster (as a
    /// node does with its seed's answer, joining or restarting), and announces itself
    /// to every live member. A node with an empty store holds no data, unless it is one
    /// of the nodes forming the cluster before any write.
    pub(super) fn start(&mut self, i: usize) {
        let mut options = StoreOptions::new(self.names[i].clone());
        options.durable = false;
        options.map_size_bytes = 64 << 20;
        let store = Store::open(self.nodes[i].dir.path(), options).expect("store");
        let fresh = store.cluster().is_none();
        store.set_cluster(self.settings).expect("cluster");
        let life = store.next_incarnation().expect("incarnation");
        let high_water = store.hlc_high_water().expect("high water");
        let remembered = store.members().expect("members");
        let filled = match store.filled().expect("filled") {
            Some(set) if !fresh => set,
            _ if self.now == 0 => PartitionSet::all(self.settings.partitions),
            _ => PartitionSet::empty(),
        };
        if fresh {
            self.nodes[i].empty_since = self.now;
        }
        let node = &mut self.nodes[i];
        node.life = life;
        node.started_once = true;
        node.epoch_ms = store
            .next_start_epoch((EPOCH_MS as i64 + self.now as i64 + node.skew_ms) as u64)
            .expect("start epoch");
        node.data_epoch = store.data_epoch_or(node.epoch_ms).expect("data epoch");
        node.clock = Clock::starting_after(high_water.max(node.last_clock), MAX_OFFSET_MS);
        node.coordinator = Coordinator::new(CoordinatorConfig {
            write_timeout_ms: REPLICA_TIMEOUT_MS,
            read_timeout_ms: REPLICA_TIMEOUT_MS,
            ops_max: OPS_MAX,
        });
        node.ops.clear();
        node.hints = HintPump::new(REPLICA_TIMEOUT_MS);
        node.sync_runs.clear();
        node.agreements = Agreements::default();
        node.arrivals = TombstoneArrivals::new(self.settings.partitions);
        node.fill = Fill::new(filled);
        node.up = true;
        node.store = Some(store);
        // As the node does after its join: above any earlier life the cluster knows (a
        // wiped disk lost the count).
        let known = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].up)
            .filter_map(|j| self.nodes[j].membership.as_ref()?.member(&self.names[i]))
            .map(|v| v.id.epoch_ms)
            .max();
        if let Some(known) = known
            && known >= self.nodes[i].epoch_ms
        {
            self.nodes[i].epoch_ms = known + 1;
            let store = self.nodes[i].store.as_ref().unwrap();
            store.raise_start_epoch(known + 1).expect("start epoch");
        }
        let identity = (self.nodes[i].epoch_ms, life);
        if self.identities[i]
            .last()
            .is_some_and(|&last| last >= identity)
        {
            self.violations.push(format!(
                "{}'s identity {identity:?} does not sort above its last {:?}",
                self.names[i],
                self.identities[i].last().unwrap()
            ));
        }
        self.identities[i].push(identity);
        self.nodes[i].skew = SkewBook::new();
        self.nodes[i].seen_skew.clear();
        let me = self.member_id(i);
        let seed = self.rng.random::<u64>();
        let mut membership =
            Membership::new(me, &MembershipConfig::default(), seed, Millis(self.now));
        membership.restore(&remembered, Millis(self.now));
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].up && self.nodes[j].membership.is_some())
            .collect();
        if let Some(&seed) = live.first() {
            let members = self.nodes[seed].membership.as_ref().unwrap().seed_members();
            let departed = members.iter().any(|m| {
                m.id.name == self.names[i] && m.state == vergent::membership::MemberState::Left
            });
            if departed {
                self.nodes[i].fill.clear();
            }
            membership.install(members, Millis(self.now));
        }
        for &j in &live {
            let id = self.member_id(j);
            membership.announce(id, Millis(self.now));
        }
        let filled = self.nodes[i].fill.filled().clone();
        let _ = self.nodes[i].store.as_ref().unwrap().save_filled(&filled);
        self.nodes[i].membership = Some(membership);
        self.nodes[i].schedule = RunSchedule::new(Some(ANTI_ENTROPY_MS), self.now);
        self.log(format!("start {} life {life}", self.names[i]));
        self.flush_membership(i);
        self.schedule(self.now + TICK_MS, Event::Tick { node: i, life });
    }

    /// Crashes node `i`: memory gone, storage kept.
    pub(super) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = false;
        node.membership = None;
        node.last_clock = node.last_clock.max(node.clock.last());
        if let Some(store) = node.store.take() {
            store.close();
        }
        // Client operations this coordinator had in flight get no answer.
        let orphaned: Vec<usize> = node.ops.values().copied().collect();
        node.ops.clear();
        for op in orphaned {
            let o = &mut self.client_ops[op];
            if o.outcome.is_none() {
                o.outcome = Some(Err("coordinator crashed".into()));
            }
        }
        self.crashes.push((i, self.now));
        self.log(format!("crash {}", self.names[i]));
    }

    pub(super) fn drain_coordinator(&mut self, i: usize) {
        let mut actions = Vec::new();
        while let Some(action) = self.nodes[i].coordinator.poll_action() {
            actions.push(action);
        }
        for action in actions {
            self.act(i, action);
        }
        let in_flight = self.nodes[i].coordinator.in_flight();
        if in_flight > OPS_MAX {
            self.violations.push(format!(
                "{} has {in_flight} operations in flight, past its bound",
                self.names[i]
            ));
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::Write { op, to, entry } => {
                let j = self.index_of(&to).expect("a member");
                if j != i && !self.live_in_view(i, &to) {
                    self.nodes[i].coordinator.handle_write_ack(
                        op,
                        &to,
                        Err("not live in the view".into()),
                    );
                    self.drain_coordinator(i);
                } else {
                    self.send(
                        i,
                        j,
                        Msg::Write {
                            op,
                            entry: (*entry).clone(),
                        },
                    );
                }
            }
            Action::Read { op, to, key } => {
                let j = self.index_of(&to).expect("a member");
                // As the node: a member dead in this node's view is not asked.
                if j != i && !self.live_in_view(i, &to) {
                    self.nodes[i].coordinator.handle_read_reply(op, &to, None);
                    self.drain_coordinator(i);
                    return;
                }
                self.send(
                    i,
                    j,
                    Msg::Read {
                        op,
                        key: key.to_vec(),
                    },
                );
            }
            Action::Repair { entry, .. }
                if self.nodes[i]
                    .clock
                    .check(entry.record.version.hlc, self.cluster_wall(i))
                    .is_err() =>
            {
                self.log(format!(
                    "{} left out a read repair from the future",
                    self.names[i]
                ));
            }
            Action::Repair { to, entry } => {
                let j = self.index_of(&to).expect("a member");
                self.send(
                    i,
                    j,
                    Msg::Repair {
                        entry: (*entry).clone(),
                    },
                );
            }
            Action::Hint { to, entry } => {
                let hint = Hint {
                    target: to,
                    entry: (*entry).clone(),
                    created_ms: self.wall(i),
                };
                if let Some(store) = &self.nodes[i].store {
                    store.put_hints_now(vec![hint]).expect("hint");
                }
            }
            Action::Reply { op, outcome } => {
                let Some(client) = self.nodes[i].ops.remove(&op) else {
                    return;
                };
                let result = match outcome {
                    Outcome::Written { version } => Ok(Some(version)),
                    Outcome::Read { record } => Ok(record.map(|r| r.version)),
                    Outcome::Failed(err) => Err(err.to_string()),
                };
                self.log(format!("reply op {client} {result:?}"));
                if let Ok(Some(version)) = &result {
                    let seen = &mut self.sessions[self.client_ops[client].session];
                    *seen = (*seen).max(Some(version.hlc));
                }
                let o = &mut self.client_ops[client];
                if result.is_ok() {
                    self.report.acked += 1;
                }
                o.outcome = Some(result);
                o.completed_ms = Some(self.now);
            }
        }
    }

    /// Applies entries on node `i` as a replica would: the clock observes each, an
    /// entry too far ahead of the cluster's time as `i` measures it is refused (the
    /// whole batch, as in the node).
    pub(super) fn apply(&mut self, i: usize, entries: &[Entry]) -> Applied {
        let wall = self.wall(i);
        let cluster = self.cluster_wall(i);
        for e in entries {
            if self.nodes[i]
                .clock
                .observe_against(e.record.version.hlc, wall, cluster)
                .is_err()
            {
                self.log(format!(
                    "{} refused a timestamp too far ahead",
                    self.names[i]
                ));
                return Applied::Refused;
            }
        }
        self.check_clock(i);
        self.check_not_resurrected(i, entries);
        let Some(store) = &self.nodes[i].store else {
            return Applied::No;
        };
        if store.apply_now(entries).is_ok() {
            // Applied at once: it lands at the moment it is noted.
            let now = self.now;
            for e in entries {
                let p = partition_of(&e.key, self.settings.partitions);
                if let Some(book) = self.nodes[i].arrivals.partition(p) {
                    book.note_write(now);
                    if e.record.payload == Payload::Tombstone {
                        book.note(e.record.version.hlc.wall_ms(), now);
                    }
                }
            }
            Applied::Yes
        } else {
            Applied::No
        }
    }

    /// No deleted key comes back: once any node purged a tombstone, no node may take a
    /// value of that key from before it (a replica that never had the tombstone, a
    /// handoff or a read repair bringing it back would).
    fn check_not_resurrected(&mut self, i: usize, entries: &[Entry]) {
        for e in entries {
            if e.record.payload == Payload::Tombstone {
                continue;
            }
            let purged = self.purged.iter().find(|((_, key), purges)| {
                *key == e.key && purges.iter().any(|(v, _)| *v > e.record.version)
            });
            if let Some(((by, _), purges)) = purged {
                let (version, at) = purges.iter().max().copied().unwrap();
                // The delete still holds while some node keeps its tombstone (or a newer
                // record): that wins wherever the old value went.
                let kept = self.nodes.iter().any(|n| {
                    n.store
                        .as_ref()
                        .and_then(|s| s.get(&e.key).ok().flatten())
                        .is_some_and(|r| r.version >= version)
                });
                if kept || self.kept_on_a_closed_disk(&e.key, version) {
                    continue;
                }
                self.violations.push(format!(
                    "{} took a value of {} at {:?}, below the tombstone {:?} that {} purged at {} ms: a deleted key came back",
                    self.names[i],
                    String::from_utf8_lossy(&e.key),
                    e.record.version,
                    version,
                    self.names[*by],
                    at
                ));
            }
        }
    }

    /// Whether a member that is down, on the disk it will come back with, keeps `key` at
    /// `version` or newer: it brings the tombstone back with it, and the exchange sends
    /// it to whoever holds the older value. (Only looked at when no open store keeps it;
    /// the store is opened and closed again.)
    fn kept_on_a_closed_disk(&self, key: &[u8], version: Version) -> bool {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.up && n.started_once && !n.removed)
            .any(|(i, n)| {
                let mut options = StoreOptions::new(self.names[i].clone());
                options.durable = false;
                options.map_size_bytes = 64 << 20;
                let Ok(store) = Store::open(n.dir.path(), options) else {
                    return false;
                };
                let kept = store
                    .get(key)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.version >= version);
                store.close();
                kept
            })
    }

    /// Node `i` is about to issue a version: its clock must be within the bound of
    /// its live view's median clock, give or take what probes cannot see (the latency
    /// of late and a clock that changed since the last probe).
    pub(super) fn check_issuing_clock(&mut self, i: usize) {
        if self.now < self.skew_changed_ms + 2 * PROBE_MS + REPLICA_TIMEOUT_MS {
            return;
        }
        let off = self.true_cluster_offset_ms(i).unsigned_abs();
        let allowed = MAX_OFFSET_MS + self.measurement_error_ms();
        if off > allowed {
            self.violations.push(format!(
                "{} issued a version at {} while its clock was {off} ms off its cluster's (allowed {allowed} ms; it measured {:?} against {:?})",
                self.names[i],
                self.now,
                self.verdict(i),
                self.live_peers(i)
            ));
        }
    }

    pub(super) fn check_clock(&mut self, i: usize) {
        let last = self.nodes[i].clock.last();
        if last < self.nodes[i].last_clock && self.nodes[i].up {
            self.violations
                .push(format!("{}'s clock went backwards", self.names[i]));
        }
        self.nodes[i].last_clock = self.nodes[i].last_clock.max(last);
    }

    pub(super) fn tick(&mut self, i: usize) {
        let now = Millis(self.now);
        self.nodes[i].coordinator.handle_timeout(now);
        self.drain_coordinator(i);
        self.nodes[i].ticks += 1;
        if self.nodes[i].ticks.is_multiple_of(PROBE_MS / TICK_MS) {
            let live = self.live_peers(i);
            let now = self.reading(i);
            self.nodes[i]
                .skew
                .confirm(live.iter().map(String::as_str), now, MAX_OFFSET_MS);
            let sent_us = self.wall(i) * 1000;
            for name in self.live_peers(i) {
                let j = self.index_of(&name).expect("a member");
                self.nodes[i].skew.probe_sent(&name, self.now * 1000);
                self.send(i, j, Msg::Ping { sent_us });
            }
        }
        if self.nodes[i].ticks.is_multiple_of(10)
            && let Some(m) = self.nodes[i].membership.as_mut()
        {
            m.tick(now);
            let with_data = self.nodes[i]
                .store
                .as_ref()
                .map(|s| s.partitions_with_data())
                .unwrap_or_default();
            let status = vergent::membership::GossipStatus {
                filled: self.nodes[i].fill.filled().clone(),
                also_holding: also_holding(with_data, self.nodes[i].fill.filled()),
                ..vergent::membership::GossipStatus::default()
            };
            let m = self.nodes[i].membership.as_mut().unwrap();
            m.publish(status, now);
            m.announce_if_isolated(now);
            self.update_fill(i);
        }
        self.flush_membership(i);
        self.drain_hints(i);
        let filling = self.nodes[i].fill.filling().next().is_some();
        let now_ms = self.now;
        if let Some(due) = self.nodes[i].schedule.poll(now_ms, filling) {
            if due == RunDue::Full && self.ae_paused {
                // Stalled: background runs skip their turn; fills go on, as in the node.
                let jitter = self.rng.random::<u64>();
                self.nodes[i].schedule.done(due, now_ms, filling, jitter);
            } else {
                let only: Option<Vec<u16>> =
                    (due == RunDue::Fill).then(|| self.nodes[i].fill.filling().collect());
                self.start_syncs(i, only.as_deref());
                if self.nodes[i].sync_runs.is_empty() {
                    self.runs_ended(i);
                }
            }
        }
        // Runs whose peer went silent are abandoned; the next period retries.
        let before = self.nodes[i].sync_runs.len();
        self.nodes[i]
            .sync_runs
            .retain(|_, run| run.deadline_ms > now_ms);
        if before > 0 && self.nodes[i].sync_runs.is_empty() {
            self.runs_ended(i);
        }
        let life = self.nodes[i].life;
        self.schedule(self.now + TICK_MS, Event::Tick { node: i, life });
    }
}
