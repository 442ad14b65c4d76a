//! What a repair reports, and the per-peer sync state `status` shows.

use serde::{Deserialize, Serialize};

use crate::placement::PartitionId;

/// Counts from one or more exchanges, added up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    /// (partition, peer) pairs whose roots were compared.
    pub partitions_compared: u64,
    /// Pairs whose roots differed.
    pub partitions_differing: u64,
    /// Keys that differed (each counted once per pair).
    pub keys_differing: u64,
    /// Entries sent to peers.
    pub keys_sent: u64,
    /// Entries received from peers and applied.
    pub keys_received: u64,
    /// Differences that were only tombstones past the purge horizon.
    pub pending_purge: u64,
    /// Bytes of tree metadata (roots, fingerprints, lists) sent.
    pub metadata_bytes_sent: u64,
    /// Bytes of tree metadata received.
    pub metadata_bytes_received: u64,
    /// Bytes of entries sent.
    pub entry_bytes_sent: u64,
    /// Bytes of entries received.
    pub entry_bytes_received: u64,
    /// Request/response round trips.
    pub round_trips: u64,
}

impl SyncCounts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &SyncCounts) {
        self.partitions_compared += other.partitions_compared;
        self.partitions_differing += other.partitions_differing;
        self.keys_differing += other.keys_differing;
        self.keys_sent += other.keys_sent;
        self.keys_received += other.keys_received;
        self.pending_purge += other.pending_purge;
        self.metadata_bytes_sent += other.metadata_bytes_sent;
        self.metadata_bytes_received += other.metadata_bytes_received;
        self.entry_bytes_sent += other.entry_bytes_sent;
        self.entry_bytes_received += other.entry_bytes_received;
        self.round_trips += other.round_trips;
    }

    /// Entries moved ÷ keys that differed (1.0 is perfect; 0 when nothing differed).
    pub fn over_streaming(&self) -> f64 {
        if self.keys_differing == 0 {
            0.0
        } else {
            (self.keys_sent + self.keys_received) as f64 / self.keys_differing as f64
        }
    }
}

/// A partition found different from a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDifference {
    /// The partition.
    pub partition: PartitionId,
    /// The peer.
    pub peer: String,
    /// Keys that differed.
    pub keys: u64,
    /// Whether it still differed at the end (a repair that did not converge).
    pub still_differing: bool,
}

/// The end of `vergent repair`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The node that ran it.
    pub node: String,
    /// Whether it only compared.
    pub dry_run: bool,
    /// Peers compared with.
    pub peers: Vec<String>,
    /// What was compared, found and moved.
    pub counts: SyncCounts,
    /// Each partition that differed.
    pub differences: Vec<PartitionDifference>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Whether every compared partition was in sync at the end.
    pub in_sync: bool,
    /// What went wrong: unreachable peers, partitions that did not converge.
    pub problems: Vec<String>,
    /// What a run already going when the repair was asked for moved while the repair
    /// waited for it (included in `counts`).
    pub waited_for: Option<SyncCounts>,
}

/// What started an anti-entropy run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// `vergent repair` or the dashboard's `r`.
    #[default]
    Repair,
    /// Background anti-entropy on its interval.
    Background,
    /// Filling partitions this node takes writes for but does not hold yet.
    Fill,
}

impl RunKind {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Repair => "repair",
            RunKind::Background => "background",
            RunKind::Fill => "fill",
        }
    }
}

/// Most peer names a run's summary carries in a status.
pub const RUN_PEERS_GOSSIPED_MAX: usize = 6;

/// A run in progress, as its node tells the cluster in its status: every node's
/// dashboard shows who repairs whom and how far it has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// What started it.
    pub kind: RunKind,
    /// The peers it compares with (at most [`RUN_PEERS_GOSSIPED_MAX`]).
    pub peers: Vec<String>,
    /// Peers in all.
    pub peers_total: u16,
    /// (partition, peer) pairs finished.
    pub done: u64,
    /// (partition, peer) pairs to do.
    pub total: u64,
    /// Entries moved so far.
    pub keys_moved: u64,
    /// Bytes moved so far (entries and tree metadata), counted per finished peer.
    pub bytes_moved: u64,
    /// Wall ms when it started.
    pub started_ms: u64,
}

/// What a member says about its anti-entropy, every second with its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    /// The partitions it takes writes for that it has not itself compared equal with
    /// every other replica since it last changed them; `None` when the list did not
    /// fit its status (take every one it holds as such).
    pub not_checked_with_all: Option<Vec<PartitionId>>,
    /// The partitions it takes writes for that it has not confirmed in sync
    /// ([`crate::antientropy::confirm`]); `None` when the list did not fit its status:
    /// take every one it holds as unconfirmed.
    pub unconfirmed: Option<Vec<PartitionId>>,
    /// Wall ms of its oldest confirmation among the partitions it confirmed.
    pub oldest_confirmed_ms: Option<u64>,
    /// The run in progress, if any.
    pub run: Option<RunSummary>,
}

/// How far a repair has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairProgress {
    /// (partition, peer) pairs finished.
    pub done: u64,
    /// (partition, peer) pairs to do.
    pub total: u64,
    /// Entries moved so far.
    pub keys_moved: u64,
}

/// This node's anti-entropy state with one peer, as `status` shows it. (Sync lag, how
/// far behind the peer may be, is in the member's row: see
/// [`crate::antientropy::confirm`].)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSync {
    /// The peer.
    pub peer: String,
    /// Wall ms when the last exchange with it completed.
    pub last_exchange_ms: Option<u64>,
    /// Wall ms of the start of the last exchange that ended with everything in sync.
    pub last_in_sync_ms: Option<u64>,
    /// Partitions in disagreement at the last compare (the verification that ends an
    /// exchange, or the comparison of a dry run).
    pub partitions_differing: u64,
    /// Which ones.
    pub differing_partitions: Vec<PartitionId>,
    /// Bytes moved with this peer since this node started (entries and metadata).
    pub bytes_moved: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}
