//! What the coordinator says: the actions it asks of the runtime, the outcomes of
//! operations and why they fail.

use std::sync::Arc;

use super::OpId;
use crate::record::{Entry, Record, Version};

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// Fewer replicas acknowledged a write than its consistency requires.
    #[error(
        "unavailable: {acked} of {replicas} replicas acknowledged, {required} required; the write may still be applied{}",
        failure_text(.failures)
    )]
    WriteUnavailable {
        /// Acknowledgements received.
        acked: usize,
        /// Replicas of the partition.
        replicas: usize,
        /// Acknowledgements required.
        required: usize,
        /// The replicas that failed, each with its reason, in the order they failed.
        failures: Vec<(String, String)>,
    },
    /// Fewer replicas answered a read than its consistency requires.
    #[error(
        "unavailable: {answered} of {replicas} replicas answered, {required} required{}",
        failure_text(.failures)
    )]
    ReadUnavailable {
        /// Replies received.
        answered: usize,
        /// Replicas of the partition.
        replicas: usize,
        /// Replies required.
        required: usize,
        /// Replicas that could not count, each with why.
        failures: Vec<(String, String)>,
    },
    /// The node stopped before the operation ended (it may still have been applied).
    #[error(
        "the node is shutting down; the operation may still have been applied; retry through another node"
    )]
    ShuttingDown,
    /// Too many operations in flight.
    #[error("overloaded: {limit} operations in flight, the limit; retry shortly")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// No member holds the partition (the node knows no members, not even itself).
    #[error("unavailable: no replicas for this key in the current membership view")]
    NoReplicas,
}

/// Why a replica that takes writes does not count towards a read, and a write needs
/// one acknowledgement more while it fills.
pub const FILLING_REASON: &str = "still filling this partition from the other replicas; until it has, its answers count only beside those of the replicas that hold the data, and an operation needs one more answer";

/// ` (n2: timed out; n3: dead)`, or nothing when no reason is known.
fn failure_text(failures: &[(String, String)]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = failures
        .iter()
        .map(|(replica, reason)| format!("{replica}: {reason}"))
        .collect();
    format!(" ({})", parts.join("; "))
}

/// The answer to an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The write reached `W` replicas.
    Written {
        /// Its version.
        version: Version,
    },
    /// The read reached `R` replicas; the highest version among them.
    Read {
        /// The record (a tombstone means deleted), or nothing.
        record: Option<Record>,
    },
    /// The operation failed.
    Failed(OpError),
}

/// What the coordinator wants the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply `entry` on replica `to` and report with [`Coordinator::handle_write_ack`].
    Write {
        /// The operation.
        op: OpId,
        /// The replica.
        to: String,
        /// The versioned entry.
        entry: Arc<Entry>,
    },
    /// Read `key` on replica `to` and report with [`Coordinator::handle_read_reply`].
    Read {
        /// The operation.
        op: OpId,
        /// The replica.
        to: String,
        /// The key.
        key: Arc<[u8]>,
    },
    /// Keep `entry` durably for `to`, which did not acknowledge it, and deliver it later.
    Hint {
        /// The replica that missed the write.
        to: String,
        /// The write.
        entry: Arc<Entry>,
    },
    /// Send the newest version to a replica that answered a read with an older one.
    Repair {
        /// The stale replica.
        to: String,
        /// The newest version seen.
        entry: Arc<Entry>,
    },
    /// The operation's answer; sent exactly once per operation.
    Reply {
        /// The operation.
        op: OpId,
        /// The answer.
        outcome: Outcome,
    },
}
