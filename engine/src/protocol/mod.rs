//! What nodes and clients say to each other.
//!
//! Every request travels on its own QUIC bidirectional stream: one frame in, one frame
//! out. A frame is a big-endian `u32` length and a postcard-encoded message; the length
//! is checked against a hard limit before anything is allocated. The first request on
//! a connection must be [`Request::Hello`], which carries the protocol version.

pub mod frame;
mod status;

pub use self::status::*;

use serde::{Deserialize, Serialize};

use crate::antientropy::messages::{SyncRequest, SyncResponse};
use crate::antientropy::report::{PeerSync, RepairProgress, RepairReport};
use crate::buckets::{Bucket, BucketType, Catalog};
use crate::hlc::Timestamp;
use crate::membership::{MemberId, SeedMember};
use crate::record::{Entry, Record, Version};
use crate::storage::ClusterSettings;
use crate::types::Change;

/// The ALPN protocol id every Vergent connection negotiates.
pub const ALPN: &[u8] = b"vergent/1";
/// The message protocol version sent in [`Request::Hello`].
pub const PROTOCOL_VERSION: u16 = 8;

pub use crate::base::{Consistency, Role};

/// A request, from a client or another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a connection: must be the first request, states the protocol version.
    Hello {
        /// The sender's [`PROTOCOL_VERSION`].
        protocol_version: u16,
    },
    /// Reads a key.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Replicas to consult; the node's default when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen (a client session).
        after: Option<Timestamp>,
    },
    /// Writes a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Replicas that must acknowledge; the node's default when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen: the write's version is
        /// issued above it, so a session's later write wins over its earlier ones
        /// whichever nodes coordinate them.
        after: Option<Timestamp>,
    },
    /// Deletes a key (writes a tombstone).
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Replicas that must acknowledge; the node's default when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen: the write's version is
        /// issued above it, so a session's later write wins over its earlier ones
        /// whichever nodes coordinate them.
        after: Option<Timestamp>,
    },
    /// The node's view of itself and its cluster.
    Status,
    /// Internode: apply these versioned entries (push replication). Node role only.
    Replicate {
        /// The entries, each with the version its coordinator gave it.
        entries: Vec<Entry>,
    },
    /// Internode: this replica's record of `key`, tombstones included. Node role only.
    ReadLocal {
        /// The key.
        key: Vec<u8>,
    },
    /// Internode: a node asks to join the cluster (or, restarting, for the cluster's
    /// current state). Node role only.
    Join {
        /// The joining node's identity.
        id: MemberId,
        /// The cluster its data directory belongs to, if any.
        cluster: Option<ClusterSettings>,
        /// A dead member whose place (and partitions) the joining node takes.
        replace: Option<String>,
    },
    /// Administrative: removes a dead member from the cluster for good; its partitions
    /// are re-replicated to the others.
    Remove {
        /// The member's name.
        name: String,
    },
    /// Streams every change this node applies from now on, until the client stops.
    Watch {
        /// Only keys starting with these bytes.
        prefix: Vec<u8>,
    },
    /// Administrative: this node leaves the cluster gracefully, then stops.
    Leave,
    /// Internode: one step of an anti-entropy exchange. Node role only.
    Sync(SyncRequest),
    /// Internode: is the data path to this node open, and what does its clock read?
    /// Answered with `Pong`. Node role only.
    Ping {
        /// The sender's wall clock when it sent this, microseconds since the epoch.
        sent_us: u64,
    },
    /// Internode: the answering node's view of every member (what a seed tells a
    /// joining node), for a node that keeps being declared dead. Node role only.
    Members,
    /// Administrative: recompute every partition's Merkle tree from the data and compare
    /// it with the tree kept incrementally.
    Verify,
    /// Administrative: compare (and unless `dry_run`, repair) this node's partitions
    /// with their co-replicas. Answered by progress frames, then a report.
    Repair {
        /// Only this partition.
        partition: Option<u16>,
        /// Only with this peer.
        peer: Option<String>,
        /// Compare only; move nothing.
        dry_run: bool,
    },
    /// Administrative: rewrite every record this node holds from beyond the cluster's
    /// time (plus the clock bound) to a present version of this node's, and bring its
    /// clock back (unless `dry_run`). Answered with `RewroteFuture`.
    RewriteFuture {
        /// Count and list only; change nothing.
        dry_run: bool,
        /// The timestamp to rewrite them to (the one an earlier run on another node
        /// used); the cluster's time now when not given.
        at: Option<crate::hlc::Timestamp>,
    },
    /// Internode: this node's bucket catalog; answered with the other's, merged.
    /// Node role only.
    Catalog(Catalog),
    /// Internode: make this typed update as its actor, on this replica's state of the
    /// key (stored form); answered with `Record`, the state it holds after. Node role
    /// only.
    UpdateLocal {
        /// The key, as stored.
        key: Vec<u8>,
        /// The change.
        change: Change,
        /// The bucket's TTL: the key expires that long after the update.
        ttl_ms: Option<u64>,
        /// The update's id, drawn by the coordinator: a request that arrives twice is
        /// made once (an increment must not count twice).
        id: u64,
    },
    /// Buckets: define or delete one (admin), list them or show one (any role).
    /// Answered with `Buckets`.
    Buckets(BucketRequest),
    /// Reads a key of a bucket: answered with `Value` in a lww bucket, `Typed` in the
    /// others.
    Read {
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// The consistency; the bucket's, or the node's default, when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Writes a key of a lww or siblings bucket (`None`: deletes it); in a siblings
    /// bucket, replacing the siblings the context (from a read) saw. Answered with
    /// `Written`.
    Write {
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// The value, or `None` to delete.
        value: Option<Vec<u8>>,
        /// A siblings bucket's context token, as a read returned it.
        context: Option<String>,
        /// How long the value lives (lww buckets only); the bucket's TTL when `None`.
        #[serde(default)]
        ttl_ms: Option<u64>,
        /// The consistency; the bucket's, or the node's default, when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Updates a counter or a set. Answered with `Written`.
    Update {
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// The change.
        change: Change,
        /// The consistency; the bucket's, or the node's default, when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Writes `value` (`None`: deletes) to a key of a linearizable bucket if it holds
    /// what `expect` says. Answered with `Written` (swapped) or `NotSwapped`.
    Cas {
        /// The bucket.
        bucket: String,
        /// The key.
        key: Vec<u8>,
        /// What the key must hold.
        expect: crate::paxos::Expect,
        /// What it then holds; `None` deletes it.
        value: Option<Vec<u8>>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Internode: promise `ballot` for `key` (stored form) as its acceptor, and say
    /// what is accepted. Answered with `Promise`. Node role only.
    Prepare {
        /// The key, as stored.
        key: Vec<u8>,
        /// The proposal's ballot.
        ballot: crate::paxos::Ballot,
    },
    /// Internode: make this operation on a linearizable key as its home node (the
    /// first of its replicas that count), for a client of the sender's. Answered with
    /// `Proposed`. Node role only.
    Propose {
        /// The key, as stored.
        key: Vec<u8>,
        /// The operation.
        op: crate::paxos::LinOp,
        /// The operation's id, drawn by the sender: a request that arrives twice is
        /// proposed once (a second proposal would find the first one's value).
        id: u64,
    },
    /// Internode: accept `record` (at its version's ballot) for `key` as its acceptor.
    /// Answered with `Accept`. Node role only.
    Accept {
        /// The key, as stored.
        key: Vec<u8>,
        /// The value proposed, at the proposal's ballot (boxed: a record is large
        /// beside every other request).
        record: Box<Record>,
        /// The proposer's next ballot on the key, promised along with the accept.
        #[serde(default)]
        next: Option<crate::paxos::Ballot>,
    },
}

/// A typed value as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypedValue {
    /// A counter's value (0 when never written).
    Counter(i128),
    /// A set's members, in order.
    Set(Vec<Vec<u8>>),
    /// A register's concurrent values, and the context to resolve them with.
    Siblings {
        /// The values, in the order they were written.
        values: Vec<Vec<u8>>,
        /// The context token: pass it back with the write that resolves them.
        context: String,
    },
}

/// What a [`Request::Buckets`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketRequest {
    /// Define a bucket.
    Create {
        /// Its name.
        name: String,
        /// What its keys hold.
        kind: BucketType,
        /// How long a write lives, if it expires.
        ttl_ms: Option<u64>,
        /// The consistency of its operations that name none.
        consistency: Option<Consistency>,
    },
    /// Delete a bucket and all its data.
    Delete {
        /// Its name.
        name: String,
    },
    /// Every bucket.
    List,
    /// One bucket.
    Show {
        /// Its name.
        name: String,
    },
}

impl Request {
    /// Whether a certificate of `role` may send this request.
    pub fn allowed(&self, role: Role) -> bool {
        match self.required_role() {
            Role::Client => true,
            Role::Node => role == Role::Node,
            Role::Admin => role == Role::Admin,
        }
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Get { .. } => "get",
            Request::Put { .. } => "put",
            Request::Delete { .. } => "delete",
            Request::Status => "status",
            Request::Replicate { .. } => "replicate",
            Request::ReadLocal { .. } => "read-local",
            Request::Join { .. } => "join",
            Request::Remove { .. } => "remove",
            Request::Watch { .. } => "watch",
            Request::Leave => "leave",
            Request::Sync(_) => "sync",
            Request::Ping { .. } => "ping",
            Request::Members => "members",
            Request::Repair { .. } => "repair",
            Request::Verify => "verify",
            Request::RewriteFuture { .. } => "rewrite-future",
            Request::Catalog(_) => "catalog",
            Request::UpdateLocal { .. } => "update-local",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::Update { .. } => "update",
            Request::Cas { .. } => "cas",
            Request::Prepare { .. } => "prepare",
            Request::Propose { .. } => "propose",
            Request::Accept { .. } => "accept",
            Request::Buckets(BucketRequest::Create { .. }) => "bucket create",
            Request::Buckets(BucketRequest::Delete { .. }) => "bucket delete",
            Request::Buckets(BucketRequest::List) => "bucket list",
            Request::Buckets(BucketRequest::Show { .. }) => "bucket show",
        }
    }

    /// The role a request needs: client requests are open to every role, node and
    /// admin requests to that role only.
    pub fn required_role(&self) -> Role {
        match self {
            Request::Hello { .. }
            | Request::Get { .. }
            | Request::Put { .. }
            | Request::Delete { .. }
            | Request::Status
            | Request::Watch { .. }
            | Request::Read { .. }
            | Request::Write { .. }
            | Request::Update { .. }
            | Request::Cas { .. }
            | Request::Buckets(BucketRequest::List | BucketRequest::Show { .. }) => Role::Client,
            Request::Replicate { .. }
            | Request::Catalog(_)
            | Request::UpdateLocal { .. }
            | Request::Prepare { .. }
            | Request::Propose { .. }
            | Request::Accept { .. }
            | Request::ReadLocal { .. }
            | Request::Join { .. }
            | Request::Sync(_)
            | Request::Ping { .. }
            | Request::Members => Role::Node,
            Request::Leave
            | Request::Remove { .. }
            | Request::Repair { .. }
            | Request::Verify
            | Request::RewriteFuture { .. }
            | Request::Buckets(BucketRequest::Create { .. } | BucketRequest::Delete { .. }) => {
                Role::Admin
            }
        }
    }
}

/// Versions a node holds from beyond the cluster's time plus the clock bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FutureVersions {
    /// How many records.
    pub count: u64,
    /// The first few: each key (lossy UTF-8) and its version.
    pub first: Vec<(String, VersionInfo)>,
    /// How far the furthest of them is ahead of the cluster's time, in ms.
    pub ahead_ms_max: u64,
}

/// A version as shown to people: the timestamp, the coordinating node's id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version itself.
    pub version: Version,
    /// The coordinating node's name, when the answering node knows it.
    pub origin: Option<String>,
}

impl std::fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hlc={} node=", self.version.hlc)?;
        match &self.origin {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.version.node),
        }
    }
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to [`Request::Hello`].
    Welcome {
        /// The node's [`PROTOCOL_VERSION`].
        protocol_version: u16,
        /// The node's name.
        node: String,
    },
    /// The answer to a read: the value and its version, or nothing (never written, or deleted).
    Value {
        /// The value and version, when the key holds a value.
        found: Option<(Vec<u8>, VersionInfo)>,
    },
    /// The answer to a write or delete: the version it was given.
    Written {
        /// The version.
        version: VersionInfo,
    },
    /// The answer to [`Request::Replicate`]: how many entries changed the replica.
    Replicated {
        /// Entries that were newer than what the replica held.
        applied: u32,
    },
    /// The answer to [`Request::ReadLocal`].
    Record {
        /// The replica's record, tombstones included.
        record: Option<Record>,
    },
    /// The answer to [`Request::Join`].
    Joined {
        /// The cluster's settings.
        cluster: ClusterSettings,
        /// The answering node's identity.
        seed: MemberId,
        /// Every member the answering node knows, with its state and last status: the
        /// joining node installs them before it serves anything.
        members: Vec<SeedMember>,
        /// The placement token the joining node takes (the replaced member's), if it
        /// replaces one.
        token: Option<String>,
    },
    /// The answer to [`Request::Ping`]: the answering node's wall clock when the ping
    /// arrived and when it answered, microseconds since the epoch.
    Pong {
        /// When the ping arrived.
        received_us: u64,
        /// When the answer left.
        replied_us: u64,
    },
    /// The answer to [`Request::Members`].
    Members(Vec<SeedMember>),
    /// The answer to [`Request::Remove`].
    Removed {
        /// What happens next.
        message: String,
    },
    /// One change, streamed in answer to [`Request::Watch`].
    Change {
        /// The key.
        key: Vec<u8>,
        /// Its new value, or `None` when it was deleted.
        value: Option<Vec<u8>>,
        /// The version.
        version: VersionInfo,
    },
    /// The answer to [`Request::Leave`].
    Leaving {
        /// What happens next.
        message: String,
    },
    /// The answer to [`Request::Status`].
    Status(ClusterStatus),
    /// The answer to [`Request::Sync`].
    Sync(SyncResponse),
    /// A repair's progress, streamed before its report.
    RepairProgress(RepairProgress),
    /// A repair's report: the last answer to [`Request::Repair`].
    Repaired(RepairReport),
    /// The answer to [`Request::Verify`].
    Verified {
        /// Partitions checked.
        checked: u64,
        /// Partitions whose kept tree differs from the rebuilt one.
        mismatched: Vec<u16>,
        /// Records whose version is from beyond the cluster's time plus the clock
        /// bound, with the first of them.
        future: FutureVersions,
    },
    /// The answer to [`Request::RewriteFuture`].
    RewroteFuture {
        /// What was found from the future, before any rewrite.
        found: FutureVersions,
        /// Records rewritten to the present (0 in a dry run).
        rewritten: u64,
        /// Whether this node's clock was brought back from the future too.
        clock_rewound: bool,
        /// The timestamp the records were (or would be) rewritten to.
        at: crate::hlc::Timestamp,
    },
    /// The request failed; the node keeps serving.
    Error(ErrorReply),
    /// The answer to [`Request::Catalog`]: the answering node's catalog, merged.
    Catalog(Catalog),
    /// The answer to [`Request::Buckets`]: the buckets listed, shown, created or
    /// deleted.
    Buckets(Vec<Bucket>),
    /// The answer to [`Request::Read`] in a counter, set or siblings bucket.
    Typed(TypedValue),
    /// The answer to [`Request::Cas`] when the key held something else: what it holds.
    NotSwapped {
        /// The value and version, when the key holds a value.
        found: Option<(Vec<u8>, VersionInfo)>,
    },
    /// The answer to [`Request::Prepare`].
    Promise(crate::paxos::PrepareReply),
    /// The answer to [`Request::Accept`].
    Accept(crate::paxos::AcceptReply),
    /// The answer to [`Request::Propose`].
    Proposed(crate::paxos::LinOutcome),
}

/// What kind of failure an [`ErrorReply`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request could not be decoded or makes no sense.
    BadRequest,
    /// A key, value, frame or batch is over its limit.
    LimitExceeded,
    /// The certificate's role does not allow this request.
    Forbidden,
    /// Not enough replicas answered.
    Unavailable,
    /// The request did not complete in time.
    Timeout,
    /// The node is at a concurrency limit; try again.
    Overloaded,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// A remote clock is too far ahead.
    ClockOffset,
    /// Storage failed; the write was not applied.
    Storage,
    /// The node is shutting down.
    ShuttingDown,
    /// The node belongs to another cluster, or its settings differ.
    ClusterMismatch,
    /// The node has not installed the cluster's membership yet.
    NotReady,
    /// Another live member already has this name.
    NameInUse,
    /// The request names a member it cannot apply to (alive, unknown, already gone).
    Refused,
    /// The request names a bucket that does not exist.
    NoSuchBucket,
    /// The operation does not apply to the bucket's type (`incr` on a set).
    WrongType,
    /// Other proposals on the same linearizable key kept winning; nothing was written.
    Contention,
}

/// A failed request: a code for programs and one line for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, naming the limit where one was passed.
    pub message: String,
}

impl ErrorReply {
    /// An error reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
