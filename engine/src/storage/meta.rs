//! The `meta` table: what a data directory is, whose it is, and which cluster it serves.

use std::path::Path;

use heed::types::{Bytes, Str};
use heed::{Database, RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::placement::PartitionSet;

/// The storage format this build reads and writes: 2 since buckets (a format-1
/// directory is the same layout; it is taken once it is checked that none of its keys
/// look like another bucket's, see [`super::open`]).
pub const FORMAT_VERSION: u32 = 2;
/// The format before buckets.
pub(crate) const FORMAT_BEFORE_BUCKETS: u32 = 1;

pub(crate) const FORMAT: &str = "format_version";
pub(crate) const NODE_NAME: &str = "node_name";
pub(crate) const CLUSTER: &str = "cluster";
pub(crate) const INCARNATION: &str = "incarnation";
pub(crate) const HLC_HIGH_WATER: &str = "hlc_high_water";
pub(crate) const FILLED: &str = "filled_partitions";
pub(crate) const TOKEN: &str = "placement_token";
pub(crate) const DATA_EPOCH: &str = "data_epoch";
pub(crate) const START_EPOCH: &str = "start_epoch";
pub(crate) const CATALOG: &str = "bucket_catalog";

/// The settings a cluster is created with. They never change afterwards; a node holding
/// data of one cluster is never allowed into another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Random, chosen by the first node.
    pub cluster_id: [u8; 16],
    /// Partitions the key space is cut into.
    pub partitions: u16,
    /// Copies of each partition.
    pub replication_factor: u8,
    /// The secret key of the Merkle trees' entry hashes; shared by the nodes only.
    pub tree_key: [u8; 32],
}

impl ClusterSettings {
    /// The cluster id in hex.
    pub fn id_hex(&self) -> String {
        self.cluster_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A cluster member as remembered across restarts, so a restarted node knows the
/// placement view before it has heard from anyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its name.
    pub name: String,
    /// Where it was last seen listening.
    pub addr: std::net::SocketAddr,
    /// Whether it left the cluster gracefully or was removed (and so holds no partitions).
    pub left: bool,
    /// Its placement token, when it is not its name.
    pub token: Option<String>,
    /// For a member that left or was removed: the life that departed (epoch,
    /// incarnation), so the departure outlives a restart of the node that knows it.
    pub departed: Option<(u64, u32)>,
}

impl MemberRecord {
    /// Decodes a stored record, written by this build or by one from before tokens.
    pub(crate) fn decode(bytes: &[u8]) -> Result<MemberRecord, postcard::Error> {
        #[derive(Deserialize)]
        struct Untokened {
            name: String,
            addr: std::net::SocketAddr,
            left: bool,
        }
        match postcard::from_bytes::<MemberRecord>(bytes) {
            Ok(record) => Ok(record),
            Err(err) => match postcard::from_bytes::<Untokened>(bytes) {
                Ok(old) => Ok(MemberRecord {
                    name: old.name,
                    addr: old.addr,
                    left: old.left,
                    token: None,
                    departed: None,
                }),
                Err(_) => Err(err),
            },
        }
    }
}

pub(crate) fn get_u64(
    meta: &Database<Str, Bytes>,
    txn: &RoTxn<'_, WithoutTls>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    let raw = meta
        .get(txn, key)
        .map_err(StoreError::lmdb("reading meta"))?;
    raw.map(|bytes| {
        bytes
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt {
                what: "meta table",
                detail: format!("{key} has the wrong size"),
            })
    })
    .transpose()
}

pub(crate) fn get_cluster(
    meta: &Database<Str, Bytes>,
    txn: &RoTxn<'_, WithoutTls>,
) -> Result<Option<ClusterSettings>, StoreError> {
    let raw = meta
        .get(txn, CLUSTER)
        .map_err(StoreError::lmdb("reading meta"))?;
    raw.map(|bytes| {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            what: "meta table",
            detail: format!("cluster settings: {e}"),
        })
    })
    .transpose()
}

pub(crate) fn put_cluster(
    meta: &Database<Str, Bytes>,
    wtxn: &mut RwTxn<'_>,
    settings: &ClusterSettings,
) -> Result<(), StoreError> {
    let bytes = postcard::to_allocvec(settings).map_err(|e| StoreError::Corrupt {
        what: "cluster settings",
        detail: e.to_string(),
    })?;
    meta.put(wtxn, CLUSTER, &bytes)
        .map_err(StoreError::lmdb("writing meta"))
}

/// Checks the format and owner of an existing directory; refuses without writing.
pub(crate) fn check_existing(
    meta: &Database<Str, Bytes>,
    txn: &RoTxn<'_, WithoutTls>,
    dir: &Path,
    node_name: &str,
) -> Result<(), StoreError> {
    let missing = |key: &str| StoreError::Corrupt {
        what: "meta table",
        detail: format!("{key} is missing"),
    };
    let format = meta
        .get(txn, FORMAT)
        .map_err(StoreError::lmdb("reading meta"))?
        .ok_or_else(|| missing(FORMAT))?;
    let format = u32::from_be_bytes(format.try_into().map_err(|_| StoreError::Corrupt {
        what: "meta table",
        detail: format!("{FORMAT} has the wrong size"),
    })?);
    if format != FORMAT_VERSION && format != FORMAT_BEFORE_BUCKETS {
        return Err(StoreError::UnsupportedFormat {
            path: dir.to_path_buf(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let name = meta
        .get(txn, NODE_NAME)
        .map_err(StoreError::lmdb("reading meta"))?
        .ok_or_else(|| missing(NODE_NAME))?;
    let name = String::from_utf8_lossy(name).into_owned();
    if name != node_name {
        return Err(StoreError::WrongNode {
            path: dir.to_path_buf(),
            found: name,
            expected: node_name.to_string(),
        });
    }
    Ok(())
}

impl super::Store {
    /// The partitions this replica holds the data of: filled from the other replicas
    /// (or owned since the cluster was created), and not handed away since. `None` for
    /// a directory that has never recorded it.
    pub fn filled(&self) -> Result<Option<PartitionSet>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let raw = self
            .tables
            .meta
            .get(&rtxn, FILLED)
            .map_err(StoreError::lmdb("reading meta"))?;
        raw.map(|bytes| {
            postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
                what: "meta table",
                detail: format!("filled partitions: {e}"),
            })
        })
        .transpose()
    }

    /// Records which partitions this replica holds the data of, durably.
    pub fn save_filled(&self, filled: &PartitionSet) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(filled).map_err(|e| StoreError::Corrupt {
            what: "filled partitions",
            detail: e.to_string(),
        })?;
        let mut wtxn = self.tables.write_txn()?;
        self.tables
            .meta
            .put(&mut wtxn, FILLED, &bytes)
            .map_err(StoreError::lmdb("writing the filled partitions"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the filled partitions"))
    }

    /// The bucket catalog this node knows (empty: only `default`).
    pub fn catalog(&self) -> Result<crate::buckets::Catalog, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let raw = self
            .tables
            .meta
            .get(&rtxn, CATALOG)
            .map_err(StoreError::lmdb("reading meta"))?;
        match raw {
            None => Ok(crate::buckets::Catalog::default()),
            Some(bytes) => {
                crate::buckets::Catalog::decode(bytes).map_err(|detail| StoreError::Corrupt {
                    what: "meta table",
                    detail,
                })
            }
        }
    }

    /// Records the bucket catalog, durably.
    pub fn save_catalog(&self, catalog: &crate::buckets::Catalog) -> Result<(), StoreError> {
        let mut wtxn = self.tables.write_txn()?;
        self.tables
            .meta
            .put(&mut wtxn, CATALOG, &catalog.encode())
            .map_err(StoreError::lmdb("writing the bucket catalog"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the bucket catalog"))
    }

    /// The epoch of the life that created this data directory, recording `epoch` the
    /// first time it is asked.
    pub fn data_epoch_or(&self, epoch: u64) -> Result<u64, StoreError> {
        let known = {
            let rtxn = self.tables.read_txn()?;
            get_u64(&self.tables.meta, &rtxn, DATA_EPOCH)?
        };
        if let Some(known) = known {
            return Ok(known);
        }
        let mut wtxn = self.tables.write_txn()?;
        self.tables
            .meta
            .put(&mut wtxn, DATA_EPOCH, &epoch.to_be_bytes())
            .map_err(StoreError::lmdb("writing the data epoch"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the data epoch"))?;
        Ok(epoch)
    }

    /// The epoch of this start: `wall_ms`, or one above the last start's when the wall
    /// clock reads less (it stepped back, or the last start ran on a clock that was
    /// ahead), so every start's identity sorts above every earlier one.
    pub fn next_start_epoch(&self, wall_ms: u64) -> Result<u64, StoreError> {
        self.update_start_epoch(|last| wall_ms.max(last.saturating_add(1)))
    }

    /// Raises the stored start epoch to at least `epoch` (a seed knew an earlier life of
    /// this name with a later epoch: a wiped disk lost the count).
    pub fn raise_start_epoch(&self, epoch: u64) -> Result<(), StoreError> {
        self.update_start_epoch(|last| last.max(epoch)).map(|_| ())
    }

    fn update_start_epoch(&self, next: impl FnOnce(u64) -> u64) -> Result<u64, StoreError> {
        let mut wtxn = self.tables.write_txn()?;
        let last = get_u64(&self.tables.meta, &wtxn, START_EPOCH)?.unwrap_or(0);
        let next = next(last);
        self.tables
            .meta
            .put(&mut wtxn, START_EPOCH, &next.to_be_bytes())
            .map_err(StoreError::lmdb("writing the start epoch"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the start epoch"))?;
        Ok(next)
    }

    /// This node's placement token, when it replaced another member.
    pub fn placement_token(&self) -> Result<Option<String>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        Ok(self
            .tables
            .meta
            .get(&rtxn, TOKEN)
            .map_err(StoreError::lmdb("reading meta"))?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// Records this node's placement token (it replaced the member that held it).
    pub fn save_placement_token(&self, token: &str) -> Result<(), StoreError> {
        let mut wtxn = self.tables.write_txn()?;
        self.tables
            .meta
            .put(&mut wtxn, TOKEN, token.as_bytes())
            .map_err(StoreError::lmdb("writing the placement token"))?;
        wtxn.commit()
            .map_err(StoreError::lmdb("writing the placement token"))
    }
}
