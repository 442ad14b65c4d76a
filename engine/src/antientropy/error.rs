//! Why an exchange step failed, and whose fault it was.

use crate::limits::LimitError;
use crate::placement::PartitionId;
use crate::storage::StoreError;

/// Why an exchange step failed. Each variant says whose fault it was, which is what
/// the node tells the peer: a bad request or a limit is the peer's, a storage failure
/// is this node's own. None of them changed anything: a step that fails applies nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The peer named a partition the cluster does not have.
    #[error("partition {partition} does not exist (the cluster has {partitions} partitions)")]
    NoSuchPartition {
        /// The partition named.
        partition: PartitionId,
        /// Partitions in the cluster.
        partitions: u16,
    },
    /// The peer named a tree node that does not exist.
    #[error(
        "tree node (level {level}, index {index}) does not exist: the tree has levels 0 to {leaf_level}, and level L has indexes 0 to 16^L - 1",
        leaf_level = super::tree::LEAF_LEVEL
    )]
    NoSuchNode {
        /// The level named.
        level: u8,
        /// The index named.
        index: u16,
    },
    /// The request makes no sense (a leaf asked for its children, a partition named
    /// twice, a resume point outside its range).
    #[error("bad sync request: {0}")]
    BadRequest(String),
    /// An entry sent by the peer breaks the key or value limits that every write obeys.
    #[error("entry refused: {0}")]
    BadEntry(#[from] LimitError),
    /// The request asks for more than one step may carry or read.
    #[error("sync request over its limit: {what} is {count}, the limit is {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// How many the request had or needed.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// This node's storage failed; the step was not carried out.
    #[error("{0}")]
    Storage(#[from] StoreError),
    /// The peer's answer breaks the protocol; nothing of it was applied.
    #[error("protocol violation in the peer's answer: {0}")]
    Protocol(String),
}

/// The node's books keep the last failure of each peer as text, for `status`.
impl From<SyncError> for String {
    fn from(err: SyncError) -> String {
        err.to_string()
    }
}
