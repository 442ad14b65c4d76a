//! Anti-entropy: finding and repairing what push replication missed, by comparing
//! Merkle trees kept over each partition's key range.
//!
//! - [`tree`]: the tree's shape and digest arithmetic.
//! - [`messages`]: what two replicas say to each other.
//! - [`exchange`]: the deterministic state machine of one exchange, and the
//!   responder's side of each step.
//! - [`report`]: what a repair reports and what `status` shows per peer.

pub mod exchange;
pub mod messages;
pub mod report;
pub mod tree;
