//! A running node: the thin runtime that drives the node core ([`crate::core`]).
//!
//! [`Node::start`] opens the store, joins or creates the cluster, boots the core, binds
//! the QUIC endpoint and starts the tasks: the core's own ([`driver`]: it owns the core,
//! sleeps until its next deadline and carries out what it asks), connections and
//! requests ([`server`], [`service`]), and one replication link per peer ([`links`]).
//! [`Node::shutdown`] tells the cluster, stops accepting, lets in-flight requests
//! finish, and closes the store cleanly. Reading the system clock, spawning tasks and
//! sockets happen here, never in the core.

mod config;
mod driver;
mod events;
mod future;
mod http;
mod join;
mod links;
pub mod metrics;
mod peers;
mod server;
mod service;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::config::*;
use self::config::{check_config, check_flags, new_cluster};
use self::driver::CoreHandle;
pub use self::http::openapi as http_openapi;
use self::peers::Peers;
pub use crate::core::ClusterView;
use crate::core::{CoreConfig, NodeCore, Now};
use crate::hlc::MAX_CLOCK_OFFSET_MS_DEFAULT;
use crate::limits::VALUE_BYTES_MAX_DEFAULT;
use crate::membership::{MemberId, MembershipConfig};
use crate::net::{self, NetError, TlsMaterial};
use crate::placement::{
    PARTITIONS_DEFAULT, PARTITIONS_MAX, REPLICATION_FACTOR_DEFAULT, REPLICATION_FACTOR_MAX,
};
use crate::protocol::{Consistency, Role};
use crate::storage::{
    ClusterSettings, HINTS_MAX_DEFAULT, MAP_SIZE_BYTES_DEFAULT, Store, StoreError, StoreOptions,
    WRITE_BATCH_MAX_DEFAULT,
};
use crate::wallclock::{system_wall_ms, system_wall_us};

/// State shared by every task of a node. What the node decides lives in its core
/// ([`NodeCore`]), which one task owns ([`driver`]); the others reach it through
/// [`CoreHandle`] and read the view it publishes.
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) store: Store,
    pub(crate) settings: ClusterSettings,
    pub(crate) local_addr: SocketAddr,
    pub(crate) me: MemberId,
    pub(crate) started: Instant,
    pub(crate) requests: Arc<tokio::sync::Semaphore>,
    pub(crate) connections_by_identity: Mutex<std::collections::HashMap<String, usize>>,
    /// Records per bucket, as last counted (see [`count_bucket_keys`]).
    pub(crate) bucket_keys:
        Mutex<Option<std::collections::BTreeMap<crate::buckets::BucketId, u64>>>,
    /// Someone read the counts since they were last made.
    pub(crate) bucket_keys_wanted: std::sync::atomic::AtomicBool,
    /// The core's view of the cluster, as of its last change.
    pub(crate) view: RwLock<Arc<ClusterView>>,
    pub(crate) peers: Peers,
    /// Seals this node's statuses and checks others' with the certificates met.
    pub(crate) seal: Arc<net::seal::CertSeal>,
    pub(crate) core: CoreHandle,
    pub(crate) left: Notify,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// The records of each bucket are counted by a scan of the keys, off the core: every
/// [`BUCKET_COUNT_EVERY`] while someone reads them (`status`, the dashboard), else
/// every [`BUCKET_COUNT_IDLE`] (for the metrics).
const BUCKET_COUNT_EVERY: Duration = Duration::from_secs(5);
const BUCKET_COUNT_IDLE: Duration = Duration::from_secs(60);

/// Counts each bucket's records now and then until the node stops.
async fn count_bucket_keys(shared: Arc<Shared>) {
    use std::sync::atomic::Ordering;
    loop {
        shared.bucket_keys_wanted.store(false, Ordering::Relaxed);
        let counting = shared.clone();
        let counted = tokio::task::spawn_blocking(move || counting.store.bucket_counts()).await;
        match counted {
            Ok(Ok(counts)) => *shared.bucket_keys.lock().expect("bucket keys lock") = Some(counts),
            Ok(Err(err)) => tracing::warn!(error = %err, "counting each bucket's records failed"),
            Err(err) => tracing::warn!(error = %err, "counting each bucket's records failed"),
        }
        let counted_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(BUCKET_COUNT_EVERY) => {}
            }
            if shared.bucket_keys_wanted.load(Ordering::Relaxed)
                || counted_at.elapsed() >= BUCKET_COUNT_IDLE
            {
                break;
            }
        }
    }
}

impl Shared {
    /// Fills in each bucket's records as last counted.
    pub(crate) fn fill_bucket_keys(&self, status: &mut crate::protocol::ClusterStatus) {
        self.bucket_keys_wanted
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let counts = self.bucket_keys.lock().expect("bucket keys lock");
        if let Some(counts) = counts.as_ref() {
            for bucket in &mut status.bucket_stats {
                bucket.keys = Some(counts.get(&bucket.id).copied().unwrap_or(0));
            }
        }
    }

    /// The node's two clocks, read together: what the core's inputs happen at.
    pub(crate) fn now(&self) -> Now {
        Now {
            mono_us: self.started.elapsed().as_micros() as u64,
            wall_us: system_wall_us(),
        }
    }

    /// The current cluster view.
    pub(crate) fn view(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock").clone()
    }
}

/// What the core is given of the node's configuration.
fn core_config(config: &NodeConfig) -> CoreConfig {
    CoreConfig {
        replica_timeout_ms: config.replica_timeout.as_millis() as u64,
        hint_window_ms: config.hint_window.as_millis() as u64,
        tombstone_grace_ms: config.tombstone_grace.as_millis() as u64,
        anti_entropy_interval_ms: config.anti_entropy_interval.map(|i| i.as_millis() as u64),
        max_clock_offset_ms: config.max_clock_offset_ms,
        value_bytes_max: config.value_bytes_max,
        ops_max: crate::coordinator::CoordinatorConfig::default().ops_max,
        exchanges_in_flight: config.exchanges_in_flight.max(1),
        repair_bytes_per_sec: config.repair_bytes_per_sec,
        sync_step_timeout_ms: SYNC_STEP_TIMEOUT.as_millis() as u64,
        default_consistency: config.default_consistency,
        membership: config.membership.clone(),
        route_to_home: true,
        write_fast_path: true,
    }
}

/// Time allowed for one anti-entropy exchange step.
const SYNC_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    http_addr: Option<SocketAddr>,
}

impl Node {
    /// Opens the store, joins or creates the cluster, binds the endpoint and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        check_config(&config)?;
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
        let client_config = net::client_config(&material)?;

        let mut store_options = StoreOptions::new(config.name.clone());
        store_options.map_size_bytes = config.map_size_bytes;
        store_options.write_batch_max = config.write_batch_max;
        store_options.durable = config.durable;
        store_options.hints_max = config.hints_max;
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, store_options))
            .await
            .map_err(|e| NodeError::Config(format!("store open task failed: {e}")))??;

        let mut endpoint =
            quinn::Endpoint::server(server_config, config.listen).map_err(|e| NodeError::Bind {
                addr: config.listen,
                message: e.to_string(),
            })?;
        endpoint.set_default_client_config(client_config);
        let local_addr = endpoint.local_addr().map_err(|e| NodeError::Bind {
            addr: config.listen,
            message: e.to_string(),
        })?;
        let advertise = config.advertise.unwrap_or(local_addr);
        if advertise.ip().is_unspecified() {
            return Err(NodeError::Config(format!(
                "listening on {local_addr}: give --advertise with the address the other nodes reach this one at"
            )));
        }
        let mut me = crate::core::identity(&store, &config.name, advertise, system_wall_ms())?;
        let seal = Arc::new(net::seal::CertSeal::new(&material)?);
        if !seal.can_sign() {
            tracing::warn!(
                "the key of this node's certificate cannot seal statuses (an RSA key?): the others take its status only from this node itself, never passed on; issue an ECDSA or Ed25519 certificate"
            );
        }
        let peers = Peers::new(endpoint.clone(), config.name.clone(), seal.clone());

        let had_cluster = store.cluster().is_some();
        let joined = join::join_or_create(&config, &store, &peers, &me).await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(err) => {
                endpoint.close(server::CLOSE_SHUTDOWN, b"join failed");
                store.close();
                return Err(err);
            }
        };
        let settings = store
            .cluster()
            .expect("the cluster is known after joining or creating it");
        let through = joined.through.clone();
        let (mut boot, notes) =
            crate::core::prepare(&store, &mut me, joined, had_cluster, settings)?;
        if let Some(epoch) = notes.epoch_raised {
            tracing::info!(
                "an earlier life of {} started later by its clock; this one takes start epoch {epoch}",
                me.name
            );
        }
        if notes.departed {
            tracing::warn!(
                "this node's name left the cluster or was removed while it was away: it refills every partition it holds before it counts in quorums"
            );
        }
        boot.seal = Some(seal.clone());
        boot.seed = random_seed();
        let started = Instant::now();
        let (handle, inputs) = CoreHandle::new();
        let shared0 = Shared {
            requests: Arc::new(tokio::sync::Semaphore::new(config.requests_max)),
            connections_by_identity: Mutex::new(std::collections::HashMap::new()),
            bucket_keys: Mutex::new(None),
            bucket_keys_wanted: std::sync::atomic::AtomicBool::new(false),
            settings,
            local_addr,
            me: me.clone(),
            started,
            view: RwLock::new(Arc::new(ClusterView::initial(
                &me,
                &settings,
                boot.filled.clone(),
            ))),
            peers,
            seal,
            core: handle,
            left: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            store,
            config,
        };
        // The cluster's view is installed before anything is served: members and their
        // states from the seed (or memory), placement, who holds which data.
        let core = NodeCore::new(
            core_config(&shared0.config),
            boot,
            shared0.now(),
            &shared0.store,
        );
        *shared0.view.write().expect("view lock") = core.view().clone();
        let shared = Arc::new(shared0);
        let view = shared.view();
        tracing::info!(
            members = view.members.len(),
            through = through.as_deref().unwrap_or("memory"),
            partitions_filling = view.filling_of(&shared.me.name),
            "cluster view installed"
        );
        let tasks = &shared.tasks;
        tasks.spawn(driver::run(shared.clone(), core, inputs));
        tasks.spawn(server::accept_loop(endpoint.clone(), shared.clone()));
        tasks.spawn(count_bucket_keys(shared.clone()));
        let http_addr = match shared.config.http_listen {
            Some(addr) => match http::start(shared.clone(), addr, &material).await {
                Ok(bound) => Some(bound),
                Err(err) => {
                    shared.shutdown.cancel();
                    endpoint.close(server::CLOSE_SHUTDOWN, b"start failed");
                    return Err(NodeError::Config(err));
                }
            },
            None => None,
        };
        tracing::info!(
            node = %shared.config.name,
            addr = %local_addr,
            data_dir = %shared.config.data_dir.display(),
            cluster = %shared.settings.id_hex(),
            partitions = shared.settings.partitions,
            replication_factor = shared.settings.replication_factor,
            incarnation = me.incarnation,
            "node started"
        );
        Ok(Node {
            shared,
            endpoint,
            http_addr,
        })
    }

    /// The address the HTTPS API listens on, when it is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The node's current view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared.view()
    }

    /// This replica's store: what it holds, read directly. For tools and tests; a
    /// write through it bypasses replication.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Resolves once the node has left the cluster (after `vergent leave`).
    pub async fn left(&self) {
        self.shared.left.notified().await;
    }

    /// Stops accepting, waits (up to [`SHUTDOWN_GRACE`]) for in-flight requests, closes
    /// connections and the store.
    pub async fn shutdown(self) {
        let Node {
            shared, endpoint, ..
        } = self;
        tracing::info!(node = %shared.config.name, "shutting down");
        if tokio::time::timeout(
            Duration::from_secs(1),
            shared.core.ask(crate::core::Ask::GoDown),
        )
        .await
        .is_ok()
        {
            // Datagrams leave with the connections' next flush; closing them at once
            // would drop the news.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; closing anyway");
        }
        endpoint.close(server::CLOSE_SHUTDOWN, b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        match Arc::into_inner(shared) {
            Some(shared) => {
                let _ = tokio::task::spawn_blocking(move || shared.store.close()).await;
            }
            None => tracing::warn!("tasks still hold the store; it closes when they end"),
        }
        tracing::info!("stopped");
    }
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
