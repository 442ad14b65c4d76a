//! What two replicas say to each other during an exchange. Every message names one
//! partition (or, for `Roots`, many), so many exchanges share one connection.

use serde::{Deserialize, Serialize};

use super::error::SyncError;
use super::tree::{FANOUT, FANOUT_BITS, LEAF_LEVEL};
use crate::limits::{FRAME_OVERHEAD_BYTES, frame_bytes_max};
use crate::placement::PartitionId;
use crate::record::{Entry, Version};

/// Most partitions in one `Roots` request. Its answer, at most 244 bytes a partition
/// (16 summaries of at most 15 bytes, a partition number and a length), then fits in
/// the room every frame has beside its value, whatever the node's value limit.
pub const ROOTS_PER_REQUEST_MAX: usize = 256;
/// Most nodes in one `Children` request: the widest inner level. Its answer, at most
/// 241 bytes a node, fits in the same room.
pub const CHILDREN_NODES_MAX: usize = FANOUT * FANOUT;
/// Most list items in one `Compare` request, and most ranges. The positions wanted
/// back (at most 10 bytes each) then take at most 40 KiB of the answer.
pub const LIST_ITEMS_MAX: usize = 4096;
/// Most of its own entries a responder reads for one `Compare`. The requester keeps
/// each request under it from the counts it was sent; only a single leaf holding more
/// is refused.
pub const COMPARE_ENTRIES_READ_MAX: usize = 4 * LIST_ITEMS_MAX;
/// Most entries in one page of `Pull` or `Push`.
pub const PAGE_ENTRIES_MAX: usize = 4096;
/// Most bytes of stored records in one page, however large the frame may be.
pub const PAGE_BYTES_MAX: usize = 1 << 20;
/// Room in an answer for everything but its entries and wanted positions: message
/// tags, counts and a resume point.
pub const ANSWER_ENVELOPE_BYTES: usize = 1024;

const _: () = assert!(ROOTS_PER_REQUEST_MAX * 244 + ANSWER_ENVELOPE_BYTES <= FRAME_OVERHEAD_BYTES);
const _: () = assert!(CHILDREN_NODES_MAX * 241 + ANSWER_ENVELOPE_BYTES <= FRAME_OVERHEAD_BYTES);
// One entry of the largest key and value always fits beside the wanted positions, so
// every answer that has something to send sends at least one entry.
const _: () = assert!(
    ANSWER_ENVELOPE_BYTES + LIST_ITEMS_MAX * 10 + 3 + crate::limits::KEY_BYTES_MAX + 32
        <= FRAME_OVERHEAD_BYTES
);

/// The limits of the node an exchange runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLimits {
    /// The node's largest value: entries received past it are refused, and every
    /// answer fits in the frame limit it sets.
    pub value_bytes_max: usize,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            value_bytes_max: crate::limits::VALUE_BYTES_MAX_DEFAULT,
        }
    }
}

impl SyncLimits {
    /// The largest answer, in encoded bytes: the node's frame limit.
    pub fn answer_bytes_max(&self) -> usize {
        frame_bytes_max(self.value_bytes_max)
    }

    /// Room for entries in an answer that also carries `want_bytes` of positions.
    pub fn entry_bytes_max(&self, want_bytes: usize) -> usize {
        self.answer_bytes_max()
            .saturating_sub(ANSWER_ENVELOPE_BYTES + want_bytes)
    }
}

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
///
/// Only [`NodeRef::new`] and decoding make one. A decoded node is not trusted: the
/// responder checks every node of a request with [`NodeRef::check`] at its single
/// entry point, [`super::respond::respond`], before the tree is read. The check is
/// there rather than in a `Deserialize` of its own because postcard drops the message
/// of a custom decoding error: a node refused while decoding would reach the peer as
/// "malformed message", while the check names the level and the index. Past the check
/// the tree code still never indexes with an unchecked value (it answers `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    level: u8,
    index: u16,
}

impl NodeRef {
    /// The root of a partition's tree.
    pub const ROOT: NodeRef = NodeRef { level: 0, index: 0 };

    /// Node `index` at `level`, if the tree has it: `level <= LEAF_LEVEL` and
    /// `index < 16^level`.
    pub fn new(level: u8, index: u16) -> Result<NodeRef, SyncError> {
        NodeRef { level, index }.check()
    }

    /// The node itself if the tree has it; otherwise the error that names it.
    pub fn check(self) -> Result<NodeRef, SyncError> {
        if self.level <= LEAF_LEVEL && usize::from(self.index) < nodes_at(self.level) {
            Ok(self)
        } else {
            Err(SyncError::NoSuchNode {
                level: self.level,
                index: self.index,
            })
        }
    }

    /// Level below the root.
    pub fn level(self) -> u8 {
        self.level
    }

    /// Index within the level.
    pub fn index(self) -> u16 {
        self.index
    }

    /// Whether the node is a leaf.
    pub fn is_leaf(self) -> bool {
        self.level >= LEAF_LEVEL
    }

    /// Child `i` (`0..FANOUT`) of an inner node; `None` for a leaf or a bad `i`.
    pub fn child(self, i: usize) -> Option<NodeRef> {
        if self.is_leaf() || i >= FANOUT {
            return None;
        }
        let index = usize::from(self.index) * FANOUT + i;
        NodeRef::new(self.level + 1, u16::try_from(index).ok()?).ok()
    }
}

/// Nodes at `level` of the tree (0 for a level past the leaves).
fn nodes_at(level: u8) -> usize {
    if level > LEAF_LEVEL {
        0
    } else {
        1 << (FANOUT_BITS * u32::from(level))
    }
}

/// One entry as listed for a comparison: where its key falls, and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// The key's position in the partition's hash space.
    pub position: u64,
    /// The entry's version.
    pub version: Version,
    /// From when the entry is dead (a tombstone's write, an expiring entry's expiry),
    /// which the purge horizon is compared with.
    pub dead_from_ms: Option<u64>,
    /// Whether the entry is typed: replicas merge it, so where two versions differ
    /// each side sends its own.
    pub typed: bool,
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
    /// Every entry under `node` (the requester has none there), a page at a time, of at
    /// most [`PAGE_ENTRIES_MAX`] entries and the frame limit.
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
        /// How many entries the requester lacks or holds older. More than `send` has
        /// when the answer was cut at the frame limit (the requester asks again once it
        /// has applied these) or in a dry run.
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
