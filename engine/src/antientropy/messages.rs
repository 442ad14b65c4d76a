//! What two replicas say to each other during an exchange. Every message names one
//! partition (or, for `Roots`, many), so many exchanges share one connection.

use serde::{Deserialize, Serialize};

use crate::placement::PartitionId;
use crate::record::{Entry, Version};

/// A tree node as sent: a salted fingerprint of its digest and count, and the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// Salted 32-bit fingerprint of (digest, count).
    pub fp: u32,
    /// Entries below.
    pub count: u64,
}

/// A partition's root as sent in the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSummary {
    /// The partition.
    pub partition: PartitionId,
    /// Salted 64-bit fingerprint of (digest, count).
    pub fp: u64,
    /// Entries in the partition.
    pub count: u64,
}

/// One differing partition in the answer to `Roots`: the responder's root count and
/// its root's children, so the first descent costs no extra round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferingRoot {
    /// The partition.
    pub partition: PartitionId,
    /// The responder's children of the root.
    pub children: Vec<NodeSummary>,
}

/// A tree node: its level (0 root, 3 leaves) and index within the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    /// Level below the root.
    pub level: u8,
    /// Index within the level.
    pub index: u16,
}

/// One entry as listed for a comparison: where its key falls, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// The key's position in the partition's hash space.
    pub position: u64,
    /// The entry's version.
    pub version: Version,
    /// Whether the entry is a tombstone.
    pub tombstone: bool,
}

/// The requester's entries under one node, to compare key by key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeList {
    /// The node whose range is listed.
    pub node: NodeRef,
    /// Every entry under it.
    pub entries: Vec<ListItem>,
}

/// An anti-entropy request, from the node running the exchange to a co-replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// Compare roots; the answer lists only the partitions that differ.
    Roots {
        /// Salt of the fingerprints.
        salt: u64,
        /// The requester's roots.
        roots: Vec<RootSummary>,
    },
    /// The children of these nodes (a whole level of one partition at once).
    Children {
        /// The partition.
        partition: PartitionId,
        /// Salt of the fingerprints.
        salt: u64,
        /// The nodes.
        nodes: Vec<NodeRef>,
    },
    /// Compare these ranges key by key; the answer carries the entries the responder
    /// has newer and the positions it wants.
    Compare {
        /// The partition.
        partition: PartitionId,
        /// Tombstones older than this (HLC wall ms) may be purged: they are neither
        /// sent to nor wanted from a side that has nothing for their key.
        purge_horizon_ms: u64,
        /// Only count; send nothing.
        dry_run: bool,
        /// The requester's entries.
        ranges: Vec<RangeList>,
    },
    /// Every entry under `node` (the requester has none there), a page at a time.
    Pull {
        /// The partition.
        partition: PartitionId,
        /// The node.
        node: NodeRef,
        /// Resume point from the previous page.
        after: Option<Vec<u8>>,
        /// Tombstones older than this are not sent.
        purge_horizon_ms: u64,
    },
    /// Entries the responder lacks or holds older.
    Push {
        /// The partition.
        partition: PartitionId,
        /// The entries.
        entries: Vec<Entry>,
    },
}

impl SyncRequest {
    /// The partition concerned (`None` for `Roots`).
    pub fn partition(&self) -> Option<PartitionId> {
        match self {
            SyncRequest::Roots { .. } => None,
            SyncRequest::Children { partition, .. }
            | SyncRequest::Compare { partition, .. }
            | SyncRequest::Pull { partition, .. }
            | SyncRequest::Push { partition, .. } => Some(*partition),
        }
    }
}

/// The answer to a [`SyncRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// The partitions whose roots differ.
    Roots {
        /// Each with the responder's root children.
        differing: Vec<DifferingRoot>,
    },
    /// Children of each requested node, in order: `FANOUT` summaries each.
    Children {
        /// Per node.
        nodes: Vec<Vec<NodeSummary>>,
    },
    /// The result of a key-by-key comparison.
    Compared {
        /// Entries the requester lacks or holds older (empty in a dry run).
        send: Vec<Entry>,
        /// How many entries `send` has, or would have in a dry run.
        send_count: u64,
        /// Positions the requester should push (it holds them newer, or only it has them).
        want: Vec<u64>,
        /// Keys that differ only by a tombstone past the purge horizon.
        pending_purge: u64,
    },
    /// A page of entries.
    Entries {
        /// The entries.
        entries: Vec<Entry>,
        /// Tombstones past the purge horizon left out of this page.
        pending_purge: u64,
        /// Where the next page starts, if there is one.
        next: Option<Vec<u8>>,
    },
    /// Entries pushed were applied.
    Pushed {
        /// How many changed the responder.
        applied: u32,
    },
}
