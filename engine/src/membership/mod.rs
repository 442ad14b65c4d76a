//! Cluster membership: SWIM failure detection (the foca crate, sans-IO) plus what
//! Vergent keeps on top of it.
//!
//! - The roster: every member ever seen, by name, as alive, suspect, dead or left. Dead
//!   members keep their partitions (hinted handoff covers them while they are away); only
//!   a member that left gracefully drops out of placement.
//! - Status gossip: each member periodically publishes a small [`GossipStatus`] (HLC,
//!   hint backlog, load), disseminated as foca custom broadcasts, so any member can
//!   answer `status` for the whole cluster.
//!
//! Like every mechanism here, [`Membership`] does no I/O and reads no clock: the runtime
//! feeds it datagrams, timer events and the time, and drains what it wants sent
//! ([`Membership::poll_send`]), when it wants waking ([`Membership::poll_timer`]) and
//! what changed ([`Membership::poll_event`]).

mod identity;
mod status;

use std::collections::{BTreeMap, VecDeque};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, State, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub use self::identity::MemberId;
pub use self::status::GossipStatus;
use self::status::{StatusBook, StatusHandler};
use crate::coordinator::Millis;
use crate::storage::MemberRecord;

/// Largest membership datagram; fits a QUIC datagram on any path (1200-byte minimum MTU).
pub const DATAGRAM_BYTES_MAX: usize = 1100;

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
}

type Swim = Foca<MemberId, PostcardCodec, SmallRng, StatusHandler>;

/// The membership state machine; see the module documentation.
pub struct Membership {
    swim: Swim,
    me: MemberId,
    roster: BTreeMap<String, MemberView>,
    book: Arc<Mutex<StatusBook>>,
    runtime: AccumulatingRuntime<MemberId>,
    events: VecDeque<MembershipEvent>,
    roster_changed: bool,
    status_seq: u64,
    leaving: bool,
}

impl Membership {
    /// A membership of one (this node), with randomness seeded by `seed`.
    pub fn new(me: MemberId, config: &MembershipConfig, seed: u64, now: Millis) -> Membership {
        let mut swim_config = foca::Config::new_lan(NonZeroU32::new(8).expect("non-zero"));
        swim_config.probe_period = config.probe_period;
        swim_config.probe_rtt = config.probe_rtt;
        swim_config.suspect_to_down_after = config.suspect_to_down_after;
        swim_config.max_packet_size = NonZeroUsize::new(DATAGRAM_BYTES_MAX).expect("non-zero");
        swim_config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: config.gossip_period,
            num_members: NonZeroUsize::new(3).expect("non-zero"),
        });
        swim_config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        });
        let book = Arc::new(Mutex::new(StatusBook::default()));
        let swim = Foca::with_custom_broadcast(
            me.clone(),
            swim_config,
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            StatusHandler::new(book.clone()),
        );
        let mut roster = BTreeMap::new();
        roster.insert(
            me.name.clone(),
            MemberView {
                id: me.clone(),
                state: MemberState::Alive,
                swim_incarnation: 0,
                status: None,
                status_at: now,
                since: now,
            },
        );
        Membership {
            swim,
            me,
            roster,
            book,
            runtime: AccumulatingRuntime::new(),
            events: VecDeque::new(),
            roster_changed: true,
            status_seq: 0,
            leaving: false,
        }
    }

    /// This node's identity.
    pub fn me(&self) -> &MemberId {
        &self.me
    }

    /// Teaches membership the members remembered from an earlier run. They count as
    /// dead (or left) until they answer; SWIM keeps announcing to dead members, so they
    /// are found again as soon as they are up.
    pub fn restore(&mut self, records: &[MemberRecord], now: Millis) {
        let mut known = Vec::new();
        for record in records.iter().filter(|r| r.name != self.me.name) {
            let id = MemberId::remembered(&record.name, record.addr);
            let state = if record.left {
                MemberState::Left
            } else {
                MemberState::Dead
            };
            self.roster
                .entry(record.name.clone())
                .or_insert(MemberView {
                    id: id.clone(),
                    state,
                    swim_incarnation: 0,
                    status: None,
                    status_at: now,
                    since: now,
                });
            if !record.left {
                known.push(Member::down(id));
            }
        }
        // Restored knowledge is not news for the rest of the cluster.
        let _ = self
            .swim
            .apply_many(known.into_iter(), false, &mut self.runtime);
        self.roster_changed = true;
    }

    /// Asks `seed` to let this node in.
    pub fn announce(&mut self, seed: MemberId, now: Millis) {
        let _ = self.swim.announce(seed, &mut self.runtime);
        self.sync(now);
    }

    /// Whether SWIM knows no active member besides this node.
    pub fn is_isolated(&self) -> bool {
        self.swim.num_members() == 0
    }

    /// SWIM only probes and announces while it knows an active member. A node that
    /// knows none (restarted while the others were down, or cut off by a partition)
    /// calls this periodically to announce itself to every member it remembers.
    pub fn announce_if_isolated(&mut self, now: Millis) {
        if self.leaving || !self.is_isolated() {
            return;
        }
        let known: Vec<MemberId> = self
            .roster
            .values()
            .filter(|m| m.id.name != self.me.name && m.state != MemberState::Left)
            .map(|m| m.id.clone())
            .collect();
        for id in known {
            let _ = self.swim.announce(id, &mut self.runtime);
        }
        self.sync(now);
    }

    /// A datagram from another member.
    pub fn handle_data(&mut self, data: &[u8], now: Millis) -> Result<(), MembershipError> {
        let result = self.swim.handle_data(data, &mut self.runtime);
        self.sync(now);
        result.map_err(MembershipError::from)
    }

    /// A timer this membership asked for has fired.
    pub fn handle_timer(&mut self, timer: Timer<MemberId>, now: Millis) {
        if let Err(err) = self.swim.handle_timer(timer, &mut self.runtime) {
            tracing::debug!("membership timer: {err}");
        }
        self.sync(now);
    }

    /// Publishes this node's status to the cluster (`name`, `incarnation`, `epoch_ms`,
    /// `seq` and `leaving` are filled in here).
    pub fn publish(&mut self, mut status: GossipStatus, now: Millis) {
        self.status_seq += 1;
        status.name = self.me.name.clone();
        status.incarnation = self.me.incarnation;
        status.epoch_ms = self.me.epoch_ms;
        status.seq = self.status_seq;
        status.leaving = self.leaving;
        match postcard::to_allocvec(&status) {
            Ok(bytes) => {
                if let Err(err) = self.swim.add_broadcast(&bytes) {
                    tracing::debug!("status not published: {err}");
                }
            }
            Err(err) => tracing::debug!("status not encoded: {err}"),
        }
        self.sync(now);
    }

    /// Leaves the cluster: tells the others this node is leaving (so they drop it from
    /// placement rather than wait for it), then leaves SWIM.
    pub fn leave(&mut self, status: GossipStatus, now: Millis) {
        self.leaving = true;
        self.publish(status, now);
        // The status goes out with the next messages; leaving SWIM right away would
        // stop them. The runtime calls `finish_leaving` after a short grace.
    }

    /// Completes [`Membership::leave`]: declares this node down to the others.
    pub fn finish_leaving(&mut self, now: Millis) {
        let _ = self.swim.leave_cluster(&mut self.runtime);
        if let Some(view) = self.roster.get_mut(&self.me.name) {
            view.state = MemberState::Left;
            view.since = now;
        }
        self.roster_changed = true;
    }

    /// Whether this node is leaving.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The next datagram to send.
    pub fn poll_send(&mut self) -> Option<(MemberId, Bytes)> {
        self.runtime.to_send()
    }

    /// The next timer to arm: fire it with [`Membership::handle_timer`] after the delay.
    pub fn poll_timer(&mut self) -> Option<(Duration, Timer<MemberId>)> {
        self.runtime.to_schedule()
    }

    /// The next change.
    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        self.events.pop_front()
    }

    /// Whether the roster changed since the last call (placement may have to be
    /// recomputed and the member records saved).
    pub fn take_roster_changed(&mut self) -> bool {
        std::mem::take(&mut self.roster_changed)
    }

    /// Every member known, this node included, by name.
    pub fn roster(&self) -> impl Iterator<Item = &MemberView> {
        self.roster.values()
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.roster.get(name)
    }

    /// The names placement is computed over: every member that has not left.
    pub fn placement_members(&self) -> Vec<String> {
        self.roster
            .values()
            .filter(|m| m.state != MemberState::Left)
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// What to remember about the members across a restart.
    pub fn records(&self) -> Vec<MemberRecord> {
        self.roster
            .values()
            .map(|m| MemberRecord {
                name: m.id.name.clone(),
                addr: m.id.addr,
                left: m.state == MemberState::Left,
            })
            .collect()
    }

    /// Brings the roster up to date with SWIM's view and the gossiped statuses.
    fn sync(&mut self, now: Millis) {
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::Rejoin(id) => {
                    self.me = id.clone();
                    self.events.push_back(MembershipEvent::RejoinedAs(id));
                    // Renewing resets SWIM to "disconnected" and cancels its timers, and
                    // it only reconnects when a later update arrives. If every member
                    // renews at once (a partition healing) nobody sends one, and all
                    // stay silent for good. An empty update reconnects at once when
                    // members are known.
                    let _ = self
                        .swim
                        .apply_many(std::iter::empty(), true, &mut self.runtime);
                }
                OwnedNotification::Defunct => {
                    // Identities renew themselves, so this only follows leaving.
                    tracing::debug!("membership: this node is down for the cluster");
                }
                _ => {}
            }
        }
        let statuses = self.book.lock().expect("status book lock").snapshot();
        let mut seen: Vec<(MemberId, MemberState, u16)> = self
            .swim
            .iter_membership_state()
            .map(|member| {
                let state = match member.state() {
                    State::Alive => MemberState::Alive,
                    State::Suspect => MemberState::Suspect,
                    State::Down => MemberState::Dead,
                };
                (member.id().clone(), state, member.incarnation())
            })
            .collect();
        let me = self.me.clone();
        let my_state = if self
            .roster
            .get(&me.name)
            .is_some_and(|v| v.state == MemberState::Left)
        {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        seen.push((me, my_state, 0));
        for (id, mut state, swim_incarnation) in seen {
            let status = statuses.get(&id.name).cloned();
            if let Some(status) = &status
                && status.leaving
                && (status.epoch_ms, status.incarnation) >= (id.epoch_ms, id.incarnation)
            {
                state = MemberState::Left;
            }
            self.update(id, state, swim_incarnation, status, now);
        }
    }

    fn update(
        &mut self,
        id: MemberId,
        state: MemberState,
        swim_incarnation: u16,
        status: Option<GossipStatus>,
        now: Millis,
    ) {
        match self.roster.get_mut(&id.name) {
            None => {
                self.roster_changed = true;
                if state.is_live() {
                    self.events.push_back(MembershipEvent::Joined(id.clone()));
                }
                self.roster.insert(
                    id.name.clone(),
                    MemberView {
                        id,
                        state,
                        swim_incarnation,
                        status,
                        status_at: now,
                        since: now,
                    },
                );
            }
            Some(view) => {
                // An older identity of the same name can linger in SWIM's table; only
                // the newest one speaks for the member.
                if id.supersedes(&view.id) {
                    if id.addr != view.id.addr {
                        self.roster_changed = true;
                    }
                    view.id = id.clone();
                } else if id != view.id {
                    return;
                }
                if let Some(status) = status
                    && view.status.as_ref() != Some(&status)
                {
                    view.status = Some(status);
                    view.status_at = now;
                }
                view.swim_incarnation = swim_incarnation;
                if view.state == state {
                    return;
                }
                let event = match (view.state, state) {
                    (_, MemberState::Left) => MembershipEvent::Left(id),
                    (_, MemberState::Dead) => MembershipEvent::Died(id),
                    (MemberState::Alive, MemberState::Suspect) => MembershipEvent::Suspected(id),
                    (
                        MemberState::Dead | MemberState::Left,
                        MemberState::Alive | MemberState::Suspect,
                    ) => MembershipEvent::Recovered(id),
                    (_, _) => {
                        view.state = state;
                        view.since = now;
                        return;
                    }
                };
                if matches!(view.state, MemberState::Left) || matches!(state, MemberState::Left) {
                    self.roster_changed = true;
                }
                view.state = state;
                view.since = now;
                self.events.push_back(event);
            }
        }
    }
}

#[cfg(test)]
mod tests;
