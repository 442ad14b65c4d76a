//! Anti-entropy: finding and repairing what push replication missed, by comparing
//! Merkle trees kept over each partition's key range.
//!
//! - [`tree`]: the tree's shape and digest arithmetic (the crate's [`crate::tree`], below storage).
//! - [`messages`]: what two replicas say to each other, and the bounds on each message.
//! - [`error`]: why an exchange step failed, and whose fault it was.
//! - [`exchange`]: the deterministic state machine of one exchange.
//! - [`run`]: one run with one peer (compares, its exchanges, the verifying passes).
//! - [`local_tree`]: the local replica as an exchange reads it, and the summaries of its tree.
//! - [`respond`]: the responder's side of each step, and the checks of what a peer sends.
//! - [`report`]: what a repair reports and what `status` shows per peer.
//! - [`local`]: two local stores reconciled in one process (tests, benchmarks).

pub mod confirm;
pub mod error;
pub mod exchange;
pub mod local;
pub mod local_tree;
pub mod messages;
pub mod report;
pub mod respond;
pub mod run;
pub use crate::tree;
