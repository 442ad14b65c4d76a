//! Status gossip: each member's small report, carried as foca custom broadcasts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::MemberId;
use crate::hlc::Timestamp;

/// What a member tells the cluster about itself, every second or so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// The member.
    pub name: String,
    /// Its identity's incarnation when it published this.
    pub incarnation: u32,
    /// Its identity's epoch when it published this.
    pub epoch_ms: u64,
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
        let mut book = self.book.lock().expect("status book lock");
        let newer = book
            .latest
            .get(&status.name)
            .is_none_or(|held| held.key().order < key.order);
        if newer {
            book.latest.insert(status.name.clone(), status);
            Ok(Some(key))
        } else {
            Ok(None)
        }
    }
}
