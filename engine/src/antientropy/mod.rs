//! Anti-entropy: finding and repairing what push replication missed, by comparing
//! Merkle trees kept over each partition's key range.
//!
//! - [`tree`]: the tree's shape and digest arithmetic.
//! - [`messages`]: what two replicas say to each other.
//! - [`exchange`]: the deterministic state machine of one exchange, and the
//!   responder's side of each step.
//! - [`report`]: what a repair reports and what `status` shows per peer.
//! - [`local`]: two local stores reconciled in one process (tests, benchmarks).

pub mod exchange;
pub mod local;
pub mod messages;
pub mod report;
pub mod tree;
