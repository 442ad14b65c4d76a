//! What the core tells its driver it did or saw: events to log and count.

use super::io::AskId;
use crate::antientropy::report::RepairReport;
use crate::membership::{MemberId, MembershipEvent};
use crate::placement::PartitionId;
use crate::policy::HintsDeleted;
use crate::record::Version;

/// Something the core did or saw, for the driver to log or count.
#[derive(Debug, Clone)]
pub enum CoreEvent {
    /// What membership saw.
    Membership(MembershipEvent),
    /// Placement changed.
    PlacementChanged {
        /// Its members.
        members: Vec<String>,
        /// Its digest.
        digest: String,
        /// Partitions this node holds in it.
        held: usize,
    },
    /// Partitions filled from their replicas: they count in quorums now.
    Filled {
        /// How many.
        partitions: usize,
        /// Partitions still filling.
        still_filling: usize,
    },
    /// Partitions released: their owners hold them now, this node hands them off.
    Released {
        /// How many.
        partitions: usize,
    },
    /// Partitions this node fills (counted whenever the fill books change).
    Filling(usize),
    /// A partition handed off to its owners and dropped here.
    HandedOff {
        /// The partition.
        partition: PartitionId,
        /// Records dropped.
        removed: u64,
        /// Its owners.
        owners: Vec<String>,
    },
    /// Tombstones purged.
    Purged {
        /// The partition.
        partition: PartitionId,
        /// How many.
        count: u64,
    },
    /// Hints deleted without delivery.
    HintsDropped {
        /// Their target.
        target: String,
        /// Why.
        why: HintsDeleted,
        /// How many.
        count: usize,
    },
    /// Hints delivered.
    HintsDelivered {
        /// Their target.
        target: String,
        /// How many.
        count: usize,
    },
    /// A batch of hints the target refused: they go one at a time, and one refused
    /// alone is set aside for a while.
    HintsRefused {
        /// Their target.
        target: String,
        /// How many were in the batch.
        count: usize,
        /// The target's answer.
        why: String,
    },
    /// A member the data path no longer reaches (membership calls it alive).
    Unreachable {
        /// The member.
        peer: String,
        /// Why.
        why: String,
    },
    /// A member the data path reaches again.
    Reachable {
        /// The member.
        peer: String,
    },
    /// A version refused for coming from too far ahead.
    ClockRefused {
        /// Where it came from.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// This node's clock left the cluster's bound (`Some(why)`) or came back (`None`).
    ClockState {
        /// Why writes are refused, if they are.
        refusal: Option<String>,
        /// The cluster's offset from this clock, ms, when measured.
        offset_ms: Option<i64>,
        /// Whether this clock is the outlier.
        outlier: bool,
    },
    /// An anti-entropy round with every peer ended.
    RunEnded {
        /// What started it.
        kind: crate::antientropy::report::RunKind,
        /// What it found and did.
        report: Box<RepairReport>,
    },
    /// A join request was refused.
    JoinRefused {
        /// The joining member.
        member: String,
        /// Why.
        why: String,
    },
    /// A join request was admitted.
    JoinAdmitted {
        /// The joining member.
        member: String,
        /// The member it replaces.
        replaces: Option<String>,
    },
    /// A member was removed.
    Removed(MemberId),
    /// Deleted buckets' records were dropped here.
    BucketsDropped {
        /// The buckets.
        ids: Vec<crate::buckets::BucketId>,
        /// Records dropped.
        records: u64,
    },
    /// The bucket catalog changed: a bucket created or deleted here or learnt of.
    Buckets {
        /// Live buckets now, `default` included.
        live: usize,
        /// Its digest.
        digest: u64,
    },
    /// An exchange of a partition with a peer failed.
    ExchangeFailed {
        /// The peer.
        peer: String,
        /// The partition.
        partition: PartitionId,
        /// Why.
        why: String,
    },
    /// An exchange with a peer ended (for the metrics).
    Exchanged {
        /// Its counts.
        counts: crate::antientropy::report::SyncCounts,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A change to the store failed.
    StoreFailed {
        /// What it was.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The node has left the cluster (after [`Ask::Leave`]).
    Left,
    /// A version was issued for a write this node coordinates.
    Issued {
        /// The ask it was issued for.
        ask: AskId,
        /// The version.
        version: Version,
    },
    /// A detail for debugging.
    Debug(String),
}
