//! The simulator's constants, and what a run is given ([`SimConfig`]) and gives back
//! ([`SimReport`], or a [`Violation`]).

use std::collections::BTreeMap;

/// Wall-clock milliseconds at virtual time 0 (any fixed point will do).
pub(super) const EPOCH_MS: u64 = 1_800_000_000_000;
/// The clock offset nodes refuse beyond.
pub(super) const MAX_OFFSET_MS: u64 = 500;
/// Tick of the second process under a member's name (membership only).
pub(super) const GHOST_TICK_MS: u64 = 100;
/// Time a replica request or exchange step waits before it counts as lost.
pub(super) const REPLICA_TIMEOUT_MS: u64 = 2_000;
/// Exchanges a run keeps in flight, as the node's default.
pub(super) const EXCHANGES_IN_FLIGHT: usize = 16;
/// Time between anti-entropy runs of a node.
pub(super) const ANTI_ENTROPY_MS: u64 = 3_000;
/// Hints older than this are dropped, and tombstones older than the grace may be
/// purged once every replica holds them. The grace is longer than the window, as the
/// node requires (a hint delivered after its tombstone was purged would bring the key
/// back). Two thirds of the seeds keep hints long enough to check hinted handoff alone
/// after healing; the rest keep both short, so purges happen while replicas are cut off.
pub(super) const HINTS_LONG: (u64, u64) = (20_000, 25_000);
pub(super) const HINTS_SHORT: (u64, u64) = (2_000, 3_000);
/// After healing, time given to hinted handoff alone (anti-entropy paused), at the end
/// of which every write a replica missed recently enough must have reached it.
pub(super) const HINT_DRAIN_MS: u64 = 10_000;
/// Bound checked on every node's coordinator.
pub(super) const OPS_MAX: usize = 4_096;
/// Slots for nodes that join during the run (a new node, a replacement).
pub(super) const SPARES: usize = 2;
/// Events one run may handle; a healthy run handles well under a tenth of this.
pub(super) const EVENTS_MAX: u64 = 5_000_000;
/// Time between a node's clock probes of each live peer, as in the node.
pub(super) const PROBE_MS: u64 = 1_000;
/// How long a clock sample speaks for a peer, as in the node.
pub(super) const SKEW_SAMPLE_MAX_AGE_MS: u64 = vergent::hlc::skew::SAMPLE_AGE_MAX_MS;
/// Client sessions the operations are spread over.
pub(super) const SESSIONS: usize = 4;

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
    /// Random faults, or one of the scripted shapes.
    pub shape: Shape,
    /// Typed buckets (a counter, a set, siblings, a TTL) and operations on them beside
    /// the default bucket's. Off, a seed runs as it did before buckets: the seeds that
    /// found bugs then replay the same history.
    pub typed: bool,
    /// Whether nodes hand linearizable operations to each key's home node.
    pub route_linearizable: bool,
    /// Whether linearizable writes may take one round trip (a quarter of the seeds
    /// run without, so every write prepares).
    pub write_fast_path: bool,
}

/// What a run's fault phase is: random faults and operations, or a script built to
/// reach one of the moments a rule exists for (its faults and operations fixed, the
/// nodes it picks, timings and message order still drawn from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Random faults and operations.
    Random,
    /// Every key written to all replicas; one replica cut off both ways for several
    /// graces while every key is deleted at quorum; the cut healed, then quorum reads.
    /// A purge must wait for the replica that was cut off, or its values come back.
    DeletesWhileCut,
    /// A new node joins while writes go on over a lossy network, so replicas miss some
    /// of them for a while. An old owner may drop a partition only after every owner
    /// that counts for it synced with it since it let the partition go.
    HandoffUnderLoad,
    /// One replica misses every key's quorum write (cut off until its hints expire),
    /// then a new node joins while anti-entropy is stalled, so it cannot fill; quorum
    /// reads meanwhile. A filling node must not count in read quorums.
    ReadsWhileJoining,
    /// A siblings key written on both sides of a cut; after the heal, a read sees both
    /// values, and one write with its context replaces them on every replica.
    SiblingsAcrossACut,
    /// Bursts of puts, reads and compare-and-sets on one linearizable key from every
    /// coordinator at once, over a slow, lossy, reordering network; on half the seeds every node proposes for its own clients (no
    /// routing to the key's home), so proposals meet head on. Its history must be
    /// linearizable.
    CasContention,
    /// One linearizable key: a coordinator that is not its replica writes it (taking
    /// the lease for its next write), then loses every link out but to one replica and
    /// writes again, so that replica alone accepts a value nobody chose; reads and
    /// compare-and-sets through the others meanwhile. A read may answer from one round
    /// only when a quorum agrees: the value on one replica must be finished (or lost
    /// for good) before any read returns it.
    AbandonedAccept,
}

impl Shape {
    /// Every scripted shape.
    pub const SCRIPTED: [Shape; 6] = [
        Shape::DeletesWhileCut,
        Shape::HandoffUnderLoad,
        Shape::ReadsWhileJoining,
        Shape::SiblingsAcrossACut,
        Shape::CasContention,
        Shape::AbandonedAccept,
    ];

    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Random => "random",
            Shape::DeletesWhileCut => "deletes-while-cut",
            Shape::HandoffUnderLoad => "handoff-under-load",
            Shape::ReadsWhileJoining => "reads-while-joining",
            Shape::SiblingsAcrossACut => "siblings-across-a-cut",
            Shape::CasContention => "cas-contention",
            Shape::AbandonedAccept => "abandoned-accept",
        }
    }

    /// The shape of a name, as [`Shape::name`] gives it.
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::SCRIPTED.into_iter().find(|s| s.name() == name)
    }
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
            shape: Shape::Random,
            typed: true,
            route_linearizable: true,
            write_fast_path: !seed.is_multiple_of(4),
        }
    }

    /// The run of `seed` as it was before typed buckets (for the seeds that found bugs
    /// then).
    pub fn untyped(seed: u64) -> SimConfig {
        SimConfig {
            typed: false,
            ..SimConfig::new(seed)
        }
    }

    /// A scripted run of `shape` for `seed`: short hints and grace, so hints expire and
    /// tombstones pass the grace within the script.
    pub fn shaped(seed: u64, shape: Shape) -> SimConfig {
        SimConfig {
            hint_window_ms: HINTS_SHORT.0,
            tombstone_grace_ms: HINTS_SHORT.1,
            shape,
            typed: matches!(
                shape,
                Shape::SiblingsAcrossACut | Shape::CasContention | Shape::AbandonedAccept
            ),
            // Contention runs without routing, so proposers meet head on (the random
            // seeds route); so does the abandoned accept, whose coordinator is not a
            // replica.
            route_linearizable: !matches!(shape, Shape::CasContention | Shape::AbandonedAccept),
            // The abandoned accept takes its coordinator's lease.
            write_fast_path: shape == Shape::AbandonedAccept
                || SimConfig::new(seed).write_fast_path,
            ..SimConfig::new(seed)
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
    /// Operations on typed and TTL buckets issued.
    pub typed: u64,
    /// Operations on linearizable keys whose history the checker judged.
    pub linearizable_checked: u64,
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
