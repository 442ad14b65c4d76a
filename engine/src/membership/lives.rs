//! A node's lives: renewing its identity when declared dead while alive, stepping aside
//! for a later process of its name, and coming back from a partition it was on the
//! wrong side of without taking the majority down with it.
//!
//! SWIM's "down" is final for an identity: a node that holds a member down answers
//! anything that member sends with "you are down", and the member renews. So a node
//! cut off from the majority declares the majority dead, and when the cut heals, every
//! live member that talks to it first would be told it is dead and renew, and the rest
//! of the cluster would call it dead meanwhile. A node in a minority therefore remembers
//! when it fell into one; what it declared dead from then on (and in the failure
//! detection window before) is what it lost to its own isolation, not what died. When it
//! hears from such a member, or renews because the majority declared it dead, it counts
//! those members alive again in a fresh SWIM instance and lets probes find out afresh.

use foca::{Foca, Member, PostcardCodec, State, Timer};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::status::StatusHandler;
use super::{
    MemberId, MemberState, MemberView, Membership, MembershipEvent, RENEWAL_DELAY_MAX_MS,
    RENEWAL_WINDOW_MS, RENEWALS_FREE,
};
use crate::coordinator::Millis;

/// Longest a node that hears from nobody holds a suspicion open before it
/// declares the member dead after all (the others may really be gone: a survivor must
/// still see them dead, to hint for them and to let an operator replace them).
pub(super) const DOUBT_MAX_MS: u64 = 20_000;
/// How often a held suspicion is looked at again.
const DOUBT_RECHECK: std::time::Duration = std::time::Duration::from_millis(1_000);

/// Least time between two fresh starts on hearing from members lost to a minority: a
/// link that carries datagrams one way only must not restart SWIM on every one.
const REVIVE_EVERY_MS: u64 = 5_000;

impl Membership {
    /// Whether this node has heard from no other member for two probe periods, or did
    /// so until lately: in a cluster that works, probes and gossip reach every member
    /// every period, so the silence is more likely its own link's fault than every
    /// member's. What it suspected in the silence stays doubtful for a while after it
    /// ends, so the members have time to hear of the suspicion and refute it.
    fn doubts_itself(&self, now: Millis) -> bool {
        let quiet = self.quiet_ms();
        let settle = self.swim_config.suspect_to_down_after.as_millis() as u64 + quiet;
        self.heard_at.is_none_or(|at| now.0 >= at.0 + quiet)
            || self.quiet_ended.is_some_and(|at| now.0 < at.0 + settle)
    }

    /// How long without a datagram counts as silence: two probe periods.
    fn quiet_ms(&self) -> u64 {
        2 * self.swim_config.probe_period.as_millis() as u64
    }

    /// A datagram from another member arrived: notes when a silence ends.
    pub(super) fn heard(&mut self, now: Millis) {
        if self
            .heard_at
            .is_some_and(|at| now.0 >= at.0 + self.quiet_ms())
        {
            self.quiet_ended = Some(now);
        }
        self.heard_at = Some(now);
    }

    /// A suspicion about to turn into a death, while this node doubts itself: held
    /// open (handed back to fire again later) until the member refutes it, the doubt
    /// passes, or [`DOUBT_MAX_MS`] have gone by. Returns whether the timer was held.
    pub(super) fn hold_suspicion(&mut self, timer: &Timer<MemberId>, now: Millis) -> bool {
        let Timer::ChangeSuspectToDown { member_id, .. } = timer else {
            return false;
        };
        if !self.doubts_itself(now) {
            self.held.remove(member_id);
            return false;
        }
        let since = *self.held.entry(member_id.clone()).or_insert(now);
        if now.0 >= since.0 + DOUBT_MAX_MS {
            self.held.remove(member_id);
            return false;
        }
        foca::Runtime::submit_after(&mut self.runtime, timer.clone(), DOUBT_RECHECK);
        true
    }

    /// Notes when this node fell into a minority of the members it counts (live
    /// against dead; left members do not count), and when it came out.
    pub(super) fn track_minority(&mut self, now: Millis) {
        let counted = self
            .roster
            .values()
            .filter(|m| m.state != MemberState::Left)
            .count();
        let live = self.swim.num_members() + 1;
        if counted > 1 && live * 2 <= counted {
            self.minority_since.get_or_insert(now);
        } else {
            self.minority_since = None;
        }
    }

    /// Whether `view` is a member this node declared dead because it was itself cut off
    /// from the majority: dead since it fell into the minority, or within a failure
    /// detection window before (the first members are lost before the minority shows).
    pub(super) fn lost_to_minority(&self, view: &MemberView) -> bool {
        let Some(since) = self.minority_since else {
            return false;
        };
        let counted = self.roster.len() as u64;
        let window = self.swim_config.suspect_to_down_after.as_millis() as u64
            + self.swim_config.probe_period.as_millis() as u64 * counted.max(1);
        view.state == MemberState::Dead && view.since.0 + window >= since.0
    }

    /// A datagram from `src`: if this node declared it dead while in a minority, the
    /// cut has healed and this node is the stale one. It starts a fresh SWIM instance
    /// (same identity) counting those members alive, so it does not tell them they are
    /// down; if the majority declared this node dead meanwhile, it hears so and renews.
    pub(super) fn revive_if_lost(&mut self, src: &MemberId, now: Millis) {
        let Some(view) = self.roster.get(&src.name) else {
            return;
        };
        if view.id != *src || !self.lost_to_minority(view) {
            return;
        }
        if self
            .revived_at
            .is_some_and(|at| now.0 < at.0 + REVIVE_EVERY_MS)
        {
            return;
        }
        self.revived_at = Some(now);
        self.events
            .push_back(MembershipEvent::BackFromMinority(src.name.clone()));
        let me = self.me.clone();
        self.restart_swim(me);
    }

    /// Declared dead while alive: comes back under the next incarnation, at once the
    /// first few times, then after a growing wait.
    pub(super) fn schedule_renewal(&mut self, now: Millis) {
        if self.leaving || self.going_down || self.stepped_aside.is_some() {
            return;
        }
        if self.step_aside_if_superseded(now) {
            return;
        }
        while self
            .renewals
            .front()
            .is_some_and(|t| t.0 + RENEWAL_WINDOW_MS < now.0)
        {
            self.renewals.pop_front();
        }
        let recent = self.renewals.len();
        if recent >= 1 {
            // Declared dead again soon after a renewal: what another process under this
            // name looks like from here, since the cluster then talks only to it.
            self.events.push_back(MembershipEvent::ConsultSeed);
        }
        if recent < RENEWALS_FREE {
            self.renew(now);
            return;
        }
        if self.renew_at.is_none() {
            let doublings = (recent - RENEWALS_FREE).min(16) as u32;
            let delay = (1000u64 << doublings).min(RENEWAL_DELAY_MAX_MS);
            self.renew_at = Some(now.plus(delay));
            self.events.push_back(MembershipEvent::RejoinDelayed(delay));
        }
    }

    /// Another process's identity of this node's name: newer than what was known, or
    /// the same one with the cluster's word on whether it is live (`None`: no word,
    /// taken as live).
    pub(super) fn learn_rival(&mut self, id: MemberId, live: Option<bool>) {
        match &mut self.rival {
            Some((known, known_live)) if *known == id => {
                if let Some(live) = live {
                    *known_live = live;
                }
            }
            Some((known, _)) if !id.supersedes(known) => {}
            _ => self.rival = Some((id, live.unwrap_or(true))),
        }
    }

    /// Steps aside when another process holds a later life of this node's name.
    pub(super) fn step_aside_if_superseded(&mut self, now: Millis) -> bool {
        if self.stepped_aside.is_some() || self.leaving || self.going_down {
            return false;
        }
        let Some((later, live)) = self.rival.clone().filter(|(r, _)| r.supersedes(&self.me)) else {
            return false;
        };
        if !live {
            // The other process is gone: take the name back at once.
            self.me = MemberId {
                epoch_ms: later.epoch_ms.max(self.me.epoch_ms),
                incarnation: later.incarnation.max(self.me.incarnation),
                ..self.me.clone()
            };
            self.events.push_back(MembershipEvent::NameTakenBack(later));
            self.renew(now);
            return false;
        }
        self.stepped_aside = Some((later.clone(), now));
        self.renew_at = None;
        self.events.push_back(MembershipEvent::SteppedAside(later));
        true
    }

    /// Comes back under the next incarnation, in a SWIM instance of its own.
    pub(super) fn renew(&mut self, now: Millis) {
        let renewed = self.me.renewed();
        self.restart_swim(renewed.clone());
        self.me = renewed.clone();
        self.renewals.push_back(now);
        self.events.push_back(MembershipEvent::RejoinedAs(renewed));
    }

    /// Replaces the SWIM instance with a fresh one under `identity`. A node that was
    /// declared dead was most likely the one cut off, so what it suspected meanwhile is
    /// stale: the new instance starts from the roster with every member it knows live
    /// counted alive, and finds out afresh. (Renewing in place would keep those
    /// suspicions with their timers cancelled: a member suspected just before the
    /// renewal would stay suspect here for good, since its probes succeed and it never
    /// hears it was suspected.) Members it declared dead while in a minority count
    /// alive too; the rest of the dead stay down, so stale word of them is not taken.
    fn restart_swim(&mut self, identity: MemberId) {
        while self.runtime.to_send().is_some() {}
        while self.runtime.to_schedule().is_some() {}
        while self.runtime.to_notify().is_some() {}
        self.generation = self.generation.wrapping_add(1);
        let rng = SmallRng::seed_from_u64(
            self.seed ^ u64::from(self.generation).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        self.swim = Foca::with_custom_broadcast(
            identity.clone(),
            self.swim_config.clone(),
            rng,
            PostcardCodec,
            StatusHandler::new(self.book.clone()),
        );
        let known: Vec<Member<MemberId>> = self
            .roster
            .values()
            .filter(|m| m.id.name != identity.name && m.state != MemberState::Left)
            .map(|m| {
                if m.state == MemberState::Dead && !self.lost_to_minority(m) {
                    Member::down(m.id.clone())
                } else {
                    Member::new(m.id.clone(), m.swim_incarnation, State::Alive)
                }
            })
            .collect();
        let _ = self
            .swim
            .apply_many(known.into_iter(), false, &mut self.runtime);
        self.minority_since = None;
        self.held.clear();
    }
}
