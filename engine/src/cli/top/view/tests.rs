//! The builder given statuses and fixed times: what the model says depends on the time
//! passed in, and on nothing else.

use std::time::{Duration, Instant, UNIX_EPOCH};

use vergent_tui::model::{Connection, MemberState, PartitionState, Severity};

use super::{Builder, Now};
use crate::antientropy::confirm::{PartitionStatus, PartitionSyncState};
use crate::antientropy::report::{PeerSync, RunKind, RunSummary};
use crate::hlc::Timestamp;
use crate::protocol::{ClusterStatus, MemberStatus};

/// 2023-11-14 22:13:20 UTC, in wall milliseconds.
const WALL: u64 = 1_700_000_000_000;

/// The first reading of the clocks.
fn start() -> Now {
    Now {
        instant: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_millis(WALL),
    }
}

/// The clocks `ms` after `start`.
fn later(start: Now, ms: u64) -> Now {
    Now {
        instant: start.instant + Duration::from_millis(ms),
        wall: start.wall + Duration::from_millis(ms),
    }
}

fn member(name: &str, state: &str, writes: u64) -> MemberStatus {
    MemberStatus {
        name: name.to_string(),
        address: format!("127.0.0.1:700{}", &name[1..]),
        state: state.to_string(),
        incarnation: 1,
        swim_incarnation: 0,
        hlc: Some(Timestamp::new(WALL, 0)),
        clock_skew_ms: Some(0),
        clock_skew_us: Some(0),
        report_age_ms: Some(500),
        partitions_held: 2,
        records: Some(10),
        hints: 0,
        hints_oldest_age_ms: 0,
        writes,
        reads: 0,
        placement_digest: None,
        buckets_digest: None,
        state_age_ms: 60_000,
        partitions_filling: 0,
        reachable: true,
        sync_lag_ms: None,
        run: None,
    }
}

/// n1's view of a cluster of three: n1 wrote `writes`, last exchanged with n2 four
/// seconds before [`WALL`] and confirmed partition 0 twelve seconds before it.
fn status(writes: u64) -> ClusterStatus {
    ClusterStatus {
        node: "n1".into(),
        cluster_id: "8a3f5ed874e4707842fa15bb9d7e9dc5".into(),
        partitions: 2,
        replication_factor: 3,
        placement_digest: String::new(),
        buckets_digest: String::new(),
        buckets: 1,
        hlc: Timestamp::new(WALL, 0),
        uptime_ms: 60_000,
        members: vec![
            member("n1", "alive", writes),
            member("n2", "alive", 0),
            member("n3", "alive", 0),
        ],
        sync: vec![PeerSync {
            peer: "n2".into(),
            last_exchange_ms: Some(WALL - 4_000),
            ..PeerSync::default()
        }],
        repair: None,
        repairing: Vec::new(),
        partition_states: vec![
            PartitionStatus {
                state: PartitionSyncState::InSync,
                confirmed_ms: Some(WALL - 12_000),
            },
            PartitionStatus {
                state: PartitionSyncState::Differing,
                confirmed_ms: None,
            },
        ],
        placement: vec![vec!["n1".into(), "n2".into(), "n3".into()]; 2],
        roots: Vec::new(),
        clock_refusals: 0,
        clock_offset_ms: None,
        clock_refusal: None,
        bucket_stats: Vec::new(),
        linearizable: Default::default(),
    }
}

#[test]
fn ages_and_rates_are_counted_to_the_time_given() {
    let t0 = start();
    let mut builder = Builder::new("127.0.0.1:7001", t0);
    let mut first = status(0);
    first.members[0].run = Some(RunSummary {
        kind: RunKind::Repair,
        peers: vec!["n2".into(), "n3".into()],
        peers_total: 2,
        done: 5,
        total: 10,
        keys_moved: 100,
        bytes_moved: 4_000,
        started_ms: WALL - 10_000,
    });
    builder.observe(first.clone(), t0);
    let model = builder.model(t0);
    assert_eq!(model, builder.model(t0), "the same time, the same model");
    assert_eq!(model.watched, "n1");
    assert_eq!(model.time, "22:13:20");
    assert_eq!(model.members[1].last_exchange_age_ms, Some(4_000));
    assert_eq!(model.cells[0].state, PartitionState::InSync);
    assert_eq!(model.cells[0].confirmed_age_ms, Some(12_000));
    assert_eq!(model.cells[1].state, PartitionState::Diverged);
    let repair = &model.repairs[0];
    assert_eq!(repair.node, "n1");
    assert_eq!(repair.keys_per_s, Some(10.0));
    assert_eq!(repair.eta_s, Some(10.0));

    // The same view two seconds on: every age is two seconds older, and n1's 2000
    // writes in those two seconds are its rate.
    let t2 = later(t0, 2_000);
    first.members[0].writes = 2_000;
    builder.observe(first, t2);
    let model = builder.model(t2);
    assert_eq!(model.time, "22:13:22");
    assert_eq!(model.members[1].last_exchange_age_ms, Some(6_000));
    assert_eq!(model.cells[0].confirmed_age_ms, Some(14_000));
    assert_eq!(model.members[0].writes_per_s, Some(1_000.0));
    assert_eq!(model.write_rate, 1_000.0);
    assert_eq!(model.throughput, vec![1_000]);
    assert_eq!(model.repairs[0].keys_per_s, Some(100.0 / 12.0));
    assert_eq!(builder.sync_ages(t2).get("n2"), Some(&Some(6_000)));

    // The run gone from a later status ended, about as long after its start as the
    // time given says.
    builder.observe(status(2_000), later(t0, 30_000));
    let ended = builder.model(later(t0, 30_000)).events;
    let last = ended.last().expect("an event for the run's end");
    assert_eq!(last.at, "22:13:50");
    assert!(
        last.text
            .starts_with("repair on n1 ended after about 40s: 5/10 compared"),
        "{}",
        last.text
    );
}

#[test]
fn a_lost_view_is_as_stale_as_the_time_given_says() {
    let t0 = start();
    let mut builder = Builder::new("127.0.0.1:7001", t0);
    let mut view = status(0);
    view.members[2].state = "dead".into();
    view.members[2].report_age_ms = Some(40_000);
    builder.observe(view.clone(), t0);
    builder.lost("no answer", later(t0, 5_000));
    let model = builder.model(later(t0, 7_000));
    assert_eq!(
        model.connection,
        Connection::Lost {
            reason: "no answer".into(),
            stale_s: 7,
        }
    );
    // The last view stays, its dead member's clock marked as what it said last.
    assert_eq!(model.members.len(), 3);
    assert_eq!(model.members[2].state, MemberState::Dead);
    assert_eq!(model.members[2].stale_age_ms, Some(40_000));
    assert_eq!(model.members[0].stale_age_ms, None);
    let last = model.events.last().expect("the loss logged");
    assert_eq!(last.at, "22:13:25");
    assert_eq!(last.text, "n1 stopped answering; keeping its last view");
    assert_eq!(last.severity, Severity::Alert);

    // It answers again: live, and the log says so at the time given.
    builder.observe(view, later(t0, 9_000));
    let model = builder.model(later(t0, 9_000));
    assert_eq!(model.connection, Connection::Live);
    let last = model.events.last().expect("the return logged");
    assert_eq!(
        (last.at.as_str(), last.text.as_str()),
        ("22:13:29", "n1 answers again")
    );
}
