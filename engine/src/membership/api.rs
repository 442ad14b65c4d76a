//! What membership takes and gives: its configuration, members as it sees them, and
//! the events and errors it reports.

use std::time::Duration;

use super::{GossipStatus, MemberId, Refusal, RefusalReport};
use crate::base::Millis;

/// A member as a seed describes it to a joining node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedMember {
    /// Its identity.
    pub id: MemberId,
    /// Its state as the seed sees it.
    pub state: MemberState,
    /// Its last status, when the seed has one.
    pub status: Option<GossipStatus>,
}

/// What the cluster currently believes about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes; declared dead unless it refutes in time.
    Suspect,
    /// Declared dead; still holds its partitions until it returns or leaves.
    Dead,
    /// Left gracefully; holds no partitions.
    Left,
}

impl MemberState {
    /// The lowercase name shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    /// Whether requests can be sent to it.
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// A member as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Its current identity.
    pub id: MemberId,
    /// Its state.
    pub state: MemberState,
    /// Its SWIM incarnation (raised to refute suspicion).
    pub swim_incarnation: u16,
    /// Its last gossiped status, if any arrived.
    pub status: Option<GossipStatus>,
    /// When that status arrived.
    pub status_at: Millis,
    /// When this node last saw the state change.
    pub since: Millis,
}

/// A change worth telling the operator (and the runtime) about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member was seen for the first time.
    Joined(MemberId),
    /// A dead member answers again, possibly restarted (a higher incarnation).
    Recovered(MemberId),
    /// A member missed probes.
    Suspected(MemberId),
    /// A member was declared dead.
    Died(MemberId),
    /// A member left gracefully.
    Left(MemberId),
    /// This node has been declared dead by the others and rejoined with a new incarnation.
    RejoinedAs(MemberId),
    /// This node was declared dead again and again in a short time: it waits before
    /// rejoining (how long, in milliseconds), so refutations never become a storm.
    RejoinDelayed(u64),
    /// A later life of this node's name exists (another process started under it):
    /// this one stops taking part in membership.
    SteppedAside(MemberId),
    /// The cluster removed this node while it was away; it rejoins as a new member
    /// that holds no data.
    RemovedWhileAway,
    /// This node keeps being declared dead: the runtime should ask a live member for its
    /// view of the cluster ([`Membership::install`](super::Membership::install)), which names any other process
    /// under this node's name.
    ConsultSeed,
    /// The later life this node stepped aside for is gone (declared dead): this node
    /// takes its name back under an identity that supersedes it. It missed the writes
    /// that went to the other process, so it refills before it counts.
    NameTakenBack(MemberId),
    /// Messages from a peer were refused for speaking as another member (reported at
    /// most once a minute per peer; every one is counted in [`Membership::refusals`](super::Membership::refusals)).
    Refused(RefusalReport),
}

/// SWIM timing.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Time between probes of a random member.
    pub probe_period: Duration,
    /// Time to wait for a probe's answer before asking others to probe.
    pub probe_rtt: Duration,
    /// Time a suspect has to refute before it is declared dead.
    pub suspect_to_down_after: Duration,
    /// Time between gossip rounds.
    pub gossip_period: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(500),
            suspect_to_down_after: Duration::from_millis(3000),
            gossip_period: Duration::from_millis(200),
        }
    }
}

/// Why a membership input was refused; state is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// foca refused the input (a malformed or foreign datagram, most often).
    #[error("membership message refused: {0}")]
    Swim(#[from] foca::Error),
    /// The message speaks as another member than the one that sent it.
    #[error("membership message from {from:?} refused: {refusal}")]
    Refused {
        /// The certificate name of the connection it came on.
        from: String,
        /// What it claimed.
        refusal: Refusal,
    },
}
