//! When a node runs anti-entropy, decided in one place for the runtime and the
//! simulator: fills at once and again every second while a partition is still filling,
//! whether or not background runs are on; a full run a few seconds after a start, soon
//! after a member joins or returns (a burst of changes settles into one run), and then
//! on a jittered interval. One run at a time.
//!
//! Times are the node's monotonic milliseconds. The jitter is given, not drawn: the
//! schedule holds no randomness of its own.

/// Delay before the first full run after a start: the node has heard from the cluster.
pub const FIRST_RUN_DELAY_MS: u64 = 3_000;
/// Delay after a member joins or returns before the full run it calls for, so that a
/// burst of membership changes settles into one run.
pub const WAKE_DELAY_MS: u64 = 500;
/// Delay before retrying partitions that did not fill.
pub const FILL_RETRY_MS: u64 = 1_000;

/// Which run is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDue {
    /// Only the partitions this node is filling, with only the replicas they fill from.
    Fill,
    /// Every partition with every peer that shares it.
    Full,
}

/// The anti-entropy schedule of one node; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSchedule {
    interval_ms: Option<u64>,
    next_full: Option<u64>,
    fill_at: Option<u64>,
    running: Option<RunDue>,
}

impl RunSchedule {
    /// A schedule for a node started at `now`; `interval_ms` is the background interval
    /// (`None`: background runs are off, fills still run).
    pub fn new(interval_ms: Option<u64>, now: u64) -> RunSchedule {
        RunSchedule {
            interval_ms,
            next_full: interval_ms.map(|_| now + FIRST_RUN_DELAY_MS),
            fill_at: Some(now),
            running: None,
        }
    }

    /// A member joined or returned: it has to catch up, and so may this node.
    pub fn wake(&mut self, now: u64) {
        let soon = now + WAKE_DELAY_MS;
        if self.interval_ms.is_some() {
            self.next_full = Some(self.next_full.map_or(soon, |next| next.min(soon)));
        }
        self.fill_at = Some(self.fill_at.map_or(soon, |at| at.min(soon)));
    }

    /// This node took a partition's writes without holding its data: fill it now.
    pub fn fill_wake(&mut self, now: u64) {
        self.fill_at = Some(self.fill_at.map_or(now, |at| at.min(now)));
    }

    /// The run to start now, if one is due and none is running (`filling`: whether this
    /// node fills any partition). A fill goes first: it is what lets the node count.
    pub fn poll(&mut self, now: u64, filling: bool) -> Option<RunDue> {
        if self.running.is_some() {
            return None;
        }
        let due = if filling && self.fill_at.is_some_and(|at| at <= now) {
            RunDue::Fill
        } else if self.next_full.is_some_and(|at| at <= now) {
            RunDue::Full
        } else {
            if !filling && self.fill_at.is_some_and(|at| at <= now) {
                self.fill_at = None;
            }
            return None;
        };
        self.running = Some(due);
        Some(due)
    }

    /// The run `due` ended at `now`; `still_filling`: partitions are left to fill;
    /// `jitter`: any number, which spreads the next full run over a fifth of the
    /// interval.
    pub fn done(&mut self, due: RunDue, now: u64, still_filling: bool, jitter: u64) {
        if self.running == Some(due) {
            self.running = None;
        }
        self.fill_at = still_filling.then_some(now + FILL_RETRY_MS);
        if due == RunDue::Full {
            self.next_full = self
                .interval_ms
                .map(|interval| now + interval - interval / 10 + jitter % (interval / 5 + 1));
        }
    }

    /// Whether a run is going.
    pub fn running(&self) -> Option<RunDue> {
        self.running
    }

    /// When [`RunSchedule::poll`] should next be called, if anything is scheduled and no
    /// run is going (its end is the next moment then).
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.running.is_some() {
            return None;
        }
        match (self.fill_at, self.next_full) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_runs_at_once_and_a_full_run_after_the_first_delay() {
        let mut s = RunSchedule::new(Some(60_000), 0);
        assert_eq!(s.poll(0, true), Some(RunDue::Fill));
        assert_eq!(s.poll(10, true), None, "one run at a time");
        s.done(RunDue::Fill, 200, true, 0);
        assert_eq!(
            s.poll_timeout(),
            Some(1_200),
            "a partition left to fill is retried"
        );
        s.done(RunDue::Fill, 200, false, 0);
        assert_eq!(s.poll(1_500, false), None);
        assert_eq!(s.poll_timeout(), Some(FIRST_RUN_DELAY_MS));
        assert_eq!(s.poll(FIRST_RUN_DELAY_MS, false), Some(RunDue::Full));
        s.done(RunDue::Full, 4_000, false, 7);
        assert_eq!(s.poll_timeout(), Some(4_000 + 54_000 + 7));
        // The jitter spreads over a fifth of the interval and no more.
        s.poll(u64::MAX / 2, false);
        s.done(RunDue::Full, 0, false, 12_005);
        assert_eq!(s.poll_timeout(), Some(54_000 + 4));
    }

    #[test]
    fn a_join_calls_for_a_full_run_soon_and_background_off_still_fills() {
        let mut s = RunSchedule::new(Some(60_000), 0);
        s.poll(0, false);
        s.poll(FIRST_RUN_DELAY_MS, false);
        s.done(RunDue::Full, 3_100, false, 0);
        s.wake(10_000);
        s.wake(10_200);
        assert_eq!(
            s.poll_timeout(),
            Some(10_000 + WAKE_DELAY_MS),
            "a burst is one run"
        );
        assert_eq!(s.poll(10_500, false), Some(RunDue::Full));
        let mut off = RunSchedule::new(None, 0);
        off.poll(0, false);
        off.wake(5_000);
        assert_eq!(
            off.poll(5_500, false),
            None,
            "no full runs when they are off"
        );
        off.fill_wake(6_000);
        assert_eq!(off.poll(6_000, true), Some(RunDue::Fill));
        off.done(RunDue::Fill, 6_100, false, 0);
        assert_eq!(off.poll_timeout(), None);
    }
}
