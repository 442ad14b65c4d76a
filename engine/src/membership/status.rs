//! Status gossip: each member's small report, carried as foca custom broadcasts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::seal::sealed_message;
use super::seal::{SealCheck, SealedStatus, StatusSeal, Unsealed};
use super::{DEPARTURES_GOSSIPED_MAX, MemberId, Membership, STATUS_BYTES_MAX, wire};
use crate::antientropy::report::SyncSummary;
use crate::base::Millis;
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
    /// The digest of the bucket catalog it holds: a member that sees another digest
    /// exchanges catalogs with it.
    pub catalog: u64,
}

impl GossipStatus {
    fn key(&self) -> StatusKey {
        StatusKey {
            name: self.name.clone(),
            order: (self.epoch_ms, self.incarnation, self.seq),
        }
    }
}

/// The newest status seen from each member, the seal that checks them, and what was
/// refused since membership last looked.
pub(super) struct StatusBook {
    latest: HashMap<String, GossipStatus>,
    pub(super) seal: Arc<dyn StatusSeal>,
    /// Statuses of others passed on by a peer without their author's seal: (the peer,
    /// the author).
    pub(super) forged: Vec<(String, String)>,
    /// Second-hand statuses whose author's certificate is not known here yet.
    pub(super) unverified: u64,
}

impl Default for StatusBook {
    fn default() -> Self {
        StatusBook {
            latest: HashMap::new(),
            seal: Arc::new(Unsealed),
            forged: Vec::new(),
            unverified: 0,
        }
    }
}

impl StatusBook {
    pub(super) fn snapshot(&self) -> HashMap<String, GossipStatus> {
        self.latest.clone()
    }

    /// The newest status of each member, read in place.
    pub(super) fn latest(&self) -> &HashMap<String, GossipStatus> {
        &self.latest
    }

    fn is_newer(&self, status: &GossipStatus) -> bool {
        self.latest
            .get(&status.name)
            .is_none_or(|held| held.key().order < status.key().order)
    }

    /// Keeps `status` if it is newer than the one held; whether it was.
    pub(super) fn offer(&mut self, status: GossipStatus) -> bool {
        let newer = self.is_newer(&status);
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
        sender: Option<&MemberId>,
    ) -> Result<Option<StatusKey>, StatusError> {
        let sealed: SealedStatus = postcard::from_bytes(data).map_err(StatusError)?;
        let status: GossipStatus = postcard::from_bytes(&sealed.status).map_err(StatusError)?;
        let mut book = self.book.lock().expect("status book lock");
        if !book.is_newer(&status) {
            return Ok(None);
        }
        // `None` is this node's own status; a status from its author came on the
        // author's own connection (membership bound the sender to its certificate).
        // Anything else is passed on, and counts only with its author's seal.
        if let Some(sender) = sender
            && sender.name != status.name
        {
            let message = sealed_message(&sealed.status);
            match book
                .seal
                .check(&status.name, &message, sealed.seal.as_ref())
            {
                SealCheck::Valid => {}
                SealCheck::Invalid => {
                    book.forged.push((sender.name.clone(), status.name.clone()));
                    return Ok(None);
                }
                SealCheck::UnknownKey => {
                    book.unverified += 1;
                    return Ok(None);
                }
            }
        }
        let key = status.key();
        let newer = book.offer(status);
        Ok(newer.then_some(key))
    }
}

impl Membership {
    /// Publishes this node's status to the cluster (`name`, `incarnation`, `epoch_ms`,
    /// `seq` and `leaving` are filled in here).
    pub fn publish(&mut self, mut status: GossipStatus, now: Millis) {
        self.status_seq += 1;
        status.name = self.me.name.clone();
        status.incarnation = self.me.incarnation;
        status.epoch_ms = self.me.epoch_ms;
        status.data_epoch = self.me.data_epoch;
        status.seq = self.status_seq;
        status.leaving = self.leaving;
        status.departed = self
            .departed
            .iter()
            .take(DEPARTURES_GOSSIPED_MAX)
            .cloned()
            .collect();
        // A status must fit a datagram beside SWIM's own header and a few updates: with
        // the largest partition bitmaps, fewer departures ride along (the rest follow in
        // later statuses, most recent first).
        // The list of unconfirmed partitions goes first: without it the others take
        // every partition of this node as unconfirmed, which errs on the safe side.
        let seal = self.book.lock().expect("status book lock").seal.clone();
        // Room for the seal and its framing (an option tag and two lengths).
        let limit = STATUS_BYTES_MAX.saturating_sub(seal.seal_bytes_max() + 8);
        let mut bytes = wire::status_bytes(&status);
        if let Ok(encoded) = &bytes
            && encoded.len() > limit
            && status.sync.unconfirmed.take().is_some()
        {
            status.sync.not_checked_with_all = None;
            bytes = wire::status_bytes(&status);
        }
        while let Ok(encoded) = &bytes
            && encoded.len() > limit
            && status.departed.pop().is_some()
        {
            bytes = wire::status_bytes(&status);
        }
        match bytes {
            Ok(bytes) => {
                let sealed = wire::encode_status(&bytes, seal.seal(&sealed_message(&bytes)));
                if let Err(err) = sealed
                    .map_err(|e| e.to_string())
                    .and_then(|sealed| self.swim.add_broadcast(&sealed).map_err(|e| e.to_string()))
                {
                    tracing::debug!("status not published: {err}");
                }
            }
            Err(err) => tracing::debug!("status not encoded: {err}"),
        }
        self.sync(now);
    }
}
