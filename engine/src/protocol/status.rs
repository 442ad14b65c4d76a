//! What a node says of itself and its cluster in answer to `Status`.

use serde::{Deserialize, Serialize};

use super::*;

/// One member as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its name.
    pub name: String,
    /// Its listening address.
    pub address: String,
    /// alive, suspect, dead or left.
    pub state: String,
    /// How many times it has started.
    pub incarnation: u32,
    /// Its SWIM incarnation (raised to refute suspicion).
    pub swim_incarnation: u16,
    /// Its HLC at its last report.
    pub hlc: Option<Timestamp>,
    /// Its wall clock minus the answering node's, milliseconds, as the answering node's
    /// probes measure it (half the round trip taken out).
    pub clock_skew_ms: Option<i64>,
    /// The same, microseconds.
    pub clock_skew_us: Option<i64>,
    /// Age of its last report, milliseconds.
    pub report_age_ms: Option<u64>,
    /// Partitions it holds in the answering node's placement view.
    pub partitions_held: u16,
    /// Records it holds.
    pub records: Option<u64>,
    /// Hints it keeps for others.
    pub hints: u64,
    /// Age of its oldest hint, milliseconds (0: none).
    pub hints_oldest_age_ms: u64,
    /// Writes it has coordinated since it started.
    pub writes: u64,
    /// Reads it has coordinated since it started.
    pub reads: u64,
    /// Its placement digest; equal digests mean equal placement views.
    pub placement_digest: Option<String>,
    /// Its bucket catalog's digest; equal digests mean the same buckets.
    #[serde(default)]
    pub buckets_digest: Option<String>,
    /// Milliseconds since the answering node saw its state change.
    pub state_age_ms: u64,
    /// Partitions it takes writes for but does not hold the data of yet: while it
    /// fills them it counts in no quorum for them (a joining or replaced node).
    pub partitions_filling: u16,
    /// Whether the answering node can reach it directly right now (`false`: requests
    /// to it failed while membership says it is alive, a one-way or bridged cut).
    pub reachable: bool,
    /// How far behind it may be, as the answering node sees it: the age of the oldest
    /// write it may not hold (see `docs/anti-entropy.md`); `None` for the answering node.
    pub sync_lag_ms: Option<u64>,
    /// The anti-entropy run it has in progress (a repair, a background run, a fill).
    pub run: Option<crate::antientropy::report::RunSummary>,
}

/// A node's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub node: String,
    /// The cluster id, hex.
    pub cluster_id: String,
    /// Partitions in the cluster.
    pub partitions: u16,
    /// Copies of each partition.
    pub replication_factor: u8,
    /// The answering node's placement digest.
    pub placement_digest: String,
    /// The answering node's bucket catalog digest: equal on every node once the
    /// buckets' definitions have reached them all.
    #[serde(default)]
    pub buckets_digest: String,
    /// Buckets defined, `default` included.
    #[serde(default)]
    pub buckets: u32,
    /// The answering node's HLC.
    pub hlc: Timestamp,
    /// Milliseconds since the answering node started.
    pub uptime_ms: u64,
    /// Every member known, the answering node included, by name.
    pub members: Vec<MemberStatus>,
    /// The answering node's anti-entropy state with each peer.
    pub sync: Vec<PeerSync>,
    /// The progress of a repair running on the answering node.
    pub repair: Option<RepairProgress>,
    /// Partitions the answering node is exchanging right now.
    pub repairing: Vec<u16>,
    /// Every partition's state as the answering node knows it (confirmed in sync and
    /// since when, unconfirmed, differing, repairing, a replica down).
    pub partition_states: Vec<crate::antientropy::confirm::PartitionStatus>,
    /// The replicas of each partition in the answering node's placement view.
    pub placement: Vec<Vec<String>>,
    /// The answering node's root of each partition.
    pub roots: Vec<RootInfo>,
    /// Peer timestamps refused since start for being too far ahead.
    pub clock_refusals: u64,
    /// The live members' median clock minus the answering node's, milliseconds, once
    /// it has measured a majority of them.
    pub clock_offset_ms: Option<i64>,
    /// Why the answering node coordinates no writes because of its clock, if it does not.
    pub clock_refusal: Option<String>,
    /// Every bucket with what the answering node saw of its concurrent writes.
    #[serde(default)]
    pub bucket_stats: Vec<BucketStatus>,
    /// The answering node's operations on linearizable keys.
    #[serde(default)]
    pub linearizable: LinearizableStatus,
}

/// What a node's proposals on linearizable keys did since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizableStatus {
    /// Operations completed.
    pub ops: u64,
    /// Round trips they took: a read of the replicas, a prepare or an accept each.
    pub round_trips: u64,
    /// Operations answered from a read of the replicas alone (one round trip).
    pub fast: u64,
    /// Attempts retried after a prepare found no quorum (contention, replicas away).
    pub retries: u64,
    /// Proposals in flight now.
    pub in_flight: u64,
}

/// A bucket as `status` shows it: its definition, and the answering node's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketStatus {
    /// Its name.
    pub name: String,
    /// Its id (the prefix of its keys as stored).
    pub id: crate::buckets::BucketId,
    /// Its type.
    pub kind: BucketType,
    /// Its TTL.
    pub ttl_ms: Option<u64>,
    /// Records the answering node holds in it (tombstones and expired records not yet
    /// purged included), as last counted; `None` until counted.
    pub keys: Option<u64>,
    /// In a lww bucket: writes that reached the answering node older than what the key
    /// held there (concurrent writes that lost), since it started.
    pub lost_writes: u64,
    /// The keys with most of them.
    pub lost_keys: Vec<KeyCount>,
    /// In a siblings bucket: the most values one key was seen holding side by side.
    pub siblings_max: u64,
    /// The keys with most siblings, as last seen.
    pub sibling_keys: Vec<KeyCount>,
}

/// A key and a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The key (as text; bytes that are not UTF-8 replaced).
    pub key: String,
    /// The count.
    pub count: u64,
}

/// A partition's Merkle root on one node, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootInfo {
    /// The first 8 bytes of the root digest, hex.
    pub digest: String,
    /// Entries in the partition.
    pub count: u64,
}
