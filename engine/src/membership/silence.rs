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

use std::time::Duration;

use foca::Timer;

use super::{MemberId, Membership};
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
}
