//! What a node's core is given: the time of each input ([`Now`]), its configuration,
//! what it starts from ([`Boot`]), and the counters it keeps.

use std::sync::Arc;

use crate::base::{Consistency, Millis};
use crate::hlc::Timestamp;
use crate::hlc::skew::Reading;
use crate::membership::seal::StatusSeal;
use crate::membership::{MemberId, MembershipConfig, SeedMember};
use crate::placement::PartitionSet;
use crate::policy::Agreed;
use crate::record::NodeId;
use crate::storage::{ClusterSettings, MemberRecord};

/// A moment as the driver read it: the node's monotonic clock (since it started) and
/// its wall clock, both in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic microseconds since the node started.
    pub mono_us: u64,
    /// Wall-clock microseconds since the Unix epoch.
    pub wall_us: u64,
}

impl Now {
    /// Monotonic milliseconds.
    pub fn mono(&self) -> Millis {
        Millis(self.mono_us / 1000)
    }

    /// Wall-clock milliseconds.
    pub fn wall_ms(&self) -> u64 {
        self.wall_us / 1000
    }

    /// Both clocks, as the clock measurements take them.
    pub fn reading(&self) -> Reading {
        Reading {
            mono_us: self.mono_us,
            wall_us: self.wall_us,
        }
    }

    /// This moment as the books keep it.
    pub(crate) fn moment(&self) -> Agreed {
        Agreed {
            mono: self.mono().0,
            wall: self.wall_ms(),
        }
    }
}

/// Time between probes of every live peer's clock (and of unreachable peers' paths).
pub const PROBE_PERIOD_MS: u64 = 1_000;
/// Time a clock probe may take.
pub const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Time between status publications.
pub const STATUS_PERIOD_MS: u64 = 1_000;
/// Time a leaving node keeps gossiping its departure before it leaves SWIM.
pub const LEAVE_GRACE_MS: u64 = 1_500;
/// Time between looks at the hint backlog when nothing wakes delivery.
pub const HINTS_PERIOD_MS: u64 = 1_000;
/// Time given to a member asked for its view of the cluster.
pub(super) const CONSULT_TIMEOUT_MS: u64 = 2_000;

/// How a node's core behaves: its limits, timeouts and periods.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Time a replica request waits for its answer.
    pub replica_timeout_ms: u64,
    /// Hints older than this are dropped.
    pub hint_window_ms: u64,
    /// Tombstones older than this may be purged once every replica holds them.
    pub tombstone_grace_ms: u64,
    /// Time between background anti-entropy runs; `None`: on demand only (fills still run).
    pub anti_entropy_interval_ms: Option<u64>,
    /// Clock offset beyond which versions are refused.
    pub max_clock_offset_ms: u64,
    /// Largest value accepted.
    pub value_bytes_max: usize,
    /// Most coordinated operations in flight.
    pub ops_max: usize,
    /// Exchanges one anti-entropy run keeps in flight with a peer.
    pub exchanges_in_flight: usize,
    /// Entry bytes anti-entropy moves per second (0: unlimited).
    pub repair_bytes_per_sec: u64,
    /// Time one exchange step waits for its answer.
    pub sync_step_timeout_ms: u64,
    /// Consistency of operations that name none.
    pub default_consistency: Consistency,
    /// SWIM timing.
    pub membership: MembershipConfig,
    /// Hand each operation on a linearizable key to the key's home node (see
    /// `core::route`); off, every node proposes for its own clients (correct, with
    /// more contention: the simulator's contention shape runs both ways).
    pub route_to_home: bool,
    /// Accepts also promise the proposer's next ballot on the key, so its next write
    /// there skips the prepare: one round trip (see `core::paxos`). Off, every write
    /// takes two (the simulator runs both ways).
    pub write_fast_path: bool,
}

/// What a node knows before its core starts: its identity, the cluster, what its store
/// holds, and what its seed (or its memory) told it of the members.
pub struct Boot {
    /// This node's identity.
    pub me: MemberId,
    /// The cluster's settings.
    pub settings: ClusterSettings,
    /// This node's numeric id, which breaks version ties.
    pub node_id: NodeId,
    /// Every version this node's store holds is at or below this.
    pub clock_floor: Timestamp,
    /// The partitions whose data this node holds.
    pub filled: PartitionSet,
    /// The members its store remembers.
    pub remembered: Vec<MemberRecord>,
    /// The members its seed answered with (empty when it started from memory).
    pub installed: Vec<SeedMember>,
    /// Members to announce itself to.
    pub seeds: Vec<MemberId>,
    /// Seals this node's statuses and checks the others'.
    pub seal: Option<Arc<dyn StatusSeal>>,
    /// Seed of every random choice the core makes.
    pub seed: u64,
    /// The bucket catalog the store remembers.
    pub catalog: crate::buckets::Catalog,
}

/// Counters the node's status and metrics report.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Writes coordinated since the start.
    pub writes: u64,
    /// Reads coordinated since the start.
    pub reads: u64,
    /// Versions refused for coming from too far ahead.
    pub clock_refusals: u64,
    /// Operations on linearizable keys completed.
    pub lin_ops: u64,
    /// Round trips those operations took (a prepare or an accept phase each).
    pub lin_round_trips: u64,
    /// Reads answered after the prepare alone (the value was settled).
    pub lin_fast: u64,
    /// Attempts retried after a prepare found no quorum (contention, replicas away).
    pub lin_retries: u64,
}
