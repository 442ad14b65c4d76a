use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A member's identity in SWIM: its name (unique in the cluster, bound to its
/// certificate), where it listens, and which life of the node this is.
///
/// A node that restarts comes back with a newer identity (`epoch_ms` is the wall time of
/// its start, `incarnation` counts its starts), which wins over the old one everywhere:
/// a restarted node rejoins at once instead of waiting for the cluster to forget it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The node's name.
    pub name: String,
    /// Its listening address.
    pub addr: SocketAddr,
    /// How many times it has started (stored in its data directory).
    pub incarnation: u32,
    /// Wall-clock milliseconds at its start; orders identities even when a node comes
    /// back with an empty disk and its start count begins again.
    pub epoch_ms: u64,
    /// Its placement token when it is not its name: the token of the member it
    /// replaced (`--replace`), whose partitions it took over.
    pub token: Option<String>,
    /// The epoch of the life that created its data directory: equal across restarts
    /// that keep the data, new after a wiped disk. What a member said about its data
    /// holds for every life with the same data epoch (0: not known).
    pub data_epoch: u64,
}

impl MemberId {
    /// A member remembered from an earlier run, whose current identity is not known
    /// yet: older than any identity it can present.
    pub fn remembered(name: &str, addr: SocketAddr, token: Option<String>) -> MemberId {
        MemberId {
            name: name.to_string(),
            addr,
            incarnation: 0,
            epoch_ms: 0,
            token,
            data_epoch: 0,
        }
    }

    /// Its placement token: the name, unless it took over another member's partitions.
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or(&self.name)
    }

    /// Whether `other` can be this very process under another incarnation: the same
    /// address and data. Another process under the same name differs in one of them.
    pub fn same_process(&self, other: &MemberId) -> bool {
        self.name == other.name && self.addr == other.addr && self.data_epoch == other.data_epoch
    }

    /// Whether a status published with `data_epoch` speaks for this identity's data:
    /// the same data directory, whichever life of the node published it.
    pub fn same_data(&self, data_epoch: u64) -> bool {
        self.data_epoch != 0 && self.data_epoch == data_epoch
    }

    /// Whether `self` is a newer identity of the same member than `other`.
    pub fn supersedes(&self, other: &MemberId) -> bool {
        self.name == other.name
            && (self.epoch_ms, self.incarnation) > (other.epoch_ms, other.incarnation)
    }
}

impl std::fmt::Debug for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.incarnation)
    }
}

impl MemberId {
    /// The same life under the next incarnation: how a node declared dead while alive
    /// (a partition, a long pause) comes back at once.
    pub fn renewed(&self) -> MemberId {
        MemberId {
            incarnation: self.incarnation.saturating_add(1),
            ..self.clone()
        }
    }
}

impl foca::Identity for MemberId {
    type Addr = String;

    /// Foca never renews an identity by itself: declared dead while alive, a node comes
    /// back through [`Membership`](super::Membership), which bounds how often it does
    /// and steps aside when a later life of its name exists (a second process).
    fn renew(&self) -> Option<Self> {
        None
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.supersedes(adversary)
    }
}
