//! Status gossip: each member's small report, carried as foca custom broadcasts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::MemberId;
use crate::antientropy::report::SyncSummary;
use crate::hlc::Timestamp;
use crate::placement::PartitionSet;

/// A member that left the cluster or was removed from it, as statuses pass it on: every
/// life of the member up to the one that departed (a later life of the same name is a
/// new member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// The member.
    pub name: String,
    /// The start epoch up to which its lives departed: its identity's epoch when it
    /// left; for a removal, the remover's measure of the cluster's time (the member may
    /// have started lives the remover never saw).
    pub epoch_ms: u64,
    /// Its identity's incarnation when it departed.
    pub incarnation: u32,
}

impl Departure {
    /// Whether this departure covers `id`: the same life or an earlier one, at any
    /// incarnation. The member that recorded the departure may not have seen the
    /// departed node's last renewals; a member that did must drop it too, or the two
    /// disagree on placement (the node that replaced it holds the same token).
    pub fn covers(&self, id: &MemberId) -> bool {
        self.name == id.name && id.epoch_ms <= self.epoch_ms
    }
}

/// What a member tells the cluster about itself, every second or so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// The member.
    pub name: String,
    /// Its identity's incarnation when it published this.
    pub incarnation: u32,
    /// Its identity's epoch when it published this.
    pub epoch_ms: u64,
    /// Its data directory's epoch: the partitions it says it holds are those of this
    /// data, whichever life of the node says so.
    pub data_epoch: u64,
    /// Increases with every publication of one identity.
    pub seq: u64,
    /// Its HLC when it published this.
    pub hlc: Timestamp,
    /// Its wall clock when it published this, milliseconds.
    pub wall_ms: u64,
    /// Hints it keeps for others.
    pub hints: u64,
    /// Wall-clock milliseconds when its oldest hint was kept (0: none).
    pub hints_oldest_ms: u64,
    /// Writes it has coordinated since it started.
    pub writes: u64,
    /// Reads it has coordinated since it started.
    pub reads: u64,
    /// Partitions it holds in its own placement view.
    pub partitions_held: u16,
    /// Records it holds.
    pub records: u64,
    /// Its placement digest: equal digests mean equal placement views.
    pub placement_digest: String,
    /// Whether it is leaving the cluster.
    pub leaving: bool,
    /// The partitions whose data it holds (filled from the other replicas, or held
    /// since the cluster began); an owner counts in a partition's quorums only once it
    /// is here.
    pub filled: PartitionSet,
    /// The partitions it holds data of beyond `filled` (a copy it no longer counts for,
    /// waiting to be handed off; a fill under way), listed; `None` when there are too
    /// many to list, and then it may hold any. Such data goes back to the owners.
    pub also_holding: Option<Vec<crate::placement::PartitionId>>,
    /// Members it knows departed (left or removed), most recent first and bounded, so a
    /// member that missed a departure learns it from anyone's next status.
    pub departed: Vec<Departure>,
    /// What it has confirmed in sync, and the run it has in progress.
    pub sync: SyncSummary,
}

impl GossipStatus {
    fn key(&self) -> StatusKey {
        StatusKey {
            name: self.name.clone(),
            order: (self.epoch_ms, self.incarnation, self.seq),
        }
    }
}

/// The newest status seen from each member.
#[derive(Default)]
pub(super) struct StatusBook {
    latest: HashMap<String, GossipStatus>,
}

impl StatusBook {
    pub(super) fn snapshot(&self) -> HashMap<String, GossipStatus> {
        self.latest.clone()
    }

    /// The newest status of each member, read in place.
    pub(super) fn latest(&self) -> &HashMap<String, GossipStatus> {
        &self.latest
    }

    /// Keeps `status` if it is newer than the one held; whether it was.
    pub(super) fn offer(&mut self, status: GossipStatus) -> bool {
        let newer = self
            .latest
            .get(&status.name)
            .is_none_or(|held| held.key().order < status.key().order);
        if newer {
            self.latest.insert(status.name.clone(), status);
        }
        newer
    }
}

pub(super) struct StatusKey {
    name: String,
    order: (u64, u32, u64),
}

impl foca::Invalidates for StatusKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name && self.order > other.order
    }
}

/// Accepts a status when it is newer than the one held, so only news is disseminated.
pub(super) struct StatusHandler {
    book: Arc<Mutex<StatusBook>>,
}

impl StatusHandler {
    pub(super) fn new(book: Arc<Mutex<StatusBook>>) -> StatusHandler {
        StatusHandler { book }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unreadable status broadcast: {0}")]
pub(super) struct StatusError(postcard::Error);

impl foca::BroadcastHandler<MemberId> for StatusHandler {
    type Key = StatusKey;
    type Error = StatusError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberId>,
    ) -> Result<Option<StatusKey>, StatusError> {
        let status: GossipStatus = postcard::from_bytes(data).map_err(StatusError)?;
        let key = status.key();
        let newer = self.book.lock().expect("status book lock").offer(status);
        Ok(newer.then_some(key))
    }
}
