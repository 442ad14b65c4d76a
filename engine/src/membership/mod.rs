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

mod departures;
mod identity;
mod lives;
mod refusals;
mod roster;
pub mod seal;
mod silence;
mod status;
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, Member, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

mod api;

pub use self::api::{
    MemberState, MemberView, MembershipConfig, MembershipError, MembershipEvent, SeedMember,
};
pub use self::identity::MemberId;
use self::refusals::RefusalLog;
pub use self::refusals::{REFUSALS_REPORTED_EVERY_MS, Refusal, RefusalReport};
pub use self::status::{Departure, GossipStatus};
use self::status::{StatusBook, StatusHandler};
use crate::base::Millis;
use crate::storage::MemberRecord;

/// Largest membership datagram; fits a QUIC datagram on any path (1200-byte minimum MTU).
pub const DATAGRAM_BYTES_MAX: usize = 1100;
/// Most departures a status passes on.
pub const DEPARTURES_GOSSIPED_MAX: usize = 16;
/// Largest encoded status: room is left in a datagram for SWIM's header and updates.
const STATUS_BYTES_MAX: usize = DATAGRAM_BYTES_MAX - 300;

/// Renewals allowed at once within [`RENEWAL_WINDOW_MS`]; past them each waits twice as
/// long as the one before, up to [`RENEWAL_DELAY_MAX_MS`].
const RENEWALS_FREE: usize = 10;
/// The window renewals are counted over.
const RENEWAL_WINDOW_MS: u64 = 60_000;
/// The longest wait before a renewal.
const RENEWAL_DELAY_MAX_MS: u64 = 30_000;
/// How long a node that stepped aside for another process of its name waits before it
/// takes the name back.
const STEP_ASIDE_MS: u64 = 30_000;

type Swim = Foca<MemberId, PostcardCodec, SmallRng, StatusHandler>;

/// Least time between two "you are down" notices taken from one member, ms.
const TURN_UNDEAD_EVERY_MS: u64 = 1_000;

/// A timer membership asked for ([`Membership::poll_timer`]), to hand back to
/// [`Membership::handle_timer`] when it fires. Timers of an earlier SWIM instance (from
/// before this node renewed its identity) are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwimTimer {
    generation: u32,
    timer: Timer<MemberId>,
}

impl SwimTimer {
    /// Whether this timer starts a probe round.
    pub fn is_probe(&self) -> bool {
        matches!(self.timer, Timer::ProbeRandomMember(_))
    }
}

/// The membership state machine; see the module documentation.
pub struct Membership {
    swim: Swim,
    swim_config: foca::Config,
    seed: u64,
    /// Counts SWIM instances: a renewal starts a new one.
    generation: u32,
    me: MemberId,
    roster: BTreeMap<String, MemberView>,
    book: Arc<Mutex<StatusBook>>,
    runtime: AccumulatingRuntime<MemberId>,
    events: VecDeque<MembershipEvent>,
    roster_changed: bool,
    /// When a "you are down" notice was last taken from each member. Two members that
    /// hold each other down answer each such notice with another, for ever (and a
    /// duplicated datagram doubles the exchange): one a second per sender is enough.
    turn_undead: BTreeMap<String, Millis>,
    /// The member that last said this node is down: the one to ask for its view (it
    /// may be the only one holding the later life of this name that keeps this one out).
    told_down_by: Option<String>,
    status_seq: u64,
    leaving: bool,
    /// Departures known, most recent first.
    departed: VecDeque<Departure>,
    /// When this node renewed its identity lately.
    renewals: VecDeque<Millis>,
    /// A renewal waiting for its time.
    renew_at: Option<Millis>,
    /// The later life of this node's name it stepped aside for, and since when.
    stepped_aside: Option<(MemberId, Millis)>,
    /// The newest identity of this node's name seen from another process, and whether
    /// the cluster last called it live.
    rival: Option<(MemberId, bool)>,
    /// This life is ending (graceful shutdown): no renewal.
    going_down: bool,
    /// When a datagram from another member last arrived.
    heard_at: Option<Millis>,
    /// When the last silence (no datagram for two probe periods) ended.
    silence_ended: Option<Millis>,
    /// Messages refused for speaking as another member.
    refusals: RefusalLog,
    /// When each member held suspect too long was last told so.
    nudged: BTreeMap<String, Millis>,
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
            swim_config.clone(),
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
            swim_config,
            seed,
            generation: 0,
            me,
            roster,
            book,
            runtime: AccumulatingRuntime::new(),
            events: VecDeque::new(),
            roster_changed: true,
            turn_undead: BTreeMap::new(),
            told_down_by: None,
            status_seq: 0,
            leaving: false,
            departed: VecDeque::new(),
            renewals: VecDeque::new(),
            renew_at: None,
            stepped_aside: None,
            rival: None,
            going_down: false,
            heard_at: None,
            silence_ended: None,
            refusals: RefusalLog::default(),
            nudged: BTreeMap::new(),
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
        let me = self.me.name.clone();
        for record in records.iter().filter(|r| r.name != me) {
            let id = MemberId::remembered(&record.name, record.addr, record.token.clone());
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
            } else if let Some((epoch_ms, incarnation)) = record.departed {
                // Departures are for good: a node that restarts passes on the ones it
                // knows, and a seed that missed one cannot bring the member back.
                self.learn_departure(Departure {
                    name: record.name.clone(),
                    epoch_ms,
                    incarnation,
                });
            }
        }
        // Restored knowledge is not news for the rest of the cluster.
        let _ = self
            .swim
            .apply_many(known.into_iter(), false, &mut self.runtime);
        self.roster_changed = true;
    }

    /// Installs what a seed knows of the cluster, before this node serves anything: its
    /// members with their states and statuses, so placement and quorums are the
    /// cluster's from the first request. SWIM then confirms and updates them.
    pub fn install(&mut self, members: Vec<SeedMember>, now: Millis) {
        let mut swim_updates = Vec::new();
        for member in members {
            if member.id.name == self.me.name {
                if !self.me.same_process(&member.id) {
                    let live = member.state.is_live();
                    self.learn_rival(member.id, Some(live));
                }
                continue;
            }
            if let Some(status) = member.status {
                self.book.lock().expect("status book lock").offer(status);
            }
            match member.state {
                MemberState::Left => {
                    self.learn_departure(Departure {
                        name: member.id.name.clone(),
                        epoch_ms: member.id.epoch_ms,
                        incarnation: member.id.incarnation,
                    });
                    let known = self.roster.get(&member.id.name);
                    if known.is_none_or(|k| !k.id.supersedes(&member.id)) {
                        self.roster.insert(
                            member.id.name.clone(),
                            MemberView {
                                id: member.id,
                                state: MemberState::Left,
                                swim_incarnation: 0,
                                status: None,
                                status_at: now,
                                since: now,
                            },
                        );
                    }
                }
                MemberState::Dead => swim_updates.push(Member::down(member.id)),
                MemberState::Alive | MemberState::Suspect => {
                    swim_updates.push(Member::alive(member.id))
                }
            }
        }
        // The seed's knowledge is not news for the cluster: it is the cluster's.
        let _ = self
            .swim
            .apply_many(swim_updates.into_iter(), false, &mut self.runtime);
        self.roster_changed = true;
        self.sync(now);
    }

    /// What this node knows of every member, for a joining node.
    pub fn seed_members(&self) -> Vec<SeedMember> {
        let statuses = self.book.lock().expect("status book lock").snapshot();
        self.roster
            .values()
            .map(|m| SeedMember {
                id: m.id.clone(),
                state: m.state,
                status: statuses
                    .get(&m.id.name)
                    .filter(|s| m.id.same_data(s.data_epoch))
                    .cloned(),
            })
            .collect()
    }

    /// Asks `seed` to let this node in.
    pub fn announce(&mut self, seed: MemberId, now: Millis) {
        let _ = self.swim.announce(seed, &mut self.runtime);
        self.sync(now);
    }

    /// Whether another member has spoken to this node since it started: one that sends
    /// it a datagram knows of it.
    pub fn heard_from_others(&self) -> bool {
        self.heard_at.is_some()
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

    /// A datagram from another member, that came on a connection whose certificate
    /// names `from`. A datagram whose SWIM header names another sender is refused
    /// whole: a member speaks only for itself.
    pub fn handle_data(
        &mut self,
        from: &str,
        data: &[u8],
        now: Millis,
    ) -> Result<(), MembershipError> {
        let header = wire::header(data);
        if let Some(header) = &header
            && header.src.name != from
        {
            let refusal = Refusal::NotTheSender {
                claimed: header.src.name.clone(),
            };
            self.refuse(from, refusal.clone(), now);
            return Err(MembershipError::Refused {
                from: from.to_string(),
                refusal,
            });
        }
        if header.as_ref().is_some_and(|h| h.src.name != self.me.name) {
            self.heard(now);
        }
        if let Some(header) = header
            && header.message == foca::Message::TurnUndead
        {
            let last = self.turn_undead.get(&header.src.name).copied();
            if last.is_some_and(|at| now.0 < at.0 + TURN_UNDEAD_EVERY_MS) {
                return Ok(());
            }
            self.turn_undead
                .retain(|_, at| now.0 < at.0 + TURN_UNDEAD_EVERY_MS);
            self.turn_undead.insert(header.src.name.clone(), now);
            self.told_down_by = Some(header.src.name.clone());
        }
        let result = self.swim.handle_data(data, &mut self.runtime);
        let forged = std::mem::take(&mut self.book.lock().expect("status book lock").forged);
        for (from, subject) in forged {
            self.refuse(&from, Refusal::ForgedStatus { subject }, now);
        }
        self.sync(now);
        result.map_err(MembershipError::from)
    }

    /// A timer this membership asked for has fired.
    pub fn handle_timer(&mut self, timer: SwimTimer, now: Millis) {
        if timer.generation != self.generation {
            return;
        }
        if self.hold_suspicion(&timer.timer, now) {
            return;
        }
        if let Err(err) = self.swim.handle_timer(timer.timer, &mut self.runtime) {
            tracing::debug!("membership timer: {err}");
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

    /// This life of the node is ending (a graceful shutdown, not a leave): tells the
    /// others it is down now, so they hint its writes at once instead of waiting out
    /// failure detection, and so a restart under another address is not taken for a
    /// second process under its name. It keeps its partitions.
    pub fn go_down(&mut self, now: Millis) {
        self.going_down = true;
        let _ = self.swim.leave_cluster(&mut self.runtime);
        self.sync(now);
    }

    /// Does what waits for its time: a delayed renewal, taking back a name whose other
    /// process is gone. Call it about once a second.
    pub fn tick(&mut self, now: Millis) {
        if self.renew_at.is_some_and(|at| at <= now) {
            self.renew_at = None;
            self.renew(now);
        }
        // A node that stepped aside hears nothing (the cluster talks to the other
        // process), so it cannot see that one go. After a while it takes the name back
        // with an identity above the other's; if the other is still there, that one
        // steps aside in turn. Two processes of one name thus trade it at most once per
        // wait, never in a storm, and either alone keeps it.
        let rival_gone = self.rival.as_ref().is_some_and(|(_, live)| !live);
        if let Some((_, since)) = self.stepped_aside.clone()
            && (now.0 >= since.0 + STEP_ASIDE_MS || rival_gone)
        {
            self.stepped_aside = None;
            let later = self
                .rival
                .clone()
                .map_or_else(|| self.me.clone(), |(id, _)| id);
            self.take_name_back(later, now);
        }
        self.step_aside_if_superseded(now);
        self.nudge_suspects(now);
        self.sync(now);
    }

    /// Whom to ask for a view on [`MembershipEvent::ConsultSeed`]: the member that
    /// last said this node is down, if any.
    pub fn consult_whom(&self) -> Option<&str> {
        self.told_down_by.as_deref()
    }

    /// The later life of this node's name this process stepped aside for, if any.
    pub fn stepped_aside(&self) -> Option<&MemberId> {
        self.stepped_aside.as_ref().map(|(id, _)| id)
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
    pub fn poll_timer(&mut self) -> Option<(Duration, SwimTimer)> {
        let generation = self.generation;
        self.runtime
            .to_schedule()
            .map(|(after, timer)| (after, SwimTimer { generation, timer }))
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

    /// The `(name, token)` pairs placement is computed over: every member that has not
    /// left.
    pub fn placement_members(&self) -> Vec<(String, String)> {
        self.roster
            .values()
            .filter(|m| m.state != MemberState::Left)
            .map(|m| (m.id.name.clone(), m.id.token().to_string()))
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
                token: m.id.token.clone(),
                departed: (m.state == MemberState::Left).then(|| {
                    self.departed
                        .iter()
                        .find(|d| d.name == m.id.name)
                        .map_or((m.id.epoch_ms, m.id.incarnation), |d| {
                            (d.epoch_ms, d.incarnation)
                        })
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
