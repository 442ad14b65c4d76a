//! The commit path: every change is made in a [`Batch`], one write transaction (the
//! writer puts many requests in one). Last-writer-wins is decided here, and state
//! derived from the data (the Merkle trees, the HLC high-water mark, hint counts,
//! `watch` subscribers) follows it in the same transaction or once it has committed.

use super::*;

/// One write transaction in progress: the changes made in it so far, and what they
/// change outside LMDB (the in-memory trees and hint counts, `watch` subscribers),
/// which is published only once the transaction has committed. Each kind of change is
/// one typed method; dropping a batch without [`Tables::transaction`] finishing it
/// aborts the transaction, and nothing derived is touched.
pub(crate) struct Batch<'t> {
    pub(super) tables: &'t Tables,
    pub(super) wtxn: RwTxn<'t>,
    /// The highest version written, which the HLC high-water mark is raised to.
    high_water: Timestamp,
    /// Where a rewrite lowers the high-water mark to.
    high_water_cap: Option<Timestamp>,
    /// Whether anyone watches changes: only then are they kept for `changed`.
    watched: bool,
    changed: Vec<Arc<Entry>>,
    hint_delta: HintDelta,
    tree_deltas: Vec<(Location, Delta)>,
    dropped_partitions: Vec<PartitionId>,
    /// A buffer for encoding records, reused across the batch.
    encoded: Vec<u8>,
}

impl Tables {
    /// One write transaction, one fsync, for whatever `changes` makes in it; its result
    /// once the transaction is on disk. On an error nothing is committed.
    pub(super) fn transaction<T>(
        &self,
        changes: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut batch = Batch {
            tables: self,
            wtxn: self.write_txn()?,
            high_water: Timestamp::ZERO,
            high_water_cap: None,
            watched: self.changes.receiver_count() > 0,
            changed: Vec::new(),
            hint_delta: HintDelta::default(),
            tree_deltas: Vec::new(),
            dropped_partitions: Vec::new(),
            encoded: Vec::new(),
        };
        let result = changes(&mut batch)?;
        self.finish(batch)?;
        Ok(result)
    }

    /// Commits `batch`, then updates what is derived from it outside LMDB.
    fn finish(&self, batch: Batch<'_>) -> Result<(), StoreError> {
        let Batch {
            mut wtxn,
            high_water,
            high_water_cap,
            changed,
            hint_delta,
            tree_deltas,
            dropped_partitions,
            ..
        } = batch;
        self.raise_high_water(&mut wtxn, high_water)?;
        if let Some(cap) = high_water_cap {
            // Entries applied beside the rewrite are inside the bound, below the cap.
            self.cap_high_water(&mut wtxn, cap.max(high_water))?;
        }
        wtxn.commit()
            .map_err(|e| self.write_error("committing", e))?;
        // There was room for this commit: the next failure is judged afresh.
        *self.no_space.lock().expect("no-space lock") = None;
        hint_delta.settle(&self.hint_state, self.hints_max);
        if let Some(trees) = self.trees.get() {
            for partition in &dropped_partitions {
                if let Some(tree) = trees.get(usize::from(*partition)) {
                    *tree.write().expect("tree lock") = InnerTree::default();
                }
            }
            for (location, delta) in &tree_deltas {
                if let Some(tree) = trees.get(usize::from(location.partition)) {
                    tree.write().expect("tree lock").apply(location.leaf, delta);
                }
            }
        }
        for entry in changed {
            let _ = self.changes.send(entry);
        }
        Ok(())
    }
}

/// The changes a batch can make, each with its own result.
impl Batch<'_> {
    /// Applies `entries` last-writer-wins; the outcomes in the order of `entries`.
    pub(super) fn apply(&mut self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            self.high_water = self.high_water.max(entry.record.version.hlc);
            let (outcome, written) = self.tables.apply_entry(
                &mut self.wtxn,
                entry,
                &mut self.encoded,
                &mut self.tree_deltas,
            )?;
            if self.watched
                && let Some(record) = written
            {
                self.changed.push(Arc::new(Entry {
                    key: entry.key.clone(),
                    record,
                }));
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// `actor` makes `change` to the typed value of `key` at its event `at` (its clock's
    /// reading), on what the key holds now (nothing, or a tombstone: an empty value of
    /// the change's type). With `ttl_ms` (the bucket's), the key expires that long
    /// after this update; where it had expired already, the update starts from an
    /// empty value: the actor first clears what it holds, so nothing it saw before the
    /// expiry comes back. What the key holds after.
    pub(super) fn update(
        &mut self,
        key: &[u8],
        change: &crate::types::Change,
        actor: crate::types::Actor,
        at: Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<Record, StoreError> {
        let current = self.tables.get(&self.wtxn, key)?;
        let hlc = current.as_ref().map_or(at, |r| r.version.hlc.max(at));
        let mut state = match current.as_ref().and_then(|r| r.payload.typed()) {
            Some(state) => state.clone(),
            None => crate::types::State::empty(change.kind()),
        };
        if current
            .as_ref()
            .is_some_and(|r| r.expires_ms.is_some_and(|e| e <= at.wall_ms()))
        {
            state.apply(
                &crate::types::Change::Clear(change.kind()),
                actor,
                at.as_u64(),
            )?;
        }
        state.apply(change, actor, at.as_u64())?;
        let expires_ms = ttl_ms.map(|ttl| hlc.wall_ms().saturating_add(ttl));
        let entry = Entry {
            key: key.to_vec(),
            record: Record::typed(state, hlc, expires_ms),
        };
        self.apply(std::slice::from_ref(&entry))?;
        Ok(self.tables.get(&self.wtxn, key)?.unwrap_or(entry.record))
    }

    /// Keeps `hints`; how many were stored (the rest were over `hints_max`).
    pub(super) fn put_hints(&mut self, hints: &[Hint]) -> Result<usize, StoreError> {
        self.tables
            .put_hints(&mut self.wtxn, hints, &mut self.hint_delta)
    }

    /// Deletes the hints stored under `keys`.
    pub(super) fn delete_hints(&mut self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        for key in keys {
            let deleted = self
                .tables
                .hints
                .delete(&mut self.wtxn, key)
                .map_err(|e| self.tables.write_error("deleting a hint", e))?;
            if deleted && let Some(target) = hints::target_of(key) {
                self.hint_delta.removed.push(target);
            }
        }
        Ok(())
    }

    /// Deletes these tombstones where they are still the keys' records; how many.
    pub(super) fn purge(&mut self, tombstones: &[(Vec<u8>, Version)]) -> Result<u64, StoreError> {
        let mut purged = 0;
        for (key, version) in tombstones {
            if self
                .tables
                .purge_tombstone(&mut self.wtxn, key, *version, &mut self.tree_deltas)?
            {
                purged += 1;
                // A linearizable key's acceptors must never accept below a delete
                // collected here (see `crate::paxos`).
                let partition = self.tables.locate(key)?.partition;
                self.tables
                    .raise_paxos_floor(&mut self.wtxn, partition, *version)?;
            }
        }
        Ok(purged)
    }

    /// Deletes a partition's data and tree (after its new owners have it); how many
    /// records went.
    pub(super) fn drop_partition(&mut self, partition: PartitionId) -> Result<u64, StoreError> {
        let removed = self.tables.drop_partition(&mut self.wtxn, partition)?;
        self.dropped_partitions.push(partition);
        Ok(removed)
    }

    /// Deletes every record of the buckets `ids`; how many.
    pub(super) fn drop_buckets(
        &mut self,
        ids: &[crate::buckets::BucketId],
    ) -> Result<u64, StoreError> {
        self.tables
            .drop_buckets(&mut self.wtxn, ids, &mut self.tree_deltas)
    }

    /// Replaces records still at their old version and caps the HLC high-water mark at
    /// `cap`: versions from the future brought back to the present. How many were
    /// replaced.
    pub(super) fn rewrite(
        &mut self,
        rewrites: &[(Entry, Version)],
        cap: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut rewritten = 0;
        for (entry, old) in rewrites {
            if self.tables.rewrite_record(
                &mut self.wtxn,
                entry,
                *old,
                &mut self.encoded,
                &mut self.tree_deltas,
            )? {
                rewritten += 1;
                if self.watched {
                    self.changed.push(Arc::new(entry.clone()));
                }
            }
        }
        self.high_water_cap = Some(cap);
        Ok(rewritten)
    }
}

impl Tables {
    /// Last writer wins: the entry replaces the stored record only if its version is
    /// higher; a typed record merges with the one stored ([`Record::merge`]). This is
    /// the single place where a record changes, so state derived from the data is
    /// updated here, in the same transaction. What the key holds now, when it changed.
    fn apply_entry(
        &self,
        wtxn: &mut RwTxn<'_>,
        entry: &Entry,
        encoded: &mut Vec<u8>,
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<(ApplyOutcome, Option<Record>), StoreError> {
        crate::buckets::check_stored_key(&entry.key)?;
        let settings = *self.settings()?;
        let location = tree::locate(&entry.key, settings.partitions);
        let dkey = data_key(location, &entry.key);
        let previous = self.record_at(wtxn, &dkey)?;
        let incoming = entry.record.version;
        let record = match &previous {
            Some(old) if old.version == incoming => {
                return Ok((ApplyOutcome::AlreadyPresent, None));
            }
            // A linearizable key's acceptor promised a higher ballot: a record below it
            // (a late accept, a copy by anti-entropy or read repair) is refused, as an
            // accept would be. Only such keys have promises.
            _ if self.promised_above(wtxn, &entry.key, incoming)? => {
                return Ok((
                    ApplyOutcome::Superseded {
                        current: previous.as_ref().map_or(incoming, |old| old.version),
                    },
                    None,
                ));
            }
            Some(old) => match old.merge(&entry.record) {
                Merged::Kept if old.payload.typed().is_some() => {
                    return Ok((ApplyOutcome::AlreadyPresent, None));
                }
                Merged::Kept => {
                    return Ok((
                        ApplyOutcome::Superseded {
                            current: old.version,
                        },
                        None,
                    ));
                }
                Merged::Changed(record) => record,
            },
            None => entry.record.clone(),
        };
        encoded.clear();
        record.encode_into(encoded);
        self.data
            .put(wtxn, &dkey, encoded)
            .map_err(|e| self.write_error("writing a record", e))?;
        self.change_tree(wtxn, location, tree_deltas, || {
            let mut delta = Delta {
                digest_added: tree::entry_hash(&settings.tree_key, &entry.key, &record),
                ..Delta::default()
            };
            match &previous {
                Some(old) => {
                    delta.digest_removed = tree::entry_hash(&settings.tree_key, &entry.key, old)
                }
                None => delta.count = 1,
            }
            delta
        })?;
        let outcome = ApplyOutcome::Applied {
            previous: previous.map(|r| r.version),
        };
        Ok((outcome, Some(record)))
    }

    fn put_hints(
        &self,
        wtxn: &mut RwTxn<'_>,
        hints: &[Hint],
        delta: &mut HintDelta,
    ) -> Result<usize, StoreError> {
        let (mut total, mut seq) = {
            let state = self.hint_state.lock().expect("hint state lock");
            (
                state.total + delta.added.len() as u64,
                state.next_seq.max(delta.next_seq),
            )
        };
        let mut stored = 0;
        for hint in hints {
            if total >= self.hints_max {
                delta.dropped += 1;
                continue;
            }
            let key = hints::hint_key(&hint.target, seq);
            self.hints
                .put(wtxn, &key, &hints::encode_value(hint))
                .map_err(|e| self.write_error("writing a hint", e))?;
            delta.added.push(hint.target.clone());
            seq += 1;
            total += 1;
            stored += 1;
        }
        delta.next_seq = seq;
        Ok(stored)
    }
}

/// Hint bookkeeping of one transaction, applied to memory only once it committed.
#[derive(Default)]
struct HintDelta {
    added: Vec<String>,
    removed: Vec<String>,
    dropped: u64,
    next_seq: u64,
}

impl HintDelta {
    fn settle(self, state: &Mutex<HintState>, hints_max: u64) {
        if self.added.is_empty() && self.removed.is_empty() && self.dropped == 0 {
            return;
        }
        let mut state = state.lock().expect("hint state lock");
        for target in self.added {
            *state.counts.entry(target).or_default() += 1;
            state.total += 1;
        }
        for target in self.removed {
            if let Some(count) = state.counts.get_mut(&target) {
                *count = count.saturating_sub(1);
            }
            state.total = state.total.saturating_sub(1);
        }
        if self.dropped > 0 {
            state.dropped += self.dropped;
            tracing::warn!(
                dropped = self.dropped,
                limit = hints_max,
                "hint storage is full; those writes are left to anti-entropy"
            );
        }
        state.next_seq = state.next_seq.max(self.next_seq);
    }
}
