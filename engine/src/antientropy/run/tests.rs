//! A run driven in process against a second real store answering as a peer does.

use super::*;
use crate::antientropy::exchange::tests::{entry, store};
use crate::antientropy::messages::ROOTS_PER_REQUEST_MAX;
use crate::antientropy::respond::respond;
use crate::storage::Store;

fn config(dry_run: bool) -> RunConfig {
    RunConfig {
        salt: 7,
        dry_run,
        horizon_ms: 0,
        limits: SyncLimits::default(),
        exchanges_max: 2,
        roots_per_request: ROOTS_PER_REQUEST_MAX,
    }
}

/// What the driver saw, besides the outcome.
#[derive(Default)]
struct Seen {
    /// Each agreement: its partitions and the compare's time.
    agreed: Vec<(Vec<PartitionId>, u64)>,
    /// Exchanges that ended with an error.
    failed: Vec<PartitionId>,
    /// Most exchanges running at once.
    most_running: usize,
}

/// Drives `run` from `a` against `b` to its end. Compare times count up from 1;
/// `answer` may replace the peer's answer to a request.
fn drive(
    a: &Store,
    b: &Store,
    mut run: Run<u64>,
    answer: &mut dyn FnMut(&SyncRequest) -> Option<Result<SyncResponse, String>>,
) -> (Result<RunOutcome, String>, Seen) {
    let mut seen = Seen::default();
    let mut clock = 0;
    let mut running = 0usize;
    let mut queue: VecDeque<(Tag, Result<SyncResponse, String>)> = VecDeque::new();
    let mut applies: VecDeque<Tag> = VecDeque::new();
    loop {
        while let Some(step) = run.poll() {
            match step {
                RunStep::Compare(_) => {
                    clock += 1;
                    run.compare(a, clock);
                }
                RunStep::Send { tag, request } => {
                    let response = answer(&request).unwrap_or_else(|| match &request {
                        SyncRequest::Push { entries, .. } => {
                            b.apply_now(entries).map_err(|e| e.to_string())?;
                            Ok(SyncResponse::Pushed { applied: 0 })
                        }
                        other => respond(b, other, &SyncLimits::default()).map_err(String::from),
                    });
                    queue.push_back((tag, response));
                }
                RunStep::Apply { tag, entries } => {
                    a.apply_now(&entries).unwrap();
                    applies.push_back(tag);
                }
                RunStep::Agreed { partitions, at } => seen.agreed.push((partitions, at)),
                RunStep::Began(_) => {
                    running += 1;
                    seen.most_running = seen.most_running.max(running);
                }
                RunStep::Ended { partition, error } => {
                    running -= 1;
                    if error.is_some() {
                        seen.failed.push(partition);
                    }
                }
                RunStep::Progress { .. } => {}
                RunStep::Done => return (run.outcome().unwrap().clone(), seen),
            }
        }
        // Answers come back one at a time, the oldest first.
        if let Some(tag) = applies.pop_front() {
            run.applied(a, tag, Ok(()));
        } else if let Some((tag, response)) = queue.pop_front() {
            run.handle_response(a, tag, response);
        } else {
            panic!("the run waits for nothing and is not done");
        }
    }
}

fn roots_equal(a: &Store, b: &Store, partitions: u16) -> bool {
    (0..partitions).all(|p| a.tree_root(p).unwrap() == b.tree_root(p).unwrap())
}

#[test]
fn a_run_brings_both_sides_to_agreement_and_says_when_each_partition_agreed() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 8), store(db.path(), 8));
    let common: Vec<Entry> = (0..40)
        .map(|i| entry(&format!("c{i}"), 10, false))
        .collect();
    a.apply_now(&common).unwrap();
    b.apply_now(&common).unwrap();
    a.apply_now(&[entry("only-a", 20, false)]).unwrap();
    b.apply_now(&[entry("only-b", 20, false), entry("c1", 30, false)])
        .unwrap();
    let partitions: Vec<PartitionId> = (0..8).collect();
    let run = Run::new("n2", partitions.clone(), config(false));
    let (outcome, seen) = drive(&a, &b, run, &mut |_| None);
    let outcome = outcome.unwrap();
    assert!(
        roots_equal(&a, &b, 8),
        "both sides hold the same after the run"
    );
    assert_eq!(outcome.in_sync, partitions);
    let differing: Vec<PartitionId> = outcome.differences.iter().map(|d| d.partition).collect();
    assert!(!differing.is_empty() && differing.len() <= 3);
    assert_eq!(outcome.counts.partitions_compared, 8);
    assert_eq!(outcome.counts.partitions_differing, differing.len() as u64);
    assert_eq!(outcome.counts.keys_sent + outcome.counts.keys_received, 3);
    // The first compare agreed on the partitions that did not differ; the ones that
    // did agreed only at the compare after their exchange, a later time.
    let (first, at) = &seen.agreed[0];
    assert_eq!(*at, 1);
    assert!(first.iter().all(|p| !differing.contains(p)));
    assert_eq!(first.len() + differing.len(), 8);
    let later: Vec<PartitionId> = seen.agreed[1..]
        .iter()
        .inspect(|(_, at)| assert!(*at > 1))
        .flat_map(|(p, _)| p.clone())
        .collect();
    assert_eq!(later, differing);
    assert!(
        seen.most_running <= 2,
        "no more exchanges at once than allowed"
    );
}

#[test]
fn a_dry_run_changes_nothing_and_does_not_count_what_differs_as_in_sync() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 4), store(db.path(), 4));
    a.apply_now(&[entry("x", 10, false)]).unwrap();
    let before = a
        .tree_root(crate::placement::partition_of(b"x", 4))
        .unwrap();
    let run = Run::new("n2", (0..4).collect(), config(true));
    let (outcome, seen) = drive(&a, &b, run, &mut |_| None);
    let outcome = outcome.unwrap();
    let p = crate::placement::partition_of(b"x", 4);
    assert_eq!(b.get(b"x").unwrap(), None, "the peer was sent nothing");
    assert_eq!(a.tree_root(p).unwrap(), before);
    assert!(!outcome.in_sync.contains(&p));
    assert_eq!(outcome.in_sync.len(), 3);
    assert_eq!(seen.agreed.len(), 1, "a dry run compares once");
}

#[test]
fn a_failed_compare_fails_the_run_and_a_failed_exchange_only_its_partition() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 4), store(db.path(), 4));
    let run = Run::new("n2", (0..4).collect(), config(false));
    let (outcome, _) = drive(&a, &b, run, &mut |request| {
        matches!(request, SyncRequest::Roots { .. }).then(|| Err("connection lost".to_string()))
    });
    assert_eq!(outcome, Err("connection lost".to_string()));

    // Two partitions differ; every request about one of them goes unanswered.
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let p_of = |k: &str| crate::placement::partition_of(k.as_bytes(), 4);
    let first = keys.iter().find(|k| p_of(k) == 0).unwrap();
    let second = keys.iter().find(|k| p_of(k) == 1).unwrap();
    a.apply_now(&[entry(first, 10, false), entry(second, 10, false)])
        .unwrap();
    let run = Run::new("n2", (0..4).collect(), config(false));
    let (outcome, seen) = drive(&a, &b, run, &mut |request| {
        (request.partition() == Some(0)).then(|| Err("no answer".to_string()))
    });
    let outcome = outcome.unwrap();
    // It failed in the first pass and again in the second.
    assert_eq!(seen.failed, vec![0, 0]);
    assert_eq!(
        outcome.in_sync,
        vec![1, 2, 3],
        "a failed exchange is not in sync"
    );
    let d0 = outcome
        .differences
        .iter()
        .find(|d| d.partition == 0)
        .unwrap();
    assert!(d0.still_differing);
    assert!(b.get(second.as_bytes()).unwrap().is_some());
    assert!(b.get(first.as_bytes()).unwrap().is_none());
}

#[test]
fn a_run_of_no_partitions_is_done_at_once() {
    let mut run: Run<u64> = Run::new("n2", Vec::new(), config(false));
    assert_eq!(run.poll(), Some(RunStep::Done));
    assert!(run.outcome().unwrap().as_ref().unwrap().in_sync.is_empty());
}

/// Exchanges that end without asking anything (the only difference is tombstones past
/// the purge horizon, which are not sent where the other side has nothing) make room
/// for the next ones at once, and the passes still follow one another in order.
#[test]
fn exchanges_that_end_at_once_move_the_run_on_once() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 8), store(db.path(), 8));
    let tombstones: Vec<Entry> = (0..40).map(|i| entry(&format!("t{i}"), 10, true)).collect();
    a.apply_now(&tombstones).unwrap();
    let config = RunConfig {
        horizon_ms: u64::MAX,
        exchanges_max: 1,
        ..config(false)
    };
    let run = Run::new("n2", (0..8).collect(), config);
    let (outcome, seen) = drive(&a, &b, run, &mut |_| None);
    let outcome = outcome.unwrap();
    assert!(seen.failed.is_empty());
    assert_eq!(
        outcome.counts.keys_sent, 0,
        "nothing past the horizon is sent"
    );
    assert!(outcome.counts.pending_purge > 0);
    assert_eq!(
        outcome.in_sync.len(),
        8,
        "pending purges are not divergence"
    );
}
