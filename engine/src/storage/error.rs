use std::path::PathBuf;

use crate::record::RecordDecodeError;

/// What went wrong in storage. Every variant says what happened and what it did to
/// the store: opening errors leave the directory untouched; write errors roll the whole
/// transaction back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be created or read.
    #[error("data directory {path}: {message}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The operating system's message.
        message: String,
    },
    /// Another process has the directory open.
    #[error(
        "data directory {path} is in use by another process (it holds the lock on {path}/LOCK); stop it or choose another --data-dir"
    )]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The directory was written by a format this build does not know; nothing was changed.
    #[error(
        "data directory {path} has storage format {found}, this build reads format {supported}; nothing was changed"
    )]
    UnsupportedFormat {
        /// The directory.
        path: PathBuf,
        /// The format found on disk.
        found: u32,
        /// The format this build reads and writes.
        supported: u32,
    },
    /// A directory from before buckets holds keys that would read as another bucket's.
    #[error(
        "data directory {path} is from before buckets and holds {count} keys that start with the bytes buckets other than default use ({example}, …); this build cannot tell them apart from a bucket's: move them with the build that wrote them; nothing was changed"
    )]
    KeysLikeBuckets {
        /// The directory.
        path: PathBuf,
        /// How many such keys.
        count: u64,
        /// The first, escaped.
        example: String,
    },
    /// The directory belongs to another node; nothing was changed.
    #[error(
        "data directory {path} belongs to node {found:?}, not {expected:?}; nothing was changed"
    )]
    WrongNode {
        /// The directory.
        path: PathBuf,
        /// The name stored in it.
        found: String,
        /// The name this node was started with.
        expected: String,
    },
    /// A cluster setting differs from what the directory was created with.
    #[error(
        "data directory {path} was created with {setting} = {stored}, but this node was started with {requested}; cluster settings are fixed when the cluster is created"
    )]
    SettingMismatch {
        /// The directory.
        path: PathBuf,
        /// Which setting.
        setting: &'static str,
        /// The stored value.
        stored: String,
        /// The value asked for.
        requested: String,
    },
    /// The directory holds data of another cluster; nothing was changed.
    #[error(
        "data directory {path} holds data of cluster {stored}, not of cluster {requested}; a node never moves between clusters (use another --data-dir)"
    )]
    OtherCluster {
        /// The directory.
        path: PathBuf,
        /// The cluster id stored, hex.
        stored: String,
        /// The cluster id asked for, hex.
        requested: String,
    },
    /// The store does not know its cluster yet (the node has not created or joined one).
    #[error("the node has not created or joined a cluster yet")]
    NoCluster,
    /// A stored value could not be decoded: the file is damaged or was written by
    /// something else. The operation was refused.
    #[error("corrupt {what} in storage: {detail}")]
    Corrupt {
        /// Which table or record.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The memory map is full; the transaction was rolled back.
    #[error(
        "storage is full: the LMDB map size of {map_size_bytes} bytes is reached; restart the node with a larger --map-size"
    )]
    Full {
        /// The configured map size.
        map_size_bytes: usize,
    },
    /// The device holding the data directory has no space left; the transaction was
    /// rolled back and the data on disk is as it was before it.
    #[error(
        "storage is full: the device has no space left ({cause}); the write was not applied; {}: free space there or move --data-dir",
        free_space(path, *available_bytes)
    )]
    DeviceFull {
        /// The data directory.
        path: PathBuf,
        /// The device's error, e.g. "No space left on device, os error 28".
        cause: String,
        /// Bytes free to unprivileged writers when the failure was seen, if known.
        available_bytes: Option<u64>,
    },
    /// A key outside the key limits reached storage; nothing was written. Keys are
    /// checked where they arrive, so this is the last line: an empty key would be
    /// stored under a tree leaf's own row.
    #[error("key refused by storage: {0}; nothing was written")]
    BadKey(#[from] crate::limits::LimitError),
    /// A typed value refused the update (a limit, or another type); nothing changed.
    #[error("{0}")]
    Type(#[from] crate::types::TypeError),
    /// A tree node the tree does not have was asked for; nothing was read.
    #[error(
        "the tree has no node at level {level}, index {index} (levels 0 to 3, level L has 16^L nodes)"
    )]
    NoSuchTreeNode {
        /// The level asked for.
        level: u8,
        /// The index asked for.
        index: usize,
    },
    /// LMDB reported an error; the transaction (if any) was rolled back.
    #[error("storage error while {context}: {message}")]
    Lmdb {
        /// What the store was doing.
        context: &'static str,
        /// LMDB's message.
        message: String,
    },
    /// The store is shutting down and takes no more writes.
    #[error("storage is closed: the node is shutting down")]
    Closed,
}

impl StoreError {
    pub(crate) fn lmdb(context: &'static str) -> impl FnOnce(heed::Error) -> StoreError {
        move |err| StoreError::Lmdb {
            context,
            message: err.to_string(),
        }
    }

    pub(crate) fn corrupt_record(err: RecordDecodeError) -> StoreError {
        StoreError::Corrupt {
            what: "record",
            detail: err.to_string(),
        }
    }
}

fn free_space(path: &std::path::Path, available_bytes: Option<u64>) -> String {
    match available_bytes {
        Some(bytes) => format!("{bytes} bytes free on {}", path.display()),
        None => format!("free space unknown on {}", path.display()),
    }
}
