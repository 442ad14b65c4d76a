//! A node's configuration, its defaults, the errors a start can end in, and the
//! checks of the configuration against itself and against the cluster it joins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
/// Default time a request may take, from its first byte to its answer.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default most client and peer connections at once.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Default most connections from one certificate.
pub const CONNECTIONS_PER_IDENTITY_MAX_DEFAULT: usize = 256;
/// Default most requests in flight at once, across all connections.
pub const REQUESTS_MAX_DEFAULT: usize = 8192;
/// How long shutdown waits for in-flight requests before closing anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a stream may sit between requests before the node closes it.
pub const STREAM_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Default age past which undelivered hints are dropped and left to anti-entropy.
pub const HINT_WINDOW_DEFAULT: Duration = Duration::from_secs(3 * 3600);
/// Default attempts to reach a seed when joining.
pub const JOIN_ATTEMPTS_DEFAULT: u32 = 5;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name; must match its certificate.
    pub name: String,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Address to serve the HTTPS API on (TCP), if any.
    pub http_listen: Option<SocketAddr>,
    /// Address the other nodes reach this one at (default: the bound address).
    pub advertise: Option<SocketAddr>,
    /// The LMDB data directory.
    pub data_dir: PathBuf,
    /// Directory with `ca.crt`, `NAME.crt`, `NAME.key`.
    pub certs_dir: PathBuf,
    /// Members to join through (`host:port`); empty to create a cluster (or restart one).
    pub join: Vec<String>,
    /// Rounds of attempts at the seeds before giving up on a first join.
    pub join_attempts: u32,
    /// A dead member whose place and partitions this node takes (with `join`).
    pub replace: Option<String>,
    /// Partitions, when creating a cluster; checked against the cluster otherwise.
    pub partitions: Option<u16>,
    /// Copies of each partition, when creating a cluster; checked otherwise.
    pub replication_factor: Option<u8>,
    /// Consistency of operations that do not choose one.
    pub default_consistency: Consistency,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
    /// Most write requests merged into one transaction (1 disables group commit).
    pub write_batch_max: usize,
    /// Whether commits are flushed to disk before they are acknowledged.
    pub durable: bool,
    /// LMDB map size in bytes.
    pub map_size_bytes: usize,
    /// How far ahead of local wall time a received timestamp may be, in milliseconds.
    pub max_clock_offset_ms: u64,
    /// Time allowed per client request.
    pub request_timeout: Duration,
    /// Time a coordinated write or read waits for replicas.
    pub replica_timeout: Duration,
    /// How long a stream may wait for its next request before the node closes it.
    pub stream_idle_timeout: Duration,
    /// Most connections at once.
    pub connections_max: usize,
    /// Most connections at once from one certificate (node, client or admin).
    pub connections_per_identity_max: usize,
    /// Most requests in flight at once.
    pub requests_max: usize,
    /// Most hints kept.
    pub hints_max: u64,
    /// Age past which hints are dropped.
    pub hint_window: Duration,
    /// SWIM timing.
    pub membership: MembershipConfig,
    /// Time between background anti-entropy runs (jittered by up to a fifth); `None`
    /// turns background runs off (repair on demand only).
    pub anti_entropy_interval: Option<Duration>,
    /// Age past which tombstones may be purged, once every replica holds them.
    pub tombstone_grace: Duration,
    /// Bytes of entries per second repair may move (0: unlimited).
    pub repair_bytes_per_sec: u64,
    /// Partitions exchanged at once with one peer.
    pub exchanges_in_flight: usize,
}

impl NodeConfig {
    /// Defaults for a node called `name`.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        data_dir: PathBuf,
        certs_dir: PathBuf,
    ) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            listen,
            http_listen: None,
            advertise: None,
            data_dir,
            certs_dir,
            join: Vec::new(),
            join_attempts: JOIN_ATTEMPTS_DEFAULT,
            replace: None,
            partitions: None,
            replication_factor: None,
            default_consistency: Consistency::Quorum,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            write_batch_max: WRITE_BATCH_MAX_DEFAULT,
            durable: true,
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            max_clock_offset_ms: MAX_CLOCK_OFFSET_MS_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            replica_timeout: Duration::from_secs(5),
            stream_idle_timeout: STREAM_IDLE_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_identity_max: CONNECTIONS_PER_IDENTITY_MAX_DEFAULT,
            requests_max: REQUESTS_MAX_DEFAULT,
            hints_max: HINTS_MAX_DEFAULT,
            hint_window: HINT_WINDOW_DEFAULT,
            membership: MembershipConfig::default(),
            anti_entropy_interval: Some(Duration::from_secs(60)),
            tombstone_grace: Duration::from_secs(24 * 3600),
            repair_bytes_per_sec: 64 << 20,
            exchanges_in_flight: 16,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Certificates could not be loaded or do not fit the node.
    #[error("{0}")]
    Tls(#[from] NetError),
    /// The certificate does not belong to this node.
    #[error(
        "certificate {path} is for {found_role} {found_name:?}, but this node is node {name:?}; issue one with `vergent certs node {name}`"
    )]
    WrongCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The node's name.
        name: String,
        /// The name in the certificate.
        found_name: String,
        /// The role in the certificate.
        found_role: Role,
    },
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's message.
        message: String,
    },
    /// Joining the cluster failed.
    #[error("{0}")]
    Join(String),
}

pub(super) fn check_config(config: &NodeConfig) -> Result<(), NodeError> {
    if config.value_bytes_max > crate::limits::VALUE_BYTES_MAX_CEILING {
        return Err(NodeError::Config(format!(
            "value limit of {} bytes is above the ceiling of {} bytes",
            config.value_bytes_max,
            crate::limits::VALUE_BYTES_MAX_CEILING
        )));
    }
    crate::certs::check_name(&config.name).map_err(|e| NodeError::Config(e.to_string()))?;
    // A hint may be delivered until it is a window old; were the tombstone that
    // superseded it purged before then, the hint would bring the deleted key back.
    let grace_floor = config.hint_window + Duration::from_millis(config.max_clock_offset_ms);
    if config.tombstone_grace <= grace_floor {
        return Err(NodeError::Config(format!(
            "--tombstone-grace {} must be longer than --hint-window {} plus the clock offset bound ({} ms): a hint delivered after the tombstone that superseded it was purged would bring a deleted key back",
            humantime::format_duration(config.tombstone_grace),
            humantime::format_duration(config.hint_window),
            config.max_clock_offset_ms
        )));
    }
    if let Some(p) = config.partitions
        && (p == 0 || p > PARTITIONS_MAX)
    {
        return Err(NodeError::Config(format!(
            "--partitions {p}: the range is 1 to {PARTITIONS_MAX}"
        )));
    }
    if let Some(rf) = config.replication_factor
        && (rf == 0 || rf > REPLICATION_FACTOR_MAX)
    {
        return Err(NodeError::Config(format!(
            "--replication-factor {rf}: the range is 1 to {REPLICATION_FACTOR_MAX}"
        )));
    }
    Ok(())
}

/// Settings for a new cluster created by this node.
pub(super) fn new_cluster(config: &NodeConfig) -> Result<ClusterSettings, NodeError> {
    let mut cluster_id = [0u8; 16];
    let mut tree_key = [0u8; 32];
    getrandom::fill(&mut cluster_id)
        .and_then(|()| getrandom::fill(&mut tree_key))
        .map_err(|e| NodeError::Config(format!("no randomness for the cluster id: {e}")))?;
    Ok(ClusterSettings {
        cluster_id,
        tree_key,
        partitions: config.partitions.unwrap_or(PARTITIONS_DEFAULT),
        replication_factor: config
            .replication_factor
            .unwrap_or(REPLICATION_FACTOR_DEFAULT),
    })
}

/// Refuses flags that disagree with the cluster's settings.
pub(super) fn check_flags(
    config: &NodeConfig,
    settings: &ClusterSettings,
) -> Result<(), NodeError> {
    if let Some(p) = config.partitions
        && p != settings.partitions
    {
        return Err(NodeError::Config(format!(
            "the cluster has {} partitions, but this node was started with --partitions {p}; partitions are fixed when the cluster is created",
            settings.partitions
        )));
    }
    if let Some(rf) = config.replication_factor
        && rf != settings.replication_factor
    {
        return Err(NodeError::Config(format!(
            "the cluster has replication factor {}, but this node was started with --replication-factor {rf}; it is fixed when the cluster is created",
            settings.replication_factor
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        NodeConfig::new(
            "n1",
            "127.0.0.1:0".parse().expect("an address"),
            PathBuf::from("data"),
            PathBuf::from("certs"),
        )
    }

    #[test]
    fn the_defaults_pass() {
        assert!(check_config(&config()).is_ok());
    }

    #[test]
    fn a_tombstone_grace_within_the_hint_window_is_refused_by_name() {
        let mut c = config();
        c.hint_window = Duration::from_secs(3 * 3600);
        c.tombstone_grace = Duration::from_secs(3600);
        let err = check_config(&c).expect_err("a grace shorter than the window");
        let text = err.to_string();
        assert!(text.contains("--tombstone-grace 1h"), "{text}");
        assert!(text.contains("--hint-window 3h"), "{text}");
        // The bound is strict and counts the clock offset bound.
        c.tombstone_grace = c.hint_window + Duration::from_millis(c.max_clock_offset_ms);
        assert!(check_config(&c).is_err());
        c.tombstone_grace += Duration::from_millis(1);
        assert!(check_config(&c).is_ok());
    }
}
