//! What goes into the core and what comes out: the driver's asks and their answers,
//! requests to peers and their failures, store effects and their results, events to
//! log; and the core's own books of what it waits for.

use bytes::Bytes;

use crate::antientropy::report::{RepairProgress, RepairReport};
use crate::antientropy::run::Tag;
use crate::base::{Consistency, Millis};
use crate::buckets::{Bucket, BucketType, Catalog};
use crate::coordinator::OpId;
use crate::hlc::Timestamp;
use crate::membership::{MemberId, SeedMember};
use crate::placement::{PartitionId, PartitionSet};
use crate::policy::HintsDeleted;
use crate::protocol::{ClusterStatus, ErrorCode, ErrorReply, Request, Response};
use crate::record::{Entry, Payload, Record, Version};
use crate::storage::{ApplyOutcome, Hint, MemberRecord, Store, StoreError};
use crate::types::{Change, Context};

pub use super::events::CoreEvent;

/// Names a request this node sent; its answer goes to [`super::NodeCore::handle_response`].
pub type ReqId = u64;
/// Names a peer's request the core answers with [`Output::Respond`] (the driver's id).
pub type ReplyTo = u64;
/// Names an ask of the driver's, answered with [`Output::Answer`] (the driver's id).
pub type AskId = u64;
/// Names a store effect; its result goes to [`super::NodeCore::handle_stored`].
pub type StoreId = u64;

/// What the core asks of its driver.
#[derive(Debug)]
pub enum Output {
    /// Send `request` to the member `to`; hand its answer, or why none came, to
    /// [`super::NodeCore::handle_response`] with `id`.
    Send {
        /// Names the request.
        id: ReqId,
        /// The member.
        to: MemberId,
        /// The request.
        request: Request,
    },
    /// The answer to a peer's request.
    Respond {
        /// The request.
        reply: ReplyTo,
        /// The answer.
        response: Response,
    },
    /// A membership datagram for `to` (lost ones are tolerated).
    Datagram {
        /// The member.
        to: MemberId,
        /// The datagram.
        data: Bytes,
    },
    /// A change to make to the store; its result goes to
    /// [`super::NodeCore::handle_stored`] with `id`.
    Store {
        /// Names the change.
        id: StoreId,
        /// The change.
        work: StoreWork,
    },
    /// The answer to an ask.
    Answer {
        /// The ask.
        ask: AskId,
        /// The answer.
        answer: Answer,
    },
    /// How a repair asked for with [`Ask::Repair`] is going.
    Progress {
        /// The ask.
        ask: AskId,
        /// Its progress.
        progress: RepairProgress,
    },
    /// Whatever connection the driver keeps to this member may be dead without knowing
    /// it: the next request dials afresh.
    Forget {
        /// The member.
        peer: String,
    },
    /// Something to log or count.
    Event(CoreEvent),
}

/// A request to a peer that got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFailure {
    /// Lost on the way: no connection, connection lost, no answer in time. Says the
    /// path to the peer may be cut.
    Path(String),
    /// Never sent, for a reason of this node's (its queue to the peer is full, it is
    /// shutting down). Says nothing about the peer.
    Local(String),
}

/// What the driver asks of the core on behalf of a client, an admin or itself.
#[derive(Debug, Clone)]
pub enum Ask {
    /// Read a key.
    Get {
        /// Its bucket; `default` when `None`.
        bucket: Option<String>,
        /// The key.
        key: Vec<u8>,
        /// The consistency; the node's default when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Write a value, or delete (a tombstone); in a siblings bucket, a value that
    /// replaces the siblings `context` saw.
    Put {
        /// Its bucket; `default` when `None`.
        bucket: Option<String>,
        /// The key.
        key: Vec<u8>,
        /// The value, or a tombstone.
        payload: Payload,
        /// What a read of a siblings bucket returned.
        context: Option<Context>,
        /// How long the value lives (a lww bucket's only): the bucket's TTL when `None`.
        ttl_ms: Option<u64>,
        /// The consistency; the node's default when `None`.
        consistency: Option<Consistency>,
        /// The highest version the client's session has seen.
        after: Option<Timestamp>,
    },
    /// Update a counter or a set.
    Update {
        /// Its bucket.
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
    /// Compare-and-set a key of a linearizable bucket.
    Cas {
        /// Its bucket.
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
    /// This node's status of the cluster.
    Status,
    /// What this node knows of every member (what a seed tells a joining node).
    Members,
    /// A node asks to join (or restarted and asks for the cluster's state).
    Join {
        /// Its identity.
        id: MemberId,
        /// The dead member whose place it takes.
        replace: Option<String>,
    },
    /// Remove a dead member for good.
    Remove {
        /// The member.
        name: String,
    },
    /// Leave the cluster gracefully.
    Leave,
    /// The node is shutting down: tell the others this life is over.
    GoDown,
    /// Define a bucket (admin).
    CreateBucket {
        /// Its name.
        name: String,
        /// What its keys hold.
        kind: BucketType,
        /// How long a write lives, if it expires.
        ttl_ms: Option<u64>,
        /// The consistency of its operations that name none.
        consistency: Option<Consistency>,
    },
    /// Delete a bucket and all its data (admin).
    DeleteBucket {
        /// Its name.
        name: String,
    },
    /// The buckets defined (`None`), or one (`Some(name)`).
    Buckets(Option<String>),
    /// Compare (and unless `dry_run`, repair) with the co-replicas.
    Repair {
        /// Only this partition.
        partition: Option<PartitionId>,
        /// Only with this peer.
        peer: Option<String>,
        /// Compare only.
        dry_run: bool,
    },
}

/// The core's answer to an [`Ask`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// A write was acknowledged, at this version.
    Written(Version),
    /// A read found this record (tombstones included), or nothing, in a bucket of this
    /// type.
    Read {
        /// The record.
        record: Option<Record>,
        /// The bucket's type.
        kind: BucketType,
    },
    /// The status.
    Status(Box<ClusterStatus>),
    /// The members.
    Members(Vec<SeedMember>),
    /// A join was admitted: what the joining node installs, and the placement token it
    /// takes over.
    Admitted {
        /// Every member known.
        members: Vec<SeedMember>,
        /// The replaced member's token.
        token: Option<String>,
    },
    /// A member was removed.
    Removed(MemberId),
    /// Leaving has begun.
    Leaving,
    /// The others were told this life is over.
    Down,
    /// A repair's report.
    Repaired(Box<RepairReport>),
    /// Buckets: those defined, the one asked for, created or deleted.
    Buckets(Vec<Bucket>),
    /// A compare-and-set found the key holding something else: this record
    /// (a tombstone, or nothing, when it holds no value).
    NotSwapped(Option<Record>),
    /// Refused or failed, and why.
    Failed(ErrorReply),
}

/// A change to the store.
#[derive(Debug, Clone)]
pub enum StoreWork {
    /// Apply versioned entries (last writer wins).
    Apply(Vec<Entry>),
    /// Keep writes a replica missed.
    PutHints(Vec<Hint>),
    /// Delete hints.
    DeleteHints(Vec<Vec<u8>>),
    /// Purge these tombstones (each only if still at that version).
    Purge(Vec<(Vec<u8>, Version)>),
    /// Drop a partition's data (handed off to its owners).
    DropPartition(PartitionId),
    /// Remember the members.
    SaveMembers(Vec<MemberRecord>),
    /// Remember which partitions this node holds the data of.
    SaveFilled(PartitionSet),
    /// Remember the bucket catalog.
    SaveCatalog(Catalog),
    /// Delete every record of these (deleted) buckets.
    DropBuckets(Vec<crate::buckets::BucketId>),
    /// `actor` makes `change` to the typed value of `key` at its event `at`.
    Update {
        /// The key, as stored.
        key: Vec<u8>,
        /// The change.
        change: Change,
        /// The actor.
        actor: crate::types::Actor,
        /// Its clock's reading.
        at: Timestamp,
        /// The bucket's TTL.
        ttl_ms: Option<u64>,
    },
    /// An acceptor's prepare of `key` at `ballot`.
    Prepare {
        /// The key, as stored.
        key: Vec<u8>,
        /// The ballot.
        ballot: crate::paxos::Ballot,
    },
    /// Drop the promises of ballots before this time: their proposals are over.
    DropPromises(Timestamp),
    /// An acceptor's accept of `record` for `key`.
    Accept {
        /// The key, as stored.
        key: Vec<u8>,
        /// The record, at the proposal's ballot.
        record: Record,
        /// The proposer's next ballot, promised along with it.
        next: Option<crate::paxos::Ballot>,
    },
}

/// What a [`StoreWork`] did.
#[derive(Debug, Clone)]
pub enum StoreDone {
    /// Entries applied, with what each did.
    Applied(Vec<ApplyOutcome>),
    /// Records changed (hints kept, tombstones purged, records dropped).
    Count(u64),
    /// What a typed update left the key holding.
    Record(Record),
    /// Done.
    Done,
    /// An acceptor's answer to a prepare.
    Promise(crate::paxos::PrepareReply),
    /// An acceptor's answer to an accept.
    Accept(crate::paxos::AcceptReply),
    /// Failed, and the answer a requester gets for it.
    Failed(ErrorReply),
}

impl StoreDone {
    /// The result of a store call.
    pub fn from_result<T: Into<StoreDone>>(result: Result<T, StoreError>) -> StoreDone {
        match result {
            Ok(done) => done.into(),
            Err(err) => StoreDone::Failed(storage_error(&err)),
        }
    }
}

impl From<Vec<ApplyOutcome>> for StoreDone {
    fn from(outcomes: Vec<ApplyOutcome>) -> StoreDone {
        StoreDone::Applied(outcomes)
    }
}

impl From<Record> for StoreDone {
    fn from(record: Record) -> StoreDone {
        StoreDone::Record(record)
    }
}

impl From<crate::paxos::PrepareReply> for StoreDone {
    fn from(reply: crate::paxos::PrepareReply) -> StoreDone {
        StoreDone::Promise(reply)
    }
}

impl From<crate::paxos::AcceptReply> for StoreDone {
    fn from(reply: crate::paxos::AcceptReply) -> StoreDone {
        StoreDone::Accept(reply)
    }
}

impl From<u64> for StoreDone {
    fn from(count: u64) -> StoreDone {
        StoreDone::Count(count)
    }
}

impl From<usize> for StoreDone {
    fn from(count: usize) -> StoreDone {
        StoreDone::Count(count as u64)
    }
}

impl From<()> for StoreDone {
    fn from(_: ()) -> StoreDone {
        StoreDone::Done
    }
}

/// The answer a requester gets for a failure of this node's storage.
pub fn storage_error(err: &StoreError) -> ErrorReply {
    match err {
        StoreError::Type(crate::types::TypeError::WrongType { .. }) => {
            ErrorReply::new(ErrorCode::WrongType, err.to_string())
        }
        StoreError::Type(_) => ErrorReply::new(ErrorCode::LimitExceeded, err.to_string()),
        StoreError::Closed => ErrorReply::new(ErrorCode::ShuttingDown, err.to_string()),
        other => ErrorReply::new(ErrorCode::Storage, format!("not applied: {other}")),
    }
}

/// Carries a change out at once, on the calling thread (the simulator's way, and tests').
pub fn carry_out(store: &Store, work: StoreWork) -> StoreDone {
    match work {
        StoreWork::Apply(entries) => StoreDone::from_result(store.apply_now(&entries)),
        StoreWork::PutHints(hints) => StoreDone::from_result(store.put_hints_now(hints)),
        StoreWork::DeleteHints(keys) => StoreDone::from_result(store.delete_hints_now(keys)),
        StoreWork::Purge(tombstones) => StoreDone::from_result(store.purge_now(tombstones)),
        StoreWork::DropPartition(p) => StoreDone::from_result(store.drop_partition_now(p)),
        StoreWork::SaveMembers(records) => StoreDone::from_result(store.save_members(&records)),
        StoreWork::SaveFilled(filled) => StoreDone::from_result(store.save_filled(&filled)),
        StoreWork::SaveCatalog(catalog) => StoreDone::from_result(store.save_catalog(&catalog)),
        StoreWork::DropBuckets(ids) => StoreDone::from_result(store.drop_buckets_now(&ids)),
        StoreWork::Update {
            key,
            change,
            actor,
            at,
            ttl_ms,
        } => StoreDone::from_result(store.update_now(&key, &change, actor, at, ttl_ms)),
        StoreWork::Prepare { key, ballot } => {
            StoreDone::from_result(store.prepare_now(&key, ballot))
        }
        StoreWork::Accept { key, record, next } => {
            StoreDone::from_result(store.accept_now(&key, record, next))
        }
        StoreWork::DropPromises(before) => StoreDone::from_result(store.drop_promises_now(before)),
    }
}

/// A request sent and not answered yet.
pub(crate) struct Pending {
    pub(crate) to: String,
    pub(crate) purpose: Purpose,
    pub(crate) deadline: Millis,
    pub(crate) timeout_ms: u64,
}

/// Why a request was sent.
pub(crate) enum Purpose {
    /// A write to a replica, for an operation.
    Write(Vec<OpId>),
    /// A read of a replica, for an operation.
    Read(OpId),
    /// A read repair nobody waits for.
    ReadRepair,
    /// A batch of hints.
    Hints { batch: u64, count: usize },
    /// A step of an anti-entropy run.
    Sync {
        tag: Tag,
        /// Entry bytes pushed, metadata bytes sent.
        pushed: u64,
        sent: u64,
    },
    /// A clock probe.
    Probe { sent_us: u64 },
    /// The member's view of the cluster (this node keeps being declared dead).
    Consult,
    /// The member's bucket catalog, exchanged for this node's.
    Catalog,
    /// A typed update asked of the actor, and who waits for the state it makes.
    Update {
        waiting: super::typed::UpdateFor,
        key: Vec<u8>,
    },
    /// A phase of a proposal, asked of one of its acceptors.
    Paxos(super::paxos::Asked),
    /// A client's operation on a linearizable key, handed to the key's home node.
    Forward {
        ask: AskId,
        key: Vec<u8>,
        op: crate::paxos::LinOp,
    },
}

/// The partitions and tombstones a write is about to change: they hold handoff and
/// purges back until it is done.
#[derive(Debug, Default)]
pub(crate) struct Landing {
    pub(crate) written: Vec<PartitionId>,
    pub(crate) tombstones: Vec<(PartitionId, u64)>,
}

/// Why a change was handed to the store.
pub(crate) enum StorePurpose {
    /// This node's own writes, for these operations (none for read repair).
    /// The keys, in order, for the conflicts' books.
    Local {
        ops: Vec<OpId>,
        landing: Landing,
        keys: Vec<Vec<u8>>,
    },
    /// A peer's `Replicate`.
    Replica {
        reply: ReplyTo,
        landing: Landing,
        keys: Vec<Vec<u8>>,
    },
    /// Hints delivered to this node itself.
    Hinted {
        batch: u64,
        count: usize,
        landing: Landing,
        keys: Vec<Vec<u8>>,
    },
    /// Entries an anti-entropy run received.
    SyncApply {
        peer: String,
        tag: Tag,
        landing: Landing,
    },
    /// Entries a peer pushed in its exchange.
    SyncPushed {
        reply: ReplyTo,
        landing: Landing,
        at: Millis,
    },
    /// Hints kept.
    PutHints,
    /// Hints deleted.
    HintsDeleted {
        target: String,
        why: HintsDeleted,
        count: usize,
    },
    /// Tombstones purged.
    Purged { partition: PartitionId },
    /// A partition handed off.
    Dropped { partition: PartitionId },
    /// The members or the fill books remembered.
    Meta(&'static str),
    /// Deleted buckets' records dropped.
    DroppedBuckets(Vec<crate::buckets::BucketId>),
    /// A typed update made as its actor.
    Update {
        key: Vec<u8>,
        waiting: super::typed::UpdateFor,
        landing: Landing,
    },
    /// A prepare or an accept as an acceptor, and who waits for the answer.
    Paxos {
        acceptor_for: super::acceptor::AcceptorFor,
        landing: Landing,
    },
}
