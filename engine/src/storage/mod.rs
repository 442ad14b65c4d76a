//! Durable storage on LMDB (through heed): one environment per node.
//!
//! Tables:
//! - `data`: `partition (u16 BE) ‖ user key` → stored [`Record`]; each partition is one
//!   contiguous key range, which is what anti-entropy walks.
//!   The key also carries the entry's Merkle leaf, `partition ‖ leaf (u16 BE) ‖ key`, so
//!   each leaf of the partition's tree is a contiguous range too, and the leaf's own
//!   row, `partition ‖ leaf` → digest and entry count ([`crate::antientropy::tree`]),
//!   sorts just before its records: updating it in the write's transaction touches a
//!   page the write dirties anyway.
//! - `hints`: writes a replica missed, per target, oldest first ([`hints`]).
//! - `members`: the cluster members this node knows, so a restart knows placement.
//! - `meta`: format version, node name, cluster settings, incarnation, HLC high-water.
//!
//! Every change goes through the group-commit writer: one thread batches concurrent
//! requests into one write transaction and one fsync. The write transaction is the
//! single place where derived state is updated, so nothing derived can ever disagree
//! with the data after a crash.

mod error;
pub mod hints;
mod meta;
mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use heed::types::{Bytes, Str};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use tokio::sync::broadcast;

pub use self::error::StoreError;
pub use self::hints::{HINTS_MAX_DEFAULT, Hint, HintBacklog, StoredHint};
pub use self::meta::{ClusterSettings, FORMAT_VERSION, MemberRecord};
use self::writer::{WriteOp, WriteResult, Writer};
use crate::antientropy::tree::{self, Delta, InnerTree, Location, Node as TreeNode};
use crate::hlc::Timestamp;
use crate::placement::PartitionId;
use crate::record::{Entry, NodeId, Record, Version};

/// Default LMDB map size: address space reserved, not disk used (64 GiB).
pub const MAP_SIZE_BYTES_DEFAULT: usize = 64 << 30;
/// Default most requests merged into one write transaction by the group-commit writer.
pub const WRITE_BATCH_MAX_DEFAULT: usize = 4096;
/// Most write requests waiting for the writer before callers wait for room.
pub const WRITE_QUEUE_MAX: usize = 8192;
/// Changes buffered for `watch` subscribers; a subscriber further behind is told how
/// many it missed.
pub const CHANGES_BUFFER_MAX: usize = 4096;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The node that owns the directory; a directory never changes hands.
    pub node_name: String,
    /// LMDB map size in bytes.
    pub map_size_bytes: usize,
    /// Most requests merged into one transaction (1 disables group commit).
    pub write_batch_max: usize,
    /// Whether each commit is flushed to disk before it is acknowledged.
    pub durable: bool,
    /// Most hints kept, across all targets; past it new hints are dropped (and left to
    /// anti-entropy) with a log line.
    pub hints_max: u64,
    /// Whether writes maintain the Merkle trees. Always on in a node; off only to
    /// measure what the trees cost.
    pub maintain_tree: bool,
}

impl StoreOptions {
    /// Defaults for the node `node_name`: durable, group commit on.
    pub fn new(node_name: impl Into<String>) -> StoreOptions {
        StoreOptions {
            node_name: node_name.into(),
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            write_batch_max: WRITE_BATCH_MAX_DEFAULT,
            durable: true,
            hints_max: HINTS_MAX_DEFAULT,
            maintain_tree: true,
        }
    }
}

/// An entry as listed for a comparison: its key, version and kind, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key.
    pub key: Vec<u8>,
    /// The entry's version.
    pub version: Version,
    /// Whether the entry is a tombstone.
    pub tombstone: bool,
}

/// What applying one entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The entry is now the key's record; it replaced `previous`, if any.
    Applied {
        /// The version it replaced.
        previous: Option<Version>,
    },
    /// The store already held this exact version: nothing changed.
    AlreadyPresent,
    /// The store holds a newer version: nothing changed.
    Superseded {
        /// The version kept.
        current: Version,
    },
}

impl ApplyOutcome {
    /// Whether the store changed.
    pub fn applied(&self) -> bool {
        matches!(self, ApplyOutcome::Applied { .. })
    }
}

/// The LMDB handles, cheap to clone and shared with the writer thread.
#[derive(Clone)]
pub(crate) struct Tables {
    env: Env<WithoutTls>,
    data: Database<Bytes, Bytes>,
    hints: Database<Bytes, Bytes>,
    members: Database<Str, Bytes>,
    meta: Database<Str, Bytes>,
    cluster: Arc<OnceLock<ClusterSettings>>,
    trees: Arc<OnceLock<Vec<RwLock<InnerTree>>>>,
    maintain_tree: bool,
    map_size_bytes: usize,
    /// The data directory, whose device's free space explains a failed write.
    dir: PathBuf,
    /// The device's own error from the last write refused for want of space, until a
    /// commit succeeds again; see [`Tables::write_error`].
    no_space: Arc<Mutex<Option<String>>>,
    hints_max: u64,
    hint_state: Arc<Mutex<HintState>>,
    changes: broadcast::Sender<Arc<Entry>>,
}

/// Hint bookkeeping kept in memory: counts per target and the next sequence number.
#[derive(Default)]
struct HintState {
    counts: HashMap<String, u64>,
    total: u64,
    next_seq: u64,
    dropped: u64,
}

/// A node's durable store.
pub struct Store {
    tables: Tables,
    path: PathBuf,
    node_name: String,
    node_id: NodeId,
    cluster: OnceLock<ClusterSettings>,
    writer: Writer,
    // Held for the life of the store: the exclusive lock that keeps a second process
    // off the directory (LMDB itself allows several processes, Vergent does not).
    _lock: File,
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails without changing anything when the
    /// directory is locked, has an unknown format, or belongs to another node.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let dir_err = |message: String| StoreError::Directory {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| dir_err(e.to_string()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| dir_err(format!("cannot open LOCK: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(dir_err(format!("cannot lock: {e}")));
            }
        }

        let env = open_env(dir, &options)?;
        let tables = open_tables(&env, dir, &options)?;
        let cluster = OnceLock::new();
        {
            let rtxn = tables.read_txn()?;
            if let Some(settings) = meta::get_cluster(&tables.meta, &rtxn)? {
                let _ = cluster.set(settings);
                tables.install_cluster(&rtxn, settings)?;
            }
            tables.load_hint_state(&rtxn)?;
        }
        let writer = Writer::spawn(tables.clone(), options.write_batch_max.max(1));
        Ok(Store {
            tables,
            path: dir.to_path_buf(),
            node_id: NodeId::from_name(&options.node_name),
            node_name: options.node_name,
            cluster,
            writer,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The owning node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The owning node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster this data belongs to, once it is known.
    pub fn cluster(&self) -> Option<ClusterSettings> {
        self.cluster.get().copied()
    }

    /// Records the cluster this data belongs to. Setting the same settings again is a
    /// no-op; different ones are refused and nothing changes.
    pub fn set_cluster(&self, settings: ClusterSettings) -> Result<(), StoreError> {
        if let Some(stored) = self.cluster() {
            return check_same_cluster(&self.path, &stored, &settings);
        }
        let mut wtxn = self.tables.write_txn()?;
        meta::put_cluster(&self.tables.meta, &mut wtxn, &settings)?;
        wtxn.commit()
            .map_err(StoreError::lmdb("recording the cluster"))?;
        let _ = self.cluster.set(settings);
        let rtxn = self.tables.read_txn()?;
        self.tables.install_cluster(&rtxn, settings)
    }

    /// Counts this start: returns the node's incarnation, one more than at its last start.
    pub fn next_incarnation(&self) -> Result<u32, StoreError> {
        let mut wtxn = self.tables.write_txn()?;
        let stored = self
            .tables
            .meta
            .get(&wtxn, meta::INCARNATION)
            .map_err(StoreError::lmdb("reading the incarnation"))?
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        let next = stored.saturating_add(1);
        self.tables
            .meta
            .put(&mut wtxn, meta::INCARNATION, &next.to_be_bytes())
            .map_err(StoreError::lmdb("writing the incarnation"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the incarnation"))?;
        Ok(next)
    }

    /// The cluster members remembered from earlier runs.
    pub fn members(&self) -> Result<Vec<MemberRecord>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let iter = self
            .tables
            .members
            .iter(&rtxn)
            .map_err(StoreError::lmdb("reading members"))?;
        let mut out = Vec::new();
        for item in iter {
            let (_, bytes) = item.map_err(StoreError::lmdb("reading members"))?;
            match MemberRecord::decode(bytes) {
                Ok(record) => out.push(record),
                Err(e) => tracing::warn!("skipping an unreadable member record: {e}"),
            }
        }
        Ok(out)
    }

    /// Remembers `records` (replacing what was known of those names).
    pub fn save_members(&self, records: &[MemberRecord]) -> Result<(), StoreError> {
        let mut wtxn = self.tables.write_txn()?;
        for record in records {
            let bytes = postcard::to_allocvec(record).map_err(|e| StoreError::Corrupt {
                what: "member record",
                detail: e.to_string(),
            })?;
            self.tables
                .members
                .put(&mut wtxn, &record.name, &bytes)
                .map_err(StoreError::lmdb("writing members"))?;
        }
        wtxn.commit().map_err(StoreError::lmdb("writing members"))
    }

    /// The record of `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        self.tables.get(&rtxn, key)
    }

    /// The highest HLC timestamp ever committed; a restarted node's clock starts above it.
    pub fn hlc_high_water(&self) -> Result<Timestamp, StoreError> {
        let rtxn = self.tables.read_txn()?;
        Ok(
            meta::get_u64(&self.tables.meta, &rtxn, meta::HLC_HIGH_WATER)?
                .map(Timestamp::from_u64)
                .unwrap_or(Timestamp::ZERO),
        )
    }

    /// Applies `entries` last-writer-wins, durably, through the group-commit writer. The
    /// outcomes come back in the order of `entries` once the transaction is on disk.
    pub async fn apply(&self, entries: Vec<Entry>) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.require_cluster()?;
        match self.writer.submit(WriteOp::Apply(entries)).await? {
            WriteResult::Applied(outcomes) => Ok(outcomes),
            _ => unreachable!("the writer answers an apply with outcomes"),
        }
    }

    /// Applies `entries` in a transaction of their own on the calling thread, bypassing
    /// the writer. For tools and tests that have no runtime.
    pub fn apply_now(&self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.require_cluster()?;
        let op = WriteOp::Apply(entries.to_vec());
        match self.tables.commit(&[&op])?.pop() {
            Some(WriteResult::Applied(outcomes)) => Ok(outcomes),
            _ => unreachable!("a commit answers an apply with outcomes"),
        }
    }

    /// Keeps `hints` durably. Returns how many were stored; the rest were over
    /// `hints_max` and dropped (anti-entropy repairs what they would have).
    pub async fn put_hints(&self, hints: Vec<Hint>) -> Result<usize, StoreError> {
        match self.writer.submit(WriteOp::PutHints(hints)).await? {
            WriteResult::HintsStored(stored) => Ok(stored),
            _ => unreachable!("the writer answers put_hints with a count"),
        }
    }

    /// Keeps `hints` in a transaction of their own on the calling thread (tools, tests,
    /// the simulator). Returns how many were stored.
    pub fn put_hints_now(&self, hints: Vec<Hint>) -> Result<usize, StoreError> {
        match self.tables.commit(&[&WriteOp::PutHints(hints)])?.pop() {
            Some(WriteResult::HintsStored(stored)) => Ok(stored),
            _ => unreachable!("a commit answers put_hints with a count"),
        }
    }

    /// Deletes hints in a transaction of their own on the calling thread.
    pub fn delete_hints_now(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.tables
            .commit(&[&WriteOp::DeleteHints(keys)])
            .map(|_| ())
    }

    /// Deletes delivered or expired hints by key.
    pub async fn delete_hints(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.writer
            .submit(WriteOp::DeleteHints(keys))
            .await
            .map(|_| ())
    }

    /// Up to `limit` hints for `target` (at most `bytes_max` of values), oldest first.
    pub fn hints_for(
        &self,
        target: &str,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<StoredHint>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let prefix = hints::target_prefix(target);
        let iter = self
            .tables
            .hints
            .prefix_iter(&rtxn, &prefix)
            .map_err(StoreError::lmdb("reading hints"))?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter {
            let (key, value) = item.map_err(StoreError::lmdb("reading hints"))?;
            if key.len() != prefix.len() + 8 {
                continue;
            }
            if !out.is_empty() && (out.len() >= limit || bytes + value.len() > bytes_max) {
                break;
            }
            bytes += value.len();
            out.push(StoredHint {
                key: key.to_vec(),
                hint: hints::decode(key, value)?,
            });
        }
        Ok(out)
    }

    /// Every target with hints waiting: count and age of the oldest.
    pub fn hint_backlog(&self) -> Result<Vec<HintBacklog>, StoreError> {
        let counts: Vec<(String, u64)> = {
            let state = self.tables.hint_state.lock().expect("hint state lock");
            state
                .counts
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(t, c)| (t.clone(), *c))
                .collect()
        };
        let rtxn = self.tables.read_txn()?;
        let mut out = Vec::with_capacity(counts.len());
        for (target, count) in counts {
            let prefix = hints::target_prefix(&target);
            let first = self
                .tables
                .hints
                .prefix_iter(&rtxn, &prefix)
                .map_err(StoreError::lmdb("reading hints"))?
                .next()
                .transpose()
                .map_err(StoreError::lmdb("reading hints"))?;
            let oldest_ms = first
                .and_then(|(_, v)| v.get(..8))
                .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
            out.push(HintBacklog {
                target,
                count,
                oldest_ms,
            });
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(out)
    }

    /// Hints dropped since start because storage was at `hints_max`.
    pub fn hints_dropped(&self) -> u64 {
        self.tables
            .hint_state
            .lock()
            .expect("hint state lock")
            .dropped
    }

    /// Every change applied from now on (entries that changed the store).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.tables.changes.subscribe()
    }

    /// Number of records (tombstones included) held.
    pub fn len(&self) -> Result<u64, StoreError> {
        // The trees count every record; reading their roots needs no scan.
        let Some(settings) = self.cluster() else {
            return Ok(0);
        };
        (0..settings.partitions)
            .map(|p| self.tree_root(p).map(|r| r.count))
            .sum()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Stops the writer after it has committed everything queued, then closes LMDB.
    pub fn close(self) {
        let Store { tables, writer, .. } = self;
        writer.shutdown();
        let Tables { env, .. } = tables;
        let closing = env.prepare_for_closing();
        closing.wait();
    }

    fn require_cluster(&self) -> Result<(), StoreError> {
        match self.cluster.get() {
            Some(_) => Ok(()),
            None => Err(StoreError::NoCluster),
        }
    }

    #[cfg(test)]
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }
}

fn check_same_cluster(
    path: &Path,
    stored: &ClusterSettings,
    requested: &ClusterSettings,
) -> Result<(), StoreError> {
    let mismatch =
        |setting: &'static str, stored: String, requested: String| StoreError::SettingMismatch {
            path: path.to_path_buf(),
            setting,
            stored,
            requested,
        };
    if stored.cluster_id != requested.cluster_id {
        return Err(StoreError::OtherCluster {
            path: path.to_path_buf(),
            stored: stored.id_hex(),
            requested: requested.id_hex(),
        });
    }
    if stored.partitions != requested.partitions {
        return Err(mismatch(
            "partitions",
            stored.partitions.to_string(),
            requested.partitions.to_string(),
        ));
    }
    if stored.replication_factor != requested.replication_factor {
        return Err(mismatch(
            "replication-factor",
            stored.replication_factor.to_string(),
            requested.replication_factor.to_string(),
        ));
    }
    Ok(())
}

impl Tables {
    fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>, StoreError> {
        self.env
            .read_txn()
            .map_err(StoreError::lmdb("starting a read transaction"))
    }

    fn write_txn(&self) -> Result<RwTxn<'_>, StoreError> {
        self.env
            .write_txn()
            .map_err(|e| self.write_error("starting a write transaction", e))
    }

    fn get(&self, rtxn: &RoTxn<'_, WithoutTls>, key: &[u8]) -> Result<Option<Record>, StoreError> {
        // An empty key would name a tree leaf's own row.
        crate::limits::check_key(key)?;
        let location = self.locate(key)?;
        let dkey = data_key_at(location.partition, location.leaf, key);
        match self
            .data
            .get(rtxn, &dkey)
            .map_err(StoreError::lmdb("reading a record"))?
        {
            None => Ok(None),
            Some(bytes) => Record::decode(bytes)
                .map(Some)
                .map_err(StoreError::corrupt_record),
        }
    }

    fn load_hint_state(&self, rtxn: &RoTxn<'_, WithoutTls>) -> Result<(), StoreError> {
        let mut state = self.hint_state.lock().expect("hint state lock");
        let iter = self
            .hints
            .iter(rtxn)
            .map_err(StoreError::lmdb("reading hints"))?;
        for item in iter {
            let (key, _) = item.map_err(StoreError::lmdb("reading hints"))?;
            if let (Some(target), Some(seq)) = (hints::target_of(key), hints::seq_of(key)) {
                *state.counts.entry(target).or_default() += 1;
                state.total += 1;
                state.next_seq = state.next_seq.max(seq + 1);
            }
        }
        Ok(())
    }

    /// One write transaction, one fsync, for every operation given.
    fn commit(&self, ops: &[&WriteOp]) -> Result<Vec<WriteResult>, StoreError> {
        let mut wtxn = self.write_txn()?;
        let mut high_water = Timestamp::ZERO;
        let mut results = Vec::with_capacity(ops.len());
        let mut changed: Vec<Arc<Entry>> = Vec::new();
        let mut hint_delta = HintDelta::default();
        let mut tree_deltas: Vec<(Location, Delta)> = Vec::new();
        let mut dropped_partitions: Vec<PartitionId> = Vec::new();
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
            });
        }
        self.raise_high_water(&mut wtxn, high_water)?;
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
        let dkey = data_key_at(location.partition, location.leaf, &entry.key);
        let previous = match self
            .data
            .get(wtxn, &dkey)
            .map_err(|e| self.write_error("reading a record", e))?
        {
            None => None,
            Some(bytes) => Some(Record::decode(bytes).map_err(StoreError::corrupt_record)?),
        };
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
        if self.maintain_tree {
            // The tree changes in the same transaction as the data: a crash can never
            // leave them apart.
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
            self.update_leaf(wtxn, location, &delta)?;
            tree_deltas.push((location, delta));
        }
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

    fn raise_high_water(
        &self,
        wtxn: &mut RwTxn<'_>,
        candidate: Timestamp,
    ) -> Result<(), StoreError> {
        if candidate == Timestamp::ZERO {
            return Ok(());
        }
        let stored = self
            .meta
            .get(wtxn, meta::HLC_HIGH_WATER)
            .map_err(|e| self.write_error("reading the HLC high-water mark", e))?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if candidate.as_u64() > stored {
            self.meta
                .put(
                    wtxn,
                    meta::HLC_HIGH_WATER,
                    &candidate.as_u64().to_be_bytes(),
                )
                .map_err(|e| self.write_error("raising the HLC high-water mark", e))?;
        }
        Ok(())
    }

    /// What a failed write means. A full device shows first as ENOSPC, but mostly as
    /// EIO: LMDB writes dirty pages with `pwrite` and reports a short write (the kernel
    /// wrote what still fitted) as EIO, and once a device is full nearly every write
    /// comes up short. So the device's own ENOSPC is remembered until a commit succeeds
    /// again, and an EIO in that streak is the same full device; an EIO with no ENOSPC
    /// before it counts as a full device only if the device has (almost) no room left
    /// (statvfs). Either way the message names the device's error, not EIO.
    fn write_error(&self, context: &'static str, err: heed::Error) -> StoreError {
        let io = match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => {
                return StoreError::Full {
                    map_size_bytes: self.map_size_bytes,
                };
            }
            heed::Error::Io(io) => io,
            other => return StoreError::lmdb(context)(other),
        };
        let cause = {
            let mut streak = self.no_space.lock().expect("no-space lock");
            no_space_cause(&io, &mut streak, || available_bytes(&self.dir))
        };
        match cause {
            Some(cause) => StoreError::DeviceFull {
                path: self.dir.clone(),
                cause,
                available_bytes: available_bytes(&self.dir),
            },
            None => StoreError::lmdb(context)(heed::Error::Io(io)),
        }
    }
}

/// The device's error behind a failed write when the device is full, remembering an
/// ENOSPC in `streak`; see [`Tables::write_error`].
fn no_space_cause(
    err: &std::io::Error,
    streak: &mut Option<String>,
    available: impl FnOnce() -> Option<u64>,
) -> Option<String> {
    match err.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
            let cause = os_error_text(err, code);
            *streak = Some(cause.clone());
            Some(cause)
        }
        Some(libc::EIO) => streak.clone().or_else(|| {
            available()
                .is_some_and(|free| free < DEVICE_FULL_BYTES)
                .then(|| "No space left on device: a write came up short".to_string())
        }),
        _ => None,
    }
}

/// Free bytes below which a short write is taken for a full device: a write comes up
/// short only when the device cannot hold it, and then it has next to nothing left.
const DEVICE_FULL_BYTES: u64 = 1 << 20;

/// "No space left on device, os error 28": the operating system's words and number.
fn os_error_text(err: &std::io::Error, code: i32) -> String {
    let text = err.to_string();
    let suffix = format!(" (os error {code})");
    match text.strip_suffix(&suffix) {
        Some(words) => format!("{words}, os error {code}"),
        None => text,
    }
}

/// Bytes free to unprivileged writers on the device holding `dir`, if it can be told.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) only writes into the struct it is given, which is plain data
    // (all-zero is a valid value), and reads the NUL-terminated path it is given.
    #[allow(unsafe_code)]
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stat) == 0).then_some(stat)
    }?;
    // The field types are u64 here but narrower on some platforms.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
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

fn open_env(dir: &Path, options: &StoreOptions) -> Result<Env<WithoutTls>, StoreError> {
    let mut env_options = EnvOpenOptions::new().read_txn_without_tls();
    env_options.map_size(options.map_size_bytes).max_dbs(8);
    if !options.durable {
        // SAFETY: NO_SYNC only drops the fsync at commit; it cannot corrupt the map.
        #[allow(unsafe_code)]
        unsafe {
            env_options.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: the directory is locked for this process (LOCK above), so no other Vergent
    // process maps these files, and nothing in Vergent writes them except through LMDB.
    #[allow(unsafe_code)]
    let env = unsafe { env_options.open(dir) };
    env.map_err(|e| match e {
        heed::Error::Mdb(heed::MdbError::Invalid) => StoreError::Corrupt {
            what: "data directory",
            detail: format!("{} does not hold an LMDB environment", dir.display()),
        },
        other => StoreError::lmdb("opening the environment")(other),
    })
}

/// Opens the tables of an existing store after checking it is ours and of a known
/// format, or creates them in a new one.
fn open_tables(
    env: &Env<WithoutTls>,
    dir: &Path,
    options: &StoreOptions,
) -> Result<Tables, StoreError> {
    let existing = {
        let rtxn = env
            .read_txn()
            .map_err(StoreError::lmdb("starting a read transaction"))?;
        let meta: Option<Database<Str, Bytes>> = env
            .open_database(&rtxn, Some("meta"))
            .map_err(StoreError::lmdb("opening the meta table"))?;
        if let Some(meta) = &meta {
            meta::check_existing(meta, &rtxn, dir, &options.node_name)?;
        }
        meta.is_some()
    };
    let mut wtxn = env
        .write_txn()
        .map_err(StoreError::lmdb("starting a write transaction"))?;
    let meta: Database<Str, Bytes> = env
        .create_database(&mut wtxn, Some("meta"))
        .map_err(StoreError::lmdb("creating the meta table"))?;
    let data = env
        .create_database(&mut wtxn, Some("data"))
        .map_err(StoreError::lmdb("creating the data table"))?;
    let hints = env
        .create_database(&mut wtxn, Some("hints"))
        .map_err(StoreError::lmdb("creating the hints table"))?;
    let members = env
        .create_database(&mut wtxn, Some("members"))
        .map_err(StoreError::lmdb("creating the members table"))?;

    if !existing {
        meta.put(&mut wtxn, meta::FORMAT, &FORMAT_VERSION.to_be_bytes())
            .map_err(StoreError::lmdb("writing meta"))?;
        meta.put(&mut wtxn, meta::NODE_NAME, options.node_name.as_bytes())
            .map_err(StoreError::lmdb("writing meta"))?;
    }
    wtxn.commit()
        .map_err(StoreError::lmdb("opening the tables"))?;
    Ok(Tables {
        env: env.clone(),
        data,
        hints,
        members,
        meta,
        cluster: Arc::new(OnceLock::new()),
        trees: Arc::new(OnceLock::new()),
        maintain_tree: options.maintain_tree,
        map_size_bytes: options.map_size_bytes,
        dir: dir.to_path_buf(),
        no_space: Arc::new(Mutex::new(None)),
        hints_max: options.hints_max,
        hint_state: Arc::new(Mutex::new(HintState::default())),
        changes: broadcast::channel(CHANGES_BUFFER_MAX).0,
    })
}

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
            if dkey.len() == LEAF_KEY_BYTES {
                continue;
            }
            if !out.is_empty() && (out.len() >= entries_max || bytes + value.len() > bytes_max) {
                return Ok((out, Some(last_key)));
            }
            bytes += value.len();
            last_key.clear();
            last_key.extend_from_slice(dkey);
            out.push(Entry {
                key: dkey[LEAF_KEY_BYTES..].to_vec(),
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
            if dkey.len() == LEAF_KEY_BYTES {
                continue;
            }
            if out.len() >= entries_max {
                return Ok((out, false));
            }
            let version = Record::decode_version(value).map_err(StoreError::corrupt_record)?;
            let tombstone = value.get(crate::record::RECORD_HEADER_BYTES - 1) == Some(&1);
            out.push(Listed {
                key: dkey[LEAF_KEY_BYTES..].to_vec(),
                version,
                tombstone,
            });
        }
        Ok((out, true))
    }

    /// The data key an entry is stored under: the resume point just after it.
    pub fn resume_point(&self, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        let location = self.tables.locate(key)?;
        Ok(data_key_at(location.partition, location.leaf, key))
    }

    /// Recomputes `partition`'s tree from its data and compares it with the tree kept
    /// incrementally (leaves on disk, inner nodes in memory).
    pub fn verify_tree(&self, partition: PartitionId) -> Result<bool, StoreError> {
        use std::collections::BTreeMap;
        let settings = self.cluster().ok_or(StoreError::NoCluster)?;
        let rtxn = self.tables.read_txn()?;
        let prefix = partition.to_be_bytes();
        let mut rebuilt: BTreeMap<u16, TreeNode> = BTreeMap::new();
        let mut stored: BTreeMap<u16, TreeNode> = BTreeMap::new();
        let iter = self
            .tables
            .data
            .prefix_iter(&rtxn, &prefix)
            .map_err(StoreError::lmdb("reading data"))?;
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading data"))?;
            if dkey.len() == LEAF_KEY_BYTES {
                let node = TreeNode::decode(value).ok_or(StoreError::Corrupt {
                    what: "tree leaf",
                    detail: "wrong size".into(),
                })?;
                stored.insert(u16::from_be_bytes([dkey[2], dkey[3]]), node);
                continue;
            }
            let record = Record::decode(value).map_err(StoreError::corrupt_record)?;
            let key = &dkey[LEAF_KEY_BYTES..];
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
    fn range<'t>(
        &self,
        rtxn: &'t RoTxn<'_, WithoutTls>,
        partition: PartitionId,
        leaves: std::ops::Range<u16>,
        after: Option<&[u8]>,
    ) -> Result<heed::RoRange<'t, Bytes, Bytes>, StoreError> {
        use std::ops::Bound;
        let start = data_key_at(partition, leaves.start, b"");
        let end = if usize::from(leaves.end) >= tree::LEAVES {
            // The range ends where the next partition begins.
            (u32::from(partition) + 1).to_be_bytes()[2..].to_vec()
        } else {
            data_key_at(partition, leaves.end, b"")
        };
        let lower = match after {
            Some(after) if after >= start.as_slice() => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(start),
        };
        let upper = if u32::from(partition) + 1 > u32::from(u16::MAX)
            && usize::from(leaves.end) >= tree::LEAVES
        {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let bounds = (
            lower.as_ref().map(Vec::as_slice),
            upper.as_ref().map(Vec::as_slice),
        );
        self.data
            .range(rtxn, &bounds)
            .map_err(StoreError::lmdb("reading a leaf"))
    }

    fn settings(&self) -> Result<&ClusterSettings, StoreError> {
        self.cluster.get().ok_or(StoreError::NoCluster)
    }

    fn locate(&self, key: &[u8]) -> Result<Location, StoreError> {
        Ok(tree::locate(key, self.settings()?.partitions))
    }

    fn inner(
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
    fn install_cluster(
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
    fn leaves(
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
            if key.len() < LEAF_KEY_BYTES || key[..2] != partition.to_be_bytes() {
                break;
            }
            let found_leaf = u16::from_be_bytes([key[2], key[3]]);
            if key.len() == LEAF_KEY_BYTES {
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

    fn leaf(
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

    fn update_leaf(
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

impl Tables {
    /// Deletes `key` if its record is still the tombstone `version`.
    fn purge_tombstone(
        &self,
        wtxn: &mut RwTxn<'_>,
        key: &[u8],
        version: Version,
        tree_deltas: &mut Vec<(Location, Delta)>,
    ) -> Result<bool, StoreError> {
        let settings = *self.settings()?;
        let location = tree::locate(key, settings.partitions);
        let dkey = data_key_at(location.partition, location.leaf, key);
        let current = match self
            .data
            .get(wtxn, &dkey)
            .map_err(|e| self.write_error("reading a record", e))?
        {
            None => return Ok(false),
            Some(bytes) => Record::decode(bytes).map_err(StoreError::corrupt_record)?,
        };
        if current.version != version || current.payload != crate::record::Payload::Tombstone {
            return Ok(false);
        }
        self.data
            .delete(wtxn, &dkey)
            .map_err(|e| self.write_error("purging a tombstone", e))?;
        if self.maintain_tree {
            let delta = Delta {
                digest_removed: tree::entry_hash(&settings.tree_key, key, &current),
                count: -1,
                ..Delta::default()
            };
            self.update_leaf(wtxn, location, &delta)?;
            tree_deltas.push((location, delta));
        }
        Ok(true)
    }

    /// Deletes every record and tree leaf of `partition`; returns how many records.
    fn drop_partition(
        &self,
        wtxn: &mut RwTxn<'_>,
        partition: PartitionId,
    ) -> Result<u64, StoreError> {
        let prefix = partition.to_be_bytes();
        let mut removed = 0;
        {
            let mut iter = self
                .data
                .prefix_iter_mut(wtxn, &prefix)
                .map_err(|e| self.write_error("dropping a partition", e))?;
            while let Some(item) = iter.next() {
                let is_record = item
                    .map(|(key, _)| key.len() != LEAF_KEY_BYTES)
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
    /// Up to `limit` tombstones of `partition` whose HLC wall time is before `horizon_ms`.
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
            .prefix_iter(&rtxn, &partition.to_be_bytes())
            .map_err(StoreError::lmdb("reading data"))?;
        let mut out = Vec::new();
        for item in iter {
            let (dkey, value) = item.map_err(StoreError::lmdb("reading data"))?;
            if dkey.len() == LEAF_KEY_BYTES {
                continue;
            }
            let version = Record::decode_version(value).map_err(StoreError::corrupt_record)?;
            if value.get(crate::record::RECORD_HEADER_BYTES - 1) == Some(&1)
                && version.hlc.wall_ms() < horizon_ms
            {
                out.push((dkey[4..].to_vec(), version));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes these tombstones where they are still the keys' records; returns how many.
    pub async fn purge(&self, tombstones: Vec<(Vec<u8>, Version)>) -> Result<u64, StoreError> {
        match self.writer.submit(WriteOp::Purge(tombstones)).await? {
            WriteResult::Removed(count) => Ok(count),
            _ => unreachable!("the writer answers a purge with a count"),
        }
    }

    /// Deletes a partition this node no longer holds; returns how many records went.
    pub async fn drop_partition(&self, partition: PartitionId) -> Result<u64, StoreError> {
        match self
            .writer
            .submit(WriteOp::DropPartition(partition))
            .await?
        {
            WriteResult::Removed(count) => Ok(count),
            _ => unreachable!("the writer answers a drop with a count"),
        }
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

/// The `data` table key: partition and leaf, big-endian, then the user key.
pub fn data_key_at(partition: PartitionId, leaf: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(&leaf.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Length of a leaf's key in the `data` table: `partition ‖ leaf`, no user key. User
/// keys have at least one byte, so a leaf's summary row sorts just before its records.
const LEAF_KEY_BYTES: usize = 4;

fn leaf_key(partition: PartitionId, leaf: u16) -> [u8; 4] {
    let mut out = [0u8; 4];
    out[..2].copy_from_slice(&partition.to_be_bytes());
    out[2..].copy_from_slice(&leaf.to_be_bytes());
    out
}

#[cfg(test)]
mod tests;
