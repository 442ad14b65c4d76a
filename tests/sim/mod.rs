//! A deterministic cluster simulator: the real mechanisms of N nodes — membership
//! (foca), the coordinator, placement, the anti-entropy exchange, LMDB storage with its
//! Merkle trees, hybrid logical clocks — driven in one process on a virtual clock, over
//! a simulated network that delays, drops, duplicates and reorders messages and cuts
//! partitions, while nodes crash and restart and clocks drift. Everything random comes
//! from one seed, so a failing seed replays exactly.
//!
//! The glue here plays the part of the node runtime (`engine/src/node`): it turns the
//! mechanisms' actions into messages and their inputs back into calls. The real runtime
//! is exercised by the process chaos test instead.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use vergent::antientropy::exchange::{Exchange, root_summary};
use vergent::antientropy::messages::{SyncLimits, SyncRequest, SyncResponse};
use vergent::antientropy::respond::{pushed_to_apply, respond};
use vergent::coordinator::{Action, Coordinator, CoordinatorConfig, Millis, OpId, Outcome};
use vergent::hlc::skew::{Probe, Reading, SkewBook, Verdict};
use vergent::hlc::{Clock, Timestamp};
use vergent::membership::{MemberId, Membership, MembershipConfig};
use vergent::placement::{Fill, FillNews, PartitionSet, Placement, ReplicaSet, partition_of};
use vergent::policy::{
    HINT_BATCH_BYTES_MAX, HINT_BATCH_MAX, HintTarget, PURGE_BATCH_MAX, also_holding, hint_target,
    holding_of, may_hand_off, purge_horizon, split_expired,
};
use vergent::protocol::Consistency;
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::storage::{ClusterSettings, Hint, Store, StoreOptions};

/// Wall-clock milliseconds at virtual time 0 (any fixed point will do).
const EPOCH_MS: u64 = 1_800_000_000_000;
/// The clock offset nodes refuse beyond.
const MAX_OFFSET_MS: u64 = 500;
/// Tick of each node's runtime work (timeouts, hints, anti-entropy scheduling).
const TICK_MS: u64 = 100;
/// Time a replica request or exchange step waits before it counts as lost.
const REPLICA_TIMEOUT_MS: u64 = 2_000;
/// Time between anti-entropy runs of a node.
const ANTI_ENTROPY_MS: u64 = 3_000;
/// Hints older than this are dropped, and tombstones older than the grace may be
/// purged once every replica holds them. The grace is longer than the window, as the
/// node requires (a hint delivered after its tombstone was purged would bring the key
/// back). Two thirds of the seeds keep hints long enough to check hinted handoff alone
/// after healing; the rest keep both short, so purges happen while replicas are cut off.
const HINTS_LONG: (u64, u64) = (20_000, 25_000);
const HINTS_SHORT: (u64, u64) = (2_000, 3_000);
/// After healing, time given to hinted handoff alone (anti-entropy paused), at the end
/// of which every write a replica missed recently enough must have reached it.
const HINT_DRAIN_MS: u64 = 10_000;
/// Bound checked on every node's coordinator.
const OPS_MAX: usize = 4_096;
/// Slots for nodes that join during the run (a new node, a replacement).
const SPARES: usize = 2;
/// Events one run may handle; a healthy run handles well under a tenth of this.
const EVENTS_MAX: u64 = 5_000_000;
/// Time between a node's clock probes of each live peer, as in the node.
const PROBE_MS: u64 = 1_000;
/// How long a clock sample speaks for a peer, as in the node.
const SKEW_SAMPLE_MAX_AGE_MS: u64 = vergent::hlc::skew::SAMPLE_AGE_MAX_MS;
/// Client sessions the operations are spread over.
const SESSIONS: usize = 4;

/// What a run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of everything random.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Partitions.
    pub partitions: u16,
    /// Client operations issued during the fault phase.
    pub ops: usize,
    /// Distinct keys (few, so operations collide).
    pub keys: usize,
    /// Length of the fault phase, virtual milliseconds.
    pub fault_ms: u64,
    /// Time allowed after healing to converge, virtual milliseconds.
    pub heal_ms: u64,
    /// Age past which hints are dropped, virtual milliseconds.
    pub hint_window_ms: u64,
    /// Age past which tombstones may be purged, virtual milliseconds.
    pub tombstone_grace_ms: u64,
}

impl SimConfig {
    /// The default shape for `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 5,
            partitions: 16,
            ops: 160,
            keys: 24,
            fault_ms: 30_000,
            heal_ms: 90_000,
            hint_window_ms: if seed.is_multiple_of(3) {
                HINTS_SHORT.0
            } else {
                HINTS_LONG.0
            },
            tombstone_grace_ms: if seed.is_multiple_of(3) {
                HINTS_SHORT.1
            } else {
                HINTS_LONG.1
            },
        }
    }
}

/// What happened, for the figures.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Operations issued, by kind.
    pub puts: u64,
    /// Deletes issued.
    pub deletes: u64,
    /// Reads issued.
    pub gets: u64,
    /// Operations acknowledged as successful.
    pub acked: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Messages delivered, dropped, duplicated.
    pub delivered: u64,
    /// Messages dropped by loss or partitions.
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Virtual milliseconds from healing to convergence.
    pub converged_after_ms: u64,
    /// A digest of the whole history: equal seeds give equal digests.
    pub history_digest: String,
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct Violation(pub String);

#[derive(Debug, Clone)]
enum Msg {
    Swim(Vec<u8>),
    Write {
        op: OpId,
        entry: Entry,
    },
    WriteAck {
        op: OpId,
        answer: Applied,
    },
    Ping {
        sent_us: u64,
    },
    Pong {
        sent_us: u64,
        received_us: u64,
        /// The answering clock's true skew (bookkeeping for the invariant, not read by
        /// the mechanism).
        truth_skew_ms: i64,
    },
    Read {
        op: OpId,
        key: Vec<u8>,
    },
    ReadReply {
        op: OpId,
        record: Option<Record>,
    },
    Repair {
        entry: Entry,
    },
    Hints {
        batch: u64,
        entries: Vec<Entry>,
    },
    HintsAck {
        batch: u64,
        ok: bool,
    },
    Sync {
        run: u64,
        request: SyncRequest,
    },
    SyncReply {
        run: u64,
        response: Result<SyncResponse, String>,
    },
}

impl Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Swim(_) => "swim",
            Msg::Write { .. } => "write",
            Msg::WriteAck { .. } => "write-ack",
            Msg::Ping { .. } => "ping",
            Msg::Pong { .. } => "pong",
            Msg::Read { .. } => "read",
            Msg::ReadReply { .. } => "read-reply",
            Msg::Repair { .. } => "repair",
            Msg::Hints { .. } => "hints",
            Msg::HintsAck { .. } => "hints-ack",
            Msg::Sync { .. } => "sync",
            Msg::SyncReply { .. } => "sync-reply",
        }
    }
}

/// How a replica answered entries it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Yes,
    /// A version from beyond the offset bound: refused for what it is.
    Refused,
    /// Not applied (no store).
    No,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Msg,
    },
    SwimTimer {
        node: usize,
        life: u32,
        timer: vergent::membership::SwimTimer,
    },
    Tick {
        node: usize,
        life: u32,
    },
    Client {
        op: usize,
    },
    Fault,
    Heal,
    /// A member goes down for longer than the tombstone grace (`back`: it returns).
    Away {
        node: usize,
        back: bool,
    },
    /// A datagram for the second process under a member's name.
    ToGhost {
        data: Vec<u8>,
        ghost: u32,
    },
    GhostTimer {
        timer: vergent::membership::SwimTimer,
        ghost: u32,
    },
    GhostTick {
        ghost: u32,
    },
}

/// A second process under a live member's name that got into membership (one started
/// from a copy of the member's data directory while its seeds were out of reach, so no
/// join refused it): membership only, at an address of its own, for a while.
struct Ghost {
    id: u32,
    /// The member whose name it took.
    of: usize,
    addr: std::net::SocketAddr,
    membership: Membership,
    until: u64,
}

/// The client's record of one operation.
#[derive(Debug, Clone)]
struct ClientOp {
    key: Vec<u8>,
    kind: OpKind,
    consistency: Consistency,
    issued_ms: u64,
    version: Option<Version>,
    value: Option<Vec<u8>>,
    outcome: Option<Result<Option<Version>, String>>,
    completed_ms: Option<u64>,
    /// The client session it belongs to, and the highest version that session had
    /// seen when the operation was issued (sent along, as the client library does).
    session: usize,
    after: Option<Timestamp>,
    /// The replicas its coordinator wrote to.
    targets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Put,
    Delete,
    Get,
}

/// An anti-entropy run of one node with one peer.
struct SyncRun {
    peer: usize,
    salt: u64,
    /// The partitions compared, and when the run began: if every exchange ends well,
    /// each is in sync with the peer as of then.
    partitions: Vec<u16>,
    started_ms: u64,
    failed: bool,
    exchanges: Vec<Exchange>,
    current: Option<Exchange>,
    deadline_ms: u64,
    awaiting: bool,
}

struct Node {
    name: String,
    dir: tempfile::TempDir,
    store: Option<Store>,
    up: bool,
    life: u32,
    skew_ms: i64,
    clock: Clock,
    /// Its peers' clocks as its probes measured them.
    skew: SkewBook,
    /// Each peer's true skew when it last answered a probe: what the probes can know.
    seen_skew: BTreeMap<usize, i64>,
    coordinator: Coordinator,
    membership: Option<Membership>,
    /// Coordinator op → client op index.
    ops: BTreeMap<OpId, usize>,
    /// Hint batches in flight: target, the hint keys, when sent.
    hint_batches: BTreeMap<u64, (usize, Vec<Vec<u8>>, u64)>,
    ticks: u64,
    sync_runs: BTreeMap<u64, SyncRun>,
    next_sync_ms: u64,
    last_issued: Option<Timestamp>,
    last_clock: Timestamp,
    epoch_ms: u64,
    /// Which partitions it holds the data of.
    fill: Fill,
    /// When the node learned of each member's fills.
    news: FillNews,
    /// (partition, peer) → the start of the last exchange that ended in agreement, on
    /// either side, in virtual ms: the node keeps these in its monotonic clock.
    in_sync: BTreeMap<(u16, usize), u64>,
    /// The placement digest seen last, and when it was first seen (virtual ms).
    placement_seen: Option<(String, u64)>,
    /// Removed from the cluster (or replaced): never starts again.
    removed: bool,
    /// Whether it has ever started (spares start during the run).
    started_once: bool,
    /// Its placement token, when it replaced a member.
    token: Option<String>,
    /// When it last came up with nothing (the cluster's start, a wipe, a join).
    empty_since: u64,
    /// The epoch of the life that created its store.
    data_epoch: u64,
    /// It stepped aside for a second process under its name at some point: it missed
    /// writes meanwhile, and refills.
    stepped_aside: bool,
}

/// The tombstones purged of one key on one node: each version, and when.
type Purges = Vec<(Version, u64)>;

/// One simulation.
pub struct Sim {
    config: SimConfig,
    rng: SmallRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    next_event: usize,
    nodes: Vec<Node>,
    names: Vec<String>,
    settings: ClusterSettings,
    client_ops: Vec<ClientOp>,
    /// Directed links that drop everything.
    cut: BTreeSet<(usize, usize)>,
    loss: f64,
    duplicate: f64,
    jitter_ms: u64,
    healed: bool,
    /// Anti-entropy waits while hinted handoff alone is checked.
    ae_paused: bool,
    /// When each node crashed, virtual ms.
    crashes: Vec<(usize, u64)>,
    next_id: u64,
    history: String,
    report: SimReport,
    violations: Vec<String>,
    /// A fault that destroyed a replica's data (a wipe, a removal) happened: one per
    /// run, as two would be more than a minority of some partition's replicas.
    destructive: bool,
    /// When membership last changed by a join, wipe, removal or replacement.
    last_membership_change: u64,
    /// A member crashed to be removed (or replaced, `true`) once it is seen dead.
    pending_departure: Option<(usize, bool)>,
    ghost: Option<Ghost>,
    ghosts: u32,
    /// Events handled so far.
    handled: u64,
    /// Renewals of each node's identity, to bound them.
    renewals: Vec<u64>,
    /// When any clock's skew last changed, and the highest latency jitter of late:
    /// together they bound how wrong a node's clock measurement may be.
    skew_changed_ms: u64,
    jitter_recent: (u64, u64),
    /// Each node's identities, in the order of its starts.
    identities: Vec<Vec<(u64, u32)>>,
    /// The highest version each session has seen.
    sessions: Vec<Option<Timestamp>>,
    /// Every tombstone purged: (node, key) → each version purged there and when
    /// (virtual ms), what the key's record was before the purge took it, for the checks.
    purged: BTreeMap<(usize, Vec<u8>), Purges>,
}

impl Sim {
    /// Sets up the nodes; nothing runs yet.
    pub fn new(config: SimConfig) -> Sim {
        let rng = SmallRng::seed_from_u64(config.seed);
        let settings = ClusterSettings {
            cluster_id: [7; 16],
            partitions: config.partitions,
            replication_factor: 3,
            tree_key: [9; 32],
        };
        let names: Vec<String> = (1..=config.nodes + SPARES)
            .map(|i| format!("n{i}"))
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes: Vec::new(),
            names: names.clone(),
            settings,
            client_ops: Vec::new(),
            cut: BTreeSet::new(),
            loss: 0.0,
            duplicate: 0.0,
            jitter_ms: 5,
            healed: false,
            ae_paused: false,
            crashes: Vec::new(),
            next_id: 1,
            history: String::new(),
            report: SimReport::default(),
            violations: Vec::new(),
            destructive: false,
            last_membership_change: 0,
            pending_departure: None,
            ghost: None,
            ghosts: 0,
            handled: 0,
            renewals: Vec::new(),
            skew_changed_ms: 0,
            jitter_recent: (5, 0),
            identities: Vec::new(),
            sessions: vec![None; SESSIONS],
            purged: BTreeMap::new(),
            config,
        };
        for name in &names {
            let skew_ms = sim.rng.random_range(-200i64..=200);
            let node = Node {
                name: name.clone(),
                dir: tempfile::tempdir().expect("temp dir"),
                store: None,
                up: false,
                life: 0,
                skew_ms,
                clock: Clock::new(MAX_OFFSET_MS),
                skew: SkewBook::new(),
                seen_skew: BTreeMap::new(),
                coordinator: Coordinator::new(CoordinatorConfig::default()),
                membership: None,
                ops: BTreeMap::new(),
                hint_batches: BTreeMap::new(),
                ticks: 0,
                sync_runs: BTreeMap::new(),
                next_sync_ms: 0,
                last_issued: None,
                last_clock: Timestamp::ZERO,
                epoch_ms: 0,
                fill: Fill::default(),
                news: FillNews::default(),
                in_sync: BTreeMap::new(),
                placement_seen: None,
                removed: false,
                started_once: false,
                token: None,
                empty_since: 0,
                data_epoch: 0,
                stepped_aside: false,
            };
            sim.nodes.push(node);
        }
        sim.renewals = vec![0; sim.nodes.len()];
        sim.identities = vec![Vec::new(); sim.nodes.len()];
        sim
    }

    /// Node `i`'s live peers in its own view.
    fn live_peers(&self, i: usize) -> Vec<String> {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return Vec::new();
        };
        m.placement_members()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| *name != self.names[i] && self.live_in_view(i, name))
            .collect()
    }

    /// Node `i`'s monotonic and wall clocks, read together.
    fn reading(&self, i: usize) -> Reading {
        Reading {
            mono_us: self.now * 1000,
            wall_us: self.wall(i) * 1000,
        }
    }

    /// What node `i` concludes about its own clock from its probes.
    fn verdict(&self, i: usize) -> Verdict {
        let live = self.live_peers(i);
        self.nodes[i].skew.verdict(
            live.iter().map(String::as_str),
            self.reading(i),
            MAX_OFFSET_MS,
        )
    }

    /// The cluster's time as node `i` measures it.
    fn cluster_wall(&self, i: usize) -> u64 {
        let wall = self.wall(i);
        match self.verdict(i).cluster_offset_ms() {
            Some(offset) => wall.saturating_add_signed(offset),
            None => wall,
        }
    }

    /// How far off node `i`'s clock truly is from the median of the clocks its probes
    /// reach (the same rule they approximate), milliseconds.
    fn true_cluster_offset_ms(&self, i: usize) -> i64 {
        let mut exact = SkewBook::new();
        // The clocks its probes reach: with only a majority measured the median is
        // over them (a known limit, in the README), and that is what is checked here.
        let now = self.reading(i);
        let live: Vec<String> = self
            .live_peers(i)
            .into_iter()
            .filter(|name| self.nodes[i].skew.offset(name, now).is_some())
            .collect();
        for name in &live {
            let j = self.index_of(name).expect("a member");
            // A peer's clock as of its last answer: a step since, while it could not be
            // probed, is not something this node could have seen.
            let theirs = self.nodes[i]
                .seen_skew
                .get(&j)
                .copied()
                .unwrap_or(self.nodes[j].skew_ms);
            let offset_us = (theirs - self.nodes[i].skew_ms) * 1000;
            let now = self.reading(i);
            let at_peer = (now.wall_us as i64 + offset_us) as u64;
            exact.record(
                name,
                Probe {
                    sent_us: now.wall_us,
                    received_us: at_peer,
                    replied_us: at_peer,
                    answered_us: now.wall_us,
                },
                now.mono_us,
            );
        }
        exact
            .verdict(
                live.iter().map(String::as_str),
                self.reading(i),
                MAX_OFFSET_MS,
            )
            .cluster_offset_ms()
            .unwrap_or(0)
    }

    /// The most a probe's estimate may be off: half the longest round trip a message
    /// may take (duplicates arrive up to four jitters late).
    fn measurement_error_ms(&self) -> u64 {
        let jitter = if self.now < self.jitter_recent.1 + SKEW_SAMPLE_MAX_AGE_MS {
            self.jitter_recent.0.max(self.jitter_ms)
        } else {
            self.jitter_ms
        };
        (2 + 5 * jitter) / 2 + 1
    }

    fn set_jitter(&mut self, jitter_ms: u64) {
        self.jitter_recent = (self.jitter_ms.max(jitter_ms), self.now);
        self.jitter_ms = jitter_ms;
    }

    fn set_skew(&mut self, i: usize, skew_ms: i64) {
        if self.nodes[i].skew_ms != skew_ms {
            self.nodes[i].skew_ms = skew_ms;
            self.skew_changed_ms = self.now;
        }
    }

    fn wall(&self, node: usize) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }

    fn log(&mut self, line: String) {
        let _ = writeln!(self.history, "{:>7} {}", self.now, line);
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let id = self.next_event;
        self.next_event += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn member_id(&self, node: usize) -> MemberId {
        MemberId {
            name: self.names[node].clone(),
            addr: format!("10.0.0.{}:7000", node + 1).parse().unwrap(),
            incarnation: self.nodes[node].life,
            epoch_ms: self.nodes[node].epoch_ms,
            token: self.nodes[node].token.clone(),
            data_epoch: self.nodes[node].data_epoch,
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Starts (or restarts) node `i`: opens its store, builds its clock above the
    /// store's high-water mark, installs what a live member knows of the cluster (as a
    /// node does with its seed's answer, joining or restarting), and announces itself
    /// to every live member. A node with an empty store holds no data, unless it is one
    /// of the nodes forming the cluster before any write.
    fn start(&mut self, i: usize) {
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
        node.hint_batches.clear();
        node.sync_runs.clear();
        node.in_sync.clear();
        node.placement_seen = None;
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
        self.nodes[i].next_sync_ms = self.now + 1_000;
        self.log(format!("start {} life {life}", self.names[i]));
        self.flush_membership(i);
        self.schedule(self.now + TICK_MS, Event::Tick { node: i, life });
    }

    /// Whether node `i` believes `name` holds the data of `partition`: its own books, or
    /// the member's last status of its current life.
    fn filled_in_view(&self, i: usize, name: &str, partition: u16) -> bool {
        if name == self.names[i] {
            return self.nodes[i].fill.filled().contains(partition);
        }
        self.nodes[i]
            .membership
            .as_ref()
            .and_then(|m| m.member(name))
            .and_then(|v| {
                v.status.as_ref().filter(|s| {
                    v.id.same_data(s.data_epoch) && s.filled.fits(self.settings.partitions)
                })
            })
            .is_some_and(|s| s.filled.contains(partition))
    }

    /// The other members that may hold data of `partition` as node `i` knows them,
    /// by the node's rule.
    fn holders_of(&self, i: usize, partition: u16) -> Vec<String> {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return Vec::new();
        };
        m.roster()
            .filter(|v| v.id.name != self.names[i])
            .filter(|v| {
                holding_of(v, self.settings.partitions).is_some_and(|h| h.may_hold(partition))
            })
            .map(|v| v.id.name.clone())
            .collect()
    }

    /// Whether node `i` knows the status of every member in `placement`, as the node's
    /// `ClusterView::statuses_known`.
    fn statuses_known(&self, i: usize, placement: &Placement) -> bool {
        placement.members().iter().all(|n| {
            *n == self.names[i]
                || self.nodes[i]
                    .membership
                    .as_ref()
                    .and_then(|m| m.member(n))
                    .is_some_and(|v| {
                        v.status.as_ref().is_some_and(|s| {
                            v.id.same_data(s.data_epoch) && s.filled.fits(self.settings.partitions)
                        })
                    })
        })
    }

    /// Who takes part in operations on `partition` in node `i`'s view (`placement` is
    /// that view's placement).
    fn replica_set(&self, i: usize, placement: &Placement, partition: u16) -> ReplicaSet {
        placement.replica_set_settling(
            partition,
            |n| self.filled_in_view(i, n, partition),
            |n| self.nodes[i].news.settling(n, partition, self.now),
        )
    }

    /// Takes what node `i` believes every member holds into its news of fills, as the
    /// node does whenever its view changes.
    fn observe_fills(&mut self, i: usize) {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return;
        };
        let mut filled: HashMap<String, PartitionSet> = m
            .roster()
            .filter_map(|v| {
                let s = v.status.as_ref()?;
                (v.id.same_data(s.data_epoch) && s.filled.fits(self.settings.partitions))
                    .then(|| (v.id.name.clone(), s.filled.clone()))
            })
            .collect();
        filled.insert(self.names[i].clone(), self.nodes[i].fill.filled().clone());
        let now = self.now;
        self.nodes[i].news.observe(&filled, now);
    }

    /// Brings node `i`'s fill books up to date, as the node does after each exchange
    /// and view change.
    fn update_fill(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let placement = self.placement(i);
        let me = self.names[i].clone();
        let names = self.names.clone();
        let in_sync = self.nodes[i].in_sync.clone();
        let mut fill = self.nodes[i].fill.clone();
        let now = self.now;
        let change = fill.update(
            &me,
            &placement,
            |n, p| self.filled_in_view(i, n, p),
            |n, p| self.nodes[i].news.settling(n, p, now),
            |p, peer| {
                let j = names.iter().position(|x| x == peer)?;
                in_sync.get(&(p, j)).copied()
            },
            self.statuses_known(i, &placement),
            self.now,
        );
        self.nodes[i].fill = fill;
        self.observe_fills(i);
        if !change.is_empty() {
            self.log(format!(
                "{} filled {:?} released {:?}",
                me, change.filled, change.released
            ));
            let filled = self.nodes[i].fill.filled().clone();
            if let Some(store) = &self.nodes[i].store {
                let _ = store.save_filled(&filled);
            }
        }
    }

    /// Crashes node `i`: memory gone, storage kept.
    fn crash(&mut self, i: usize) {
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

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.schedule(self.now, Event::Deliver { from, to, msg });
            return;
        }
        if !self.healed && (self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss)) {
            self.report.dropped += 1;
            return;
        }
        let latency = 1 + self.rng.random_range(0..=self.jitter_ms);
        if !self.healed && self.rng.random_bool(self.duplicate) {
            self.report.duplicated += 1;
            let again = 1 + self.rng.random_range(0..=self.jitter_ms * 4);
            self.schedule(
                self.now + again,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(self.now + latency, Event::Deliver { from, to, msg });
    }

    fn flush_membership(&mut self, i: usize) {
        let mut removed_while_away = false;
        let mut renewed = 0;
        let mut events = Vec::new();
        let mut stepped_aside = false;
        let mut consult = false;
        let mut out = Vec::new();
        let mut timers = Vec::new();
        let mut records = None;
        if let Some(m) = self.nodes[i].membership.as_mut() {
            while let Some((to, data)) = m.poll_send() {
                out.push((to, data));
            }
            while let Some((after, timer)) = m.poll_timer() {
                timers.push((after, timer));
            }
            while let Some(event) = m.poll_event() {
                events.push(format!("{:?}", event));
                match event {
                    vergent::membership::MembershipEvent::RemovedWhileAway
                    | vergent::membership::MembershipEvent::NameTakenBack(_) => {
                        removed_while_away = true
                    }
                    vergent::membership::MembershipEvent::RejoinedAs(_) => renewed += 1,
                    vergent::membership::MembershipEvent::SteppedAside(_) => stepped_aside = true,
                    vergent::membership::MembershipEvent::ConsultSeed => consult = true,
                    _ => {}
                }
            }
            if m.take_roster_changed() {
                records = Some(m.records());
            }
        }
        if let (Some(records), Some(store)) = (records, &self.nodes[i].store) {
            let _ = store.save_members(&records);
        }
        if removed_while_away {
            self.nodes[i].fill.clear();
        }
        self.observe_fills(i);
        self.renewals[i] += renewed;
        for event in events {
            let line = format!("{} {event}", self.names[i]);
            self.log(line);
        }
        if stepped_aside {
            self.nodes[i].stepped_aside = true;
        }
        if consult {
            // As the node does: ask a live member for its view of the cluster, the one
            // that said this node is down when there is one.
            let told = self.nodes[i]
                .membership
                .as_ref()
                .and_then(|m| m.consult_whom())
                .and_then(|name| self.index_of(name));
            let seed = told
                .filter(|&j| self.nodes[j].up && self.nodes[j].membership.is_some())
                .or_else(|| {
                    (0..self.nodes.len())
                        .find(|&j| j != i && self.nodes[j].up && self.nodes[j].membership.is_some())
                });
            if let Some(j) = seed {
                let members = self.nodes[j].membership.as_ref().unwrap().seed_members();
                let now = Millis(self.now);
                if let Some(m) = self.nodes[i].membership.as_mut() {
                    m.install(members, now);
                }
                self.flush_membership(i);
            }
        }
        for (to, data) in out {
            if let Some(g) = &self.ghost
                && to.addr == g.addr
            {
                let ghost = g.id;
                let at = self.now + 1 + self.rng.random_range(0..=self.jitter_ms);
                self.schedule(
                    at,
                    Event::ToGhost {
                        data: data.to_vec(),
                        ghost,
                    },
                );
                continue;
            }
            if let Some(j) = self.index_of(&to.name) {
                self.send(i, j, Msg::Swim(data.to_vec()));
            }
        }
        let life = self.nodes[i].life;
        for (after, timer) in timers {
            self.schedule(
                self.now + after.as_millis() as u64,
                Event::SwimTimer {
                    node: i,
                    life,
                    timer,
                },
            );
        }
    }

    fn placement(&self, i: usize) -> Placement {
        let members = self.nodes[i]
            .membership
            .as_ref()
            .map(|m| m.placement_members())
            .unwrap_or_default();
        Placement::compute_with_tokens(
            members,
            self.settings.partitions,
            self.settings.replication_factor,
        )
    }

    fn live_in_view(&self, i: usize, name: &str) -> bool {
        self.nodes[i]
            .membership
            .as_ref()
            .and_then(|m| m.member(name))
            .is_some_and(|v| v.state.is_live())
    }

    fn drain_coordinator(&mut self, i: usize) {
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
    fn apply(&mut self, i: usize, entries: &[Entry]) -> Applied {
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
        let Some(store) = &self.nodes[i].store else {
            return Applied::No;
        };
        if store.apply_now(entries).is_ok() {
            Applied::Yes
        } else {
            Applied::No
        }
    }

    /// Node `i` is about to issue a version: its clock must be within the bound of
    /// its live view's median clock, give or take what probes cannot see (the latency
    /// of late and a clock that changed since the last probe).
    fn check_issuing_clock(&mut self, i: usize) {
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

    fn check_clock(&mut self, i: usize) {
        let last = self.nodes[i].clock.last();
        if last < self.nodes[i].last_clock && self.nodes[i].up {
            self.violations
                .push(format!("{}'s clock went backwards", self.names[i]));
        }
        self.nodes[i].last_clock = self.nodes[i].last_clock.max(last);
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.nodes[to].up {
            self.report.dropped += 1;
            return;
        }
        self.report.delivered += 1;
        match msg {
            Msg::Swim(data) => {
                if let Some(m) = self.nodes[to].membership.as_mut() {
                    let _ = m.handle_data(&data, Millis(self.now));
                }
                self.flush_membership(to);
            }
            Msg::Write { op, entry } => {
                let answer = self.apply(to, std::slice::from_ref(&entry));
                self.send(to, from, Msg::WriteAck { op, answer });
            }
            Msg::WriteAck { op, answer } => {
                let name = self.names[from].clone();
                let coordinator = &mut self.nodes[to].coordinator;
                match answer {
                    Applied::Yes => coordinator.handle_write_ack(op, &name, Ok(())),
                    Applied::Refused => {
                        coordinator.handle_write_refused(op, &name, "clock offset refused".into())
                    }
                    Applied::No => {
                        coordinator.handle_write_ack(op, &name, Err("not applied".into()))
                    }
                }
                self.drain_coordinator(to);
            }
            Msg::Ping { sent_us } => {
                let received_us = self.wall(to) * 1000;
                let truth_skew_ms = self.nodes[to].skew_ms;
                self.send(
                    to,
                    from,
                    Msg::Pong {
                        sent_us,
                        received_us,
                        truth_skew_ms,
                    },
                );
            }
            Msg::Pong {
                sent_us,
                received_us,
                truth_skew_ms,
            } => {
                self.nodes[to].seen_skew.insert(from, truth_skew_ms);
                let probe = Probe {
                    sent_us,
                    received_us,
                    replied_us: received_us,
                    answered_us: self.wall(to) * 1000,
                };
                let name = self.names[from].clone();
                let mono_us = self.now * 1000;
                self.nodes[to].skew.record(&name, probe, mono_us);
            }
            Msg::Read { op, key } => {
                let record = self.nodes[to]
                    .store
                    .as_ref()
                    .and_then(|s| s.get(&key).ok().flatten());
                self.send(to, from, Msg::ReadReply { op, record });
            }
            Msg::ReadReply { op, record } => {
                let name = self.names[from].clone();
                self.nodes[to]
                    .coordinator
                    .handle_read_reply(op, &name, Some(record));
                self.drain_coordinator(to);
            }
            Msg::Repair { entry } => {
                self.apply(to, &[entry]);
            }
            Msg::Hints { batch, entries } => {
                let ok = self.apply(to, &entries) == Applied::Yes;
                self.send(to, from, Msg::HintsAck { batch, ok });
            }
            Msg::HintsAck { batch, ok } => {
                if let Some((_, keys, _)) = self.nodes[to].hint_batches.remove(&batch)
                    && ok
                    && let Some(store) = &self.nodes[to].store
                {
                    store.delete_hints_now(keys).expect("delete hints");
                }
            }
            Msg::Sync { run, request } => {
                let response = match &request {
                    SyncRequest::Push { entries, .. } => {
                        let keep = pushed_to_apply(
                            self.nodes[to].store.as_ref().unwrap(),
                            entries.clone(),
                            self.grace_horizon(to),
                        )
                        .expect("read for a push");
                        if self.apply(to, &keep) == Applied::Yes {
                            Ok(SyncResponse::Pushed { applied: 0 })
                        } else {
                            Err("refused".into())
                        }
                    }
                    other => respond(
                        self.nodes[to].store.as_ref().unwrap(),
                        other,
                        &SyncLimits::default(),
                    )
                    .map_err(|e| e.to_string()),
                };
                // Roots that compared equal are an agreement on the responder's side too.
                if let (SyncRequest::Roots { roots, .. }, Ok(SyncResponse::Roots { differing })) =
                    (&request, &response)
                {
                    let now = self.now;
                    for r in roots {
                        if !differing.iter().any(|d| d.partition == r.partition) {
                            let at = self.nodes[to]
                                .in_sync
                                .entry((r.partition, from))
                                .or_insert(now);
                            *at = (*at).max(now);
                        }
                    }
                }
                self.send(to, from, Msg::SyncReply { run, response });
            }
            Msg::SyncReply { run, response } => self.sync_reply(to, run, response),
        }
    }

    fn tick(&mut self, i: usize) {
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
        if self.now >= self.nodes[i].next_sync_ms && !self.ae_paused {
            self.nodes[i].next_sync_ms = self.now + ANTI_ENTROPY_MS;
            self.start_syncs(i, None);
        } else if self.nodes[i].ticks.is_multiple_of(10) {
            // Filling runs whether or not background anti-entropy does, as in the node.
            let filling: Vec<u16> = self.nodes[i].fill.filling().collect();
            if !filling.is_empty() {
                self.start_syncs(i, Some(&filling));
            }
        }
        // Runs whose peer went silent are abandoned; the next period retries.
        let now_ms = self.now;
        self.nodes[i]
            .sync_runs
            .retain(|_, run| run.deadline_ms > now_ms);
        let life = self.nodes[i].life;
        self.schedule(self.now + TICK_MS, Event::Tick { node: i, life });
    }

    /// Hint delivery by the node's rules ([`vergent::policy`]): one batch in flight per
    /// target, the node's batch bounds, expired hints and hints for members that left
    /// dropped.
    fn drain_hints(&mut self, i: usize) {
        let Some(store) = &self.nodes[i].store else {
            return;
        };
        let backlog = store.hint_backlog().unwrap();
        let wall = self.wall(i);
        for target in backlog {
            let state = self.nodes[i]
                .membership
                .as_ref()
                .and_then(|m| m.member(&target.target))
                .map(|v| v.state);
            let plan = hint_target(&self.names[i], &target.target, state, true);
            let store = self.nodes[i].store.as_ref().unwrap();
            match plan {
                HintTarget::Wait => continue,
                HintTarget::Drop => {
                    let mut dropped = 0;
                    while let Ok(batch) =
                        store.hints_for(&target.target, HINT_BATCH_MAX, HINT_BATCH_BYTES_MAX)
                    {
                        if batch.is_empty() {
                            break;
                        }
                        dropped += batch.len() as u64;
                        store
                            .delete_hints_now(batch.into_iter().map(|h| h.key).collect())
                            .unwrap();
                    }
                    *self.report.faults.entry("hints-dropped").or_default() += dropped;
                    continue;
                }
                HintTarget::Deliver => {}
            }
            let Some(j) = self.index_of(&target.target) else {
                continue;
            };
            if self.nodes[i].hint_batches.values().any(|(t, _, _)| *t == j) {
                continue;
            }
            let batch = store
                .hints_for(&target.target, HINT_BATCH_MAX, HINT_BATCH_BYTES_MAX)
                .unwrap();
            let (expired, live) = split_expired(batch, wall, self.config.hint_window_ms);
            if !expired.is_empty() {
                store
                    .delete_hints_now(expired.iter().map(|h| h.key.clone()).collect())
                    .unwrap();
            }
            if live.is_empty() {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let keys = live.iter().map(|h| h.key.clone()).collect();
            let entries = live.into_iter().map(|h| h.hint.entry).collect();
            self.nodes[i].hint_batches.insert(id, (j, keys, self.now));
            self.send(i, j, Msg::Hints { batch: id, entries });
        }
        // A batch whose answer was lost is retried.
        let now = self.now;
        self.nodes[i]
            .hint_batches
            .retain(|_, (_, _, sent)| now < *sent + REPLICA_TIMEOUT_MS);
    }

    /// The version node `r` holds of `key`, counting a tombstone it purged.
    fn held_version(&self, r: usize, key: &[u8]) -> Option<Version> {
        let stored = self.nodes[r]
            .store
            .as_ref()
            .and_then(|s| s.get(key).ok().flatten())
            .map(|record| record.version);
        let purged = self
            .purged
            .get(&(r, key.to_vec()))
            .and_then(|purges| purges.iter().map(|&(v, _)| v).max());
        stored.max(purged)
    }

    /// Whether some node purged a tombstone of `key` at `version` or newer before
    /// `by` (virtual ms): a read may then rightly find nothing.
    fn purged_before(&self, key: &[u8], version: Option<Version>, by: u64) -> bool {
        self.purged.iter().any(|((_, k), purges)| {
            k.as_slice() == key && purges.iter().any(|&(v, at)| Some(v) >= version && at <= by)
        })
    }

    /// Whether a read finishing at `by` may rightly find nothing for `key` where a
    /// write at `version` was acknowledged: a tombstone at that version or newer was
    /// purged by then, or was past the grace by then (a replica refilled since is not
    /// sent it: its key holds nothing there either).
    fn gone_by(&self, key: &[u8], version: Option<Version>, by: u64) -> bool {
        let past_grace =
            (EPOCH_MS + by + MAX_OFFSET_MS).saturating_sub(self.config.tombstone_grace_ms);
        self.purged_before(key, version, by)
            || self.client_ops.iter().any(|o| {
                o.kind == OpKind::Delete
                    && o.key == key
                    && o.version >= version
                    && o.version.is_some_and(|v| v.hlc.wall_ms() < past_grace)
            })
    }

    /// The horizon past which tombstones are purgeable on node `i`.
    fn grace_horizon(&self, i: usize) -> u64 {
        self.rules_wall(i)
            .saturating_sub(self.config.tombstone_grace_ms)
    }

    /// The wall time node `i`'s rules go by: its clock, or the cluster's when that is
    /// behind it, as the node's.
    fn rules_wall(&self, i: usize) -> u64 {
        self.wall(i).min(self.cluster_wall(i))
    }

    /// Remembers when node `i` first saw the placement it has now (handoff waits for
    /// exchanges after it), as the node does before each run.
    fn note_placement(&mut self, i: usize) {
        let digest = self.placement(i).digest();
        let now = self.now;
        let node = &mut self.nodes[i];
        if node
            .placement_seen
            .as_ref()
            .is_none_or(|(seen, _)| *seen != digest)
        {
            node.placement_seen = Some((digest, now));
        }
    }

    /// After a run, as the node does: partitions handed off where every counting owner
    /// agreed since their release, tombstones purged below the horizon of agreement
    /// with every other replica.
    fn upkeep(&mut self, i: usize) {
        let Some(store) = self.nodes[i].store.as_ref() else {
            return;
        };
        let me = self.names[i].clone();
        let placement = self.placement(i);
        let names = &self.names;
        let in_sync = &self.nodes[i].in_sync;
        let synced = |p: u16, peer: &str| {
            let j = names.iter().position(|x| x == peer)?;
            in_sync.get(&(p, j)).copied()
        };
        let mut handed_off = Vec::new();
        if let Some((_, placement_since)) = &self.nodes[i].placement_seen {
            for p in store.partitions_with_data() {
                let set = self.replica_set(i, &placement, p);
                let released = self.nodes[i].fill.released_at(p);
                if may_hand_off(&me, &set, released, *placement_since, |o| synced(p, o)) {
                    store.drop_partition_now(p).expect("drop partition");
                    handed_off.push(p);
                }
            }
        }
        let grace = self.grace_horizon(i);
        let (rules_wall, now) = (self.rules_wall(i), self.now);
        // As the node: an agreement's age taken back from the wall time now.
        let agreed_wall = |p: u16, peer: &str| {
            synced(p, peer).map(|at| rules_wall.saturating_sub(now.saturating_sub(at)))
        };
        let mut purged = 0;
        for p in 0..self.settings.partitions {
            let set = self.replica_set(i, &placement, p);
            let holders = self.holders_of(i, p);
            let holders = holders.iter().map(String::as_str);
            let Some(horizon) = purge_horizon(&me, &set, holders, grace, |r| agreed_wall(p, r))
            else {
                continue;
            };
            let tombstones = store
                .tombstones_before(p, horizon, PURGE_BATCH_MAX)
                .expect("tombstones");
            if !tombstones.is_empty() {
                purged += store.purge_now(tombstones.clone()).expect("purge");
                for (key, version) in tombstones {
                    self.purged
                        .entry((i, key))
                        .or_default()
                        .push((version, self.now));
                }
            }
        }
        for &p in &handed_off {
            self.nodes[i].fill.handed_off(p);
        }
        if !handed_off.is_empty() {
            self.log(format!("{me} handed off {handed_off:?}"));
            *self.report.faults.entry("handoff").or_default() += handed_off.len() as u64;
        }
        if purged > 0 {
            self.log(format!("{me} purged {purged} tombstones"));
            *self.report.faults.entry("purge").or_default() += purged;
        }
    }

    /// Exchanges with every live peer the partitions both take writes for, and hands
    /// off partitions this node holds data of without taking their writes, to the
    /// replicas that count for them (the node's plan).
    fn start_syncs(&mut self, i: usize, only: Option<&[u16]>) {
        self.note_placement(i);
        let me = self.names[i].clone();
        let with_data = self.nodes[i]
            .store
            .as_ref()
            .map(|s| s.partitions_with_data())
            .unwrap_or_default();
        let placement = self.placement(i);
        let sets: Vec<ReplicaSet> = (0..self.settings.partitions)
            .map(|p| self.replica_set(i, &placement, p))
            .collect();
        let statuses_known = self.statuses_known(i, &placement);
        for j in 0..self.nodes.len() {
            let peer = self.names[j].clone();
            if j == i
                || !self.live_in_view(i, &peer)
                || self.nodes[i].sync_runs.values().any(|r| r.peer == j)
            {
                continue;
            }
            let shared: Vec<u16> = (0..self.settings.partitions)
                .filter(|&p| {
                    let set = &sets[usize::from(p)];
                    if let Some(only) = only {
                        only.contains(&p) && set.fill_sources(&me, statuses_known).contains(&peer)
                    } else if set.targets.contains(&me) {
                        set.targets.contains(&peer)
                    } else {
                        with_data.contains(&p) && set.counted.contains(&peer)
                    }
                })
                .collect();
            if shared.is_empty() {
                continue;
            }
            let salt = self.rng.random::<u64>();
            let store = self.nodes[i].store.as_ref().unwrap();
            let roots = shared
                .iter()
                .map(|&p| root_summary(store, p, salt).unwrap())
                .collect();
            let run = self.next_id;
            self.next_id += 1;
            let started_ms = self.now;
            self.nodes[i].sync_runs.insert(
                run,
                SyncRun {
                    peer: j,
                    salt,
                    partitions: shared,
                    started_ms,
                    failed: false,
                    exchanges: Vec::new(),
                    current: None,
                    deadline_ms: self.now + REPLICA_TIMEOUT_MS,
                    awaiting: true,
                },
            );
            self.send(
                i,
                j,
                Msg::Sync {
                    run,
                    request: SyncRequest::Roots { salt, roots },
                },
            );
        }
    }

    fn sync_reply(&mut self, i: usize, run_id: u64, response: Result<SyncResponse, String>) {
        let Some(mut run) = self.nodes[i].sync_runs.remove(&run_id) else {
            return;
        };
        if !run.awaiting {
            self.nodes[i].sync_runs.insert(run_id, run);
            return;
        }
        let Ok(response) = response else { return };
        let store = self.nodes[i].store.as_ref().unwrap();
        match (&mut run.current, response) {
            (None, SyncResponse::Roots { differing }) => {
                for root in &differing {
                    if let Ok(exchange) = Exchange::new(
                        store,
                        root,
                        run.salt,
                        self.grace_horizon(i),
                        false,
                        SyncLimits::default(),
                    ) {
                        run.exchanges.push(exchange);
                    }
                }
            }
            (Some(exchange), response) => {
                exchange.handle_response(store, response);
                let mut received = Vec::new();
                while let Some(entries) = exchange.poll_apply() {
                    received.extend(entries);
                }
                if !received.is_empty() && self.apply(i, &received) != Applied::Yes {
                    return;
                }
            }
            (None, _) => return,
        }
        // The next request of this run: the current exchange's, or the next exchange's.
        let store = self.nodes[i].store.as_ref().unwrap();
        loop {
            if run.current.is_none() {
                match run.exchanges.pop() {
                    Some(next) => run.current = Some(next),
                    None => {
                        // The run is done: unless an exchange failed, each partition was
                        // in sync with the peer as of the run's start.
                        if !run.failed {
                            for &p in &run.partitions {
                                let at = self.nodes[i]
                                    .in_sync
                                    .entry((p, run.peer))
                                    .or_insert(run.started_ms);
                                *at = (*at).max(run.started_ms);
                            }
                            self.update_fill(i);
                            self.upkeep(i);
                        }
                        return;
                    }
                }
            }
            let exchange = run.current.as_mut().unwrap();
            match exchange.poll_request(store) {
                Some(request) => {
                    run.awaiting = true;
                    run.deadline_ms = self.now + REPLICA_TIMEOUT_MS;
                    let peer = run.peer;
                    self.nodes[i].sync_runs.insert(run_id, run);
                    self.send(
                        i,
                        peer,
                        Msg::Sync {
                            run: run_id,
                            request,
                        },
                    );
                    return;
                }
                None => {
                    run.failed |= exchange.failure().is_some();
                    run.current = None;
                }
            }
        }
    }

    fn client_op(&mut self, index: usize) {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        if live.is_empty() {
            self.client_ops[index].outcome = Some(Err("no live coordinator".into()));
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        if self.nodes[i]
            .membership
            .as_ref()
            .is_some_and(|m| m.stepped_aside().is_some())
        {
            // As the node does: a node that stepped aside serves no data.
            self.client_ops[index].outcome = Some(Err("not ready: stepped aside".into()));
            return;
        }
        let kind = match self.rng.random_range(0..10) {
            0..=4 => OpKind::Put,
            5..=6 => OpKind::Delete,
            _ => OpKind::Get,
        };
        let consistency =
            [Consistency::One, Consistency::Quorum, Consistency::All][self.rng.random_range(0..3)];
        let key = format!("k{}", self.rng.random_range(0..self.config.keys)).into_bytes();
        let placement = self.placement(i);
        let replicas =
            self.replica_set(i, &placement, partition_of(&key, self.settings.partitions));
        let replica_set_shown = (replicas.targets.clone(), replicas.counted.clone());
        let now = Millis(self.now);
        let op = match kind {
            OpKind::Get => {
                self.report.gets += 1;
                self.nodes[i]
                    .coordinator
                    .begin_read(key.clone(), replicas, consistency, now)
            }
            OpKind::Put | OpKind::Delete => {
                // As the node does: no version from a clock the cluster would refuse,
                // nor from one not yet compared with it.
                if let Some(why) = self.verdict(i).refusal(MAX_OFFSET_MS) {
                    self.log(format!("op {index} refused on {}: {why}", self.names[i]));
                    let o = &mut self.client_ops[index];
                    o.outcome = Some(Err(why));
                    o.completed_ms = Some(self.now);
                    return;
                }
                let wall = self.wall(i);
                // Nor from a clock that already reads beyond the cluster's time (it
                // issued or stored versions from the future before).
                let limit = self.cluster_wall(i) + MAX_OFFSET_MS;
                if self.nodes[i].clock.read(wall).wall_ms() > limit {
                    let why = "this node's clock has issued or stored versions ahead of the cluster's time".to_string();
                    self.log(format!("op {index} refused on {}: {why}", self.names[i]));
                    let o = &mut self.client_ops[index];
                    o.outcome = Some(Err(why));
                    o.completed_ms = Some(self.now);
                    return;
                }
                let session = self.client_ops[index].session;
                if let Some(after) = self.sessions[session] {
                    let cluster = self.cluster_wall(i);
                    if let Err(err) = self.nodes[i].clock.observe_against(after, wall, cluster) {
                        let o = &mut self.client_ops[index];
                        o.outcome = Some(Err(err.to_string()));
                        o.completed_ms = Some(self.now);
                        return;
                    }
                }
                self.client_ops[index].after = self.sessions[session];
                self.check_issuing_clock(i);
                let hlc = self.nodes[i].clock.tick(wall);
                if self.nodes[i].last_issued.is_some_and(|last| hlc <= last) {
                    self.violations.push(format!(
                        "{} issued a version not above its last",
                        self.names[i]
                    ));
                }
                self.nodes[i].last_issued = Some(hlc);
                self.check_clock(i);
                let version = Version {
                    hlc,
                    node: NodeId::from_name(&self.names[i]),
                };
                let (payload, value) = if kind == OpKind::Put {
                    self.report.puts += 1;
                    let value = format!("op{index}").into_bytes();
                    (Payload::Value(value.clone()), Some(value))
                } else {
                    self.report.deletes += 1;
                    (Payload::Tombstone, None)
                };
                let o = &mut self.client_ops[index];
                o.version = Some(version);
                o.value = value;
                let entry = Entry {
                    key: key.clone(),
                    record: Record { version, payload },
                };
                self.nodes[i]
                    .coordinator
                    .begin_write(entry, replicas, consistency, now)
            }
        };
        let o = &mut self.client_ops[index];
        o.key = key;
        o.kind = kind;
        o.consistency = consistency;
        o.issued_ms = self.now;
        o.targets = replica_set_shown.0.clone();
        self.nodes[i].ops.insert(op, index);
        let key = String::from_utf8_lossy(&self.client_ops[index].key).into_owned();
        self.log(format!(
            "op {index} {kind:?} of {key} on {} at {consistency:?}: targets {:?}, counted {:?}",
            self.names[i], replica_set_shown.0, replica_set_shown.1
        ));
        self.drain_coordinator(i);
    }

    fn fault(&mut self) {
        if let Some((d, replace)) = self.pending_departure {
            let done = if self.nodes[d].up {
                Some("none")
            } else if replace {
                Some(self.replace_dead()).filter(|f| *f != "none")
            } else {
                Some(self.remove_dead()).filter(|f| *f != "none")
            };
            if let Some(done) = done {
                self.pending_departure = None;
                if done != "none" {
                    *self.report.faults.entry(done).or_default() += 1;
                    self.log(format!("fault {done}"));
                }
            }
        }
        let n = self.nodes.len();
        let minority = (n - 1) / 2;
        let kind = self.rng.random_range(0..13);
        let name = match kind {
            0 => {
                let members: Vec<usize> = self.members().collect();
                let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
                let i = members[self.rng.random_range(0..members.len())];
                if self.nodes[i].up && down < minority {
                    self.crash(i);
                    "crash"
                } else if !self.nodes[i].up && self.pending_departure.is_none_or(|(d, _)| d != i) {
                    // A clock that was far off is often fixed across the restart: it
                    // steps back, and the identity must still sort above the last one.
                    let stepped = self.nodes[i].skew_ms.unsigned_abs() > MAX_OFFSET_MS;
                    if stepped {
                        let skew = self.rng.random_range(-200i64..=200);
                        self.set_skew(i, skew);
                    }
                    self.start(i);
                    if stepped {
                        "restart with its clock set right"
                    } else {
                        "restart"
                    }
                } else {
                    "none"
                }
            }
            7 => self.wipe(),
            8 => self.join_spare(),
            11 => self.duplicate(),
            9 | 10 if self.pending_departure.is_none() && !self.destructive => {
                // Crash a member now; it is removed (or replaced) once seen dead.
                let members: Vec<usize> = self.members().collect();
                let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
                let i = members[self.rng.random_range(0..members.len())];
                if down == 0 && self.nodes[i].up {
                    self.crash(i);
                    self.pending_departure = Some((i, kind == 10));
                    "crash to remove"
                } else {
                    "none"
                }
            }
            1 => {
                // A symmetric partition: a minority cut off from the rest.
                self.cut.clear();
                let size = self.rng.random_range(1..=minority.max(1));
                let mut side: Vec<usize> = (0..n).collect();
                for k in (1..n).rev() {
                    side.swap(k, self.rng.random_range(0..=k));
                }
                let (a, b) = side.split_at(size);
                for &x in a {
                    for &y in b {
                        self.cut.insert((x, y));
                        self.cut.insert((y, x));
                    }
                }
                "partition"
            }
            2 => {
                let (x, y) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
                if x != y {
                    self.cut.insert((x, y));
                }
                "one-way partition"
            }
            3 => {
                self.cut.clear();
                "partition healed"
            }
            4 => {
                self.loss = [0.0, 0.05, 0.2][self.rng.random_range(0..3)];
                self.duplicate = [0.0, 0.05][self.rng.random_range(0..2)];
                "loss and duplication"
            }
            5 => {
                let jitter = [5, 50, 400][self.rng.random_range(0..3)];
                self.set_jitter(jitter);
                "latency and reordering"
            }
            6 => {
                // Clock skew: usually within the bound, sometimes past it either way,
                // now and then a minute ahead (a clock set wrong by hand).
                let i = self.rng.random_range(0..n);
                let beyond = self.rng.random_bool(0.25);
                let skew = if !beyond {
                    self.rng.random_range(-400i64..=400)
                } else if self.rng.random_bool(0.2) {
                    60_000
                } else if self.rng.random_bool(0.5) {
                    self.rng.random_range(600i64..1_500)
                } else {
                    -self.rng.random_range(600i64..3_000)
                };
                self.set_skew(i, skew);
                if beyond {
                    "clock skew beyond the bound"
                } else {
                    "clock skew"
                }
            }
            _ => "none",
        };
        if name != "none" {
            *self.report.faults.entry(name).or_default() += 1;
            self.log(format!("fault {name}"));
        }
        if self.now + 1_000 < self.config.fault_ms {
            let next = self.now + self.rng.random_range(300..2_000);
            self.schedule(next, Event::Fault);
        }
    }

    /// A second process under a live member's name gets into membership.
    fn duplicate(&mut self) -> &'static str {
        if self.ghost.is_some() {
            return "none";
        }
        let live: Vec<usize> = self.members().filter(|&i| self.nodes[i].up).collect();
        if live.len() < 2 {
            return "none";
        }
        let of = live[self.rng.random_range(0..live.len())];
        let seed = *live.iter().find(|&&j| j != of).unwrap();
        self.ghosts += 1;
        let addr: std::net::SocketAddr = format!("10.0.1.{}:7000", self.ghosts % 250 + 1)
            .parse()
            .unwrap();
        let id = MemberId {
            name: self.names[of].clone(),
            addr,
            incarnation: 1,
            epoch_ms: self.wall(of) + 1,
            token: self.nodes[of].token.clone(),
            data_epoch: self.wall(of) + 1,
        };
        let mut membership = Membership::new(
            id,
            &MembershipConfig::default(),
            self.rng.random::<u64>(),
            Millis(self.now),
        );
        membership.announce(self.member_id(seed), Millis(self.now));
        let until = self.now + self.rng.random_range(3_000..8_000);
        self.ghost = Some(Ghost {
            id: self.ghosts,
            of,
            addr,
            membership,
            until,
        });
        self.log(format!("a second {} at {addr}", self.names[of]));
        self.flush_ghost();
        let ghost = self.ghosts;
        self.schedule(self.now + TICK_MS, Event::GhostTick { ghost });
        "duplicate name"
    }

    fn flush_ghost(&mut self) {
        let Some(g) = self.ghost.as_mut() else { return };
        let ghost = g.id;
        let from = g.of;
        let mut out = Vec::new();
        let mut timers = Vec::new();
        while let Some(x) = g.membership.poll_send() {
            out.push(x);
        }
        while let Some(t) = g.membership.poll_timer() {
            timers.push(t);
        }
        while g.membership.poll_event().is_some() {}
        for (to, data) in out {
            if let Some(j) = self.index_of(&to.name) {
                let at = self.now + 1 + self.rng.random_range(0..=self.jitter_ms);
                self.schedule(
                    at,
                    Event::Deliver {
                        from,
                        to: j,
                        msg: Msg::Swim(data.to_vec()),
                    },
                );
            }
        }
        for (after, timer) in timers {
            self.schedule(
                self.now + after.as_millis() as u64,
                Event::GhostTimer { timer, ghost },
            );
        }
    }

    fn ghost_tick(&mut self, ghost: u32) {
        let Some(g) = self.ghost.as_mut().filter(|g| g.id == ghost) else {
            return;
        };
        if self.now >= g.until {
            let name = self.names[g.of].clone();
            self.ghost = None;
            self.log(format!("the second {name} stops"));
            return;
        }
        let now = Millis(self.now);
        g.membership.tick(now);
        g.membership
            .publish(vergent::membership::GossipStatus::default(), now);
        g.membership.announce_if_isolated(now);
        self.flush_ghost();
        self.schedule(self.now + 1_000, Event::GhostTick { ghost });
    }

    /// A disk replaced: the node loses everything and comes back empty under its name.
    fn wipe(&mut self) -> &'static str {
        let members: Vec<usize> = self.members().collect();
        let i = members[self.rng.random_range(0..members.len())];
        if self.destructive {
            return "none";
        }
        self.destructive = true;
        if self.nodes[i].up {
            self.crash(i);
        }
        self.nodes[i].dir = tempfile::tempdir().expect("temp dir");
        self.purged.retain(|(node, _), _| *node != i);
        self.nodes[i].last_clock = Timestamp::ZERO;
        self.nodes[i].last_issued = None;
        self.last_membership_change = self.now;
        self.start(i);
        "wipe"
    }

    /// Takes member `i` down for a while, or brings it back, when the other faults
    /// leave it so (a minority down at most; never a member being removed).
    fn away(&mut self, i: usize, back: bool) {
        let members: Vec<usize> = self.members().collect();
        if !members.contains(&i) || self.pending_departure.is_some_and(|(d, _)| d == i) {
            return;
        }
        let down = members.iter().filter(|&&x| !self.nodes[x].up).count();
        if !back && self.nodes[i].up && down < (self.nodes.len() - 1) / 2 {
            self.crash(i);
            self.log(format!("fault away past the grace: {}", self.names[i]));
            *self.report.faults.entry("away past the grace").or_default() += 1;
        } else if back && !self.nodes[i].up {
            self.start(i);
        }
    }

    /// A new node joins mid-run.
    fn join_spare(&mut self) -> &'static str {
        let Some(i) = (0..self.nodes.len()).find(|&i| !self.nodes[i].started_once) else {
            return "none";
        };
        if !self.nodes.iter().any(|n| n.up) {
            return "none";
        }
        self.last_membership_change = self.now;
        self.start(i);
        "join"
    }

    /// A dead member, seen dead by a live one, and the live one that sees it so.
    fn dead_member(&mut self) -> Option<(usize, usize)> {
        if self.destructive {
            return None;
        }
        let dead: Vec<usize> = self.members().filter(|&i| !self.nodes[i].up).collect();
        if dead.len() != 1 {
            return None;
        }
        let d = dead[0];
        let by = self.members().find(|&i| {
            self.nodes[i].up
                && self.nodes[i]
                    .membership
                    .as_ref()
                    .and_then(|m| m.member(&self.names[d]))
                    .is_some_and(|v| v.state == vergent::membership::MemberState::Dead)
        })?;
        Some((d, by))
    }

    /// `vergent remove` of a dead member: it never comes back.
    fn remove_dead(&mut self) -> &'static str {
        let Some((d, by)) = self.dead_member() else {
            return "none";
        };
        let name = self.names[d].clone();
        let now = Millis(self.now);
        let wall = self.wall(by);
        if self.nodes[by]
            .membership
            .as_mut()
            .unwrap()
            .depart(&name, now, wall)
            .is_err()
        {
            return "none";
        }
        self.nodes[d].removed = true;
        self.destructive = true;
        self.last_membership_change = self.now;
        self.flush_membership(by);
        "remove"
    }

    /// `--replace`: a new node takes a dead member's token; the dead one departs.
    fn replace_dead(&mut self) -> &'static str {
        let Some(s) = (0..self.nodes.len()).find(|&i| !self.nodes[i].started_once) else {
            return "none";
        };
        let Some((d, by)) = self.dead_member() else {
            return "none";
        };
        let name = self.names[d].clone();
        let token = self.nodes[d].token.clone().unwrap_or_else(|| name.clone());
        let now = Millis(self.now);
        let wall = self.wall(by);
        if self.nodes[by]
            .membership
            .as_mut()
            .unwrap()
            .depart(&name, now, wall)
            .is_err()
        {
            return "none";
        }
        self.flush_membership(by);
        self.nodes[d].removed = true;
        self.nodes[s].token = Some(token);
        self.destructive = true;
        self.last_membership_change = self.now;
        self.start(s);
        "replace"
    }

    fn heal(&mut self) {
        self.healed = true;
        self.ghost = None;
        self.cut.clear();
        self.loss = 0.0;
        self.duplicate = 0.0;
        self.set_jitter(5);
        self.ae_paused = true;
        for i in 0..self.nodes.len() {
            // Clocks come back within the bound (a wall clock stepping back is fine: the
            // HLC never does).
            let skew = self.rng.random_range(-200i64..=200);
            self.set_skew(i, skew);
            if !self.nodes[i].up && self.nodes[i].started_once && !self.nodes[i].removed {
                self.start(i);
            }
        }
        self.log("heal".to_string());
    }

    /// Runs the whole scenario and checks every invariant. The report on success; the
    /// violations otherwise.
    pub fn run(mut self) -> Result<SimReport, Violation> {
        for i in 0..self.config.nodes {
            self.start(i);
        }
        // Let membership settle before the workload.
        self.run_until(5_000);
        let start = self.now;
        for op in 0..self.config.ops {
            self.client_ops.push(ClientOp {
                key: Vec::new(),
                kind: OpKind::Get,
                consistency: Consistency::One,
                issued_ms: 0,
                version: None,
                value: None,
                outcome: None,
                completed_ms: None,
                session: self.rng.random_range(0..SESSIONS),
                after: None,
                targets: Vec::new(),
            });
            let at = start + self.rng.random_range(0..self.config.fault_ms);
            self.schedule(at, Event::Client { op });
        }
        self.schedule(start + 500, Event::Fault);
        if self.config.tombstone_grace_ms < HINTS_LONG.1 {
            // A replica away for longer than the grace while deletes go on: the case a
            // purge must wait out.
            let node = self.rng.random_range(0..self.config.nodes);
            let at = start + self.rng.random_range(1_000..self.config.fault_ms / 2);
            let away = self.rng.random_range(3..6) * self.config.tombstone_grace_ms;
            self.schedule(at, Event::Away { node, back: false });
            self.schedule(at + away, Event::Away { node, back: true });
        }
        self.schedule(start + self.config.fault_ms, Event::Heal);
        self.run_until(start + self.config.fault_ms);
        let healed_at = self.now;
        self.run_until(healed_at + HINT_DRAIN_MS);
        self.check_hinted_handoff(healed_at);
        self.ae_paused = false;
        let deadline = healed_at + self.config.heal_ms;
        while self.now < deadline {
            self.run_until(self.now + 2_000);
            if self.converged() && self.members().all(|i| self.nodes[i].up) {
                break;
            }
        }
        self.report.converged_after_ms = self.now - healed_at;
        self.check();
        self.report.history_digest =
            blake3::hash(self.history.as_bytes()).to_hex()[..16].to_string();
        if let Ok(path) = std::env::var("VERGENT_SIM_HISTORY") {
            let _ = std::fs::write(path, &self.history);
        }
        for node in &mut self.nodes {
            if let Some(store) = node.store.take() {
                store.close();
            }
        }
        if self.violations.is_empty() {
            Ok(self.report)
        } else {
            Err(Violation(self.violations.join("\n")))
        }
    }

    fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, _, id))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.handled += 1;
            if self.handled > EVENTS_MAX {
                // A loop that schedules without end (at the same virtual time, most
                // likely) is a bug of its own; stop it rather than eat the machine.
                self.violations.push(format!(
                    "more than {EVENTS_MAX} events by virtual time {}: a runaway loop",
                    self.now
                ));
                self.queue.clear();
                return;
            }
            self.queue.pop();
            self.now = at;
            let event = self.events.remove(&id).expect("scheduled event");
            match event {
                Event::Deliver { from, to, msg } => {
                    self.log(format!(
                        "deliver {} {}→{}",
                        msg.kind(),
                        self.names[from],
                        self.names[to]
                    ));
                    self.deliver(from, to, msg);
                }
                Event::SwimTimer { node, life, timer } => {
                    if self.nodes[node].up && self.nodes[node].life == life {
                        if let Some(m) = self.nodes[node].membership.as_mut() {
                            m.handle_timer(timer, Millis(self.now));
                        }
                        self.flush_membership(node);
                    }
                }
                Event::Tick { node, life } => {
                    if self.nodes[node].up && self.nodes[node].life == life {
                        self.tick(node);
                    }
                }
                Event::Client { op } => self.client_op(op),
                Event::Fault => self.fault(),
                Event::Away { node, back } => self.away(node, back),
                Event::ToGhost { data, ghost } => {
                    if let Some(g) = self.ghost.as_mut().filter(|g| g.id == ghost) {
                        let _ = g.membership.handle_data(&data, Millis(self.now));
                        self.flush_ghost();
                    }
                }
                Event::GhostTimer { timer, ghost } => {
                    if let Some(g) = self.ghost.as_mut().filter(|g| g.id == ghost) {
                        g.membership.handle_timer(timer, Millis(self.now));
                        self.flush_ghost();
                    }
                }
                Event::GhostTick { ghost } => self.ghost_tick(ghost),
                Event::Heal => self.heal(),
            }
        }
        self.now = until;
    }

    /// The nodes that are members at the end: started, and not removed or replaced.
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].started_once && !self.nodes[i].removed)
    }

    /// Placement over the members at the end, with their tokens.
    fn final_placement(&self) -> Placement {
        Placement::compute_with_tokens(
            self.members().map(|i| {
                let name = self.names[i].clone();
                let token = self.nodes[i].token.clone().unwrap_or_else(|| name.clone());
                (name, token)
            }),
            self.settings.partitions,
            self.settings.replication_factor,
        )
    }

    /// Every replica of every partition holds the same records with the same root, and
    /// every member holds the data of every partition it owns.
    fn converged(&self) -> bool {
        self.divergence().is_none()
            && self
                .members()
                .all(|i| self.nodes[i].fill.filling().next().is_none())
    }

    fn divergence(&self) -> Option<String> {
        let placement = self.final_placement();
        for p in 0..self.settings.partitions {
            let replicas: Vec<usize> = placement
                .replicas(p)
                .map(|n| self.index_of(n).unwrap())
                .collect();
            // Tombstones past the grace may be purged on one replica before another:
            // the replicas agree on everything else (each tree is checked against its
            // own data at the end).
            let horizon = replicas
                .iter()
                .map(|&r| self.grace_horizon(r))
                .min()
                .unwrap_or(0);
            let mut seen: Option<(usize, BTreeMap<Vec<u8>, Record>)> = None;
            for &r in &replicas {
                let store = self.nodes[r].store.as_ref()?;
                let (entries, _) = store.entries_in(p, 0..4096, None, usize::MAX).ok()?;
                let data: BTreeMap<Vec<u8>, Record> = entries
                    .into_iter()
                    .filter(|e| !vergent::antientropy::exchange::purgeable(e, horizon))
                    .map(|e| (e.key, e.record))
                    .collect();
                match &seen {
                    None => seen = Some((r, data)),
                    Some((first, d)) => {
                        if *d != data {
                            return Some(format!(
                                "partition {p}: {} and {} differ ({} vs {} records)",
                                self.names[*first],
                                self.names[r],
                                d.len(),
                                data.len()
                            ));
                        }
                    }
                }
            }
        }
        None
    }

    /// With anti-entropy paused, hinted handoff alone must have brought every replica
    /// every write it missed, except writes whose hints were past the window, and writes
    /// whose coordinator crashed before it knew who had missed them.
    fn check_hinted_handoff(&mut self, healed_at: u64) {
        let placement = self.final_placement();
        // Writes from before the membership last changed went to other replicas than
        // the final ones; the new owners fill those from the others, not by hints.
        let cutoff = ((healed_at + HINT_DRAIN_MS).saturating_sub(self.config.hint_window_ms)
            + 2 * REPLICA_TIMEOUT_MS)
            .max(self.last_membership_change + 2 * REPLICA_TIMEOUT_MS);
        for (index, op) in self.client_ops.iter().enumerate() {
            let Some(version) = op.version else { continue };
            if op.issued_ms < cutoff || !matches!(op.outcome, Some(Ok(_))) {
                continue;
            }
            let coordinator = self
                .names
                .iter()
                .position(|n| NodeId::from_name(n) == version.node)
                .unwrap();
            let crashed_in_flight = self.crashes.iter().any(|&(node, at)| {
                node == coordinator
                    && at >= op.issued_ms
                    && at <= op.issued_ms + 2 * REPLICA_TIMEOUT_MS
            });
            // A coordinator that stepped aside for a second process under its name
            // keeps its hints until it takes the name back (its view is frozen
            // meanwhile): they are late, not lost, and convergence checks them.
            // A version from a clock beyond the bound (issued before its node found out)
            // is refused by replicas until the cluster's time reaches it: by design, its
            // hints land only then, after the drain; convergence checks where it ends.
            let beyond_bound = version.hlc.wall_ms() > EPOCH_MS + op.issued_ms + MAX_OFFSET_MS;
            if crashed_in_flight || self.nodes[coordinator].stepped_aside || beyond_bound {
                continue;
            }
            for replica in placement.replicas(partition_of(&op.key, self.settings.partitions)) {
                // Hints go to the replicas the coordinator wrote to. One it did not know
                // of yet (it learned of a new owner late, across a cut) gets the write
                // from the replicas that took it, by handoff and anti-entropy, which the
                // convergence check covers.
                if !op.targets.iter().any(|t| t == replica) {
                    continue;
                }
                let r = self.index_of(replica).unwrap();
                if self.nodes[r].empty_since >= op.issued_ms && self.nodes[r].empty_since > 0
                    || self.nodes[r].stepped_aside
                {
                    continue;
                }
                if self
                    .held_version(r, &op.key)
                    .is_none_or(|held| held < version)
                {
                    self.violations.push(format!(
                        "op {index} ({:?} of {} at {}) never reached {replica}: no hint delivered it",
                        op.kind,
                        String::from_utf8_lossy(&op.key),
                        op.issued_ms
                    ));
                }
            }
        }
    }

    /// A session's write issued after another of its writes was acknowledged has the
    /// higher version, whichever nodes coordinated them.
    fn check_sessions(&mut self) {
        let writes: Vec<(usize, u64, u64, Version)> = self
            .client_ops
            .iter()
            .filter(|o| o.kind != OpKind::Get)
            .filter_map(|o| {
                let Some(Ok(Some(version))) = &o.outcome else {
                    return None;
                };
                Some((o.session, o.issued_ms, o.completed_ms?, *version))
            })
            .collect();
        for a in &writes {
            for b in &writes {
                if a.0 == b.0 && a.2 < b.1 && b.3.hlc <= a.3.hlc {
                    self.violations.push(format!(
                        "session {}: a write issued at {} ms has version {:?}, not above {:?} of one acknowledged at {} ms",
                        a.0, b.1, b.3, a.3, a.2
                    ));
                }
            }
        }
    }

    fn check(&mut self) {
        self.check_sessions();
        if let Some(d) = self.divergence() {
            self.violations
                .push(format!("replicas did not converge: {d}"));
        }
        for (i, &renewals) in self.renewals.iter().enumerate() {
            // At most 10 free a minute and then a growing wait: over a run of about two
            // minutes, a few dozen at the very most; a storm would be thousands.
            if renewals > 40 {
                self.violations.push(format!(
                    "{} renewed its identity {renewals} times",
                    self.names[i]
                ));
            }
        }
        for i in self.members().collect::<Vec<_>>() {
            let filling: Vec<u16> = self.nodes[i].fill.filling().collect();
            if !filling.is_empty() {
                self.violations.push(format!(
                    "{} never filled partitions {filling:?}",
                    self.names[i]
                ));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(store) = &node.store {
                for p in 0..self.settings.partitions {
                    if !store.verify_tree(p).unwrap_or(false) {
                        self.violations.push(format!(
                            "{}: partition {p}'s tree differs from its data",
                            self.names[i]
                        ));
                    }
                }
            }
        }
        // Every write acknowledged at quorum or all is present, or superseded by a newer
        // version; a deleted key is back only if a newer put was issued.
        let store = self.nodes[0].store.as_ref();
        let placement = self.final_placement();
        for (index, op) in self.client_ops.iter().enumerate() {
            let Some(version) = op.version else { continue };
            let acked = matches!(op.outcome, Some(Ok(_))) && op.consistency != Consistency::One;
            if !acked {
                continue;
            }
            let owner = placement
                .replicas(partition_of(&op.key, self.settings.partitions))
                .next()
                .unwrap();
            let owner = self.index_of(owner).unwrap();
            let record = self.nodes[owner]
                .store
                .as_ref()
                .and_then(|s| s.get(&op.key).ok().flatten());
            // Nothing is what purged tombstones leave: right where some replica purged
            // a tombstone of this version or a newer one, or another replica holds a
            // tombstone past the grace that a refilled owner was rightly not sent (a
            // value there would be a divergence, checked apart).
            let superseded = self.purged_before(&op.key, Some(version), u64::MAX)
                || placement
                    .replicas(partition_of(&op.key, self.settings.partitions))
                    .filter_map(|r| self.held_version(self.index_of(r)?, &op.key))
                    .max()
                    >= Some(version);
            match record {
                None if superseded => {}
                None => self.violations.push(format!(
                    "op {index} ({:?} of {}) was acknowledged at {:?} and is lost",
                    op.kind,
                    String::from_utf8_lossy(&op.key),
                    op.consistency
                )),
                Some(r) if r.version < version => self.violations.push(format!(
                    "op {index} ({:?} of {}) was acknowledged at {:?}; an older version {:?} won",
                    op.kind,
                    String::from_utf8_lossy(&op.key),
                    op.consistency,
                    r.version
                )),
                Some(r) => {
                    // Whatever is there was written by some client operation.
                    let issued = self.client_ops.iter().any(|o| {
                        o.version == Some(r.version)
                            && o.key == op.key
                            && o.value.as_deref() == r.payload.value()
                    });
                    if !issued {
                        self.violations.push(format!(
                            "{} holds version {:?} that no client wrote",
                            String::from_utf8_lossy(&op.key),
                            r.version
                        ));
                    }
                }
            }
        }
        let _ = store;
        // A quorum read that began after a quorum write was acknowledged sees it.
        for read in self
            .client_ops
            .iter()
            .filter(|o| o.kind == OpKind::Get && o.consistency != Consistency::One)
        {
            let Some(Ok(seen)) = &read.outcome else {
                continue;
            };
            for write in self.client_ops.iter().filter(|w| {
                w.kind != OpKind::Get
                    && w.key == read.key
                    && w.consistency != Consistency::One
                    && matches!(w.outcome, Some(Ok(_)))
                    && w.completed_ms.is_some_and(|done| done < read.issued_ms)
            }) {
                if seen.is_none_or(|v| Some(v) < write.version)
                    && !(seen.is_none()
                        && self.gone_by(
                            &read.key,
                            write.version,
                            read.completed_ms.unwrap_or(u64::MAX),
                        ))
                {
                    self.violations.push(format!(
                        "a {:?} read of {} at {} saw {:?}, older than the {:?} write acknowledged at {}",
                        read.consistency,
                        String::from_utf8_lossy(&read.key),
                        read.issued_ms,
                        seen,
                        write.consistency,
                        write.completed_ms.unwrap()
                    ));
                }
            }
        }
    }
}

/// Runs `seed` and returns its report, or the failure with the command that replays it.
pub fn run_seed(config: SimConfig) -> Result<SimReport, String> {
    let seed = config.seed;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(config).run()));
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(Violation(why))) => Err(format!(
            "seed {seed} violated an invariant:\n{why}\nreplay: VERGENT_SIM_SEED={seed} cargo test -p vergent --test simulation -- --nocapture"
        )),
        Err(panic) => Err(format!(
            "seed {seed} panicked: {:?}\nreplay: VERGENT_SIM_SEED={seed} cargo test -p vergent --test simulation -- --nocapture",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or(panic.downcast_ref::<&str>().copied())
        )),
    }
}

/// How long a run of `n` seeds took, for the figures.
pub fn describe(reports: &[SimReport], took: Duration) -> String {
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
    }
    let ops: u64 = reports.iter().map(|r| r.puts + r.deletes + r.gets).sum();
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let dropped: u64 = reports.iter().map(|r| r.dropped).sum();
    let duplicated: u64 = reports.iter().map(|r| r.duplicated).sum();
    let worst = reports
        .iter()
        .map(|r| r.converged_after_ms)
        .max()
        .unwrap_or(0);
    format!(
        "{} seeds, {ops} operations ({acked} acknowledged), faults {faults:?}, {dropped} messages dropped, {duplicated} duplicated, slowest convergence {worst} ms virtual, 0 violations, {:.1} s",
        reports.len(),
        took.as_secs_f64()
    )
}
