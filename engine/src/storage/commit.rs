//! The commit path: every change the writer makes, in one write transaction per batch.
//! Last-writer-wins is decided here, and state derived from the data (the Merkle
//! trees, the HLC high-water mark, hint counts, `watch` subscribers) follows it in
//! the same transaction or once it has committed.

use super::*;

impl Tables {
    /// One write transaction, one fsync, for every operation given.
    pub(super) fn commit(&self, ops: &[&WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        let mut wtxn = self.write_txn()?;
        let mut high_water = Timestamp::ZERO;
        let mut results = Vec::with_capacity(ops.len());
        let mut changed: Vec<Arc<Entry>> = Vec::new();
        let mut hint_delta = HintDelta::default();
        let mut tree_deltas: Vec<(Location, Delta)> = Vec::new();
        let mut dropped_partitions: Vec<PartitionId> = Vec::new();
        let mut high_water_cap: Option<Timestamp> = None;
        let watched = self.changes.receiver_count() > 0;
        let mut encoded = Vec::new();
        for op in ops {
            results.push(match op {
                WriteOp::Apply(entries) => {
                    let mut outcomes = Vec::with_capacity(entries.len());
                    for entry in entries {
                        high_water = high_water.max(entry.record.version.hlc);
                        let outcome =
                            self.apply_entry(&mut wtxn, entry, &mut encoded, &mut tree_deltas)?;
                        if watched && outcome.applied() {
                            changed.push(Arc::new(entry.clone()));
                        }
                        outcomes.push(outcome);
                    }
                    WriteResult::Applied(outcomes)
                }
                WriteOp::PutHints(hints) => {
                    WriteResult::HintsStored(self.put_hints(&mut wtxn, hints, &mut hint_delta)?)
                }
                WriteOp::DeleteHints(keys) => {
                    for key in keys {
                        let deleted = self
                            .hints
                            .delete(&mut wtxn, key)
                            .map_err(|e| self.write_error("deleting a hint", e))?;
                        if deleted && let Some(target) = hints::target_of(key) {
                            hint_delta.removed.push(target);
                        }
                    }
                    WriteResult::HintsDeleted
                }
                WriteOp::Purge(tombstones) => {
                    let mut purged = 0;
                    for (key, version) in tombstones {
                        if self.purge_tombstone(&mut wtxn, key, *version, &mut tree_deltas)? {
                            purged += 1;
                        }
                    }
                    WriteResult::Removed(purged)
                }
                WriteOp::DropPartition(partition) => {
                    let removed = self.drop_partition(&mut wtxn, *partition)?;
                    dropped_partitions.push(*partition);
                    WriteResult::Removed(removed)
                }
                WriteOp::Rewrite { rewrites, cap } => {
                    let mut rewritten = 0;
                    for (entry, old) in rewrites {
                        if self.rewrite_record(
                            &mut wtxn,
                            entry,
                            *old,
                            &mut encoded,
                            &mut tree_deltas,
                        )? {
                            rewritten += 1;
                            if watched {
                                changed.push(Arc::new(entry.clone()));
                            }
                        }
                    }
                    high_water_cap = Some(*cap);
                    WriteResult::Rewritten(rewritten)
                }
            });
        }
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
        Ok(results)
    }

    /// Last writer wins: the entry replaces the stored record only if its version is
    /// higher. This is the single place where a record changes, so state derived from
    /// the data is updated here, in the same transaction.
    fn apply_entry(
        &self,
        wtxn: &mut RwTxn<'_>,
        entry: &Entry,
        encoded: &mut Vec<u8>,
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<ApplyOutcome, StoreError> {
        crate::limits::check_key(&entry.key)?;
        let settings = *self.settings()?;
        let location = tree::locate(&entry.key, settings.partitions);
        let dkey = data_key(location, &entry.key);
        let previous = self.record_at(wtxn, &dkey)?;
        let incoming = entry.record.version;
        match previous.as_ref().map(|r| r.version) {
            Some(current) if current == incoming => return Ok(ApplyOutcome::AlreadyPresent),
            Some(current) if current > incoming => return Ok(ApplyOutcome::Superseded { current }),
            _ => {}
        }
        encoded.clear();
        entry.record.encode_into(encoded);
        self.data
            .put(wtxn, &dkey, encoded)
            .map_err(|e| self.write_error("writing a record", e))?;
        self.change_tree(wtxn, location, tree_deltas, || {
            let mut delta = Delta {
                digest_added: tree::entry_hash(&settings.tree_key, &entry.key, &entry.record),
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
        Ok(ApplyOutcome::Applied {
            previous: previous.map(|r| r.version),
        })
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
