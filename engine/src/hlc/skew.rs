//! How far this node's wall clock is from its peers', measured the way NTP does, and
//! whether this node is the one whose clock is wrong.
//!
//! A probe carries its send time `t0`; the peer answers with when it received it (`t1`)
//! and when it answered (`t2`); the answer arrives at `t3`. The peer's clock minus ours
//! is then `((t1 - t0) + (t2 - t3)) / 2`, with the round trip `(t3 - t0) - (t2 - t1)`
//! taken out; of the last few samples per peer the one with the shortest round trip is
//! the best estimate (a delayed packet inflates both the round trip and the error).
//!
//! The cluster's time is the median of every live member's clock, this node's own
//! included: a node whose clock is further from that median than the offset bound is an
//! outlier, and it is the one that stops coordinating writes. A single node never
//! outvotes a majority, and two nodes cannot tell which of them is wrong (the median
//! then stays at this node's own clock). Like the clock itself, the book reads no clock:
//! times are inputs.

use std::collections::{HashMap, VecDeque};

/// Samples kept per peer; the shortest round trip among them is used.
const SAMPLES_PER_PEER: usize = 8;
/// A sample older than this (monotonic ms) no longer speaks for the peer's clock.
pub const SAMPLE_AGE_MAX_MS: u64 = 30_000;
/// A live peer that has answered no probe for this long (ms) is not waited for.
pub const UNANSWERED_MAX_MS: u64 = 3_000;
/// Reading granularity allowed for when telling a clock step from noise.
const STEP_SLACK_US: u64 = 2_000;
/// A probe whose round trip took longer than this says too little to keep.
const ROUND_TRIP_MAX_US: i64 = 2_000_000;

/// One probe's four wall-clock readings, in microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// When this node sent it (its clock).
    pub sent_us: u64,
    /// When the peer received it (the peer's clock).
    pub received_us: u64,
    /// When the peer answered (the peer's clock).
    pub replied_us: u64,
    /// When the answer arrived (this node's clock).
    pub answered_us: u64,
}

impl Probe {
    /// The peer's clock minus this node's, microseconds. The readings come from the
    /// network: any values give an answer, never an overflow.
    pub fn offset_us(&self) -> i64 {
        let (t0, t1, t2, t3) = self.times();
        clamp(((t1 - t0) + (t2 - t3)) / 2)
    }

    /// Time on the wire both ways, microseconds (the peer's own delay taken out).
    pub fn round_trip_us(&self) -> i64 {
        let (t0, t1, t2, t3) = self.times();
        clamp((t3 - t0) - (t2 - t1))
    }

    fn times(&self) -> (i128, i128, i128, i128) {
        (
            i128::from(self.sent_us),
            i128::from(self.received_us),
            i128::from(self.replied_us),
            i128::from(self.answered_us),
        )
    }
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// This node's two clocks read at one moment: monotonic time (which never jumps) and
/// wall time (which may be stepped). Their difference is the frame a sample was taken
/// in: when this node's own wall clock steps, the frame moves by the step, and every
/// sample taken before it is corrected by as much, instead of speaking for a clock
/// that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Monotonic microseconds (any origin, fixed for the process).
    pub mono_us: u64,
    /// Wall-clock microseconds since the epoch.
    pub wall_us: u64,
}

impl Reading {
    fn frame_us(&self) -> i64 {
        clamp(i128::from(self.wall_us) - i128::from(self.mono_us))
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    offset_us: i64,
    round_trip_us: i64,
    /// Monotonic µs when it was taken, and the frame it was taken in.
    at_us: u64,
    frame_us: i64,
}

impl Sample {
    /// Its offset as of the frame `frame_us`: the peer's clock minus this node's now.
    fn offset_in(&self, frame_us: i64) -> i64 {
        clamp(i128::from(self.offset_us) - (i128::from(frame_us) - i128::from(self.frame_us)))
    }
}

/// A peer's clock against this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerOffset {
    /// The peer's clock minus this node's, microseconds.
    pub offset_us: i64,
    /// The round trip of the sample it comes from, microseconds.
    pub round_trip_us: i64,
}

/// Whether this node's clock agrees with the cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No other live member: nothing to compare with.
    Alone,
    /// Fewer than a majority of the live peers measured yet.
    Unmeasured {
        /// Peers with a fresh sample.
        measured: usize,
        /// Peers needed.
        needed: usize,
    },
    /// Within the bound of the cluster's median clock.
    InStep {
        /// The cluster's median clock minus this node's, microseconds.
        cluster_offset_us: i64,
    },
    /// Further from the cluster's median clock than the bound: this node's clock is wrong.
    Outlier {
        /// The cluster's median clock minus this node's, microseconds (positive: this
        /// node is behind).
        cluster_offset_us: i64,
    },
    /// No majority to compare with (alone, or one peer), and this node's wall clock has
    /// moved against its monotonic clock by more than the bound since a majority last
    /// confirmed it: it was stepped, and nobody can say it is right.
    Stepped {
        /// How far it moved, microseconds (positive: ahead).
        moved_us: i64,
    },
}

impl Verdict {
    /// The cluster's clock minus this node's, milliseconds, when it is known.
    pub fn cluster_offset_ms(&self) -> Option<i64> {
        match self {
            Verdict::InStep { cluster_offset_us } | Verdict::Outlier { cluster_offset_us } => {
                Some(cluster_offset_us / 1000)
            }
            Verdict::Alone | Verdict::Unmeasured { .. } | Verdict::Stepped { .. } => None,
        }
    }

    /// Why this node refuses to coordinate writes, if it does.
    pub fn refusal(&self, max_offset_ms: u64) -> Option<String> {
        let cluster_offset_us = match *self {
            Verdict::Outlier { cluster_offset_us } => cluster_offset_us,
            Verdict::Unmeasured { measured, needed } => {
                return Some(format!(
                    "this node has not compared its clock with the cluster yet ({measured} of the {needed} live members it needs answered its clock probes); it coordinates no writes until it has, and still serves reads and replication"
                ));
            }
            Verdict::Stepped { moved_us } => {
                return Some(format!(
                    "this node's clock moved {} {} since a majority of the cluster last confirmed it, and no majority is reachable to compare with (the limit is {max_offset_ms} ms); it coordinates no writes until one is, and still serves reads and replication",
                    describe_us(moved_us.unsigned_abs()),
                    if moved_us > 0 { "ahead" } else { "back" }
                ));
            }
            Verdict::Alone | Verdict::InStep { .. } => return None,
        };
        let how = if cluster_offset_us > 0 {
            "behind"
        } else {
            "ahead of"
        };
        let by = cluster_offset_us.unsigned_abs();
        Some(format!(
            "this node's clock is {} {how} the cluster (the limit is {max_offset_ms} ms); it coordinates no writes until its clock is back within the limit, and still serves reads and replication",
            describe_us(by)
        ))
    }
}

/// `340 ms`, `2.9 s`, `4.5 min`, `11.7 h`.
pub fn describe_us(us: u64) -> String {
    let ms = us / 1000;
    if ms >= 2 * 3_600_000 {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    } else if ms >= 2 * 60_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// Samples of every peer's clock; see the module documentation.
#[derive(Debug, Default, Clone)]
pub struct SkewBook {
    peers: HashMap<String, VecDeque<Sample>>,
    /// Since when (monotonic µs) each peer has left a probe unanswered.
    unanswered: HashMap<String, u64>,
    /// The cluster's frame (its median clock minus this node's monotonic clock) when a
    /// majority last confirmed this node's clock.
    trusted_frame_us: Option<i64>,
}

impl SkewBook {
    /// An empty book.
    pub fn new() -> SkewBook {
        SkewBook::default()
    }

    /// A probe of `peer` leaves now.
    pub fn probe_sent(&mut self, peer: &str, mono_us: u64) {
        self.unanswered.entry(peer.to_string()).or_insert(mono_us);
    }

    /// Records a probe of `peer` answered at monotonic time `mono_us` (its
    /// `answered_us` is this node's wall clock at the same moment). A probe whose
    /// readings make no sense (a round trip below zero or past two seconds) is dropped.
    pub fn record(&mut self, peer: &str, probe: Probe, mono_us: u64) -> bool {
        let round_trip_us = probe.round_trip_us();
        if !(0..=ROUND_TRIP_MAX_US).contains(&round_trip_us) {
            return false;
        }
        self.unanswered.remove(peer);
        let offset_us = probe.offset_us();
        let frame_us = Reading {
            mono_us,
            wall_us: probe.answered_us,
        }
        .frame_us();
        let samples = self.peers.entry(peer.to_string()).or_default();
        // Each sample bounds the true offset to within half its round trip. A new one
        // whose bounds miss an old one's means the peer's clock stepped since: the old
        // samples speak for a clock that is gone, however short their round trips.
        samples.retain(|s| {
            s.offset_in(frame_us).abs_diff(offset_us)
                <= (s.round_trip_us + round_trip_us) as u64 / 2 + STEP_SLACK_US
        });
        if samples.len() == SAMPLES_PER_PEER {
            samples.pop_front();
        }
        samples.push_back(Sample {
            offset_us,
            round_trip_us,
            at_us: mono_us,
            frame_us,
        });
        true
    }

    /// Forgets `peer` (it left, or restarted: a new process may run on another clock).
    pub fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
        self.unanswered.remove(peer);
    }

    /// The best fresh estimate of `peer`'s clock against this node's as of `now`.
    pub fn offset(&self, peer: &str, now: Reading) -> Option<PeerOffset> {
        let frame_us = now.frame_us();
        self.peers
            .get(peer)?
            .iter()
            .filter(|s| now.mono_us.saturating_sub(s.at_us) <= SAMPLE_AGE_MAX_MS * 1000)
            .min_by_key(|s| s.round_trip_us)
            .map(|s| PeerOffset {
                offset_us: s.offset_in(frame_us),
                round_trip_us: s.round_trip_us,
            })
    }

    /// Whether `peer` has left its probes unanswered for longer than
    /// [`UNANSWERED_MAX_MS`]: it cannot be measured from here (a cut, one way or both,
    /// while membership still calls it alive), so it is not waited for.
    fn unmeasurable(&self, peer: &str, mono_us: u64) -> bool {
        self.unanswered
            .get(peer)
            .is_some_and(|&since| mono_us.saturating_sub(since) > UNANSWERED_MAX_MS * 1000)
    }

    /// Whether this node's clock agrees with those of the `live` peers (this node not
    /// among them), with `max_offset_ms` the bound.
    pub fn verdict<'a>(
        &self,
        live: impl IntoIterator<Item = &'a str>,
        now: Reading,
        max_offset_ms: u64,
    ) -> Verdict {
        let (verdict, voters) = self.assess(live, now, max_offset_ms);
        let unconfirmed = match verdict {
            Verdict::Alone => Some(0),
            Verdict::InStep { cluster_offset_us } if voters < 3 => Some(cluster_offset_us),
            _ => None,
        };
        if let (Some(offset_us), Some(trusted)) = (unconfirmed, self.trusted_frame_us) {
            let moved_us =
                clamp(i128::from(now.frame_us()) + i128::from(offset_us) - i128::from(trusted));
            if moved_us.unsigned_abs() > max_offset_ms.saturating_mul(1000) {
                return Verdict::Stepped { moved_us };
            }
        }
        verdict
    }

    /// Remembers the cluster's frame when a majority (this node and at least two
    /// peers) finds this node's clock in step: the reference for a later time with no
    /// majority to compare with. Called after each round of probes.
    pub fn confirm<'a>(
        &mut self,
        live: impl IntoIterator<Item = &'a str>,
        now: Reading,
        max_offset_ms: u64,
    ) {
        if let (Verdict::InStep { cluster_offset_us }, voters) =
            self.assess(live, now, max_offset_ms)
            && voters >= 3
        {
            self.trusted_frame_us = Some(clamp(
                i128::from(now.frame_us()) + i128::from(cluster_offset_us),
            ));
        }
    }

    /// The verdict from the samples alone, and how many clocks voted (this node's
    /// included).
    fn assess<'a>(
        &self,
        live: impl IntoIterator<Item = &'a str>,
        now: Reading,
        max_offset_ms: u64,
    ) -> (Verdict, usize) {
        let mut peers = 0;
        // This node's own clock is one vote: offset 0.
        let mut offsets = vec![0i64];
        for peer in live {
            match self.offset(peer, now) {
                Some(o) => offsets.push(o.offset_us),
                None if self.unmeasurable(peer, now.mono_us) => continue,
                None => {}
            }
            peers += 1;
        }
        let voters = offsets.len();
        if peers == 0 {
            return (Verdict::Alone, voters);
        }
        let measured = voters - 1;
        let needed = peers / 2 + 1;
        if measured < needed {
            return (Verdict::Unmeasured { measured, needed }, voters);
        }
        let cluster_offset_us = median_toward_zero(&mut offsets);
        let verdict = if cluster_offset_us.unsigned_abs() > max_offset_ms.saturating_mul(1000) {
            Verdict::Outlier { cluster_offset_us }
        } else {
            Verdict::InStep { cluster_offset_us }
        };
        (verdict, voters)
    }
}

/// The median; of the two middle values of an even count, the one nearer zero (this
/// node's own clock), so that without a majority against it a node keeps its own time.
fn median_toward_zero(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        let (a, b) = (values[n / 2 - 1], values[n / 2]);
        if a.unsigned_abs() <= b.unsigned_abs() {
            a
        } else {
            b
        }
    }
}

#[cfg(test)]
mod tests;
