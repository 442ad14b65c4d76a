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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Wall time at monotonic 0 in these tests (no step unless a test makes one).
    const BASE_US: u64 = 1_800_000_000_000_000;

    fn at(mono_us: u64) -> Reading {
        Reading {
            mono_us,
            wall_us: BASE_US + mono_us,
        }
    }

    /// A probe answered at monotonic `mono_us` from a peer `offset_us` off, `one_way_us`
    /// away each way.
    fn probe(offset_us: i64, one_way_us: u64, mono_us: u64) -> Probe {
        let answered_us = BASE_US + mono_us;
        let sent_us = answered_us - 2 * one_way_us - 50;
        let received_us = (sent_us as i64 + one_way_us as i64 + offset_us) as u64;
        Probe {
            sent_us,
            received_us,
            replied_us: received_us + 50,
            answered_us,
        }
    }

    #[test]
    fn half_the_round_trip_is_taken_out() {
        let p = probe(2_000_000, 300, 0);
        assert_eq!(p.offset_us(), 2_000_000);
        assert_eq!(p.round_trip_us(), 600);
        let p = probe(-3_000_000, 10, 0);
        assert_eq!(p.offset_us(), -3_000_000);
    }

    #[test]
    fn the_shortest_round_trip_wins() {
        let mut book = SkewBook::new();
        // A delayed answer (asymmetric: 40 ms one way) skews its estimate.
        let mut slow = probe(0, 100, 0);
        slow.received_us += 40_000;
        slow.replied_us += 40_000;
        slow.answered_us += 80_000;
        book.record("n2", slow, 80_000);
        book.record("n2", probe(1_000, 100, 1_000_000), 1_000_000);
        assert_eq!(book.offset("n2", at(1_000_000)).unwrap().offset_us, 1_000);
    }

    #[test]
    fn a_peers_clock_step_replaces_the_samples_from_before_it() {
        let mut book = SkewBook::new();
        for i in 0..5 {
            book.record("n2", probe(0, 100, i * 1_000_000), i * 1_000_000);
        }
        // The peer's clock jumps 2 s ahead; this answer took longer than the others.
        book.record("n2", probe(2_000_000, 5_000, 5_000_000), 5_000_000);
        assert_eq!(
            book.offset("n2", at(5_000_000)).unwrap().offset_us,
            2_000_000
        );
        // Noise within the round trips does not.
        book.record("n2", probe(2_001_000, 100, 6_000_000), 6_000_000);
        book.record("n2", probe(2_000_500, 3_000, 7_000_000), 7_000_000);
        assert_eq!(
            book.offset("n2", at(7_000_000)).unwrap().offset_us,
            2_001_000
        );
    }

    #[test]
    fn this_nodes_own_clock_step_moves_every_sample_by_as_much() {
        let mut book = SkewBook::new();
        book.record("n2", probe(0, 100, 0), 0);
        book.record("n3", probe(0, 100, 0), 0);
        // This node's wall clock is set a minute ahead: its peers are now a minute
        // behind it, before any of them is probed again.
        let stepped = Reading {
            mono_us: 1_000_000,
            wall_us: BASE_US + 1_000_000 + 60_000_000,
        };
        assert_eq!(book.offset("n2", stepped).unwrap().offset_us, -60_000_000);
        assert_eq!(
            book.verdict(["n2", "n3"], stepped, 500),
            Verdict::Outlier {
                cluster_offset_us: -60_000_000
            }
        );
    }

    #[test]
    fn a_step_with_no_majority_to_compare_with_stops_writes() {
        let mut book = SkewBook::new();
        for peer in ["n2", "n3"] {
            book.record(peer, probe(100, 100, 0), 0);
        }
        book.confirm(["n2", "n3"], at(0), 500);
        // Cut off from both, its clock is then set a minute ahead.
        let stepped = Reading {
            mono_us: 40_000_000,
            wall_us: BASE_US + 40_000_000 + 60_000_000,
        };
        let verdict = book.verdict([], stepped, 500);
        assert!(
            matches!(verdict, Verdict::Stepped { moved_us } if moved_us > 59_000_000),
            "{verdict:?}"
        );
        assert!(verdict.refusal(500).unwrap().contains("moved 60.0 s ahead"));
        // Unstepped, alone is fine.
        assert_eq!(book.verdict([], at(40_000_000), 500), Verdict::Alone);
    }

    #[test]
    fn stale_samples_do_not_count() {
        let mut book = SkewBook::new();
        book.record("n2", probe(0, 100, 0), 0);
        assert!(book.offset("n2", at(SAMPLE_AGE_MAX_MS * 1000)).is_some());
        assert!(
            book.offset("n2", at(SAMPLE_AGE_MAX_MS * 1000 + 1))
                .is_none()
        );
    }

    #[test]
    fn nonsense_readings_are_dropped() {
        let mut book = SkewBook::new();
        let mut p = probe(0, 100, 0);
        p.answered_us = p.sent_us - 1_000;
        assert!(!book.record("n2", p, 0));
        assert!(book.offset("n2", at(0)).is_none());
    }

    #[test]
    fn durations_are_described_in_a_unit_a_person_reads_at_once() {
        assert_eq!(describe_us(340_000), "340 ms");
        assert_eq!(describe_us(2_900_000), "2.9 s");
        assert_eq!(describe_us(59_800_000), "59.8 s");
        assert_eq!(describe_us(270_000_000), "4.5 min");
        assert_eq!(describe_us(3_597_700_000), "60.0 min");
        assert_eq!(describe_us(42_120_000_000), "11.7 h");
    }

    #[test]
    fn the_slow_node_is_the_outlier_and_the_majority_is_not() {
        // n5 is 3 s behind n1..n4.
        let mut slow = SkewBook::new();
        for peer in ["n1", "n2", "n3", "n4"] {
            slow.record(peer, probe(3_000_000, 100, 0), 0);
        }
        let verdict = slow.verdict(["n1", "n2", "n3", "n4"], at(0), 500);
        assert_eq!(
            verdict,
            Verdict::Outlier {
                cluster_offset_us: 3_000_000
            }
        );
        assert!(
            verdict
                .refusal(500)
                .unwrap()
                .starts_with("this node's clock is 3.0 s behind the cluster")
        );
        let mut healthy = SkewBook::new();
        for peer in ["n2", "n3", "n4"] {
            healthy.record(peer, probe(200, 100, 0), 0);
        }
        healthy.record("n5", probe(-3_000_000, 100, 0), 0);
        assert!(matches!(
            healthy.verdict(["n2", "n3", "n4", "n5"], at(0), 500),
            Verdict::InStep { .. }
        ));
    }

    #[test]
    fn two_nodes_never_stop_each_other() {
        let mut a = SkewBook::new();
        a.record("b", probe(5_000_000, 100, 0), 0);
        assert_eq!(
            a.verdict(["b"], at(0), 500),
            Verdict::InStep {
                cluster_offset_us: 0
            }
        );
    }

    #[test]
    fn a_majority_must_be_measured_unless_it_cannot_be_reached() {
        let mut book = SkewBook::new();
        book.record("n2", probe(0, 100, 0), 0);
        book.probe_sent("n3", 0);
        book.probe_sent("n4", 0);
        assert_eq!(
            book.verdict(["n2", "n3", "n4"], at(1_000), 500),
            Verdict::Unmeasured {
                measured: 1,
                needed: 2
            }
        );
        assert!(
            book.verdict(["n2", "n3", "n4"], at(1_000), 500)
                .refusal(500)
                .unwrap()
                .contains("has not compared its clock")
        );
        // n3 and n4 never answer: after a while they are not waited for.
        let later = at(UNANSWERED_MAX_MS * 1000 + 1);
        book.record("n2", probe(0, 100, later.mono_us), later.mono_us);
        assert!(matches!(
            book.verdict(["n2", "n3", "n4"], later, 500),
            Verdict::InStep { .. }
        ));
        assert_eq!(book.verdict([], at(0), 500), Verdict::Alone);
    }

    /// The verdict of each member when every member measures every other exactly.
    fn verdicts(clocks: &[i64]) -> Vec<Verdict> {
        let names: Vec<String> = (0..clocks.len()).map(|i| format!("n{i}")).collect();
        clocks
            .iter()
            .enumerate()
            .map(|(i, mine)| {
                let mut book = SkewBook::new();
                for (j, theirs) in clocks.iter().enumerate() {
                    if i != j {
                        book.record(&names[j], probe(theirs - mine, 100, 0), 0);
                    }
                }
                let live = names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, n)| n.as_str());
                book.verdict(live, at(0), 500)
            })
            .collect()
    }

    proptest! {
        /// Whatever the clocks, some member keeps coordinating: the one holding the
        /// median clock is never an outlier.
        #[test]
        fn the_median_clock_is_never_an_outlier(clocks in prop::collection::vec(-5_000_000i64..5_000_000, 1..8)) {
            let v = verdicts(&clocks);
            prop_assert!(v.iter().any(|v| !matches!(v, Verdict::Outlier { .. })), "{v:?}");
        }

        /// Clocks all within the bound of each other stop nobody.
        #[test]
        fn clocks_within_the_bound_stop_nobody(clocks in prop::collection::vec(-250_000i64..250_000, 1..8)) {
            let v = verdicts(&clocks);
            prop_assert!(v.iter().all(|v| !matches!(v, Verdict::Outlier { .. })), "{v:?}");
        }

        /// Whatever a peer answers, recording it neither panics nor overflows.
        #[test]
        fn any_readings_are_safe(t in prop::array::uniform4(any::<u64>()), mono in any::<u64>(), wall in any::<u64>()) {
            let mut book = SkewBook::new();
            let p = Probe { sent_us: t[0], received_us: t[1], replied_us: t[2], answered_us: t[3] };
            let _ = p.offset_us();
            book.record("n2", p, mono);
            book.record("n2", p, mono);
            let now = Reading { mono_us: mono, wall_us: wall };
            let _ = book.verdict(["n2"], now, 500).refusal(500);
        }
    }
}
