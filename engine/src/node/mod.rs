//! A running node: the thin runtime that drives the deterministic mechanisms.
//!
//! [`Node::start`] opens the store, joins or creates the cluster, binds the QUIC
//! endpoint and starts the tasks: connections and requests ([`server`]), membership
//! ([`cluster`]), coordination and push replication ([`replication`]), hint delivery
//! ([`hints`]). [`Node::shutdown`] stops accepting, lets in-flight requests finish, and
//! closes the store cleanly. Reading the system clock, spawning tasks and sockets happen
//! here, never in the mechanisms.

mod antientropy;
mod arrivals;
mod clocks;
mod cluster;
mod config;
mod fill;
mod future;
mod hints;
mod join;
pub mod metrics;
mod peers;
mod reach;
mod replication;
mod server;
mod service;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::config::*;
use self::config::{check_config, check_flags, new_cluster};
use self::peers::Peers;
use crate::antientropy::confirm::WriteMarks;
use crate::coordinator::{Coordinator, CoordinatorConfig, Millis};
pub use crate::core::ClusterView;
use crate::hlc::{Clock, MAX_CLOCK_OFFSET_MS_DEFAULT};
use crate::limits::VALUE_BYTES_MAX_DEFAULT;
use crate::membership::{MemberId, Membership, MembershipConfig};
use crate::net::{self, NetError, TlsMaterial};
use crate::placement::{
    Fill, FillNews, PARTITIONS_DEFAULT, PARTITIONS_MAX, PartitionSet, REPLICATION_FACTOR_DEFAULT,
    REPLICATION_FACTOR_MAX, partition_of,
};
use crate::protocol::{Consistency, Role};
use crate::storage::{
    ClusterSettings, HINTS_MAX_DEFAULT, MAP_SIZE_BYTES_DEFAULT, Store, StoreError, StoreOptions,
    WRITE_BATCH_MAX_DEFAULT,
};

/// State shared by every task of a node.
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) store: Store,
    pub(crate) settings: ClusterSettings,
    pub(crate) clock: Mutex<Clock>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) me: MemberId,
    pub(crate) started: Instant,
    pub(crate) requests: Arc<tokio::sync::Semaphore>,
    pub(crate) connections_by_identity: Mutex<std::collections::HashMap<String, usize>>,
    pub(crate) view: RwLock<Arc<ClusterView>>,
    /// Which partitions this node holds the data of.
    pub(crate) fill: Mutex<Fill>,
    /// The last and oldest unconfirmed change this node made to each partition.
    pub(crate) write_marks: WriteMarks,
    /// When tombstones landed here, which purges stay below.
    pub(crate) arrivals: arrivals::ArrivalsBook,
    /// When this node learned of each member's fills, for [`ClusterView::settling`].
    pub(crate) fill_news: Mutex<FillNews>,
    pub(crate) peers: Peers,
    /// Seals this node's statuses and checks others' with the certificates met.
    pub(crate) seal: Arc<net::seal::CertSeal>,
    pub(crate) replication: replication::Replication,
    pub(crate) membership: cluster::MembershipHandle,
    pub(crate) hints_wake: Notify,
    pub(crate) anti_entropy: antientropy::AntiEntropy,
    pub(crate) writes: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) clock_refusals: AtomicU64,
    /// Set while `rewrite-future` runs: this node coordinates no writes meanwhile.
    pub(crate) rewriting_future: std::sync::atomic::AtomicBool,
    /// Every live peer's clock against this node's.
    pub(crate) skew: Mutex<crate::hlc::skew::SkewBook>,
    /// Set while another process holds this node's name: the node serves no data then.
    pub(crate) stepped_aside: Mutex<Option<String>>,
    pub(crate) left: Notify,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Shared {
    /// Monotonic milliseconds since the node started: the mechanisms' clock.
    pub(crate) fn now(&self) -> Millis {
        Millis(self.started.elapsed().as_millis() as u64)
    }

    /// The current cluster view.
    pub(crate) fn view(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock").clone()
    }

    /// Notes changes this node is about to make to partitions: client writes,
    /// replication, hints and what anti-entropy brings (the compare that ends an
    /// exchange comes after, and confirms it). Hold the guard until the write is done:
    /// its tombstones hold purges back meanwhile.
    pub(crate) fn note_writes(&self, entries: &[crate::record::Entry]) -> arrivals::Landing {
        self.note_keys(entries.iter().map(|e| e.key.as_slice()));
        self.arrivals.landing(entries)
    }

    /// Applies `entries` to the store, noted as [`Shared::note_writes`] says for as long
    /// as the write takes.
    pub(crate) async fn apply_noted(
        &self,
        entries: Vec<crate::record::Entry>,
    ) -> Result<Vec<crate::storage::ApplyOutcome>, StoreError> {
        let landing = self.note_writes(&entries);
        let outcomes = self.store.apply(entries).await;
        drop(landing);
        outcomes
    }

    /// As [`Shared::note_writes`], by key.
    pub(crate) fn note_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) {
        let now = crate::wallclock::system_wall_ms();
        for key in keys {
            self.write_marks
                .note(partition_of(key, self.settings.partitions), now);
        }
    }

    /// Changes the view, marks the fills it learned of (and lets settled news go), and
    /// publishes it. Whether placement, fills or settling news changed: this node's own
    /// fill books then need bringing up to date.
    pub(crate) fn update_view(&self, change: impl FnOnce(&mut ClusterView)) -> bool {
        let mut current = self.view.write().expect("view lock");
        let mut next = (**current).clone();
        change(&mut next);
        let now = self.now().0;
        let mut news = self.fill_news.lock().expect("fill news lock");
        news.observe(&next.filled, now);
        next.settling = news.settling_sets(now);
        let changed = current.placement != next.placement
            || current.filled != next.filled
            || current.settling != next.settling;
        *current = Arc::new(next);
        changed
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
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
        // A durable count, not the wall clock alone: a start after the clock stepped
        // back must still present an identity above every earlier one.
        let epoch_ms = store.next_start_epoch(crate::wallclock::system_wall_ms())?;
        let mut me = MemberId {
            name: config.name.clone(),
            addr: advertise,
            incarnation: store.next_incarnation()?,
            epoch_ms,
            token: store.placement_token()?,
            data_epoch: store.data_epoch_or(epoch_ms)?,
        };
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
        // A wiped disk lost the count: an earlier life the cluster knows may sort above
        // this one (its clock was ahead). Announcing an identity above it makes this
        // life win at once instead of being taken for the old one.
        if let Some(old) = joined
            .members
            .iter()
            .find(|m| m.id.name == me.name && !me.supersedes(&m.id))
        {
            me.epoch_ms = old.id.epoch_ms.saturating_add(1);
            store.raise_start_epoch(me.epoch_ms)?;
            tracing::info!(
                "an earlier life of {} started later by its clock; this one takes start epoch {}",
                me.name,
                me.epoch_ms
            );
        }
        if let Some(token) = &joined.token {
            store.save_placement_token(token)?;
            me.token = Some(token.clone());
        }
        let filled = initial_filled(&store, &joined, had_cluster, &me.name, settings.partitions)?;
        store.save_filled(&filled)?;
        let clock = Clock::starting_after(store.hlc_high_water()?, config.max_clock_offset_ms);
        let remembered = store.members()?;
        let started = Instant::now();
        let (membership, membership_inputs) = cluster::MembershipHandle::new();
        let view = ClusterView::initial(&me, &settings, filled.clone());
        let (replication, coordinator) =
            replication::Replication::new(Coordinator::new(CoordinatorConfig {
                write_timeout_ms: config.replica_timeout.as_millis() as u64,
                read_timeout_ms: config.replica_timeout.as_millis() as u64,
                ..CoordinatorConfig::default()
            }));
        let shared = Arc::new(Shared {
            requests: Arc::new(tokio::sync::Semaphore::new(config.requests_max)),
            connections_by_identity: Mutex::new(std::collections::HashMap::new()),
            config,
            store,
            settings,
            clock: Mutex::new(clock),
            local_addr,
            me: me.clone(),
            started,
            view: RwLock::new(Arc::new(view)),
            fill: Mutex::new(Fill::new(filled)),
            fill_news: Mutex::new(FillNews::default()),
            write_marks: WriteMarks::new(settings.partitions),
            arrivals: arrivals::ArrivalsBook::new(settings.partitions, started),
            peers,
            seal: seal.clone(),
            replication,
            membership,
            hints_wake: Notify::new(),
            anti_entropy: antientropy::AntiEntropy::default(),
            writes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            clock_refusals: AtomicU64::new(0),
            rewriting_future: std::sync::atomic::AtomicBool::new(false),
            skew: Mutex::new(crate::hlc::skew::SkewBook::new()),
            stepped_aside: Mutex::new(None),
            left: Notify::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        // The cluster's view is installed before anything is served: members and their
        // states from the seed (or memory), placement, who holds which data.
        let mut m = Membership::new(
            me.clone(),
            &shared.config.membership,
            random_seed(),
            shared.now(),
        );
        m.set_seal(seal);
        m.restore(&remembered, shared.now());
        m.install(joined.members, shared.now());
        let (primed, view_ready) = tokio::sync::oneshot::channel();
        let tasks = &shared.tasks;
        tasks.spawn(cluster::run(
            shared.clone(),
            membership_inputs,
            m,
            joined.seeds,
            primed,
        ));
        let _ = view_ready.await;
        let view = shared.view();
        tracing::info!(
            members = view.members.len(),
            through = joined.through.as_deref().unwrap_or("memory"),
            partitions_filling = view.filling_of(&shared.me.name),
            "cluster view installed"
        );
        tasks.spawn(replication::run(shared.clone(), coordinator));
        tasks.spawn(hints::run(shared.clone()));
        tasks.spawn(reach::run(shared.clone()));
        tasks.spawn(clocks::run(shared.clone()));
        tasks.spawn(antientropy::run(shared.clone()));
        tasks.spawn(server::accept_loop(endpoint.clone(), shared.clone()));
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
        Ok(Node { shared, endpoint })
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
        let Node { shared, endpoint } = self;
        tracing::info!(node = %shared.config.name, "shutting down");
        if tokio::time::timeout(Duration::from_secs(1), shared.membership.go_down())
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

/// The partitions this node holds the data of at start: every one for the node that
/// creates the cluster (there is no data yet); what its books say on a restart (every
/// one for a directory from before the books were kept, which served as a full
/// replica); none for a new or wiped node, and none for a node whose name departed
/// the cluster in an earlier life (its data missed the writes since).
fn initial_filled(
    store: &Store,
    joined: &join::Joined,
    had_cluster: bool,
    me: &str,
    partitions: u16,
) -> Result<PartitionSet, NodeError> {
    if joined.created {
        return Ok(PartitionSet::all(partitions));
    }
    if joined.departed(me) {
        tracing::warn!(
            "this node's name left the cluster or was removed while it was away: it refills every partition it holds before it counts in quorums"
        );
        return Ok(PartitionSet::empty());
    }
    Ok(match store.filled()? {
        Some(set) => set,
        None if had_cluster => PartitionSet::all(partitions),
        None => PartitionSet::empty(),
    })
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
