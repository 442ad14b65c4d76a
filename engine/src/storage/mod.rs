//! Durable storage on LMDB (through heed): one environment per node.
//!
//! Tables:
//! - `data`: `partition (u16 BE) ‖ user key` → stored [`Record`]; each partition is one
//!   contiguous key range, which is what anti-entropy walks.
//!   The key also carries the entry's Merkle leaf, `partition ‖ leaf (u16 BE) ‖ key`, so
//!   each leaf of the partition's tree is a contiguous range too, and the leaf's own
//!   row, `partition ‖ leaf` → digest and entry count ([`crate::tree`]),
//!   sorts just before its records: updating it in the write's transaction touches a
//!   page the write dirties anyway. The keys are built and read in `keys.rs` only.
//! - `hints`: writes a replica missed, per target, oldest first ([`hints`]).
//! - `members`: the cluster members this node knows, so a restart knows placement.
//! - `meta`: format version, node name, cluster settings, incarnation, HLC high-water.
//!
//! Every change goes through the group-commit writer (`writer.rs`): one thread batches
//! concurrent requests into one write transaction and one fsync (`commit.rs`). The write
//! transaction is the single place where derived state is updated, so nothing derived
//! can ever disagree with the data after a crash.

mod commit;
mod error;
mod future;
mod high_water;
pub mod hints;
mod keys;
mod meta;
mod open;
mod paxos;
mod space;
mod trees;
mod upkeep;
mod writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use heed::types::{Bytes, Str};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};
use tokio::sync::broadcast;

pub use self::error::StoreError;
pub use self::future::FutureScan;
pub use self::hints::{HINTS_MAX_DEFAULT, Hint, HintBacklog, StoredHint};
pub use self::keys::data_key_at;
use self::keys::{data_key, leaf_key, partition_and_leaf, partition_prefix, user_key};
pub use self::meta::{ClusterSettings, FORMAT_VERSION, MemberRecord};
use self::open::{check_same_cluster, open_env, open_tables};
#[cfg(test)]
use self::space::no_space_cause;
pub use self::upkeep::TableSize;
use self::writer::Writer;
use crate::hlc::Timestamp;
use crate::placement::PartitionId;
use crate::record::{Entry, Merged, NodeId, Record, Version};
use crate::tree::{self, Delta, InnerTree, Location, Node as TreeNode};

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
    /// From when the entry is dead: a tombstone's write, an expiring entry's expiry
    /// (see [`Record::dead_from_ms`]).
    pub dead_from_ms: Option<u64>,
    /// Whether the entry is typed (replicas merge it).
    pub typed: bool,
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
    /// Promises of linearizable keys' acceptors, by key as stored.
    promises: Database<Bytes, Bytes>,
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

    /// Applies `entries` last-writer-wins, durably, through the group-commit writer. The
    /// outcomes come back in the order of `entries` once the transaction is on disk.
    pub fn apply(
        &self,
        entries: Vec<Entry>,
    ) -> impl Future<Output = Result<Vec<ApplyOutcome>, StoreError>> + Send + 'static {
        let ready = self.require_cluster();
        let submitted = ready
            .is_ok()
            .then(|| self.writer.submit(move |batch| batch.apply(&entries)));
        async move {
            ready?;
            submitted
                .expect("submitted when the cluster is known")
                .await
        }
    }

    /// `actor` makes `change` to the typed value of `key` at `at`, through the
    /// group-commit writer (queued at the call); what the key holds after.
    pub fn update(
        &self,
        key: Vec<u8>,
        change: crate::types::Change,
        actor: crate::types::Actor,
        at: Timestamp,
        ttl_ms: Option<u64>,
    ) -> impl Future<Output = Result<Record, StoreError>> + Send + 'static {
        self.writer
            .submit(move |batch| batch.update(&key, &change, actor, at, ttl_ms))
    }

    /// As [`Store::update`], in a transaction of its own on the calling thread (tools,
    /// tests, the simulator).
    pub fn update_now(
        &self,
        key: &[u8],
        change: &crate::types::Change,
        actor: crate::types::Actor,
        at: Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<Record, StoreError> {
        self.require_cluster()?;
        self.tables
            .transaction(|batch| batch.update(key, change, actor, at, ttl_ms))
    }

    /// Applies `entries` in a transaction of their own on the calling thread, bypassing
    /// the writer. For tools and tests that have no runtime.
    pub fn apply_now(&self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.require_cluster()?;
        self.tables.transaction(|batch| batch.apply(entries))
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

    /// Records held per bucket (tombstones and expired records not purged yet
    /// included): one scan of the keys, in a read transaction of its own, so writes go
    /// on meanwhile.
    pub fn bucket_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<crate::buckets::BucketId, u64>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let mut counts = std::collections::BTreeMap::new();
        let iter = self
            .tables
            .data
            .lazily_decode_data()
            .iter(&rtxn)
            .map_err(StoreError::lmdb("counting records"))?;
        for row in iter {
            let (dkey, _) = row.map_err(StoreError::lmdb("counting records"))?;
            if let Some(key) = keys::user_key(dkey) {
                *counts.entry(crate::buckets::split_key(key).0).or_default() += 1;
            }
        }
        Ok(counts)
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
        crate::buckets::check_stored_key(key)?;
        let location = self.locate(key)?;
        let dkey = data_key(location, key);
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
}

#[cfg(test)]
mod expiry_tests;
#[cfg(test)]
mod paxos_tests;
#[cfg(test)]
mod tests;
