//! Hybrid logical clocks (Kulkarni et al., 2014).
//!
//! A [`Timestamp`] packs 48 bits of wall-clock milliseconds since the Unix epoch and a
//! 16-bit logical counter into one `u64`, so timestamps compare as plain integers. A
//! [`Clock`] is a pure state machine: callers pass the physical time in, which keeps
//! every mechanism built on it deterministic under test.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub mod skew;

/// Bits of the logical counter in a [`Timestamp`].
pub const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;
/// The largest wall time a timestamp can carry, in milliseconds (year 10889).
pub const WALL_MS_MAX: u64 = (1 << (64 - LOGICAL_BITS)) - 1;

/// A hybrid logical clock reading: wall milliseconds and a logical counter.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The smallest timestamp; older than anything a clock issues.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Builds a timestamp from its parts; the wall time saturates at [`WALL_MS_MAX`].
    pub fn new(wall_ms: u64, logical: u16) -> Timestamp {
        Timestamp((wall_ms.min(WALL_MS_MAX) << LOGICAL_BITS) | u64::from(logical))
    }

    /// Reinterprets the packed representation (as stored and sent on the wire).
    pub fn from_u64(raw: u64) -> Timestamp {
        Timestamp(raw)
    }

    /// The packed representation.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The wall-clock part as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.wall_ms())
    }
}

/// Shown as UTC time with milliseconds, then the logical counter:
/// `2026-11-21T23:48:19.123Z+3`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}",
            humantime::format_rfc3339_millis(self.to_system_time()),
            self.logical()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}.{})", self.wall_ms(), self.logical())
    }
}

/// Reads a version as `put` prints it: `hlc=2026-12-01T22:41:10.309Z+0 node=n2`, or
/// just its timestamp (`2026-12-01T22:41:10.309Z+0`; without `+N` the logical counter
/// is 0).
impl std::str::FromStr for Timestamp {
    type Err = String;

    fn from_str(s: &str) -> Result<Timestamp, String> {
        let s = s.trim();
        let ts = s
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_start_matches("hlc=");
        let (time, logical) = match ts.rsplit_once("Z+") {
            Some((time, logical)) => (format!("{time}Z"), logical),
            None => (ts.to_string(), "0"),
        };
        let logical: u16 = logical.parse().map_err(|_| {
            format!("{s:?}: the logical counter after '+' must be a number up to 65535")
        })?;
        let at = humantime::parse_rfc3339(&time).map_err(|e| {
            format!("{s:?} is not a version (expected e.g. 2026-12-01T22:41:10.309Z+0): {e}")
        })?;
        let wall_ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("{s:?} is before 1970"))?
            .as_millis();
        let wall_ms = u64::try_from(wall_ms)
            .ok()
            .filter(|&ms| ms <= WALL_MS_MAX)
            .ok_or_else(|| format!("{s:?} is past the last time a version can carry"))?;
        Ok(Timestamp::new(wall_ms, logical))
    }
}

/// Why a received timestamp was refused. The clock is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The remote clock is further ahead of local wall time than allowed.
    #[error(
        "clock offset refused: timestamp {remote} is {ahead_ms} ms ahead of the cluster's time as this node measures it, the limit is {max_offset_ms} ms"
    )]
    TooFarAhead {
        /// The refused timestamp.
        remote: Timestamp,
        /// How far ahead of local wall time it was.
        ahead_ms: u64,
        /// The configured `max_clock_offset`.
        max_offset_ms: u64,
    },
}

/// The default bound on how far a received timestamp may run ahead of local wall time.
pub const MAX_CLOCK_OFFSET_MS_DEFAULT: u64 = 500;

/// A hybrid logical clock. Time is an input: nothing here reads a clock.
#[derive(Debug, Clone)]
pub struct Clock {
    last: Timestamp,
    max_offset_ms: u64,
}

impl Clock {
    /// A clock that has issued nothing yet.
    pub fn new(max_offset_ms: u64) -> Clock {
        Clock {
            last: Timestamp::ZERO,
            max_offset_ms,
        }
    }

    /// A clock that never issues anything at or below `floor`; used after a restart so
    /// that a wall clock that stepped backwards cannot make new versions older than
    /// versions already written.
    pub fn starting_after(floor: Timestamp, max_offset_ms: u64) -> Clock {
        Clock {
            last: floor,
            max_offset_ms,
        }
    }

    /// The last timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// What the clock reads at `wall_ms`, without issuing a timestamp.
    pub fn read(&self, wall_ms: u64) -> Timestamp {
        let wall_ms = wall_ms.min(WALL_MS_MAX);
        if wall_ms > self.last.wall_ms() {
            Timestamp::new(wall_ms, 0)
        } else {
            self.last
        }
    }

    /// The configured bound on remote clock offset, in milliseconds.
    pub fn max_offset_ms(&self) -> u64 {
        self.max_offset_ms
    }

    /// A local event (a write this node coordinates): a timestamp greater than every
    /// timestamp issued or observed before.
    pub fn tick(&mut self, wall_ms: u64) -> Timestamp {
        let wall_ms = wall_ms.min(WALL_MS_MAX);
        let next = if wall_ms > self.last.wall_ms() {
            Timestamp::new(wall_ms, 0)
        } else {
            self.successor_of_last()
        };
        self.last = next;
        next
    }

    /// A timestamp received from another node: advances the clock past it, unless it is
    /// further ahead of `wall_ms` than the configured offset allows.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp, ClockError> {
        self.observe_against(remote, wall_ms, wall_ms)
    }

    /// Like [`Clock::observe`], with the offset bound checked against `cluster_ms`, the
    /// cluster's time as this node measures it (its own wall clock corrected by the
    /// median offset of its peers). A node whose clock is behind the cluster so accepts
    /// the healthy majority's versions, and still refuses a version from the future.
    pub fn observe_against(
        &mut self,
        remote: Timestamp,
        wall_ms: u64,
        cluster_ms: u64,
    ) -> Result<Timestamp, ClockError> {
        let wall_ms = wall_ms.min(WALL_MS_MAX);
        self.check(remote, cluster_ms)?;
        let top = self.last.max(remote);
        let next = if wall_ms > top.wall_ms() {
            Timestamp::new(wall_ms, 0)
        } else if top == self.last {
            self.successor_of_last()
        } else {
            successor(remote)
        };
        self.last = next;
        Ok(next)
    }

    /// Whether `remote` is within the offset bound of `reference_ms`.
    pub fn check(&self, remote: Timestamp, reference_ms: u64) -> Result<(), ClockError> {
        let reference_ms = reference_ms.min(WALL_MS_MAX);
        if remote.wall_ms() > reference_ms.saturating_add(self.max_offset_ms) {
            return Err(ClockError::TooFarAhead {
                remote,
                ahead_ms: remote.wall_ms() - reference_ms,
                max_offset_ms: self.max_offset_ms,
            });
        }
        Ok(())
    }

    /// Brings a clock that reads beyond `limit_ms` (it issued or observed timestamps
    /// from the future) back to `limit_ms`; whether it moved. The one deliberate break
    /// of monotonicity, for an admin's rewrite of versions the cluster refuses: every
    /// timestamp given up is above the limit, where no accepted version lies.
    pub fn rewind(&mut self, limit_ms: u64) -> bool {
        if self.last.wall_ms() <= limit_ms {
            return false;
        }
        self.last = Timestamp::new(limit_ms.min(WALL_MS_MAX), 0);
        true
    }

    fn successor_of_last(&self) -> Timestamp {
        successor(self.last)
    }
}

/// The next timestamp after `ts`. When the logical counter is exhausted (65,536 events
/// in one millisecond) the clock borrows the next millisecond rather than wrapping, so
/// timestamps stay strictly increasing.
fn successor(ts: Timestamp) -> Timestamp {
    if ts.logical() == u16::MAX {
        Timestamp::new(ts.wall_ms() + 1, 0)
    } else {
        Timestamp::from_u64(ts.as_u64() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rewind_brings_a_clock_from_the_future_back_to_the_limit_only() {
        let mut clock = Clock::starting_after(Timestamp::new(10_000, 3), 500);
        assert!(!clock.rewind(10_000), "at the limit is not the future");
        assert!(clock.rewind(9_000));
        assert_eq!(clock.last(), Timestamp::new(9_000, 0));
        assert_eq!(clock.tick(8_900), Timestamp::new(9_000, 1));
        assert_eq!(clock.tick(9_100), Timestamp::new(9_100, 0));
    }

    #[test]
    fn packs_wall_and_logical() {
        let ts = Timestamp::new(1_700_000_000_123, 7);
        assert_eq!(ts.wall_ms(), 1_700_000_000_123);
        assert_eq!(ts.logical(), 7);
        assert_eq!(Timestamp::from_u64(ts.as_u64()), ts);
    }

    #[test]
    fn displays_utc_millis_and_logical() {
        let ts = Timestamp::new(1_700_000_000_123, 3);
        assert_eq!(ts.to_string(), "2023-11-14T22:13:20.123Z+3");
    }

    #[test]
    fn parses_what_it_displays_and_what_put_prints() {
        let ts = Timestamp::new(1_700_000_000_123, 3);
        assert_eq!(ts.to_string().parse::<Timestamp>(), Ok(ts));
        assert_eq!(
            "hlc=2023-11-14T22:13:20.123Z+3 node=n2".parse::<Timestamp>(),
            Ok(ts)
        );
        assert_eq!(
            "2023-11-14T22:13:20.123Z".parse::<Timestamp>(),
            Ok(Timestamp::new(1_700_000_000_123, 0))
        );
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(err.contains("not a version"), "{err}");
        let err = "2023-11-14T22:13:20.123Z+x"
            .parse::<Timestamp>()
            .unwrap_err();
        assert!(err.contains("logical counter"), "{err}");
    }

    #[test]
    fn tick_with_stalled_wall_clock_counts_logically() {
        let mut clock = Clock::new(500);
        let a = clock.tick(1000);
        let b = clock.tick(1000);
        let c = clock.tick(999);
        assert_eq!((a.wall_ms(), a.logical()), (1000, 0));
        assert_eq!((b.wall_ms(), b.logical()), (1000, 1));
        assert_eq!((c.wall_ms(), c.logical()), (1000, 2));
    }

    #[test]
    fn logical_overflow_borrows_the_next_millisecond() {
        let mut clock = Clock::starting_after(Timestamp::new(1000, u16::MAX), 500);
        let next = clock.tick(1000);
        assert_eq!((next.wall_ms(), next.logical()), (1001, 0));
    }

    #[test]
    fn observe_moves_past_a_remote_timestamp_within_the_offset() {
        let mut clock = Clock::new(500);
        clock.tick(1000);
        let seen = clock.observe(Timestamp::new(1400, 5), 1000).unwrap();
        assert_eq!((seen.wall_ms(), seen.logical()), (1400, 6));
        assert!(clock.tick(1000) > seen);
    }

    #[test]
    fn observe_refuses_a_remote_timestamp_too_far_ahead_and_keeps_state() {
        let mut clock = Clock::new(500);
        let before = clock.tick(1000);
        let err = clock.observe(Timestamp::new(1501, 0), 1000).unwrap_err();
        assert_eq!(
            err,
            ClockError::TooFarAhead {
                remote: Timestamp::new(1501, 0),
                ahead_ms: 501,
                max_offset_ms: 500
            }
        );
        assert!(err.to_string().contains("the limit is 500 ms"));
        assert_eq!(clock.last(), before);
    }

    #[test]
    fn restart_floor_keeps_versions_increasing_when_the_wall_clock_stepped_back() {
        let floor = Timestamp::new(5000, 2);
        let mut clock = Clock::starting_after(floor, 500);
        assert!(clock.tick(1000) > floor);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Tick {
            wall: u64,
        },
        Observe {
            remote_wall: u64,
            logical: u16,
            wall: u64,
        },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..10_000).prop_map(|wall| Event::Tick { wall }),
            (0u64..10_000, any::<u16>(), 0u64..10_000).prop_map(|(remote_wall, logical, wall)| {
                Event::Observe {
                    remote_wall,
                    logical,
                    wall,
                }
            }),
        ]
    }

    proptest! {
        /// Whatever the wall clock does, the clock never goes backwards, every issued
        /// timestamp is strictly greater than the previous one, and an accepted remote
        /// timestamp is always left behind.
        #[test]
        fn never_goes_backwards(events in proptest::collection::vec(event(), 1..200)) {
            let mut clock = Clock::new(500);
            let mut previous = clock.last();
            for event in events {
                match event {
                    Event::Tick { wall } => {
                        let ts = clock.tick(wall);
                        prop_assert!(ts > previous);
                        prop_assert!(ts.wall_ms() >= wall);
                        previous = ts;
                    }
                    Event::Observe { remote_wall, logical, wall } => {
                        let remote = Timestamp::new(remote_wall, logical);
                        match clock.observe(remote, wall) {
                            Ok(ts) => {
                                prop_assert!(ts > previous);
                                prop_assert!(ts > remote);
                                previous = ts;
                            }
                            Err(ClockError::TooFarAhead { .. }) => {
                                prop_assert!(remote_wall > wall + 500);
                                prop_assert_eq!(clock.last(), previous);
                            }
                        }
                    }
                }
            }
        }
    }
}
