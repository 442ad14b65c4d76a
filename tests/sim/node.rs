//! A simulated node: the shipping node core ([`NodeCore`]) with a real LMDB store, its
//! life (start, crash), and the driver that carries out what the core asks — messages
//! into the simulated network, store effects at once, wake-ups on the virtual clock —
//! watching as it goes for what the invariants need (versions issued, purges,
//! handoffs, values taken below a purged tombstone, the clock).

use std::collections::BTreeMap;

use vergent::core::{
    Answer, Boot, CoreConfig, CoreEvent, Joined, NodeCore, Now, Output, ReqId, StoreWork,
    carry_out, identity, prepare,
};
use vergent::hlc::Timestamp;
use vergent::membership::{MemberState, MembershipConfig};
use vergent::placement::partition_of;
use vergent::policy::HintsDeleted;
use vergent::protocol::{Consistency, Response};
use vergent::record::{Entry, Merged, Payload, Version};
use vergent::storage::{Store, StoreOptions};

use super::config::{
    ANTI_ENTROPY_MS, EPOCH_MS, EXCHANGES_IN_FLIGHT, MAX_OFFSET_MS, OPS_MAX, REPLICA_TIMEOUT_MS,
};
use super::network::Msg;
use super::{Event, Sim};

/// One simulated node: its core and store, and the simulator's books on it.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) dir: tempfile::TempDir,
    pub(super) store: Option<Store>,
    pub(super) core: Option<NodeCore>,
    pub(super) up: bool,
    pub(super) life: u32,
    pub(super) skew_ms: i64,
    /// Each peer's true skew when it last answered a probe: what the probes can know.
    pub(super) seen_skew: BTreeMap<usize, i64>,
    /// When the core last asked to be woken (virtual ms), with a wake scheduled then.
    pub(super) armed: Option<u64>,
    /// Peers' requests waiting for this node's answer: the peer, its life, its id.
    pub(super) replies: BTreeMap<u64, (usize, u32, ReqId)>,
    pub(super) next_reply: u64,
    pub(super) last_issued: Option<Timestamp>,
    pub(super) last_clock: Timestamp,
    pub(super) epoch_ms: u64,
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

impl Node {
    pub(super) fn new(name: String, skew_ms: i64) -> Node {
        Node {
            name,
            dir: tempfile::tempdir().expect("temp dir"),
            store: None,
            core: None,
            up: false,
            life: 0,
            skew_ms,
            seen_skew: BTreeMap::new(),
            armed: None,
            replies: BTreeMap::new(),
            next_reply: 1,
            last_issued: None,
            last_clock: Timestamp::ZERO,
            epoch_ms: 0,
            removed: false,
            started_once: false,
            token: None,
            empty_since: 0,
            data_epoch: 0,
            stepped_aside: false,
        }
    }
}

/// The core configuration every simulated node runs with: the node's defaults, with
/// the simulation's shorter timeouts and windows.
pub(super) fn core_config(
    hint_window_ms: u64,
    tombstone_grace_ms: u64,
    route_to_home: bool,
    write_fast_path: bool,
) -> CoreConfig {
    CoreConfig {
        replica_timeout_ms: REPLICA_TIMEOUT_MS,
        hint_window_ms,
        tombstone_grace_ms,
        anti_entropy_interval_ms: Some(ANTI_ENTROPY_MS),
        max_clock_offset_ms: MAX_OFFSET_MS,
        value_bytes_max: 1 << 20,
        ops_max: OPS_MAX,
        exchanges_in_flight: EXCHANGES_IN_FLIGHT,
        repair_bytes_per_sec: 0,
        sync_step_timeout_ms: REPLICA_TIMEOUT_MS,
        default_consistency: Consistency::Quorum,
        membership: MembershipConfig::default(),
        route_to_home,
        write_fast_path,
    }
}

impl Sim {
    /// Node `i`'s two clocks now.
    pub(super) fn now_of(&self, i: usize) -> Now {
        Now {
            mono_us: self.now * 1000,
            wall_us: self.wall(i) * 1000,
        }
    }

    /// Starts (or restarts) node `i` as the node starts: opens its store, takes this
    /// life's identity, asks a live member for the cluster (as a seed answers a join:
    /// `admitted` is a seed's admission already made, for a replacement), and boots its
    /// core from that. The nodes forming the cluster at the start hold every partition.
    pub(super) fn start(&mut self, i: usize) {
        self.start_with(i, None);
    }

    pub(super) fn start_with(&mut self, i: usize, admitted: Option<Joined>) {
        let mut options = StoreOptions::new(self.names[i].clone());
        options.durable = false;
        options.map_size_bytes = 64 << 20;
        let store = Store::open(self.nodes[i].dir.path(), options).expect("store");
        let had_cluster = store.cluster().is_some();
        store.set_cluster(self.settings).expect("cluster");
        if !had_cluster {
            self.nodes[i].empty_since = self.now;
        }
        let wall = (EPOCH_MS as i64 + self.now as i64 + self.nodes[i].skew_ms) as u64;
        let addr = format!("10.0.0.{}:7000", i + 1).parse().unwrap();
        let mut me = identity(&store, &self.names[i], addr, wall).expect("identity");
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].up && self.nodes[j].core.is_some())
            .collect();
        let joined = match admitted {
            Some(joined) => joined,
            None => Joined {
                members: live
                    .first()
                    .map(|&j| {
                        self.nodes[j]
                            .core
                            .as_ref()
                            .unwrap()
                            .membership()
                            .seed_members()
                    })
                    .unwrap_or_default(),
                created: self.now == 0,
                ..Joined::default()
            },
        };
        let seeds = live.iter().map(|&j| self.member_id(j)).collect();
        let (mut boot, _) =
            prepare(&store, &mut me, joined, had_cluster, self.settings).expect("boot");
        boot.seeds = seeds;
        boot.seed = rand::RngExt::random::<u64>(&mut self.rng);
        let life = me.incarnation;
        let identity = (me.epoch_ms, life);
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
        let node = &mut self.nodes[i];
        node.life = life;
        node.epoch_ms = me.epoch_ms;
        node.data_epoch = me.data_epoch;
        node.token = me.token.clone();
        node.started_once = true;
        node.seen_skew.clear();
        node.replies.clear();
        node.armed = None;
        node.up = true;
        let config = core_config(
            self.config.hint_window_ms,
            self.config.tombstone_grace_ms,
            self.config.route_linearizable,
            self.config.write_fast_path,
        );
        let now = self.now_of(i);
        let boot = Boot {
            clock_floor: boot.clock_floor.max(self.nodes[i].last_clock),
            ..boot
        };
        let mut core = NodeCore::new(config, boot, now, &store);
        core.pause_background(self.ae_paused);
        self.nodes[i].store = Some(store);
        self.nodes[i].core = Some(core);
        self.log(format!("start {} life {life}", self.names[i]));
        self.pump(i);
    }

    /// Crashes node `i`: memory gone, storage kept.
    pub(super) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = false;
        if let Some(core) = node.core.take() {
            node.last_clock = node.last_clock.max(core.clock().last());
        }
        if let Some(store) = node.store.take() {
            store.close();
        }
        // Client operations this coordinator had in flight get no answer.
        for o in self.client_ops.iter_mut() {
            if o.outcome.is_none() && o.coordinator == Some(i) && o.issued_ms > 0 {
                o.outcome = Some(Err("coordinator crashed".into()));
            }
        }
        self.crashes.push((i, self.now));
        self.log(format!("crash {}", self.names[i]));
    }

    /// Feeds node `i`'s core with `input` and carries out what it asks.
    pub(super) fn with_core(&mut self, i: usize, input: impl FnOnce(&mut NodeCore, Now, &Store)) {
        if !self.nodes[i].up {
            return;
        }
        let now = self.now_of(i);
        let node = &mut self.nodes[i];
        let (Some(core), Some(store)) = (node.core.as_mut(), node.store.as_ref()) else {
            return;
        };
        input(core, now, store);
        self.pump(i);
    }

    /// Carries out everything node `i`'s core asks, then arms its next wake-up.
    pub(super) fn pump(&mut self, i: usize) {
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            let Some(output) = core.poll_output() else {
                break;
            };
            self.output(i, output);
        }
        self.check_clock(i);
        let core = self.nodes[i].core.as_ref().unwrap();
        let in_flight = core.ops_in_flight();
        if in_flight > OPS_MAX {
            self.violations.push(format!(
                "{} has {in_flight} operations in flight, past its bound",
                self.names[i]
            ));
        }
        self.arm(i);
    }

    /// Schedules node `i`'s next wake-up where its core asks for one.
    fn arm(&mut self, i: usize) {
        let Some(at) = self.nodes[i].core.as_ref().and_then(NodeCore::poll_timeout) else {
            return;
        };
        let at = at.0.max(self.now);
        let node = &mut self.nodes[i];
        if node
            .armed
            .is_some_and(|armed| armed >= self.now && armed <= at)
        {
            return;
        }
        node.armed = Some(at);
        let life = node.life;
        self.schedule(at, Event::Wake { node: i, life, at });
    }

    /// A wake-up armed for `at`.
    pub(super) fn wake(&mut self, i: usize, at: u64) {
        if self.nodes[i].armed != Some(at) {
            return;
        }
        self.nodes[i].armed = None;
        self.with_core(i, |core, now, store| core.handle_timeout(now, store));
    }

    fn output(&mut self, i: usize, output: Output) {
        match output {
            Output::Send { id, to, request } => match self.index_of(&to.name) {
                Some(j) => {
                    let life = self.nodes[i].life;
                    self.send(i, j, Msg::Request { id, life, request });
                }
                None => {
                    let now = self.now_of(i);
                    let failure = vergent::core::PeerFailure::Path("no such address".into());
                    let node = &mut self.nodes[i];
                    if let (Some(core), Some(store)) = (node.core.as_mut(), node.store.as_ref()) {
                        core.handle_response(id, Err(failure), now, store);
                    }
                }
            },
            Output::Respond { reply, response } => {
                let Some((j, life, id)) = self.nodes[i].replies.remove(&reply) else {
                    return;
                };
                let truth_skew_ms =
                    matches!(response, Response::Pong { .. }).then_some(self.nodes[i].skew_ms);
                self.send(
                    i,
                    j,
                    Msg::Response {
                        id,
                        life,
                        response: Box::new(response),
                        truth_skew_ms,
                    },
                );
            }
            Output::Datagram { to, data } => self.datagram(i, to, data.to_vec()),
            Output::Store { id, work } => {
                self.before_store(i, &work);
                let now = self.now_of(i);
                let node = &mut self.nodes[i];
                let (Some(core), Some(store)) = (node.core.as_mut(), node.store.as_ref()) else {
                    return;
                };
                let done = carry_out(store, work);
                core.handle_stored(id, done, now, store);
            }
            Output::Answer { ask, answer } if ask >= super::ADMIN_ASKS => {
                self.admin_answers.insert(ask, answer);
            }
            Output::Answer { ask, answer } => self.answered(ask as usize, answer),
            Output::Progress { .. } | Output::Forget { .. } => {}
            Output::Event(event) => self.core_event(i, event),
        }
    }

    /// What a node's core did, for the log, the fault counts and the checks.
    fn core_event(&mut self, i: usize, event: CoreEvent) {
        match &event {
            CoreEvent::Issued { ask, version } => {
                let ask = *ask as usize;
                self.check_issuing_clock(i);
                if self.nodes[i]
                    .last_issued
                    .is_some_and(|last| version.hlc <= last)
                {
                    self.violations.push(format!(
                        "{} issued a version not above its last",
                        self.names[i]
                    ));
                }
                self.nodes[i].last_issued = Some(version.hlc);
                if let Some(o) = self.client_ops.get_mut(ask) {
                    o.version = Some(*version);
                }
            }
            CoreEvent::HandedOff { partition, .. } => {
                self.log(format!("{} handed off {partition}", self.names[i]));
                *self.report.faults.entry("handoff").or_default() += 1;
            }
            CoreEvent::Purged { count, .. } => {
                self.log(format!("{} purged {count} tombstones", self.names[i]));
                *self.report.faults.entry("purge").or_default() += count;
            }
            CoreEvent::HintsDropped {
                why: HintsDeleted::TargetLeft,
                count,
                ..
            } => {
                *self.report.faults.entry("hints-dropped").or_default() += *count as u64;
            }
            CoreEvent::Membership(m) => {
                use vergent::membership::MembershipEvent;
                match m {
                    MembershipEvent::RejoinedAs(_) => self.renewals[i] += 1,
                    MembershipEvent::SteppedAside(_) => self.nodes[i].stepped_aside = true,
                    _ => {}
                }
                self.log(format!("{} {m:?}", self.names[i]));
            }
            CoreEvent::RunEnded { kind, report } => {
                self.log(format!(
                    "{} {} run with {:?} compared {} differing {} in sync {} problems {:?}",
                    self.names[i],
                    kind.as_str(),
                    report.peers,
                    report.counts.partitions_compared,
                    report.counts.partitions_differing,
                    report.in_sync,
                    report.problems
                ));
            }
            CoreEvent::Filled { .. }
            | CoreEvent::Released { .. }
            | CoreEvent::PlacementChanged { .. }
            | CoreEvent::Removed(_)
            | CoreEvent::JoinRefused { .. }
            | CoreEvent::ExchangeFailed { .. }
            | CoreEvent::ClockRefused { .. }
            | CoreEvent::Unreachable { .. }
            | CoreEvent::Reachable { .. } => {
                self.log(format!("{} {event:?}", self.names[i]));
            }
            _ => {}
        }
    }

    /// Logs every store effect on keys that end with `watch` (`VERGENT_SIM_WATCH`),
    /// with what the node held before, to follow one key's records through a run.
    fn watch_store(&mut self, i: usize, work: &StoreWork, watch: &[u8]) {
        let store = self.nodes[i].store.as_ref().unwrap();
        let held = |key: &[u8]| {
            store.get(key).ok().flatten().map(|r| {
                format!(
                    "{:?} {:?}",
                    r.version.hlc,
                    r.payload.value().map(String::from_utf8_lossy)
                )
            })
        };
        let mut lines = Vec::new();
        match work {
            StoreWork::Apply(entries) => {
                for e in entries.iter().filter(|e| e.key.ends_with(watch)) {
                    lines.push(format!(
                        "apply {:?} {:?} over {:?}",
                        e.record.version.hlc,
                        e.record.payload.value().map(String::from_utf8_lossy),
                        held(&e.key)
                    ));
                }
            }
            StoreWork::Accept { key, record, .. } if key.ends_with(watch) => lines.push(format!(
                "accept {:?} {:?} over {:?}",
                record.version.hlc,
                record.payload.value().map(String::from_utf8_lossy),
                held(key)
            )),
            StoreWork::DropPartition(p) => {
                let keys: Vec<Vec<u8>> = self.watched_keys.iter().cloned().collect();
                for key in keys {
                    if partition_of(&key, self.settings.partitions) == *p {
                        lines.push(format!("drop partition {p} holding {:?}", held(&key)));
                    }
                }
            }
            _ => {}
        }
        if let StoreWork::Apply(entries) = work {
            for e in entries.iter().filter(|e| e.key.ends_with(watch)) {
                self.watched_keys.insert(e.key.clone());
            }
        }
        if let StoreWork::Accept { key, .. } = work
            && key.ends_with(watch)
        {
            self.watched_keys.insert(key.clone());
        }
        for line in lines {
            self.log(format!("{} watch {line}", self.names[i]));
        }
    }

    /// Watches a store effect before it is carried out: a value taken below a purged
    /// tombstone, the tombstones a purge or a handoff takes, a handoff before every
    /// owner synced.
    fn before_store(&mut self, i: usize, work: &StoreWork) {
        if let Ok(watch) = std::env::var("VERGENT_SIM_WATCH") {
            self.watch_store(i, work, watch.as_bytes());
        }
        match work {
            StoreWork::Apply(entries) => self.check_not_resurrected(i, entries),
            StoreWork::Purge(tombstones) => {
                for (key, version) in tombstones {
                    self.purged
                        .entry((i, key.clone()))
                        .or_default()
                        .push((*version, self.now));
                }
            }
            StoreWork::DropPartition(p) => {
                self.check_handoff(i, *p);
                // Its tombstones go with it: for the checks, as good as purged (the
                // owners are not sent those past the grace where they hold nothing).
                let store = self.nodes[i].store.as_ref().unwrap();
                let gone = store
                    .tombstones_before(*p, u64::MAX, usize::MAX)
                    .expect("tombstones");
                for (key, version) in gone {
                    self.purged
                        .entry((i, key))
                        .or_default()
                        .push((version, self.now));
                }
            }
            _ => {}
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

    /// A partition is dropped by an old owner only once every replica that counts for
    /// it holds what the old owner holds, or newer: node `i` is about to hand off `p`.
    /// A replica that is down is not looked at (its store is closed), nor one that in
    /// its own view no longer takes the partition's writes, nor one wiped since this
    /// node last heard of it; a tombstone past the grace may rightly be missing (the
    /// owners purge it, or were never sent it).
    fn check_handoff(&mut self, i: usize, p: u16) {
        let core = self.nodes[i].core.as_ref().unwrap();
        let set = core.view().replica_set_of(p);
        let horizon = core.grace_horizon(self.now_of(i));
        let store = self.nodes[i].store.as_ref().unwrap();
        let leaves = 0..vergent::tree::LEAVES as u16;
        let (entries, _) = store
            .entries_in(p, leaves, None, usize::MAX)
            .expect("entries");
        let mut missing = Vec::new();
        for owner in set.counted.iter().filter(|o| **o != self.names[i]) {
            let Some(r) = self
                .index_of(owner)
                .filter(|&r| self.nodes[r].store.is_some())
            else {
                continue;
            };
            // An owner whose disk was replaced since this node last heard of it is not
            // the replica this node agreed with: what only the old disk held went with
            // it (the one destructive fault a run has), and the owner refills.
            let known_epoch = core.membership().member(owner).map(|v| v.id.data_epoch);
            if known_epoch.is_some_and(|epoch| epoch != self.nodes[r].data_epoch) {
                continue;
            }
            // An owner that in its own view no longer takes the partition's writes may
            // have handed it off itself (views differ for a moment after a change); its
            // own handoff was checked against the owners it counted.
            let theirs = self.nodes[r].core.as_ref();
            if theirs.is_none_or(|c| !c.view().replica_set_of(p).targets.contains(owner)) {
                continue;
            }
            for entry in &entries {
                // Dead past the grace: a tombstone, an expired entry.
                let dead_past_grace = vergent::antientropy::exchange::purgeable(entry, horizon);
                // A typed entry is held where the owner's state already takes it in.
                let held = if entry.record.payload.typed().is_some() {
                    self.nodes[r]
                        .store
                        .as_ref()
                        .and_then(|s| s.get(&entry.key).ok().flatten())
                        .is_some_and(|held| held.merge(&entry.record) == Merged::Kept)
                } else {
                    self.held_version(r, &entry.key) >= Some(entry.record.version)
                };
                if !dead_past_grace && !held {
                    missing.push(format!(
                        "{owner} lacks {} at {:?}",
                        String::from_utf8_lossy(&entry.key),
                        entry.record.version
                    ));
                }
            }
        }
        if !missing.is_empty() {
            self.violations.push(format!(
                "{} handed off partition {p} before every owner synced: {}",
                self.names[i],
                missing.join("; ")
            ));
        }
    }

    /// Node `i` is about to issue a version: its clock must be within the bound of
    /// its live view's median clock, give or take what probes cannot see (the latency
    /// of late and a clock that changed since the last probe).
    pub(super) fn check_issuing_clock(&mut self, i: usize) {
        if self.now < self.skew_changed_ms + 2 * super::config::PROBE_MS + REPLICA_TIMEOUT_MS {
            return;
        }
        let off = self.true_cluster_offset_ms(i).unsigned_abs();
        let allowed = MAX_OFFSET_MS + self.measurement_error_ms();
        if off > allowed {
            let verdict = self.verdict(i);
            self.violations.push(format!(
                "{} issued a version at {} while its clock was {off} ms off its cluster's (allowed {allowed} ms; it measured {verdict:?} against {:?})",
                self.names[i],
                self.now,
                self.live_peers(i)
            ));
        }
    }

    /// A node's clock never goes backwards, across its lives too.
    pub(super) fn check_clock(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let last = core.clock().last();
        if last < self.nodes[i].last_clock && self.nodes[i].up {
            self.violations
                .push(format!("{}'s clock went backwards", self.names[i]));
        }
        self.nodes[i].last_clock = self.nodes[i].last_clock.max(last);
    }

    /// The answer to a client operation (`ask` is its index).
    fn answered(&mut self, ask: usize, answer: Answer) {
        let mut read = None;
        let mut swapped = None;
        let result = match answer {
            Answer::Written(version) => Ok(Some(version)),
            Answer::Read { record, .. } => {
                let version = record.as_ref().map(|r| r.version);
                read = record;
                Ok(version)
            }
            Answer::NotSwapped(record) => {
                let version = record.as_ref().map(|r| r.version);
                read = record;
                swapped = Some(false);
                Ok(version)
            }
            Answer::Failed(err) => Err(err.message),
            other => Err(format!("unexpected answer {other:?}")),
        };
        let wall = self
            .client_ops
            .get(ask)
            .and_then(|o| o.coordinator)
            .map_or(0, |c| self.wall(c));
        self.log(format!("reply op {ask} {result:?}"));
        let Some(o) = self.client_ops.get_mut(ask) else {
            return;
        };
        if o.outcome.is_some() {
            return;
        }
        if let Ok(Some(version)) = &result {
            let seen = &mut self.sessions[o.session];
            *seen = (*seen).max(Some(version.hlc));
        }
        if result.is_ok() {
            self.report.acked += 1;
        }
        if o.kind == super::workload::OpKind::Typed(super::workload::TypedOp::LinCas)
            && result.is_ok()
        {
            o.swapped = Some(swapped.unwrap_or(true));
        }
        o.outcome = Some(result);
        o.completed_ms = Some(self.now);
        o.read = read;
        o.completed_wall = wall;
    }

    /// Whether node `i` sees member `name` dead.
    pub(super) fn sees_dead(&self, i: usize, name: &str) -> bool {
        self.nodes[i]
            .core
            .as_ref()
            .and_then(|c| c.membership().member(name))
            .is_some_and(|v| v.state == MemberState::Dead)
    }
}
