//! What the dashboard shows: plain data, built by whoever feeds the dashboard (the
//! `vergent` command polls a node) and rendered by [`crate::ui`]. Nothing here knows
//! about networking.

/// A member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answering.
    Alive,
    /// Missed probes.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left the cluster.
    Left,
}

impl MemberState {
    /// The word shown.
    pub fn word(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    /// A symbol that reads without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            MemberState::Alive => "●",
            MemberState::Suspect => "◐",
            MemberState::Dead => "✕",
            MemberState::Left => "○",
        }
    }

    /// Parses the word.
    pub fn parse(word: &str) -> Option<MemberState> {
        match word {
            "alive" => Some(MemberState::Alive),
            "suspect" => Some(MemberState::Suspect),
            "dead" => Some(MemberState::Dead),
            "left" => Some(MemberState::Left),
            _ => None,
        }
    }
}

/// One line of the members table.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    /// Name.
    pub name: String,
    /// Listening address.
    pub address: String,
    /// State.
    pub state: MemberState,
    /// How many times it has started.
    pub incarnation: u32,
    /// Its HLC, as `HH:MM:SS.mmm+logical` (UTC).
    pub hlc: Option<String>,
    /// Its clock minus the watched node's, milliseconds.
    pub skew_ms: Option<i64>,
    /// Writes it coordinates per second.
    pub writes_per_s: Option<f64>,
    /// Hints it keeps for others.
    pub hints: u64,
    /// Age of its oldest hint, milliseconds.
    pub hints_oldest_age_ms: u64,
    /// Seconds until its hints clear at the current drain rate.
    pub hints_clear_s: Option<f64>,
    /// Partitions it holds.
    pub partitions_held: u16,
    /// Since the watched node's last exchange with it, milliseconds.
    pub last_exchange_age_ms: Option<u64>,
    /// Partitions that differed at that exchange.
    pub partitions_differing: Option<u64>,
    /// Sync lag with the watched node, milliseconds (see `docs/anti-entropy.md`).
    pub sync_lag_ms: Option<u64>,
    /// Partitions it takes writes for but is still filling (it does not count for them).
    pub filling: u16,
    /// For a member that is not live (dead or left): how old its `hlc` and `skew_ms`
    /// are, milliseconds, since they are what it said last, not what it says now.
    pub stale_age_ms: Option<u64>,
    /// Whether the watched node cannot reach it directly although it is alive.
    pub unreachable: bool,
}

impl MemberRow {
    /// The state as shown: a live member still filling is joining; one the watched node
    /// cannot reach itself is unreachable.
    pub fn state_word(&self) -> &'static str {
        match self.state {
            MemberState::Alive if self.unreachable => "unreach",
            MemberState::Alive if self.filling > 0 => "joining",
            state => state.word(),
        }
    }
}

/// A partition's state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartitionState {
    /// A replica is down.
    UnderReplicated,
    /// Being repaired now.
    Repairing,
    /// Differed at the last compare.
    Diverged,
    /// Not confirmed in sync: written since its replicas last compared equal, or not
    /// compared within the anti-entropy interval (or never).
    Unconfirmed,
    /// Every replica's root compared equal within the interval, after the last write
    /// its replicas saw.
    InSync,
}

impl PartitionState {
    /// A symbol that reads without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            PartitionState::InSync => "·",
            PartitionState::Unconfirmed => "?",
            PartitionState::Repairing => "~",
            PartitionState::Diverged => "!",
            PartitionState::UnderReplicated => "u",
        }
    }

    /// The legend's word for it (short enough for an 80-column map).
    pub fn label(self) -> &'static str {
        match self {
            PartitionState::InSync => "sync",
            PartitionState::Unconfirmed => "unconf",
            PartitionState::Repairing => "repair",
            PartitionState::Diverged => "diverged",
            PartitionState::UnderReplicated => "down",
        }
    }

    /// What the symbol means.
    pub fn meaning(self) -> &'static str {
        match self {
            PartitionState::InSync => "confirmed in sync",
            PartitionState::Unconfirmed => {
                "unconfirmed: written since its last compare, or not compared lately"
            }
            PartitionState::Repairing => "repairing",
            PartitionState::Diverged => "diverged",
            PartitionState::UnderReplicated => "under-replicated: a replica is down",
        }
    }
}

/// One cell of the partition map.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionCell {
    /// Its state.
    pub state: PartitionState,
    /// Its replicas.
    pub replicas: Vec<String>,
    /// Since its replicas were last confirmed in sync, milliseconds; `None` if never.
    pub confirmed_age_ms: Option<u64>,
}

/// One replica of a partition, in the details of a selected cell.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaDetail {
    /// The replica.
    pub name: String,
    /// Its state.
    pub state: MemberState,
    /// The first bytes of its root digest, hex; `None` when it could not be asked.
    pub root: Option<String>,
    /// Entries it holds in the partition.
    pub count: Option<u64>,
    /// Since the watched node's last exchange with it, milliseconds.
    pub last_exchange_age_ms: Option<u64>,
}

/// The details of one partition, fetched on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionDetail {
    /// The partition.
    pub partition: u16,
    /// Each replica.
    pub replicas: Vec<ReplicaDetail>,
}

/// A repair in progress, on any node.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairRow {
    /// The node running it.
    pub node: String,
    /// The peers it compares with.
    pub peers: Vec<String>,
    /// Bytes moved so far (entries and tree metadata).
    pub bytes_moved: u64,
    /// Entries moved per second at the current pace.
    pub keys_per_s: Option<f64>,
    /// (partition, peer) pairs done.
    pub done: u64,
    /// (partition, peer) pairs in all.
    pub total: u64,
    /// Entries moved so far.
    pub keys_moved: u64,
    /// Seconds left at the current pace.
    pub eta_s: Option<f64>,
}

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// News.
    Info,
    /// Attention.
    Warning,
    /// Trouble.
    Alert,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// When, `HH:MM:SS` UTC.
    pub at: String,
    /// What.
    pub text: String,
    /// How bad.
    pub severity: Severity,
}

/// Whether the dashboard hears from the node it watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// Fresh data.
    Live,
    /// The watched node stopped answering; the view is the last one received.
    Lost {
        /// Why, in a few words.
        reason: String,
        /// Seconds since the last fresh data.
        stale_s: u64,
    },
}

/// Everything on the screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// The cluster id, hex.
    pub cluster_id: String,
    /// Partitions in the cluster.
    pub partitions: u16,
    /// Copies of each partition.
    pub replication_factor: u8,
    /// The node whose view is shown.
    pub watched: String,
    /// The time, `HH:MM:SS` UTC.
    pub time: String,
    /// Whether the view is fresh.
    pub connection: Connection,
    /// Cluster writes per second.
    pub write_rate: f64,
    /// Cluster reads per second.
    pub read_rate: f64,
    /// Members, by name.
    pub members: Vec<MemberRow>,
    /// One cell per partition.
    pub cells: Vec<PartitionCell>,
    /// Recent cluster writes per second, oldest first.
    pub throughput: Vec<u64>,
    /// Repairs running on any node, by node.
    pub repairs: Vec<RepairRow>,
    /// A line the operator needs at hand (how to reach the cluster, say), shown on its
    /// own line rather than as an event.
    pub notice: Option<String>,
    /// Recent events, oldest first.
    pub events: Vec<EventRow>,
    /// Details of the selected partition, when asked for.
    pub detail: Option<PartitionDetail>,
    /// The buckets, as the watched node sees them.
    pub buckets: Vec<BucketRow>,
    /// What the watched node's linearizable operations did lately: rate, round trips
    /// per operation, share answered in one, retries, proposals in flight.
    pub linearizable: Option<String>,
}

/// One line of the buckets view.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    /// Name.
    pub name: String,
    /// Type: lww, counter, set, siblings.
    pub kind: String,
    /// TTL, for people (`30m`), if it has one.
    pub ttl: Option<String>,
    /// Records the watched node holds in it, as last counted.
    pub keys: Option<u64>,
    /// In a lww bucket: writes that lost to a newer one, per second, on the watched node.
    pub lost_per_s: Option<f64>,
    /// And in all since it started.
    pub lost: u64,
    /// In a siblings bucket: the most siblings a key was seen holding.
    pub siblings_max: u64,
    /// The most conflicted keys: lost writes (lww) or siblings (siblings), with counts.
    pub hot: Vec<(String, u64)>,
}

impl Dashboard {
    /// A dashboard that has heard nothing yet.
    pub fn empty(watched: &str) -> Dashboard {
        Dashboard {
            cluster_id: String::new(),
            partitions: 0,
            replication_factor: 0,
            watched: watched.to_string(),
            time: String::new(),
            connection: Connection::Live,
            write_rate: 0.0,
            read_rate: 0.0,
            members: Vec::new(),
            cells: Vec::new(),
            throughput: Vec::new(),
            repairs: Vec::new(),
            notice: None,
            events: Vec::new(),
            detail: None,
            buckets: Vec::new(),
            linearizable: None,
        }
    }

    /// Members in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}
