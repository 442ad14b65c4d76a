//! Anti-entropy: finding and repairing what push replication missed, by comparing
//! Merkle trees kept over each partition's key range.

pub mod tree;
