//! Durable storage on LMDB (through heed): one environment per node.
//!
//! Tables:
//! - `data`: `partition (u16 BE) ‖ user key` → stored [`Record`]; each partition is one
//!   contiguous key range, which is what anti-entropy walks.
//! - `meta`: format version, node name, cluster id and settings, the HLC high-water mark.
//!
//! Every change goes through [`Store::apply`], which hands it to the group-commit
//! writer: one thread batches concurrent requests into one write transaction and one
//! fsync. The write transaction is the single place where derived state is updated,
//! so nothing derived can ever disagree with the data after a crash.

mod error;
mod writer;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use heed::types::{Bytes, Str};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};

pub use self::error::StoreError;
use self::writer::Writer;
use crate::hlc::Timestamp;
use crate::placement::{PARTITIONS_DEFAULT, PARTITIONS_MAX, PartitionId, partition_of};
use crate::record::{Entry, NodeId, Record, Version};

/// The storage format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Default LMDB map size: address space reserved, not disk used (64 GiB).
pub const MAP_SIZE_BYTES_DEFAULT: usize = 64 << 30;
/// Default most requests merged into one write transaction by the group-commit writer.
pub const WRITE_BATCH_MAX_DEFAULT: usize = 4096;
/// Most write requests waiting for the writer before callers wait for room.
pub const WRITE_QUEUE_MAX: usize = 8192;

const META_FORMAT: &str = "format_version";
const META_NODE_NAME: &str = "node_name";
const META_CLUSTER_ID: &str = "cluster_id";
const META_PARTITIONS: &str = "partitions";
const META_HLC_HIGH_WATER: &str = "hlc_high_water";

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The node that owns the directory; a directory never changes hands.
    pub node_name: String,
    /// Partition count: checked against the stored value, or used to create the store
    /// (default [`PARTITIONS_DEFAULT`] when `None` and the store is new).
    pub partitions: Option<u16>,
    /// LMDB map size in bytes.
    pub map_size_bytes: usize,
    /// Most requests merged into one transaction (1 disables group commit).
    pub write_batch_max: usize,
    /// Whether each commit is flushed to disk before it is acknowledged.
    pub durable: bool,
}

impl StoreOptions {
    /// Defaults for the node `node_name`: durable, group commit on.
    pub fn new(node_name: impl Into<String>) -> StoreOptions {
        StoreOptions {
            node_name: node_name.into(),
            partitions: None,
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            write_batch_max: WRITE_BATCH_MAX_DEFAULT,
            durable: true,
        }
    }
}

/// What the store knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// The directory.
    pub path: PathBuf,
    /// The owning node's name.
    pub node_name: String,
    /// Its id, derived from the name.
    pub node_id: NodeId,
    /// The cluster this data belongs to.
    pub cluster_id: [u8; 16],
    /// Partitions in the cluster.
    pub partitions: u16,
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
    meta: Database<Str, Bytes>,
    partitions: u16,
    map_size_bytes: usize,
}

/// A node's durable store.
pub struct Store {
    tables: Tables,
    info: StoreInfo,
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
        let existing = read_existing_meta(&env, dir, &options)?;
        let (meta, data, info) = match existing {
            Some(found) => found,
            None => create_tables(&env, dir, &options)?,
        };
        let tables = Tables {
            env,
            data,
            meta,
            partitions: info.partitions,
            map_size_bytes: options.map_size_bytes,
        };
        let writer = Writer::spawn(tables.clone(), options.write_batch_max.max(1));
        Ok(Store {
            tables,
            info,
            writer,
            _lock: lock,
        })
    }

    /// What the store knows about itself.
    pub fn info(&self) -> &StoreInfo {
        &self.info
    }

    /// The record of `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        self.tables.get(&rtxn, key)
    }

    /// The highest HLC timestamp ever committed; a restarted node's clock starts above it.
    pub fn hlc_high_water(&self) -> Result<Timestamp, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let raw = self
            .tables
            .meta
            .get(&rtxn, META_HLC_HIGH_WATER)
            .map_err(StoreError::lmdb("reading the HLC high-water mark"))?;
        Ok(raw
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .map(Timestamp::from_u64)
            .unwrap_or(Timestamp::ZERO))
    }

    /// Applies `entries` last-writer-wins, durably, through the group-commit writer. The
    /// outcomes come back in the order of `entries` once the transaction is on disk.
    pub async fn apply(&self, entries: Vec<Entry>) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.writer.apply(entries).await
    }

    /// Applies `entries` in a transaction of their own on the calling thread, bypassing
    /// the writer. For tools and tests that have no runtime.
    pub fn apply_now(&self, entries: &[Entry]) -> Result<Vec<ApplyOutcome>, StoreError> {
        let mut outcomes = self.tables.commit(&[entries])?;
        Ok(outcomes.pop().unwrap_or_default())
    }

    /// Number of records (tombstones included) held.
    pub fn len(&self) -> Result<u64, StoreError> {
        let rtxn = self.tables.read_txn()?;
        self.tables
            .data
            .len(&rtxn)
            .map_err(StoreError::lmdb("counting records"))
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Stops the writer after it has committed everything queued, then closes LMDB.
    pub fn close(self) {
        let Store {
            tables,
            writer,
            _lock,
            ..
        } = self;
        writer.shutdown();
        let closing = tables.env.prepare_for_closing();
        closing.wait();
    }
}

impl Tables {
    fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>, StoreError> {
        self.env
            .read_txn()
            .map_err(StoreError::lmdb("starting a read transaction"))
    }

    fn get(&self, rtxn: &RoTxn<'_, WithoutTls>, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let dkey = data_key(partition_of(key, self.partitions), key);
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

    /// One write transaction, one fsync, for every batch of entries given.
    fn commit(&self, batches: &[&[Entry]]) -> Result<Vec<Vec<ApplyOutcome>>, StoreError> {
        let mut wtxn = self
            .env
            .write_txn()
            .map_err(|e| self.write_error("starting a write transaction", e))?;
        let mut high_water = Timestamp::ZERO;
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut encoded = Vec::new();
        for batch in batches {
            let mut batch_outcomes = Vec::with_capacity(batch.len());
            for entry in batch.iter() {
                high_water = high_water.max(entry.record.version.hlc);
                batch_outcomes.push(self.apply_entry(&mut wtxn, entry, &mut encoded)?);
            }
            outcomes.push(batch_outcomes);
        }
        self.raise_high_water(&mut wtxn, high_water)?;
        wtxn.commit()
            .map_err(|e| self.write_error("committing", e))?;
        Ok(outcomes)
    }

    /// Last writer wins: the entry replaces the stored record only if its version is
    /// higher. This is the single place where a record changes, so state derived from
    /// the data is updated here, in the same transaction.
    fn apply_entry(
        &self,
        wtxn: &mut RwTxn<'_>,
        entry: &Entry,
        encoded: &mut Vec<u8>,
    ) -> Result<ApplyOutcome, StoreError> {
        let dkey = data_key(partition_of(&entry.key, self.partitions), &entry.key);
        let previous = match self
            .data
            .get(wtxn, &dkey)
            .map_err(|e| self.write_error("reading a record", e))?
        {
            None => None,
            Some(bytes) => Some(Record::decode_version(bytes).map_err(StoreError::corrupt_record)?),
        };
        let incoming = entry.record.version;
        match previous {
            Some(current) if current == incoming => return Ok(ApplyOutcome::AlreadyPresent),
            Some(current) if current > incoming => return Ok(ApplyOutcome::Superseded { current }),
            _ => {}
        }
        encoded.clear();
        entry.record.encode_into(encoded);
        self.data
            .put(wtxn, &dkey, encoded)
            .map_err(|e| self.write_error("writing a record", e))?;
        Ok(ApplyOutcome::Applied { previous })
    }

    fn raise_high_water(
        &self,
        wtxn: &mut RwTxn<'_>,
        candidate: Timestamp,
    ) -> Result<(), StoreError> {
        let stored = self
            .meta
            .get(wtxn, META_HLC_HIGH_WATER)
            .map_err(|e| self.write_error("reading the HLC high-water mark", e))?
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if candidate.as_u64() > stored {
            self.meta
                .put(wtxn, META_HLC_HIGH_WATER, &candidate.as_u64().to_be_bytes())
                .map_err(|e| self.write_error("raising the HLC high-water mark", e))?;
        }
        Ok(())
    }

    fn write_error(&self, context: &'static str, err: heed::Error) -> StoreError {
        match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => StoreError::Full {
                map_size_bytes: self.map_size_bytes,
            },
            other => StoreError::lmdb(context)(other),
        }
    }
}

/// The `data` table key: partition, big-endian, then the user key.
pub fn data_key(partition: PartitionId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(key);
    out
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

type OpenedTables = (Database<Str, Bytes>, Database<Bytes, Bytes>, StoreInfo);

fn read_existing_meta(
    env: &Env<WithoutTls>,
    dir: &Path,
    options: &StoreOptions,
) -> Result<Option<OpenedTables>, StoreError> {
    let rtxn = env
        .read_txn()
        .map_err(StoreError::lmdb("starting a read transaction"))?;
    let meta: Option<Database<Str, Bytes>> = env
        .open_database(&rtxn, Some("meta"))
        .map_err(StoreError::lmdb("opening the meta table"))?;
    let Some(meta) = meta else { return Ok(None) };
    let get = |key: &'static str| -> Result<Vec<u8>, StoreError> {
        meta.get(&rtxn, key)
            .map_err(StoreError::lmdb("reading meta"))?
            .map(<[u8]>::to_vec)
            .ok_or(StoreError::Corrupt {
                what: "meta table",
                detail: format!("{key} is missing"),
            })
    };
    let corrupt = |key: &str| StoreError::Corrupt {
        what: "meta table",
        detail: format!("{key} has the wrong size"),
    };
    let format = u32::from_be_bytes(
        get(META_FORMAT)?
            .try_into()
            .map_err(|_| corrupt(META_FORMAT))?,
    );
    if format != FORMAT_VERSION {
        return Err(StoreError::UnsupportedFormat {
            path: dir.to_path_buf(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let node_name = String::from_utf8(get(META_NODE_NAME)?).map_err(|_| corrupt(META_NODE_NAME))?;
    if node_name != options.node_name {
        return Err(StoreError::WrongNode {
            path: dir.to_path_buf(),
            found: node_name,
            expected: options.node_name.clone(),
        });
    }
    let cluster_id: [u8; 16] = get(META_CLUSTER_ID)?
        .try_into()
        .map_err(|_| corrupt(META_CLUSTER_ID))?;
    let partitions = u16::from_be_bytes(
        get(META_PARTITIONS)?
            .try_into()
            .map_err(|_| corrupt(META_PARTITIONS))?,
    );
    if let Some(requested) = options.partitions
        && requested != partitions
    {
        return Err(StoreError::SettingMismatch {
            path: dir.to_path_buf(),
            setting: "partitions",
            stored: partitions.to_string(),
            requested: requested.to_string(),
        });
    }
    let data: Database<Bytes, Bytes> = env
        .open_database(&rtxn, Some("data"))
        .map_err(StoreError::lmdb("opening the data table"))?
        .ok_or(StoreError::Corrupt {
            what: "data directory",
            detail: "the data table is missing".into(),
        })?;
    // Database handles opened in a transaction survive it only if it commits.
    rtxn.commit()
        .map_err(StoreError::lmdb("opening the tables"))?;
    let info = StoreInfo {
        path: dir.to_path_buf(),
        node_id: NodeId::from_name(&node_name),
        node_name,
        cluster_id,
        partitions,
    };
    Ok(Some((meta, data, info)))
}

fn create_tables(
    env: &Env<WithoutTls>,
    dir: &Path,
    options: &StoreOptions,
) -> Result<OpenedTables, StoreError> {
    let partitions = options.partitions.unwrap_or(PARTITIONS_DEFAULT);
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(StoreError::SettingMismatch {
            path: dir.to_path_buf(),
            setting: "partitions",
            stored: format!("1..={PARTITIONS_MAX} (the allowed range)"),
            requested: partitions.to_string(),
        });
    }
    let mut cluster_id = [0u8; 16];
    getrandom::fill(&mut cluster_id).map_err(|e| StoreError::Directory {
        path: dir.to_path_buf(),
        message: format!("no randomness for the cluster id: {e}"),
    })?;
    let mut wtxn = env
        .write_txn()
        .map_err(StoreError::lmdb("starting a write transaction"))?;
    let meta: Database<Str, Bytes> = env
        .create_database(&mut wtxn, Some("meta"))
        .map_err(StoreError::lmdb("creating the meta table"))?;
    let data: Database<Bytes, Bytes> = env
        .create_database(&mut wtxn, Some("data"))
        .map_err(StoreError::lmdb("creating the data table"))?;
    let put = |wtxn: &mut RwTxn<'_>, key: &str, value: &[u8]| {
        meta.put(wtxn, key, value)
            .map_err(StoreError::lmdb("writing meta"))
    };
    put(&mut wtxn, META_FORMAT, &FORMAT_VERSION.to_be_bytes())?;
    put(&mut wtxn, META_NODE_NAME, options.node_name.as_bytes())?;
    put(&mut wtxn, META_CLUSTER_ID, &cluster_id)?;
    put(&mut wtxn, META_PARTITIONS, &partitions.to_be_bytes())?;
    wtxn.commit()
        .map_err(StoreError::lmdb("creating the store"))?;
    let info = StoreInfo {
        path: dir.to_path_buf(),
        node_name: options.node_name.clone(),
        node_id: NodeId::from_name(&options.node_name),
        cluster_id,
        partitions,
    };
    Ok((meta, data, info))
}

#[cfg(test)]
mod tests;
