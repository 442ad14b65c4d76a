//! The Merkle trees over the stored data: reads for anti-entropy, and their upkeep in
//! the write transaction.

use super::*;

/// The Merkle trees, as anti-entropy reads them.
impl Store {
    /// The root of `partition`'s tree: digest and entry count. From memory; no scan.
    pub fn tree_root(&self, partition: PartitionId) -> Result<TreeNode, StoreError> {
        self.tree_node(partition, 0, 0)
    }

    /// Node `index` at `level` of `partition`'s tree (level 3 are the leaves).
    pub fn tree_node(
        &self,
        partition: PartitionId,
        level: u8,
        index: usize,
    ) -> Result<TreeNode, StoreError> {
        let missing = StoreError::NoSuchTreeNode { level, index };
        if level < tree::LEAF_LEVEL {
            return self
                .tables
                .inner(partition)?
                .node(level, index)
                .ok_or(missing);
        }
        let leaf = u16::try_from(index)
            .ok()
            .filter(|&leaf| level == tree::LEAF_LEVEL && usize::from(leaf) < tree::LEAVES)
            .ok_or(missing)?;
        let rtxn = self.tables.read_txn()?;
        self.tables.leaf(&rtxn, partition, leaf)
    }

    /// The 16 children of node `index` at inner `level` of `partition`'s tree.
    pub fn tree_children(
        &self,
        partition: PartitionId,
        level: u8,
        index: usize,
    ) -> Result<Vec<TreeNode>, StoreError> {
        let missing = StoreError::NoSuchTreeNode { level, index };
        if level >= tree::LEAF_LEVEL || tree::inner_index(level, index).is_none() {
            return Err(missing);
        }
        let first = index * tree::FANOUT;
        if level + 1 < tree::LEAF_LEVEL {
            let inner = self.tables.inner(partition)?;
            return (first..first + tree::FANOUT)
                .map(|i| inner.node(level + 1, i).ok_or(missing.clone()))
                .collect();
        }
        let rtxn = self.tables.read_txn()?;
        // An inner node at the last inner level has index < 256, so its leaves are < 4096.
        (first..first + tree::FANOUT)
            .map(|leaf| self.tables.leaf(&rtxn, partition, leaf as u16))
            .collect()
    }

    /// The entries of `partition` whose leaves are in `leaves`, in storage order,
    /// starting after `after` (a resume point returned by an earlier call), up to
    /// `bytes_max` bytes of stored records. Returns them and the resume point when there
    /// are more.
    pub fn entries_in(
        &self,
        partition: PartitionId,
        leaves: std::ops::Range<u16>,
        after: Option<&[u8]>,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), StoreError> {
        self.entries_page(partition, leaves, after, usize::MAX, bytes_max)
    }

    /// Like [`Store::entries_in`], and at most `entries_max` entries (at least one, when
    /// there is one).
    pub fn entries_page(
        &self,
        partition: PartitionId,
        leaves: std::ops::Range<u16>,
        after: Option<&[u8]>,
        entries_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), StoreError> {
        let rtxn = self.tables.read_txn()?;
        let iter = self.tables.range(&rtxn, partition, leaves, after)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut last_key: Vec<u8> = Vec::new();
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading a leaf"))?;
            let Some(key) = user_key(dkey) else {
                continue;
            };
            if !out.is_empty() && (out.len() >= entries_max || bytes + value.len() > bytes_max) {
                return Ok((out, Some(last_key)));
            }
            bytes += value.len();
            last_key.clear();
            last_key.extend_from_slice(dkey);
            out.push(Entry {
                key: key.to_vec(),
                record: Record::decode(value).map_err(StoreError::corrupt_record)?,
            });
        }
        Ok((out, None))
    }

    /// The key, version and kind (tombstone or not) of each entry of `partition` whose
    /// leaves are in `leaves`, without their values; at most `entries_max` of them.
    /// The flag says whether that was all.
    pub fn versions_in(
        &self,
        partition: PartitionId,
        leaves: std::ops::Range<u16>,
        entries_max: usize,
    ) -> Result<(Vec<Listed>, bool), StoreError> {
        let rtxn = self.tables.read_txn()?;
        let iter = self.tables.range(&rtxn, partition, leaves, None)?;
        let mut out = Vec::new();
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading a leaf"))?;
            let Some(key) = user_key(dkey) else {
                continue;
            };
            if out.len() >= entries_max {
                return Ok((out, false));
            }
            let version = Record::decode_version(value).map_err(StoreError::corrupt_record)?;
            let kind = Record::stored_kind(value).map_err(StoreError::corrupt_record)?;
            out.push(Listed {
                key: key.to_vec(),
                version,
                dead_from_ms: kind.dead_from_ms(version),
                typed: kind.typed,
            });
        }
        Ok((out, true))
    }

    /// The data key an entry is stored under: the resume point just after it.
    pub fn resume_point(&self, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        let location = self.tables.locate(key)?;
        Ok(data_key(location, key))
    }

    /// Recomputes `partition`'s tree from its data and compares it with the tree kept
    /// incrementally (leaves on disk, inner nodes in memory).
    pub fn verify_tree(&self, partition: PartitionId) -> Result<bool, StoreError> {
        use std::collections::BTreeMap;
        let settings = self.cluster().ok_or(StoreError::NoCluster)?;
        let rtxn = self.tables.read_txn()?;
        let prefix = partition_prefix(partition);
        let mut rebuilt: BTreeMap<u16, TreeNode> = BTreeMap::new();
        let mut stored: BTreeMap<u16, TreeNode> = BTreeMap::new();
        let iter = self
            .tables
            .data
            .prefix_iter(&rtxn, &prefix)
            .map_err(StoreError::lmdb("reading data"))?;
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading data"))?;
            let Some(key) = user_key(dkey) else {
                let node = TreeNode::decode(value).ok_or(StoreError::Corrupt {
                    what: "tree leaf",
                    detail: "wrong size".into(),
                })?;
                if let Some((_, leaf)) = partition_and_leaf(dkey) {
                    stored.insert(leaf, node);
                }
                continue;
            };
            let record = Record::decode(value).map_err(StoreError::corrupt_record)?;
            let leaf = tree::locate(key, settings.partitions).leaf;
            let node = rebuilt.entry(leaf).or_default();
            node.digest =
                node.digest
                    .wrapping_add(tree::entry_hash(&settings.tree_key, key, &record));
            node.count += 1;
        }
        let rebuilt_inner = InnerTree::from_leaves(rebuilt.iter().map(|(l, n)| (*l, *n)));
        let cached = self.tables.inner(partition)?;
        Ok(rebuilt == stored && *cached == rebuilt_inner)
    }
}

impl Tables {
    /// The rows of `partition` under `leaves`, after `after`: leaf rows and records.
    /// A resume point outside the range reads nothing outside it.
    pub(super) fn range<'t>(
        &self,
        rtxn: &'t RoTxn<'_, WithoutTls>,
        partition: PartitionId,
        leaves: std::ops::Range<u16>,
        after: Option<&[u8]>,
    ) -> Result<heed::RoRange<'t, Bytes, Bytes>, StoreError> {
        use std::ops::Bound;
        let start = leaf_key(partition, leaves.start).to_vec();
        let lower = match after {
            Some(after) if after >= start.as_slice() => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(start),
        };
        let upper = if usize::from(leaves.end) < tree::LEAVES {
            Bound::Excluded(leaf_key(partition, leaves.end).to_vec())
        } else {
            // The range ends where the next partition begins (the last one, at the end).
            match partition.checked_add(1) {
                Some(next) => Bound::Excluded(partition_prefix(next).to_vec()),
                None => Bound::Unbounded,
            }
        };
        let bounds = (
            lower.as_ref().map(Vec::as_slice),
            upper.as_ref().map(Vec::as_slice),
        );
        self.data
            .range(rtxn, &bounds)
            .map_err(StoreError::lmdb("reading a leaf"))
    }

    pub(super) fn settings(&self) -> Result<&ClusterSettings, StoreError> {
        self.cluster.get().ok_or(StoreError::NoCluster)
    }

    pub(super) fn locate(&self, key: &[u8]) -> Result<Location, StoreError> {
        Ok(tree::locate(key, self.settings()?.partitions))
    }

    pub(super) fn inner(
        &self,
        partition: PartitionId,
    ) -> Result<std::sync::RwLockReadGuard<'_, InnerTree>, StoreError> {
        let trees = self.trees.get().ok_or(StoreError::NoCluster)?;
        let tree = trees
            .get(usize::from(partition))
            .ok_or(StoreError::NoCluster)?;
        Ok(tree.read().expect("tree lock"))
    }

    /// Loads the cluster's settings and builds every partition's inner tree from the
    /// stored leaves (one scan of the `merkle` table at start).
    pub(super) fn install_cluster(
        &self,
        rtxn: &RoTxn<'_, WithoutTls>,
        settings: ClusterSettings,
    ) -> Result<(), StoreError> {
        let _ = self.cluster.set(settings);
        let mut trees = Vec::with_capacity(usize::from(settings.partitions));
        for partition in 0..settings.partitions {
            let leaves = self.leaves(rtxn, partition)?;
            trees.push(RwLock::new(InnerTree::from_leaves(leaves)));
        }
        let _ = self.trees.set(trees);
        Ok(())
    }

    /// Every non-empty leaf of `partition`: one seek per leaf, skipping empty ranges,
    /// never reading the records between them.
    pub(super) fn leaves(
        &self,
        rtxn: &RoTxn<'_, WithoutTls>,
        partition: PartitionId,
    ) -> Result<Vec<(u16, TreeNode)>, StoreError> {
        let mut out = Vec::new();
        let mut leaf: u32 = 0;
        while leaf < tree::LEAVES as u32 {
            let from = leaf_key(partition, leaf as u16);
            let found = self
                .data
                .get_greater_than_or_equal_to(rtxn, &from)
                .map_err(StoreError::lmdb("reading the tree"))?;
            let Some((key, value)) = found else { break };
            let Some((found_partition, found_leaf)) = partition_and_leaf(key) else {
                break;
            };
            if found_partition != partition {
                break;
            }
            if user_key(key).is_none() {
                let node = TreeNode::decode(value).ok_or(StoreError::Corrupt {
                    what: "tree leaf",
                    detail: format!("partition {partition} leaf {found_leaf}: wrong size"),
                })?;
                out.push((found_leaf, node));
            }
            leaf = u32::from(found_leaf) + 1;
        }
        Ok(out)
    }

    pub(super) fn leaf(
        &self,
        rtxn: &RoTxn<'_, WithoutTls>,
        partition: PartitionId,
        leaf: u16,
    ) -> Result<TreeNode, StoreError> {
        let raw = self
            .data
            .get(rtxn, &leaf_key(partition, leaf))
            .map_err(StoreError::lmdb("reading the tree"))?;
        match raw {
            None => Ok(TreeNode::default()),
            Some(bytes) => TreeNode::decode(bytes).ok_or(StoreError::Corrupt {
                what: "tree leaf",
                detail: format!("partition {partition} leaf {leaf}: wrong size"),
            }),
        }
    }

    /// Applies `delta` (built only when trees are kept) to its leaf in this
    /// transaction, and notes it for the in-memory tree once the transaction commits: the
    /// tree changes in the same transaction as the data, so a crash never leaves them
    /// apart.
    pub(super) fn change_tree(
        &self,
        wtxn: &mut RwTxn<'_>,
        location: Location,
        tree_deltas: &mut Vec<(Location, Delta)>,
        delta: impl FnOnce() -> Delta,
    ) -> Result<(), StoreError> {
        if self.maintain_tree {
            let delta = delta();
            self.update_leaf(wtxn, location, &delta)?;
            tree_deltas.push((location, delta));
        }
        Ok(())
    }

    /// The record stored under data key `dkey`, read in a write transaction.
    pub(super) fn record_at(
        &self,
        wtxn: &RwTxn<'_>,
        dkey: &[u8],
    ) -> Result<Option<Record>, StoreError> {
        match self
            .data
            .get(wtxn, dkey)
            .map_err(|e| self.write_error("reading a record", e))?
        {
            None => Ok(None),
            Some(bytes) => Record::decode(bytes)
                .map(Some)
                .map_err(StoreError::corrupt_record),
        }
    }

    pub(super) fn update_leaf(
        &self,
        wtxn: &mut RwTxn<'_>,
        location: Location,
        delta: &Delta,
    ) -> Result<(), StoreError> {
        let key = leaf_key(location.partition, location.leaf);
        let current = match self
            .data
            .get(wtxn, &key)
            .map_err(|e| self.write_error("reading the tree", e))?
        {
            None => TreeNode::default(),
            Some(bytes) => TreeNode::decode(bytes).ok_or(StoreError::Corrupt {
                what: "tree leaf",
                detail: "wrong size".into(),
            })?,
        };
        let next = current.plus(delta);
        if next.count == 0 {
            self.data
                .delete(wtxn, &key)
                .map_err(|e| self.write_error("writing the tree", e))?;
        } else {
            self.data
                .put(wtxn, &key, &next.encode())
                .map_err(|e| self.write_error("writing the tree", e))?;
        }
        Ok(())
    }
}
