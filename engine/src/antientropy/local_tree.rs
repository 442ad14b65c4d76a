//! The local replica as an exchange sees it: the reads an exchange makes
//! ([`LocalTree`], and its implementation over the node's own [`Store`]), and the
//! summaries and fingerprints both sides compute from them.

use super::error::SyncError;
use super::messages::{NodeRef, NodeSummary, RootSummary};
use super::tree::{self, Node};
use crate::placement::PartitionId;
use crate::record::Entry;
use crate::storage::Store;

pub use crate::storage::Listed;

/// What an exchange needs from the local replica. Reads only; received entries come
/// out of [`Exchange::poll_apply`] for the caller to apply.
///
/// [`Exchange::poll_apply`]: super::exchange::Exchange::poll_apply
pub trait LocalTree {
    /// Partitions in the cluster.
    fn partitions(&self) -> u16;
    /// A node of `partition`'s tree.
    fn node(&self, partition: PartitionId, node: NodeRef) -> Result<Node, SyncError>;
    /// The `FANOUT` children of an inner node.
    fn children(&self, partition: PartitionId, node: NodeRef) -> Result<Vec<Node>, SyncError>;
    /// A page of the entries under `node`, after the resume point `after`: at most
    /// `entries_max` entries and `bytes_max` bytes of records (at least one entry, when
    /// there is one).
    fn entries(
        &self,
        partition: PartitionId,
        node: NodeRef,
        after: Option<&[u8]>,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), SyncError>;
    /// The entries under `node` without their values, at most `entries_max` of them, and
    /// whether that was all.
    fn versions(
        &self,
        partition: PartitionId,
        node: NodeRef,
        entries_max: usize,
    ) -> Result<(Vec<Listed>, bool), SyncError>;
    /// The entry of `key`, if there is one.
    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, SyncError>;
    /// The resume point just after the entry of `key`.
    fn resume_point(&self, key: &[u8]) -> Result<Vec<u8>, SyncError>;
}

/// Whether `entry` is dead (a tombstone, an expired entry) since before the purge
/// horizon.
pub fn purgeable(entry: &Entry, horizon_ms: u64) -> bool {
    entry
        .record
        .dead_from_ms()
        .is_some_and(|dead| dead < horizon_ms)
}

pub(super) fn summary(node: Node, salt: u64) -> NodeSummary {
    NodeSummary {
        fp: node.digest.fingerprint(node.count, salt),
        count: node.count,
    }
}

/// The fingerprint of a root, as sent in the first round.
pub fn root_fp(node: Node, salt: u64) -> u64 {
    let low = u64::from(node.digest.fingerprint(node.count, salt));
    let high = u64::from(
        node.digest
            .fingerprint(node.count, salt ^ 0x9e37_79b9_7f4a_7c15),
    );
    (high << 32) | low
}

/// The root summary of `partition` for the first round.
pub fn root_summary(
    local: &impl LocalTree,
    partition: PartitionId,
    salt: u64,
) -> Result<RootSummary, SyncError> {
    let root = local.node(partition, NodeRef::ROOT)?;
    Ok(RootSummary {
        partition,
        fp: root_fp(root, salt),
        count: root.count,
    })
}

/// A replica's own store, read for an exchange.
impl LocalTree for Store {
    fn partitions(&self) -> u16 {
        self.cluster().map_or(0, |c| c.partitions)
    }

    fn node(&self, partition: PartitionId, node: NodeRef) -> Result<Node, SyncError> {
        Ok(self.tree_node(partition, node.level(), usize::from(node.index()))?)
    }

    fn children(&self, partition: PartitionId, node: NodeRef) -> Result<Vec<Node>, SyncError> {
        Ok(self.tree_children(partition, node.level(), usize::from(node.index()))?)
    }

    fn entries(
        &self,
        partition: PartitionId,
        node: NodeRef,
        after: Option<&[u8]>,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), SyncError> {
        let leaves = tree::leaf_range(node.level(), usize::from(node.index()));
        Ok(self.entries_page(partition, leaves, after, entries_max, bytes_max)?)
    }

    fn versions(
        &self,
        partition: PartitionId,
        node: NodeRef,
        entries_max: usize,
    ) -> Result<(Vec<Listed>, bool), SyncError> {
        let leaves = tree::leaf_range(node.level(), usize::from(node.index()));
        Ok(self.versions_in(partition, leaves, entries_max)?)
    }

    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, SyncError> {
        Ok(self.get(key)?.map(|record| Entry {
            key: key.to_vec(),
            record,
        }))
    }

    fn resume_point(&self, key: &[u8]) -> Result<Vec<u8>, SyncError> {
        Ok(Store::resume_point(self, key)?)
    }
}
