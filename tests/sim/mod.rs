//! A deterministic cluster simulator: N nodes, each the shipping node core
//! ([`vergent::core::NodeCore`]: membership, the coordinator, hint delivery,
//! anti-entropy and its books, fills, handoff, purges, clocks) over a real LMDB store,
//! driven in one process on a virtual clock, over a simulated network that delays,
//! drops, duplicates and reorders messages and cuts partitions, while nodes crash and
//! restart, disks are wiped, members join, are removed and replaced, and clocks drift.
//! Everything random comes from one seed, so a failing seed replays exactly.
//!
//! The simulator decides nothing a node decides: it carries the cores' outputs out
//! (requests and datagrams into the network, store effects at once, wake-ups on the
//! virtual clock) and feeds their inputs back, as the tokio runtime does for real. What
//! it adds is the world around the nodes and the checks.
//!
//! This file holds the [`Sim`] itself, its event loop and the scenario a run follows;
//! the rest is split by concern:
//!
//! - `config.rs`: the constants, [`SimConfig`], [`SimReport`] and [`Violation`];
//! - `network.rs`: the messages, their sending and delivery to the cores;
//! - `clock.rs`: each node's clocks and what its probes measure of the others';
//! - `view.rs`: what a node's core knows of the cluster (peers, placement);
//! - `node.rs`: a node's life (start, crash), the driver of its core, and the checks
//!   made as it acts (versions issued, clocks, handoffs, purges, no deleted key back);
//! - `workload.rs`: the client operations;
//! - `faults.rs`: the random faults injected, and healing;
//! - `shapes.rs`: the scripted shapes, each building one moment a rule exists for;
//! - `invariants.rs`: the checks made at the end of a run.

#![allow(dead_code)]

mod clock;
mod config;
mod faults;
mod invariants;
mod linearizable;
mod network;
mod node;
mod shapes;
mod typed;
mod view;
mod workload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use vergent::base::Millis;
use vergent::core::{Answer, Ask};
use vergent::hlc::Timestamp;
use vergent::record::Version;
use vergent::storage::ClusterSettings;

use config::{EVENTS_MAX, HINT_DRAIN_MS, HINTS_LONG, SESSIONS, SPARES};
use faults::Ghost;
use network::Msg;
use node::Node;
use workload::ClientOp;

pub use config::{Shape, SimConfig, SimReport, Violation};

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        msg: Box<Msg>,
    },
    /// A node's core asked to be woken at `at`.
    Wake {
        node: usize,
        life: u32,
        at: u64,
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
        from: usize,
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
    /// A step of a scripted shape.
    Script(shapes::Step),
}

/// Asks of an operator's are numbered from here; below are the client operations.
const ADMIN_ASKS: u64 = 1 << 40;

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
    /// Answers to the asks an operator made (removals, a replacement's admission).
    admin_answers: BTreeMap<u64, Answer>,
    next_admin: u64,
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
    /// Stored keys `VERGENT_SIM_WATCH` follows.
    watched_keys: std::collections::BTreeSet<Vec<u8>>,
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
            admin_answers: BTreeMap::new(),
            next_admin: ADMIN_ASKS,
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
            watched_keys: Default::default(),
            config,
        };
        for name in &names {
            let skew_ms = sim.rng.random_range(-200i64..=200);
            sim.nodes.push(Node::new(name.clone(), skew_ms));
        }
        sim.renewals = vec![0; sim.nodes.len()];
        sim.identities = vec![Vec::new(); sim.nodes.len()];
        sim
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

    /// Runs the whole scenario and checks every invariant. The report on success; the
    /// violations otherwise.
    pub fn run(mut self) -> Result<SimReport, Violation> {
        for i in 0..self.config.nodes {
            self.start(i);
        }
        // Let membership settle before the workload.
        self.run_until(5_000);
        if self.config.typed {
            self.create_buckets();
            self.run_until(6_000);
        }
        let start = self.now;
        if self.config.shape == Shape::Random {
            self.random_faults(start);
        } else {
            self.script(start);
        }
        self.schedule(start + self.config.fault_ms, Event::Heal);
        self.run_until(start + self.config.fault_ms);
        let healed_at = self.now;
        self.run_until(healed_at + HINT_DRAIN_MS);
        self.check_hinted_handoff(healed_at);
        self.set_ae_paused(false);
        let deadline = healed_at + self.config.heal_ms;
        while self.now < deadline {
            self.run_until(self.now + 2_000);
            if self.converged()
                && self.members().all(|i| self.nodes[i].up)
                && self.placement_divergence().is_none()
            {
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

    /// The random fault phase from `start`: operations, faults, and on short-window
    /// seeds a replica away past the grace.
    fn random_faults(&mut self, start: u64) {
        for op in 0..self.config.ops {
            let session = self.rng.random_range(0..SESSIONS);
            self.client_ops.push(ClientOp::new(session, None));
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
                    self.deliver(from, to, *msg);
                }
                Event::Wake { node, life, at } => {
                    if self.nodes[node].up && self.nodes[node].life == life {
                        self.wake(node, at);
                    }
                }
                Event::Client { op } => self.client_op(op),
                Event::Fault => self.fault(),
                Event::Away { node, back } => self.away(node, back),
                Event::ToGhost { from, data, ghost } => {
                    if let Some(g) = self.ghost.as_mut().filter(|g| g.id == ghost) {
                        let sender = &self.names[from];
                        let _ = g.membership.handle_data(sender, &data, Millis(self.now));
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
                Event::Script(step) => self.run_step(step),
            }
        }
        self.now = until;
    }

    /// Background anti-entropy paused on every node (fills go on), or resumed.
    fn set_ae_paused(&mut self, paused: bool) {
        self.ae_paused = paused;
        for node in &mut self.nodes {
            if let Some(core) = node.core.as_mut() {
                core.pause_background(paused);
            }
        }
    }

    /// An operator's ask of node `i` (as `vergent remove` or a join request reach it),
    /// and its answer when the node gave one at once.
    fn admin(&mut self, i: usize, ask: Ask) -> Option<Answer> {
        let id = self.next_admin;
        self.next_admin += 1;
        self.with_core(i, |core, now, store| core.handle_ask(id, ask, now, store));
        self.admin_answers.remove(&id)
    }

    /// The nodes that are members at the end: started, and not removed or replaced.
    fn members(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].started_once && !self.nodes[i].removed)
    }
}

/// Runs `seed` and returns its report, or the failure with the command that replays it.
pub fn run_seed(config: SimConfig) -> Result<SimReport, String> {
    let seed = config.seed;
    let replay = match config.shape {
        Shape::Random if !config.typed => format!(
            "VERGENT_SIM_UNTYPED=1 VERGENT_SIM_SEED={seed} cargo test -p vergent --test simulation every_seed -- --nocapture"
        ),
        Shape::Random => format!(
            "VERGENT_SIM_SEED={seed} cargo test -p vergent --test simulation every_seed -- --nocapture"
        ),
        shape => format!(
            "VERGENT_SIM_SHAPE={} VERGENT_SIM_SEED={seed} cargo test -p vergent --test simulation every_shape -- --nocapture",
            shape.name()
        ),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Sim::new(config).run()));
    match outcome {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(Violation(why))) => Err(format!(
            "seed {seed} violated an invariant:\n{why}\nreplay: {replay}"
        )),
        Err(panic) => Err(format!(
            "seed {seed} panicked: {:?}\nreplay: {replay}",
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
    let ops: u64 = reports
        .iter()
        .map(|r| r.puts + r.deletes + r.gets + r.typed)
        .sum();
    let typed: u64 = reports.iter().map(|r| r.typed).sum();
    let linearizable: u64 = reports.iter().map(|r| r.linearizable_checked).sum();
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let dropped: u64 = reports.iter().map(|r| r.dropped).sum();
    let duplicated: u64 = reports.iter().map(|r| r.duplicated).sum();
    let worst = reports
        .iter()
        .map(|r| r.converged_after_ms)
        .max()
        .unwrap_or(0);
    format!(
        "{} seeds, {ops} operations ({typed} on typed and TTL buckets, {linearizable} of them on linearizable keys, every history judged linearizable; {acked} acknowledged), faults {faults:?}, {dropped} messages dropped, {duplicated} duplicated, slowest convergence {worst} ms virtual, 0 violations, {:.1} s",
        reports.len(),
        took.as_secs_f64()
    )
}
