//! The shape of a partition's Merkle tree and the arithmetic of its digests.
//!
//! Each partition has a fixed tree over the hash space of its keys: fanout 16, three
//! levels below the root, 4,096 leaves. A key's leaf is given by the bits of
//! `blake3(key)` that follow the ones that chose its partition, so leaves split a
//! partition evenly whatever the keys look like.
//!
//! A node's digest is the wrapping 256-bit sum of its entries' hashes
//! `blake3_keyed(cluster key, key ‖ version ‖ blake3(value))`, and it carries its entry
//! count. Addition is order-independent and invertible, so a write updates its leaf in
//! O(1) (subtract the old entry's hash, add the new one) and its path in O(depth), never
//! rescanning; and an inner node is simply the sum of its children. The hash is keyed
//! with a secret every node of the cluster shares and no client knows, so nobody can
//! choose writes whose hashes cancel out and hide a divergence.
//!
//! Why these numbers: 4,096 leaves per partition keep about one key per leaf at a
//! million keys on 256 partitions, so a differing leaf costs a handful of bytes to list;
//! fanout 16 finds a single difference in three round trips after the root; the inner
//! levels (273 nodes per partition, 40 bytes each) stay in memory for every partition
//! (2.8 MB at 256 partitions), so confirming an identical partition never touches disk.

use std::fmt;

use crate::placement::PartitionId;
use crate::record::{Payload, Record};

/// Children per inner node.
pub const FANOUT: usize = 16;
/// Bits of key hash per level.
pub const FANOUT_BITS: u32 = 4;
/// Levels below the root; leaves are at this level.
pub const LEAF_LEVEL: u8 = 3;
/// Leaves per partition.
pub const LEAVES: usize = 1 << (FANOUT_BITS * LEAF_LEVEL as u32);
/// Inner nodes kept in memory per partition (levels 0 to `LEAF_LEVEL - 1`).
pub const INNER_NODES: usize = 1 + FANOUT + FANOUT * FANOUT;

/// Where a key lives: its partition, its leaf, and the bits of its hash used to tell
/// keys apart in exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The partition.
    pub partition: PartitionId,
    /// The leaf within the partition, `0..LEAVES`.
    pub leaf: u16,
    /// The key's position within the partition's hash space: the bits below the
    /// partition's; its top bits are the leaf.
    pub position: u64,
}

/// The partition and leaf of `key` among `partitions`.
pub fn locate(key: &[u8], partitions: u16) -> Location {
    let (partition, position) = crate::placement::key_position(key, partitions);
    let leaf = (position >> (64 - FANOUT_BITS * LEAF_LEVEL as u32)) as u16;
    Location {
        partition,
        leaf,
        position,
    }
}

/// A 256-bit digest under wrapping addition.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u64; 4]);

impl Digest {
    /// The digest of nothing.
    pub const ZERO: Digest = Digest([0; 4]);

    /// From 32 bytes (little-endian limbs).
    pub fn from_bytes(bytes: &[u8; 32]) -> Digest {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        Digest(limbs)
    }

    /// To 32 bytes (little-endian limbs).
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, limb) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        out
    }

    /// `self + other`, modulo 2^256.
    pub fn wrapping_add(self, other: Digest) -> Digest {
        let mut out = [0u64; 4];
        let mut carry = 0u64;
        for (i, slot) in out.iter_mut().enumerate() {
            let (sum, c1) = self.0[i].overflowing_add(other.0[i]);
            let (sum, c2) = sum.overflowing_add(carry);
            *slot = sum;
            carry = u64::from(c1) + u64::from(c2);
        }
        Digest(out)
    }

    /// `self - other`, modulo 2^256.
    pub fn wrapping_sub(self, other: Digest) -> Digest {
        self.wrapping_add(other.negate())
    }

    fn negate(self) -> Digest {
        let inverted = Digest([!self.0[0], !self.0[1], !self.0[2], !self.0[3]]);
        inverted.wrapping_add(Digest([1, 0, 0, 0]))
    }

    /// A short fingerprint, salted so that an accidental collision in one exchange is
    /// not repeated in the next.
    pub fn fingerprint(self, count: u64, salt: u64) -> u32 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&salt.to_le_bytes());
        hasher.update(&self.to_bytes());
        hasher.update(&count.to_le_bytes());
        let bytes = hasher.finalize();
        u32::from_le_bytes(bytes.as_bytes()[..4].try_into().expect("4 bytes"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short_hex())
    }
}

impl Digest {
    /// The first 8 bytes in hex, for people.
    pub fn short_hex(&self) -> String {
        self.to_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// A tree node: the sum of its entries' hashes and their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Node {
    /// Sum of entry hashes.
    pub digest: Digest,
    /// Entries below.
    pub count: u64,
}

impl Node {
    /// `self` with `delta` added.
    pub fn plus(self, delta: &Delta) -> Node {
        Node {
            digest: self
                .digest
                .wrapping_add(delta.digest_added)
                .wrapping_sub(delta.digest_removed),
            count: self.count.wrapping_add(delta.count as u64),
        }
    }

    /// Stored form: digest (32) ‖ count (u64 BE).
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..32].copy_from_slice(&self.digest.to_bytes());
        out[32..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    /// Parses the stored form.
    pub fn decode(bytes: &[u8]) -> Option<Node> {
        let digest: &[u8; 32] = bytes.get(..32)?.try_into().ok()?;
        let count = u64::from_be_bytes(bytes.get(32..40)?.try_into().ok()?);
        Some(Node {
            digest: Digest::from_bytes(digest),
            count,
        })
    }
}

/// A change to a node: hashes added and removed, entries gained or lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta {
    /// Sum of hashes added.
    pub digest_added: Digest,
    /// Sum of hashes removed.
    pub digest_removed: Digest,
    /// Entries gained (negative: lost).
    pub count: i64,
}

impl Delta {
    /// Merges `other` into `self`.
    pub fn merge(&mut self, other: &Delta) {
        self.digest_added = self.digest_added.wrapping_add(other.digest_added);
        self.digest_removed = self.digest_removed.wrapping_add(other.digest_removed);
        self.count += other.count;
    }
}

/// The hash an entry contributes to its leaf.
pub fn entry_hash(tree_key: &[u8; 32], key: &[u8], record: &Record) -> Digest {
    let (kind, value_hash) = match &record.payload {
        Payload::Value(value) => (0, *blake3::hash(value).as_bytes()),
        Payload::Tombstone => (1, [0xff; 32]),
        Payload::Typed(state) => (2, *blake3::hash(&state.encode()).as_bytes()),
    };
    let mut hasher = blake3::Hasher::new_keyed(tree_key);
    hasher.update(&(key.len() as u16).to_be_bytes());
    hasher.update(key);
    hasher.update(&record.version.hlc.as_u64().to_be_bytes());
    hasher.update(&record.version.node.0.to_be_bytes());
    hasher.update(&[kind]);
    hasher.update(&value_hash);
    if let Some(expires) = record.expires_ms {
        hasher.update(&expires.to_be_bytes());
    }
    Digest::from_bytes(hasher.finalize().as_bytes())
}

/// The index of node `(level, index)` in a partition's inner-node array; `None` for a
/// leaf or a node the level does not have.
pub fn inner_index(level: u8, index: usize) -> Option<usize> {
    match level {
        0 if index == 0 => Some(0),
        1 if index < FANOUT => Some(1 + index),
        2 if index < FANOUT * FANOUT => Some(1 + FANOUT + index),
        _ => None,
    }
}

/// The ancestor of `leaf` at `level` (0 is the root; a level past the leaves is the leaf).
pub fn ancestor(leaf: u16, level: u8) -> usize {
    usize::from(leaf) >> (FANOUT_BITS * u32::from(LEAF_LEVEL.saturating_sub(level)))
}

/// The leaves under node `(level, index)`: a contiguous range, empty for a node the
/// tree does not have.
pub fn leaf_range(level: u8, index: usize) -> std::ops::Range<u16> {
    if level > LEAF_LEVEL {
        return 0..0;
    }
    let span = 1usize << (FANOUT_BITS * u32::from(LEAF_LEVEL - level));
    let start = index.saturating_mul(span).min(LEAVES);
    let end = index.saturating_add(1).saturating_mul(span).min(LEAVES);
    start as u16..end as u16
}

/// The inner levels of one partition's tree, kept in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct InnerTree {
    nodes: Vec<Node>,
}

impl Default for InnerTree {
    fn default() -> Self {
        InnerTree {
            nodes: vec![Node::default(); INNER_NODES],
        }
    }
}

impl fmt::Debug for InnerTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InnerTree(root {:?}, {} entries)",
            self.root().digest,
            self.root().count
        )
    }
}

impl InnerTree {
    /// Builds the inner levels from leaves.
    pub fn from_leaves(leaves: impl IntoIterator<Item = (u16, Node)>) -> InnerTree {
        let mut tree = InnerTree::default();
        for (leaf, node) in leaves {
            tree.apply(
                leaf,
                &Delta {
                    digest_added: node.digest,
                    digest_removed: Digest::ZERO,
                    count: node.count as i64,
                },
            );
        }
        tree
    }

    /// Adds a leaf's change to every ancestor.
    pub fn apply(&mut self, leaf: u16, delta: &Delta) {
        for level in 0..LEAF_LEVEL {
            if let Some(node) =
                inner_index(level, ancestor(leaf, level)).and_then(|at| self.nodes.get_mut(at))
            {
                *node = node.plus(delta);
            }
        }
    }

    /// The root.
    pub fn root(&self) -> Node {
        self.nodes[0]
    }

    /// Node `index` at inner `level`; `None` for a leaf or a node the level does not have.
    pub fn node(&self, level: u8, index: usize) -> Option<Node> {
        self.nodes.get(inner_index(level, index)?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::record::{NodeId, Version};
    use proptest::prelude::*;

    #[test]
    fn leaves_split_a_partition_evenly_and_nest_under_their_ancestors() {
        let mut counts = vec![0u32; LEAVES];
        for i in 0..400_000u32 {
            let loc = locate(&i.to_be_bytes(), 1);
            counts[usize::from(loc.leaf)] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 50 && *max < 160, "{min} {max}");
        assert_eq!(leaf_range(0, 0), 0..4096);
        assert_eq!(leaf_range(1, 2), 512..768);
        assert_eq!(leaf_range(2, 17), 272..288);
        assert_eq!(ancestor(300, 1), 1);
        assert_eq!(ancestor(300, 2), 18);
    }

    #[test]
    fn nodes_the_tree_does_not_have_are_none_or_empty_never_a_panic() {
        assert_eq!(inner_index(1, 16), None);
        assert_eq!(inner_index(2, 256), None);
        assert_eq!(inner_index(3, 0), None);
        assert_eq!(inner_index(200, 0), None);
        assert_eq!(InnerTree::default().node(1, 16), None);
        assert_eq!(leaf_range(4, 0), 0..0);
        assert_eq!(leaf_range(3, 70_000), 4096..4096);
        assert_eq!(leaf_range(1, 16), 4096..4096);
        assert_eq!(ancestor(4095, 9), 4095);
    }

    #[test]
    fn the_partition_agrees_with_placement() {
        for i in 0..1000u32 {
            let key = i.to_be_bytes();
            assert_eq!(
                locate(&key, 256).partition,
                crate::placement::partition_of(&key, 256)
            );
            assert_eq!(
                locate(&key, 7).partition,
                crate::placement::partition_of(&key, 7)
            );
        }
    }

    proptest! {
        #[test]
        fn addition_is_invertible_and_order_free(a: [u64; 4], b: [u64; 4], c: [u64; 4]) {
            let (a, b, c) = (Digest(a), Digest(b), Digest(c));
            prop_assert_eq!(a.wrapping_add(b).wrapping_sub(b), a);
            prop_assert_eq!(a.wrapping_add(b).wrapping_add(c), c.wrapping_add(a).wrapping_add(b));
            prop_assert_eq!(Digest::from_bytes(&a.to_bytes()), a);
        }

        #[test]
        fn entry_hashes_depend_on_key_version_value_and_cluster_key(hlc: u64, node: u64, value: Vec<u8>) {
            let record = Record {
                version: Version { hlc: Timestamp::from_u64(hlc), node: NodeId(node) },
                payload: Payload::Value(value.clone()), expires_ms: None,
            };
            let base = entry_hash(&[1; 32], b"k", &record);
            prop_assert_ne!(base, entry_hash(&[2; 32], b"k", &record));
            prop_assert_ne!(base, entry_hash(&[1; 32], b"j", &record));
            let tomb = Record { payload: Payload::Tombstone, ..record.clone() };
            prop_assert_ne!(base, entry_hash(&[1; 32], b"k", &tomb));
            let mut later = record.clone();
            later.version.hlc = Timestamp::from_u64(hlc.wrapping_add(1));
            prop_assert_ne!(base, entry_hash(&[1; 32], b"k", &later));
        }
    }
}
