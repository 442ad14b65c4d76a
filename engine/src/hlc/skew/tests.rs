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
