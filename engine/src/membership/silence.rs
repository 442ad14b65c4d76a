//! Suspicions raised while this node heard from nobody, judged after the silence ends.
//!
//! A node cut off from every other member suspects them all. If the cut heals before
//! those suspicions turn into deaths, they would turn a moment later, when the cluster
//! can hear this node again, and its "down" would spread: SWIM's down is final for an
//! identity, so each member it named renews and everyone sees it dead meanwhile. So for
//! a while after a silence ends, a suspicion about to turn into a death is held open
//! (handed back to fire again later), long enough for the member to hear of it and
//! refute it. While the silence lasts, suspicions are held too: a node that hears from
//! nobody cannot tell a cut around itself from everyone else failing, and the first is
//! far more likely. A silence longer than `SILENT_HOLD_MAX` ends in deaths, as before, so
//! a node whose peers did all fail still learns it.
//!
//! A suspicion can also outlive everyone who could end it. In SWIM only the member whose
//! own probe failed turns a suspicion into a death; the others learn it by gossip, which
//! each update rides only a few times. When the prober renews (its timers go with its
//! old SWIM instance) and the gossip never reached the suspect, nobody declares it dead
//! and nobody tells it to refute: it stays suspect in some views for good, while it
//! answers every probe. So a member held suspect past the time a verdict should have
//! come is told so directly, once per such time, and refutes it.

use std::time::Duration;

use foca::{Header, Member, Message, State, Timer};

use super::{MemberId, MemberState, Membership, wire};
use crate::base::Millis;

/// How often a held suspicion is looked at again.
const HELD_RECHECK: Duration = Duration::from_millis(500);

/// The longest silence during which suspicions are held: past it, the members this node
/// cannot hear are declared dead as SWIM would have.
const SILENT_HOLD_MAX_MS: u64 = 20_000;

impl Membership {
    /// How long without a datagram from another member counts as silence: two probe
    /// periods (in a cluster that works, probes and gossip arrive every period).
    fn silence_ms(&self) -> u64 {
        2 * self.swim_config.probe_period.as_millis() as u64
    }

    /// A datagram from another member arrived at `now`: notes when a silence ends.
    pub(super) fn heard(&mut self, now: Millis) {
        if self
            .heard_at
            .is_some_and(|at| now.0 >= at.0 + self.silence_ms())
        {
            self.silence_ended = Some(now);
        }
        self.heard_at = Some(now);
    }

    /// Whether a suspicion due to turn into a death at `now` is held open: this node has
    /// heard from nobody for a while (but not past `SILENT_HOLD_MAX_MS`), or its silence
    /// ended less than a suspicion timeout (plus the silence itself) ago.
    pub(super) fn hold_suspicion(&mut self, timer: &Timer<MemberId>, now: Millis) -> bool {
        if !matches!(timer, Timer::ChangeSuspectToDown { .. }) {
            return false;
        }
        let silent_for = self.heard_at.map(|at| now.0.saturating_sub(at.0));
        let silent =
            silent_for.is_some_and(|ms| ms >= self.silence_ms() && ms < SILENT_HOLD_MAX_MS);
        let settle = self.swim_config.suspect_to_down_after.as_millis() as u64 + self.silence_ms();
        let just_ended = self.silence_ended.is_some_and(|at| now.0 < at.0 + settle);
        if !silent && !just_ended {
            return false;
        }
        foca::Runtime::submit_after(&mut self.runtime, timer.clone(), HELD_RECHECK);
        true
    }

    /// Tells each member held suspect past the time a verdict should have come that it
    /// is suspected, so it refutes (see the module documentation).
    pub(super) fn nudge_suspects(&mut self, now: Millis) {
        let overdue = self.swim_config.suspect_to_down_after.as_millis() as u64 + self.silence_ms();
        let stale: Vec<(MemberId, u16)> = self
            .roster
            .values()
            .filter(|v| v.state == MemberState::Suspect && v.id.name != self.me.name)
            .filter(|v| now.0 >= v.since.0 + overdue)
            .map(|v| (v.id.clone(), v.swim_incarnation))
            .collect();
        self.nudged
            .retain(|name, _| stale.iter().any(|(id, _)| id.name == *name));
        for (id, incarnation) in stale {
            if self
                .nudged
                .get(&id.name)
                .is_some_and(|at| now.0 < at.0 + overdue)
            {
                continue;
            }
            self.nudged.insert(id.name.clone(), now);
            let header = Header {
                src: self.me.clone(),
                // The receiver only ever takes a higher incarnation than it knows.
                src_incarnation: 0,
                dst: id.clone(),
                message: Message::Gossip,
            };
            let update = Member::new(id.clone(), incarnation, State::Suspect);
            if let Ok(data) = wire::encode(&header, &[update], &[]) {
                foca::Runtime::send_to(&mut self.runtime, id, &data);
            }
        }
    }
}
