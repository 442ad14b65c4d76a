//! Versions stored from the future: records whose timestamp is beyond the cluster's
//! time plus the clock bound. They can only come from a clock that was wrong (a node
//! that ran ahead, or versions stored before the offset checks existed); every other
//! node refuses them, so they never converge, and last-writer-wins lets each of them
//! beat every write for its key until the cluster's time catches up. Finding them and
//! rewriting them to the present is an admin's decision (`vergent rewrite-future`).

use super::*;

/// What a scan for versions from the future found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FutureScan {
    /// Records whose version is beyond the limit.
    pub count: u64,
    /// The first of them, in key order within each partition (at most the asked-for
    /// number).
    pub first: Vec<Entry>,
    /// The wall time of the furthest of them, ms.
    pub latest_ms: u64,
}

impl Tables {
    /// Replaces `key`'s record with `entry`'s if it is still `old`; whether it did.
    pub(super) fn rewrite_record(
        &self,
        wtxn: &mut RwTxn<'_>,
        entry: &Entry,
        old: Version,
        encoded: &mut Vec<u8>,
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<bool, StoreError> {
        let settings = *self.settings()?;
        let location = tree::locate(&entry.key, settings.partitions);
        let dkey = data_key(location, &entry.key);
        let Some(current) = self.record_at(wtxn, &dkey)? else {
            return Ok(false);
        };
        if current.version != old {
            return Ok(false);
        }
        encoded.clear();
        entry.record.encode_into(encoded);
        self.data
            .put(wtxn, &dkey, encoded)
            .map_err(|e| self.write_error("rewriting a record", e))?;
        self.change_tree(wtxn, location, tree_deltas, || Delta {
            digest_added: tree::entry_hash(&settings.tree_key, &entry.key, &entry.record),
            digest_removed: tree::entry_hash(&settings.tree_key, &entry.key, &current),
            ..Delta::default()
        })?;
        Ok(true)
    }
}

impl Store {
    /// Counts the records whose version's wall time is after `limit_ms`, and returns
    /// the first `keep` of them. Reads every record: for `verify` and the rewrite.
    pub fn from_the_future(&self, limit_ms: u64, keep: usize) -> Result<FutureScan, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let iter = self
            .tables
            .data
            .iter(&rtxn)
            .map_err(StoreError::lmdb("reading data"))?;
        let mut scan = FutureScan::default();
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading data"))?;
            let Some(key) = user_key(dkey) else {
                continue;
            };
            let version = Record::decode_version(value).map_err(StoreError::corrupt_record)?;
            if version.hlc.wall_ms() <= limit_ms {
                continue;
            }
            scan.count += 1;
            scan.latest_ms = scan.latest_ms.max(version.hlc.wall_ms());
            if scan.first.len() < keep {
                scan.first.push(Entry {
                    key: key.to_vec(),
                    record: Record::decode(value).map_err(StoreError::corrupt_record)?,
                });
            }
        }
        Ok(scan)
    }

    /// Replaces each `(entry, old)`'s record with `entry`'s where the key still holds
    /// version `old`, and caps the HLC high-water mark at `cap`, in one transaction;
    /// returns how many records were replaced. Unlike [`Store::apply`] this may lower a
    /// key's version: it is how versions from the future are brought back.
    pub async fn rewrite(
        &self,
        rewrites: Vec<(Entry, Version)>,
        cap: Timestamp,
    ) -> Result<u64, StoreError> {
        self.writer
            .submit(move |batch| batch.rewrite(&rewrites, cap))
            .await
    }
}
