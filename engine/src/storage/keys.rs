//! The `data` table's keys, built and read in this one place.
//!
//! A record's row is `partition (u16 BE) ‖ leaf (u16 BE) ‖ user key`; a leaf's own row
//! (its digest and entry count) is `partition ‖ leaf`, with no user key. User keys have
//! at least one byte, so a leaf's row sorts just before its records, each leaf is one
//! contiguous range, and so is each partition (its rows share the 2-byte prefix).

use crate::placement::PartitionId;
use crate::tree::Location;

/// Length of a leaf's own row key: `partition ‖ leaf`, no user key.
const LEAF_KEY_BYTES: usize = 4;

/// The `data` table key: partition and leaf, big-endian, then the user key.
pub fn data_key_at(partition: PartitionId, leaf: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAF_KEY_BYTES + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&leaf.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The row of user key `key`, which lies at `location`.
pub(super) fn data_key(location: Location, key: &[u8]) -> Vec<u8> {
    data_key_at(location.partition, location.leaf, key)
}

/// The key of a leaf's own row.
pub(super) fn leaf_key(partition: PartitionId, leaf: u16) -> [u8; LEAF_KEY_BYTES] {
    let mut out = [0u8; LEAF_KEY_BYTES];
    out[..2].copy_from_slice(&partition.to_be_bytes());
    out[2..].copy_from_slice(&leaf.to_be_bytes());
    out
}

/// The prefix every row of `partition` shares.
pub(super) fn partition_prefix(partition: PartitionId) -> [u8; 2] {
    partition.to_be_bytes()
}

/// The user key of a record's row; `None` for a leaf's own row, which has none.
pub(super) fn user_key(dkey: &[u8]) -> Option<&[u8]> {
    dkey.get(LEAF_KEY_BYTES..).filter(|key| !key.is_empty())
}

/// The partition and leaf a row lies in; `None` for a key too short to be a row.
pub(super) fn partition_and_leaf(dkey: &[u8]) -> Option<(PartitionId, u16)> {
    match *dkey {
        [p0, p1, l0, l1, ..] => Some((u16::from_be_bytes([p0, p1]), u16::from_be_bytes([l0, l1]))),
        _ => None,
    }
}
