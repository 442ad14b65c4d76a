//! A running node: the thin runtime around storage and the request handlers.
//!
//! [`Node::start`] opens the store, binds the QUIC endpoint and accepts connections;
//! [`Node::shutdown`] stops accepting, lets in-flight requests finish, and closes the
//! store cleanly. Reading the system clock and spawning tasks happen here, never in the
//! mechanisms below.

mod server;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hlc::{Clock, MAX_CLOCK_OFFSET_MS_DEFAULT};
use crate::limits::VALUE_BYTES_MAX_DEFAULT;
use crate::net::{self, NetError, TlsMaterial};
use crate::protocol::Role;
use crate::storage::{
    MAP_SIZE_BYTES_DEFAULT, Store, StoreError, StoreOptions, WRITE_BATCH_MAX_DEFAULT,
};

/// Default time a request may take, from its first byte to its answer.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default most client and peer connections at once.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Default most requests in flight at once, across all connections.
pub const REQUESTS_MAX_DEFAULT: usize = 8192;
/// How long shutdown waits for in-flight requests before closing anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's name; must match its certificate.
    pub name: String,
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The LMDB data directory.
    pub data_dir: PathBuf,
    /// Directory with `ca.crt`, `NAME.crt`, `NAME.key`.
    pub certs_dir: PathBuf,
    /// Partitions, when creating a cluster (checked against the store otherwise).
    pub partitions: Option<u16>,
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
    /// Time allowed per request.
    pub request_timeout: Duration,
    /// Most connections at once.
    pub connections_max: usize,
    /// Most requests in flight at once.
    pub requests_max: usize,
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
            data_dir,
            certs_dir,
            partitions: None,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            write_batch_max: WRITE_BATCH_MAX_DEFAULT,
            durable: true,
            map_size_bytes: MAP_SIZE_BYTES_DEFAULT,
            max_clock_offset_ms: MAX_CLOCK_OFFSET_MS_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            requests_max: REQUESTS_MAX_DEFAULT,
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
}

/// State shared by every connection and request of a node.
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) store: Store,
    pub(crate) clock: Mutex<Clock>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) started: Instant,
    pub(crate) requests: Arc<tokio::sync::Semaphore>,
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Node {
    /// Opens the store, binds the endpoint and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if config.value_bytes_max > crate::limits::VALUE_BYTES_MAX_CEILING {
            return Err(NodeError::Config(format!(
                "value limit of {} bytes is above the ceiling of {} bytes",
                config.value_bytes_max,
                crate::limits::VALUE_BYTES_MAX_CEILING
            )));
        }
        crate::certs::check_name(&config.name).map_err(|e| NodeError::Config(e.to_string()))?;
        let material = TlsMaterial::load(&config.certs_dir, &config.name)?;
        let identity = material.identity()?;
        if identity.name != config.name || identity.role != Role::Node {
            return Err(NodeError::WrongCertificate {
                path: crate::certs::paths(&config.certs_dir, &config.name).0,
                name: config.name.clone(),
                found_name: identity.name,
                found_role: identity.role,
            });
        }
        let server_config = net::server_config(&material)?;

        let mut store_options = StoreOptions::new(config.name.clone());
        store_options.map_size_bytes = config.map_size_bytes;
        store_options.write_batch_max = config.write_batch_max;
        store_options.durable = config.durable;
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
            .await
            .map_err(|e| NodeError::Config(format!("store open task failed: {e}")))??;
        if store.cluster().is_none() {
            let mut cluster_id = [0u8; 16];
            getrandom::fill(&mut cluster_id).map_err(|e| NodeError::Config(e.to_string()))?;
            store.set_cluster(crate::storage::ClusterSettings {
                cluster_id,
                partitions: config
                    .partitions
                    .unwrap_or(crate::placement::PARTITIONS_DEFAULT),
                replication_factor: 3,
            })?;
        }
        let clock = Clock::starting_after(store.hlc_high_water()?, config.max_clock_offset_ms);

        let endpoint =
            quinn::Endpoint::server(server_config, config.listen).map_err(|e| NodeError::Bind {
                addr: config.listen,
                message: e.to_string(),
            })?;
        let local_addr = endpoint.local_addr().map_err(|e| NodeError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
        let shared = Arc::new(Shared {
            requests: Arc::new(tokio::sync::Semaphore::new(config.requests_max)),
            config,
            store,
            clock: Mutex::new(clock),
            local_addr,
            started: Instant::now(),
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(server::accept_loop(
            endpoint.clone(),
            shared.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        tracing::info!(
            node = %shared.config.name,
            addr = %local_addr,
            data_dir = %shared.config.data_dir.display(),
            partitions = shared.store.cluster().map_or(0, |c| c.partitions),
            "node started"
        );
        Ok(Node {
            shared,
            endpoint,
            shutdown,
            tasks,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Stops accepting, waits (up to [`SHUTDOWN_GRACE`]) for in-flight requests, closes
    /// connections and the store.
    pub async fn shutdown(self) {
        tracing::info!(node = %self.shared.config.name, "shutting down");
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
        }
        self.endpoint
            .close(server::CLOSE_SHUTDOWN, b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        match Arc::into_inner(self.shared) {
            Some(shared) => {
                let _ = tokio::task::spawn_blocking(move || shared.store.close()).await;
            }
            None => tracing::warn!("requests still hold the store; it closes when they end"),
        }
        tracing::info!("stopped");
    }
}
