//! Removing data for good: tombstones past the purge horizon, partitions handed off, and
//! what the tables weigh.

use super::*;

impl Tables {
    /// Deletes `key` if its record is still the dead record (a tombstone, an expired
    /// record) at `version`. The caller chose it as dead before the purge horizon,
    /// which is in the past: an expiry never moves back, so it is dead still.
    pub(super) fn purge_tombstone(
        &self,
        wtxn: &mut RwTxn<'_>,
        key: &[u8],
        version: Version,
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<bool, StoreError> {
        let settings = *self.settings()?;
        let location = tree::locate(key, settings.partitions);
        let dkey = data_key(location, key);
        let Some(current) = self.record_at(wtxn, &dkey)? else {
            return Ok(false);
        };
        if current.version != version || current.dead_from_ms().is_none() {
            return Ok(false);
        }
        self.data
            .delete(wtxn, &dkey)
            .map_err(|e| self.write_error("purging a tombstone", e))?;
        self.change_tree(wtxn, location, tree_deltas, || Delta {
            digest_removed: tree::entry_hash(&settings.tree_key, key, &current),
            count: -1,
            ..Delta::default()
        })?;
        Ok(true)
    }

    /// Deletes every record of the buckets `ids` (deleted buckets); how many.
    pub(super) fn drop_buckets(
        &self,
        wtxn: &mut RwTxn<'_>,
        ids: &[crate::buckets::BucketId],
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let settings = *self.settings()?;
        let mut doomed = Vec::new();
        for row in self
            .data
            .iter(wtxn)
            .map_err(|e| self.write_error("reading for a bucket's deletion", e))?
        {
            let (dkey, value) =
                row.map_err(|e| self.write_error("reading for a bucket's deletion", e))?;
            let Some(key) = user_key(dkey) else {
                continue;
            };
            let (bucket, _) = crate::buckets::split_key(key);
            if ids.contains(&bucket) {
                let record = Record::decode(value).map_err(StoreError::corrupt_record)?;
                doomed.push((dkey.to_vec(), key.to_vec(), record));
            }
        }
        for (dkey, key, record) in &doomed {
            self.data
                .delete(wtxn, dkey)
                .map_err(|e| self.write_error("deleting a bucket's record", e))?;
            let location = tree::locate(key, settings.partitions);
            self.change_tree(wtxn, location, tree_deltas, || Delta {
                digest_removed: tree::entry_hash(&settings.tree_key, key, record),
                count: -1,
                ..Delta::default()
            })?;
        }
        Ok(doomed.len() as u64)
    }

    /// Deletes every record and tree leaf of `partition`; returns how many records.
    pub(super) fn drop_partition(
        &self,
        wtxn: &mut RwTxn<'_>,
        partition: PartitionId,
    ) -> Result<u64, StoreError> {
        let prefix = partition_prefix(partition);
        let mut removed = 0;
        {
            let mut iter = self
                .data
                .prefix_iter_mut(wtxn, &prefix)
                .map_err(|e| self.write_error("dropping a partition", e))?;
            while let Some(item) = iter.next() {
                let is_record = item
                    .map(|(key, _)| user_key(key).is_some())
                    .map_err(|e| self.write_error("dropping a partition", e))?;
                // SAFETY: no reference into the database is held across the deletion.
                #[allow(unsafe_code)]
                unsafe {
                    iter.del_current()
                        .map_err(|e| self.write_error("dropping a partition", e))?;
                }
                removed += u64::from(is_record);
            }
        }
        Ok(removed)
    }
}

/// Pages a table takes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    /// Rows.
    pub entries: u64,
    /// Bytes of its pages (branch, leaf and overflow).
    pub bytes: u64,
}

impl Store {
    /// Deletes every record of the buckets `ids` (deleted buckets), through the writer
    /// (queued at the call); how many.
    pub fn drop_buckets(
        &self,
        ids: Vec<crate::buckets::BucketId>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.drop_buckets(&ids))
    }

    /// As [`Store::drop_buckets`], in a transaction of its own on the calling thread.
    pub fn drop_buckets_now(&self, ids: &[crate::buckets::BucketId]) -> Result<u64, StoreError> {
        self.tables.transaction(|batch| batch.drop_buckets(ids))
    }

    /// The `data` table's size, and the part of it the tree's leaf rows take (each
    /// counted at its key, value and LMDB node header: 4 + 40 + 8 bytes).
    pub fn table_sizes(&self) -> Result<(TableSize, TableSize), StoreError> {
        let rtxn = self.tables.read_txn()?;
        let stat = self
            .tables
            .data
            .stat(&rtxn)
            .map_err(StoreError::lmdb("reading table sizes"))?;
        let data = TableSize {
            entries: stat.entries as u64,
            bytes: (stat.branch_pages + stat.leaf_pages + stat.overflow_pages) as u64
                * u64::from(stat.page_size),
        };
        let mut leaves = 0u64;
        for partition in 0..self.cluster().map_or(0, |c| c.partitions) {
            leaves += self.tables.leaves(&rtxn, partition)?.len() as u64;
        }
        Ok((
            data,
            TableSize {
                entries: leaves,
                bytes: leaves * 52,
            },
        ))
    }
}

/// Tombstone purging and partition handoff.
impl Store {
    /// Up to `limit` dead records of `partition` (tombstones, expired records) dead since
    /// before `horizon_ms` (see [`Record::dead_from_ms`]).
    pub fn tombstones_before(
        &self,
        partition: PartitionId,
        horizon_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Version)>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let iter = self
            .tables
            .data
            .prefix_iter(&rtxn, &partition_prefix(partition))
            .map_err(StoreError::lmdb("reading data"))?;
        let mut out = Vec::new();
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading data"))?;
            let Some(key) = user_key(dkey) else {
                continue;
            };
            let version = Record::decode_version(value).map_err(StoreError::corrupt_record)?;
            let kind = Record::stored_kind(value).map_err(StoreError::corrupt_record)?;
            if kind
                .dead_from_ms(version)
                .is_some_and(|dead| dead < horizon_ms)
            {
                out.push((key.to_vec(), version));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes these tombstones where they are still the keys' records; returns how many.
    pub fn purge(
        &self,
        tombstones: Vec<(Vec<u8>, Version)>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.purge(&tombstones))
    }

    /// Deletes a partition this node no longer holds; returns how many records went.
    pub fn drop_partition(
        &self,
        partition: PartitionId,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.writer
            .submit(move |batch| batch.drop_partition(partition))
    }

    /// As [`Store::purge`], in a transaction of its own on the calling thread (tools,
    /// tests, the simulator).
    pub fn purge_now(&self, tombstones: Vec<(Vec<u8>, Version)>) -> Result<u64, StoreError> {
        self.tables.transaction(|batch| batch.purge(&tombstones))
    }

    /// As [`Store::drop_partition`], in a transaction of its own on the calling thread.
    pub fn drop_partition_now(&self, partition: PartitionId) -> Result<u64, StoreError> {
        self.tables
            .transaction(|batch| batch.drop_partition(partition))
    }

    /// Partitions holding at least one record (tombstones included).
    pub fn partitions_with_data(&self) -> Vec<PartitionId> {
        let Some(settings) = self.cluster() else {
            return Vec::new();
        };
        (0..settings.partitions)
            .filter(|&p| self.tree_root(p).map(|r| r.count > 0).unwrap_or(false))
            .collect()
    }
}
