//! Which partition a key belongs to, and (with membership) which nodes hold it.
//!
//! Placement is a pure function: the same key and the same cluster shape give the same
//! answer on every node, every build and every platform.

/// A partition number, `0..partitions`.
pub type PartitionId = u16;

/// Default number of partitions in a new cluster.
pub const PARTITIONS_DEFAULT: u16 = 256;
/// Most partitions a cluster may have; each one carries a Merkle tree on every replica.
pub const PARTITIONS_MAX: u16 = 4096;

/// The partition of `key` among `partitions`: the top bits of `blake3(key)`, scaled to
/// the partition count so any count works and powers of two take the plain top bits.
pub fn partition_of(key: &[u8], partitions: u16) -> PartitionId {
    debug_assert!(partitions > 0);
    let hash = blake3::hash(key);
    let mut top = [0u8; 8];
    top.copy_from_slice(&hash.as_bytes()[..8]);
    let top = u64::from_be_bytes(top);
    ((u128::from(top) * u128::from(partitions)) >> 64) as PartitionId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_across_builds() {
        // Pinned values: changing the function would move every stored key.
        let p = partition_of(b"greeting", 256);
        assert_eq!(p, u16::from(blake3::hash(b"greeting").as_bytes()[0]));
        assert_eq!(partition_of(b"greeting", 1), 0);
    }

    #[test]
    fn partitions_are_used_evenly() {
        let mut counts = vec![0u32; 256];
        for i in 0..256_000u32 {
            counts[usize::from(partition_of(&i.to_be_bytes(), 256))] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "min {min} max {max}");
    }
}
