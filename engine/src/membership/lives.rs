//! A node's lives: renewing its identity when declared dead while alive, and stepping
//! aside for a later process of its name.

use foca::{Foca, Member, PostcardCodec, State};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::status::StatusHandler;
use super::{
    MemberId, MemberState, Membership, MembershipEvent, RENEWAL_DELAY_MAX_MS, RENEWAL_WINDOW_MS,
    RENEWALS_FREE,
};
use crate::base::Millis;

impl Membership {
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
            self.take_name_back(later, now);
            return false;
        }
        self.stepped_aside = Some((later.clone(), now));
        self.renew_at = None;
        self.events.push_back(MembershipEvent::SteppedAside(later));
        true
    }

    /// Takes this node's name back from the later life `later` of it (gone, or waited
    /// out): under an identity that supersedes it.
    pub(super) fn take_name_back(&mut self, later: MemberId, now: Millis) {
        // Above every life of the other process, not only the one last seen: while this
        // one stepped aside it heard nothing, and the other may have renewed since (a
        // later incarnation of its start epoch). An epoch past the other's sorts above
        // all of them, whatever their incarnation; a later start of this node's is
        // raised above it by its seed's answer.
        self.me = MemberId {
            epoch_ms: later.epoch_ms.saturating_add(1).max(self.me.epoch_ms),
            incarnation: later.incarnation.max(self.me.incarnation),
            ..self.me.clone()
        };
        self.events.push_back(MembershipEvent::NameTakenBack(later));
        self.renew(now);
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
    /// hears it was suspected.) The dead stay down, so stale word of them is not taken.
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
            .map(|m| match m.state {
                MemberState::Dead => Member::down(m.id.clone()),
                _ => Member::new(m.id.clone(), m.swim_incarnation, State::Alive),
            })
            .collect();
        let _ = self
            .swim
            .apply_many(known.into_iter(), false, &mut self.runtime);
    }
}
