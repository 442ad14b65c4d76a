//! The node core: one deterministic state machine for a whole node, driven alike by the
//! tokio runtime ([`crate::node`]) and by the simulator (`tests/sim`), so what the
//! simulator proves is what ships.
//!
//! It owns every mechanism and the logic that ties them together: membership and the
//! view built from it, the HLC and the measurement of the other clocks, the coordinator
//! and the replica's side of replication, hint delivery, anti-entropy (its schedule, its
//! runs with each peer, its books, the answers to the peers' exchanges), the fill books,
//! handoff and tombstone purges, joins, removals and leaving. It is fed inputs with the
//! time they happened at ([`Now`]: the node's monotonic and wall clocks, read together
//! by the driver), and drained: [`NodeCore::poll_output`] for what to do,
//! [`NodeCore::poll_timeout`] for when to wake it next. It does no I/O, reads no clock,
//! spawns nothing, and draws randomness only from the seed it was given.
//!
//! Storage: reads are synchronous calls on the [`Store`] the driver hands to every
//! input. LMDB reads are short and memory-mapped, and what they answer is needed at
//! once to decide (a local read for the coordinator, the trees an exchange compares,
//! the hint backlog). Every change is an effect instead, [`Output::Store`], that the
//! driver carries out and answers with [`NodeCore::handle_stored`]: the runtime's
//! group-commit writer batches the writes of many concurrent operations into one
//! transaction and one fsync, which a core that waited for each write could never feed;
//! the simulator carries them out at once.
//!
//! The requests between nodes are the protocol's own [`Request`]s and [`Response`]s: the
//! runtime carries them over QUIC (batching replication to a peer into one frame), the
//! simulator over its network of delays, losses and cuts.

mod acceptor;
mod boot;
mod buckets;
mod clocks;
mod config;
mod conflicts;
mod data;
mod dispatch;
mod events;
mod fill;
mod future;
mod hints;
mod io;
mod members;
mod once;
mod pacer;
mod paxos;
mod route;
mod status;
mod sync;
mod typed;
mod view;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

pub use self::boot::{BootNotes, Joined, identity, prepare};
pub use self::config::*;
pub use self::data::pong;
pub use self::future::RewritePlan;
pub use self::io::{
    Answer, Ask, AskId, CoreEvent, Output, PeerFailure, ReplyTo, ReqId, StoreDone, StoreId,
    StoreWork,
};
use self::io::{Pending, Purpose, StorePurpose};
pub use self::io::{carry_out, storage_error};
use self::sync::{Round, SyncBooks};
pub use self::view::ClusterView;
use crate::antientropy::confirm::WriteMarks;
use crate::base::{Consistency, Millis};
use crate::coordinator::{Coordinator, CoordinatorConfig, OpId};
use crate::hlc::skew::SkewBook;
use crate::hlc::{Clock, Timestamp};
use crate::membership::{MemberId, Membership, SeedMember, SwimTimer};
use crate::placement::{Fill, FillNews, PartitionId, PartitionSet, Placement};
use crate::policy::{Agreed, HintPump, RunSchedule, TombstoneArrivals};
use crate::protocol::{Request, Response};
use crate::record::NodeId;
use crate::storage::{ClusterSettings, Store};

/// A SWIM timer, due at a monotonic time; ordered by deadline, then arrival.
struct SwimDue(Millis, u64, SwimTimer);

impl PartialEq for SwimDue {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for SwimDue {}
impl PartialOrd for SwimDue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SwimDue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

/// One node; see the module documentation.
pub struct NodeCore {
    config: CoreConfig,
    me: MemberId,
    settings: ClusterSettings,
    node_id: NodeId,
    rng: SmallRng,
    clock: Clock,
    skew: SkewBook,
    coordinator: Coordinator,
    membership: Membership,
    view: Arc<ClusterView>,
    /// The view changed since the driver last took it.
    view_changed: bool,
    /// What of the roster the view was last built from.
    view_fingerprint: u64,
    placement: Arc<Placement>,
    fill: Fill,
    news: FillNews,
    hints: HintPump,
    /// Hint deletions handed to the store and not yet done: the next plan waits for them.
    hint_deletes: usize,
    hints_due: Millis,
    schedule: RunSchedule,
    /// Background runs skip their turn while paused (fills go on).
    background_paused: bool,
    round: Option<Round>,
    /// Roots requests put off for a change made in the same millisecond.
    held_syncs: Vec<sync::HeldSync>,
    /// The buckets defined.
    catalog: crate::buckets::Catalog,
    /// When catalogs were last exchanged with each member.
    catalog_exchanged: BTreeMap<String, Millis>,
    /// Deleted buckets whose records were dropped in this life.
    buckets_dropped: BTreeSet<crate::buckets::BucketId>,
    /// Updates this node made (or is making) as an actor for a coordinator, by id:
    /// a request that arrives twice is answered twice and made once.
    updates_made: once::MadeOnce,
    /// Operations proposed here for other nodes, as their keys' home.
    proposes_made: once::MadeOnce,
    /// Concurrent writes seen, per bucket.
    conflicts: conflicts::ConflictBook,
    /// Proposals on linearizable keys this node makes.
    proposals: paxos::Proposals,
    /// Repairs waiting for the round in progress.
    repairs: VecDeque<sync::RepairAsk>,
    books: SyncBooks,
    arrivals: TombstoneArrivals,
    write_marks: WriteMarks,
    pacer: pacer::Pacer,
    /// Members the data path does not reach although membership calls them alive, and why.
    unreachable: BTreeMap<String, String>,
    /// Each member's identity as last probed (a new life may run on another clock).
    lives: BTreeMap<String, MemberId>,
    probe_due: Millis,
    /// Rounds of clock probes sent so far.
    probe_rounds: u64,
    /// Writes waiting for this node's first clock measurement.
    awaiting_clock: Vec<(AskId, Ask, Millis)>,
    status_due: Millis,
    leave_at: Option<Millis>,
    /// Set while versions from the future are rewritten: no writes are coordinated.
    rewriting: bool,
    /// Writes made outside the core's effects (a rewrite), not yet done.
    landings: future::Landings,
    next_landing: u64,
    /// The other process under this node's name it stepped aside for, by address.
    stepped_aside: Option<String>,
    counters: Counters,
    next_req: ReqId,
    pending: BTreeMap<ReqId, Pending>,
    deadlines: BTreeSet<(Millis, ReqId)>,
    swim_timers: BinaryHeap<Reverse<SwimDue>>,
    swim_seq: u64,
    /// Client operations by the coordinator's id, with their bucket's type.
    ops: BTreeMap<OpId, (AskId, crate::buckets::BucketType)>,
    /// Reads of siblings keys in flight, by key: what they find goes to the books.
    sibling_reads: BTreeMap<OpId, Vec<u8>>,
    /// This node's own writes of the turn, applied as one store request.
    local: Vec<(Option<OpId>, crate::record::Entry, u64)>,
    next_store: StoreId,
    stored: BTreeMap<StoreId, StorePurpose>,
    /// Outputs delayed to a later time (repair's rate limit), in order.
    later: BTreeMap<(Millis, u64), Output>,
    later_seq: u64,
    outputs: VecDeque<Output>,
}

impl NodeCore {
    /// A node's core after its start: membership restored from memory and installed
    /// from the seed's answer, announced to the seeds.
    pub fn new(config: CoreConfig, boot: Boot, now: Now, store: &Store) -> NodeCore {
        let mut rng = SmallRng::seed_from_u64(boot.seed);
        let mut membership = Membership::new(
            boot.me.clone(),
            &config.membership,
            rng.random::<u64>(),
            now.mono(),
        );
        if let Some(seal) = boot.seal {
            membership.set_seal(seal);
        }
        membership.restore(&boot.remembered, now.mono());
        membership.install(boot.installed, now.mono());
        for seed in boot.seeds {
            membership.announce(seed, now.mono());
        }
        let view = ClusterView::initial(&boot.me, &boot.settings, boot.filled.clone());
        let placement = view.placement.clone();
        let schedule = RunSchedule::new(config.anti_entropy_interval_ms, now.mono().0);
        let mut core = NodeCore {
            coordinator: Coordinator::new(CoordinatorConfig {
                write_timeout_ms: config.replica_timeout_ms,
                read_timeout_ms: config.replica_timeout_ms,
                ops_max: config.ops_max,
            }),
            // A batch is awaited for the replica timeout at most, so the pump's own
            // timeout (for an answer that never came) is only a backstop.
            hints: HintPump::new(2 * config.replica_timeout_ms),
            clock: Clock::starting_after(boot.clock_floor, config.max_clock_offset_ms),
            skew: SkewBook::new(),
            membership,
            view: Arc::new(view),
            view_changed: true,
            view_fingerprint: 0,
            placement,
            fill: Fill::new(boot.filled),
            news: FillNews::default(),
            hint_deletes: 0,
            hints_due: now.mono(),
            schedule,
            background_paused: false,
            round: None,
            repairs: VecDeque::new(),
            catalog: boot.catalog,
            catalog_exchanged: BTreeMap::new(),
            buckets_dropped: BTreeSet::new(),
            updates_made: once::MadeOnce::default(),
            proposes_made: once::MadeOnce::default(),
            conflicts: conflicts::ConflictBook::default(),
            proposals: paxos::Proposals::default(),
            held_syncs: Vec::new(),
            books: SyncBooks::default(),
            arrivals: TombstoneArrivals::new(boot.settings.partitions),
            write_marks: WriteMarks::new(boot.settings.partitions),
            pacer: pacer::Pacer::default(),
            unreachable: BTreeMap::new(),
            lives: BTreeMap::new(),
            probe_due: now.mono(),
            probe_rounds: 0,
            awaiting_clock: Vec::new(),
            status_due: now.mono(),
            leave_at: None,
            rewriting: false,
            landings: BTreeMap::new(),
            next_landing: 0,
            stepped_aside: None,
            counters: Counters::default(),
            next_req: 1,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            swim_timers: BinaryHeap::new(),
            swim_seq: 0,
            ops: BTreeMap::new(),
            sibling_reads: BTreeMap::new(),
            local: Vec::new(),
            next_store: 1,
            stored: BTreeMap::new(),
            later: BTreeMap::new(),
            later_seq: 0,
            outputs: VecDeque::new(),
            me: boot.me,
            settings: boot.settings,
            node_id: boot.node_id,
            rng,
            config,
        };
        core.flush_membership(now, store);
        core.forget_unowned_fills(now, store);
        core.drop_gone_buckets();
        // Promises left from before a restart are dropped once old.
        core.proposals.promised(now.mono());
        core
    }

    /// This node's identity in its current life (membership renews it).
    pub fn me(&self) -> &MemberId {
        self.membership.me()
    }

    /// The cluster's settings.
    pub fn settings(&self) -> ClusterSettings {
        self.settings
    }

    /// The current view of the cluster.
    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// The membership state machine, for reading.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The HLC, for reading.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Which partitions this node holds the data of, and is filling.
    pub fn fill(&self) -> &Fill {
        &self.fill
    }

    /// The clock measurements of the live peers.
    pub fn skew(&self) -> &SkewBook {
        &self.skew
    }

    /// The counters status reports.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Coordinated operations in flight.
    pub fn ops_in_flight(&self) -> usize {
        self.coordinator.in_flight() + self.proposals.in_flight()
    }

    /// Proposals on linearizable keys in flight.
    pub fn proposals_in_flight(&self) -> usize {
        self.proposals.in_flight()
    }

    /// Why this node serves no data now, if it does not: it stepped aside for another
    /// process under its name.
    pub fn stepped_aside(&self) -> Option<&str> {
        self.stepped_aside.as_deref()
    }

    /// Pauses background anti-entropy (fills go on), or resumes it.
    pub fn pause_background(&mut self, paused: bool) {
        self.background_paused = paused;
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !self.local.is_empty() {
            self.flush_local();
        }
        self.outputs.pop_front()
    }

    /// When the core wants [`NodeCore::handle_timeout`] called next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next = [
            self.coordinator.poll_timeout(),
            self.deadlines.first().map(|&(at, _)| at),
            self.swim_timers.peek().map(|Reverse(d)| d.0),
            Some(self.probe_due),
            Some(self.status_due),
            Some(self.hints_due),
            self.leave_at,
            self.later.keys().next().map(|&(at, _)| at),
            self.round.as_ref().and_then(Round::poll_timeout),
            self.held_syncs.iter().map(|h| h.at).min(),
            self.proposals.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        if self.round.is_none()
            && let Some(at) = self.schedule.poll_timeout()
        {
            next = Some(next.map_or(Millis(at), |n| n.min(Millis(at))));
        }
        next
    }

    /// Fires everything due at `now`.
    pub fn handle_timeout(&mut self, now: Now, store: &Store) {
        let mono = now.mono();
        self.coordinator.handle_timeout(mono);
        self.settle(now, store);
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > mono {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&id) {
                let why = match pending.purpose {
                    Purpose::Sync { .. } => format!(
                        "no answer within {} s",
                        self.config.sync_step_timeout_ms / 1000
                    ),
                    _ => format!("no answer within {} ms", pending.timeout_ms),
                };
                self.failed(pending, PeerFailure::Path(why), now, store);
            }
        }
        while self
            .swim_timers
            .peek()
            .is_some_and(|Reverse(d)| d.0 <= mono)
        {
            let Reverse(SwimDue(_, _, timer)) = self.swim_timers.pop().expect("peeked");
            self.membership.handle_timer(timer, mono);
        }
        while let Some((&(at, seq), _)) = self.later.iter().next() {
            if at > mono {
                break;
            }
            let output = self.later.remove(&(at, seq)).expect("listed");
            self.outputs.push_back(output);
        }
        if self.leave_at.is_some_and(|at| at <= mono) {
            self.leave_at = None;
            self.membership.finish_leaving(mono);
            self.event(CoreEvent::Left);
        }
        if self.status_due <= mono {
            self.status_due = Millis(mono.0 + STATUS_PERIOD_MS);
            if !self.membership.is_leaving() {
                self.membership.tick(mono);
                self.publish_status(now, store);
                self.membership.announce_if_isolated(mono);
            }
            self.compare_catalogs(now);
            // Statuses age and news of fills settles with time alone.
            self.view_fingerprint = 0;
        }
        if self.probe_due <= mono {
            self.probe_due = Millis(mono.0 + PROBE_PERIOD_MS);
            self.probe_round(now);
        }
        self.flush_membership(now, store);
        if self.hints_due <= mono {
            self.hints_due = Millis(mono.0 + HINTS_PERIOD_MS);
            self.deliver_hints(now, store);
        }
        self.paxos_timeout(now, store);
        self.round_timeout(now, store);
        self.held_syncs_due(now, store);
        self.recheck_awaiting_clock(now, store);
        self.poll_schedule(now, store);
        self.settle(now, store);
    }

    /// A store effect was carried out.
    pub fn handle_stored(&mut self, id: StoreId, done: StoreDone, now: Now, store: &Store) {
        if let Some(purpose) = self.stored.remove(&id) {
            self.on_stored(purpose, done, now, store);
        }
        self.settle(now, store);
    }

    /// A peer answered a request (or the driver could not deliver it).
    pub fn handle_response(
        &mut self,
        id: ReqId,
        response: Result<Response, PeerFailure>,
        now: Now,
        store: &Store,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(pending.deadline, id));
        match response {
            Ok(response) => self.answered(pending, response, now, store),
            Err(failure) => self.failed(pending, failure, now, store),
        }
        self.settle(now, store);
    }

    /// A membership datagram from `from` (the name its connection's certificate gives).
    pub fn handle_datagram(&mut self, from: &str, data: &[u8], now: Now, store: &Store) {
        match self.membership.handle_data(from, data, now.mono()) {
            Ok(()) => {}
            // Counted and reported (once a minute per peer) by membership.
            Err(crate::membership::MembershipError::Refused { .. }) => {}
            Err(err) => self.event(CoreEvent::Debug(err.to_string())),
        }
        self.flush_membership(now, store);
        self.settle(now, store);
    }

    /// Takes the view, when it changed since the last call.
    pub fn take_view_changed(&mut self) -> Option<Arc<ClusterView>> {
        std::mem::take(&mut self.view_changed).then(|| self.view.clone())
    }

    fn event(&mut self, event: CoreEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Sends `request` to `to` now and remembers what for.
    fn send(
        &mut self,
        to: &MemberId,
        request: Request,
        purpose: Purpose,
        timeout_ms: u64,
        now: Now,
    ) {
        self.send_at(now.mono(), to, request, purpose, timeout_ms, Some(now));
    }

    /// Sends `request` to `to` at `at` (the repair rate limit holds it back until then;
    /// `now`, when `at` is now) and remembers what for.
    fn send_at(
        &mut self,
        at: Millis,
        to: &MemberId,
        request: Request,
        purpose: Purpose,
        timeout_ms: u64,
        now: Option<Now>,
    ) {
        let id = self.next_req;
        self.next_req += 1;
        let deadline = Millis(at.0 + timeout_ms);
        self.pending.insert(
            id,
            Pending {
                to: to.name.clone(),
                purpose,
                deadline,
                timeout_ms,
            },
        );
        self.deadlines.insert((deadline, id));
        let send = Output::Send {
            id,
            to: to.clone(),
            request,
        };
        match now {
            Some(_) => self.outputs.push_back(send),
            None => self.at(at, send),
        }
    }

    /// Hands a change to the store.
    fn store(&mut self, work: StoreWork, purpose: StorePurpose) {
        let id = self.next_store;
        self.next_store += 1;
        self.stored.insert(id, purpose);
        self.outputs.push_back(Output::Store { id, work });
    }

    /// An output held back until `at`.
    fn at(&mut self, at: Millis, output: Output) {
        self.later_seq += 1;
        self.later.insert((at, self.later_seq), output);
    }

    /// Answers a peer's request.
    fn respond(&mut self, reply: ReplyTo, response: Response) {
        self.outputs.push_back(Output::Respond { reply, response });
    }

    /// Answers an ask of the driver's.
    fn answer(&mut self, ask: AskId, answer: Answer) {
        self.outputs.push_back(Output::Answer { ask, answer });
    }

    /// The identity of a live member, if it is one.
    fn live_id(&self, name: &str) -> Option<MemberId> {
        self.view
            .member(name)
            .filter(|m| m.state.is_live())
            .map(|m| m.id.clone())
    }

    /// The other members alive in this node's view.
    fn live_peers(&self) -> Vec<String> {
        self.view
            .members
            .iter()
            .filter(|m| m.id.name != self.me.name && m.state.is_live())
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// A random number from the core's seed.
    fn random(&mut self) -> u64 {
        self.rng.random::<u64>()
    }
}
