//! Two real stores reconciled by the exchange, in process; and what a peer may send
//! (requests, answers, entries) held to its checks and bounds (arbitrary ones in
//! `arbitrary`).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::antientropy::messages::{
    CHILDREN_NODES_MAX, COMPARE_ENTRIES_READ_MAX, LIST_ITEMS_MAX, ROOTS_PER_REQUEST_MAX,
    RootSummary,
};
use crate::antientropy::respond::{check_entries, check_push, check_roots_answer, respond};
use crate::hlc::Timestamp;
use crate::record::{NodeId, Payload, Record, Version};
use crate::storage::{ClusterSettings, Store, StoreOptions};

/// A store of `partitions` partitions in `dir`.
pub(crate) fn store(dir: &std::path::Path, partitions: u16) -> Store {
    let store = Store::open(dir, StoreOptions::new("n1")).unwrap();
    store
        .set_cluster(ClusterSettings {
            cluster_id: [1; 16],
            partitions,
            replication_factor: 3,
            tree_key: [2; 32],
        })
        .unwrap();
    store
}

/// `key` at `hlc`: a value naming both, or a tombstone.
pub(crate) fn entry(key: &str, hlc: u64, tombstone: bool) -> Entry {
    Entry {
        key: key.as_bytes().to_vec(),
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(hlc),
                node: NodeId(1),
            },
            payload: if tombstone {
                Payload::Tombstone
            } else {
                Payload::Value(format!("{key}@{hlc}").into_bytes())
            },
            expires_ms: None,
        },
    }
}

/// Totals over every partition of one run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    differing_partitions: usize,
    differing_keys: u64,
    keys_sent: u64,
    keys_received: u64,
    round_trips: u64,
    pending_purge: u64,
}

/// Runs the roots round and then one exchange per differing partition, with `a` as the
/// requester and `b` as the responder.
fn reconcile(a: &Store, b: &Store, salt: u64, horizon: u64, dry_run: bool) -> Totals {
    let run = crate::antientropy::local::reconcile(a, b, salt, horizon, dry_run).unwrap();
    let c = run.counts;
    if dry_run {
        assert_eq!(
            (c.entry_bytes_sent, c.entry_bytes_received),
            (0, 0),
            "a dry run moves nothing"
        );
    }
    Totals {
        differing_partitions: c.partitions_differing as usize,
        differing_keys: c.keys_differing,
        keys_sent: c.keys_sent,
        keys_received: c.keys_received,
        round_trips: c.round_trips,
        pending_purge: c.pending_purge,
    }
}

fn contents(store: &Store) -> BTreeMap<Vec<u8>, Record> {
    let mut out = BTreeMap::new();
    for p in 0..store.partitions() {
        let (entries, next) = store.entries_in(p, 0..4096, None, usize::MAX).unwrap();
        assert!(next.is_none());
        out.extend(entries.into_iter().map(|e| (e.key, e.record)));
    }
    out
}

/// What differs between two key → record maps, counted by key.
fn truly_differing(a: &BTreeMap<Vec<u8>, Record>, b: &BTreeMap<Vec<u8>, Record>) -> u64 {
    let keys: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).count() as u64
}

#[test]
fn identical_replicas_are_confirmed_in_one_round_trip() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 16), store(db.path(), 16));
    let entries: Vec<Entry> = (0..500)
        .map(|i| entry(&format!("k{i}"), 10, false))
        .collect();
    a.apply_now(&entries).unwrap();
    b.apply_now(&entries).unwrap();
    let totals = reconcile(&a, &b, 7, 0, false);
    assert_eq!(totals.differing_partitions, 0);
    assert_eq!(totals.round_trips, 1);
}

#[test]
fn a_wiped_replica_is_refilled_by_pulling_and_an_empty_peer_by_pushing() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 4), store(db.path(), 4));
    let entries: Vec<Entry> = (0..3000)
        .map(|i| entry(&format!("k{i}"), 10, i % 10 == 0))
        .collect();
    b.apply_now(&entries).unwrap();
    let totals = reconcile(&a, &b, 1, 0, false);
    assert_eq!(totals.keys_received, 3000);
    assert_eq!(contents(&a), contents(&b));
    let (dc, _) = (tempfile::tempdir().unwrap(), ());
    let c = store(dc.path(), 4);
    let totals = reconcile(&a, &c, 2, 0, false);
    assert_eq!(totals.keys_sent, 3000);
    assert_eq!(contents(&a), contents(&c));
}

#[test]
fn tombstones_past_the_horizon_are_pending_purges_not_divergence() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 1), store(db.path(), 1));
    let old_tombstone = entry("gone", Timestamp::new(1_000, 0).as_u64(), true);
    let shared = entry("kept", Timestamp::new(5_000, 0).as_u64(), false);
    a.apply_now(&[old_tombstone.clone(), shared.clone()])
        .unwrap();
    b.apply_now(std::slice::from_ref(&shared)).unwrap();
    // b already purged "gone"; a has not yet: nothing moves either way.
    let horizon = 2_000;
    let totals = reconcile(&a, &b, 3, horizon, false);
    assert_eq!(totals.pending_purge, 1);
    assert_eq!((totals.keys_sent, totals.keys_received), (0, 0));
    assert!(b.get(b"gone").unwrap().is_none());
    let totals = reconcile(&b, &a, 4, horizon, false);
    assert_eq!(totals.pending_purge, 1);
    assert!(b.get(b"gone").unwrap().is_none(), "not accepted either");

    // But an old tombstone still deletes an older value on the other side.
    let older_value = entry("gone", Timestamp::new(500, 0).as_u64(), false);
    b.apply_now(&[older_value]).unwrap();
    reconcile(&a, &b, 5, horizon, false);
    assert_eq!(b.get(b"gone").unwrap().unwrap().payload, Payload::Tombstone);
}

#[test]
fn entries_expired_past_the_horizon_are_never_brought_back() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 1), store(db.path(), 1));
    let mut expired = entry("session", Timestamp::new(1_000, 0).as_u64(), false);
    expired.record.expires_ms = Some(1_500);
    let mut live = entry("token", Timestamp::new(1_000, 0).as_u64(), false);
    live.record.expires_ms = Some(90_000);
    a.apply_now(&[expired.clone(), live.clone()]).unwrap();
    // b purged "session" already; a has not yet. Neither direction brings it back.
    let horizon = 2_000;
    let totals = reconcile(&a, &b, 3, horizon, false);
    assert_eq!(totals.pending_purge, 1);
    assert_eq!(totals.keys_sent, 1, "only the live entry moves");
    let totals = reconcile(&b, &a, 4, horizon, false);
    assert_eq!(totals.pending_purge, 1);
    assert!(b.get(b"session").unwrap().is_none());
    assert_eq!(b.get(b"token").unwrap(), Some(live.record));
    // An expired entry still replaces an older value on the other side, as a
    // tombstone would: the older value must not outlive it.
    let older = entry("session", Timestamp::new(500, 0).as_u64(), false);
    b.apply_now(&[older]).unwrap();
    reconcile(&a, &b, 5, horizon, false);
    assert_eq!(b.get(b"session").unwrap(), Some(expired.record));
}

#[derive(Debug, Clone)]
enum Divergence {
    Same,
    OnlyA,
    OnlyB,
    NewerOnA,
    NewerOnB,
}

fn divergence() -> impl Strategy<Value = Divergence> {
    prop_oneof![
        6 => Just(Divergence::Same),
        1 => Just(Divergence::OnlyA),
        1 => Just(Divergence::OnlyB),
        1 => Just(Divergence::NewerOnA),
        1 => Just(Divergence::NewerOnB),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The dry run counts exactly the keys that differ; the exchange then moves each of
    /// them once, from the newer side to the older, and leaves both replicas identical
    /// with equal roots; a second exchange finds nothing.
    #[test]
    fn the_exchange_finds_exactly_the_differing_keys_and_moves_each_once(
        keys in proptest::collection::vec((divergence(), any::<bool>()), 1..400),
        partitions in prop_oneof![Just(1u16), Just(8u16)],
        salt: u64,
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (store(da.path(), partitions), store(db.path(), partitions));
        for (i, (divergence, tombstone)) in keys.iter().enumerate() {
            let key = format!("key-{i}");
            let base = entry(&key, 100, false);
            let newer = entry(&key, 200, *tombstone);
            match divergence {
                Divergence::Same => { a.apply_now(std::slice::from_ref(&base)).unwrap(); b.apply_now(&[base]).unwrap(); }
                Divergence::OnlyA => { a.apply_now(&[newer]).unwrap(); }
                Divergence::OnlyB => { b.apply_now(&[newer]).unwrap(); }
                Divergence::NewerOnA => { b.apply_now(std::slice::from_ref(&base)).unwrap(); a.apply_now(&[base, newer]).unwrap(); }
                Divergence::NewerOnB => { a.apply_now(std::slice::from_ref(&base)).unwrap(); b.apply_now(&[base, newer]).unwrap(); }
            }
        }
        let expected = truly_differing(&contents(&a), &contents(&b));
        let dry = reconcile(&a, &b, salt, 0, true);
        prop_assert_eq!(dry.differing_keys, expected);
        prop_assert_eq!((dry.keys_sent, dry.keys_received), (0, 0));
        prop_assert_eq!(truly_differing(&contents(&a), &contents(&b)), expected, "a dry run changes nothing");

        let run = reconcile(&a, &b, salt.wrapping_add(1), 0, false);
        prop_assert_eq!(run.differing_keys, expected);
        prop_assert_eq!(run.keys_sent + run.keys_received, expected, "over-streaming is exactly 1");
        prop_assert_eq!(contents(&a), contents(&b));
        for p in 0..partitions {
            prop_assert_eq!(a.tree_root(p).unwrap(), b.tree_root(p).unwrap());
            prop_assert!(a.verify_tree(p).unwrap() && b.verify_tree(p).unwrap());
        }
        let again = reconcile(&a, &b, salt.wrapping_add(2), 0, false);
        prop_assert_eq!(again.differing_partitions, 0);
    }
}

/// A tree node as a peer may send it: any level and index, unchecked.
fn raw_node(level: u8, index: u16) -> NodeRef {
    postcard::from_bytes(&postcard::to_allocvec(&(level, index)).unwrap()).unwrap()
}

fn children_of(nodes: Vec<NodeRef>) -> SyncRequest {
    SyncRequest::Children {
        partition: 0,
        salt: 1,
        nodes,
    }
}

#[test]
fn nodes_the_tree_does_not_have_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let b = store(dir.path(), 4);
    let limits = SyncLimits::default();
    for (level, index) in [(1, 16), (2, 256), (2, 300), (4, 0), (255, 7), (0, 1)] {
        let err = respond(&b, &children_of(vec![raw_node(level, index)]), &limits).unwrap_err();
        assert!(matches!(err, SyncError::NoSuchNode { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "tree node (level {level}, index {index}) does not exist"
            )),
            "{err}"
        );
        let pull = SyncRequest::Pull {
            partition: 0,
            node: raw_node(level, index),
            after: None,
            purge_horizon_ms: 0,
        };
        assert!(matches!(
            respond(&b, &pull, &limits),
            Err(SyncError::NoSuchNode { .. })
        ));
    }
    let err = respond(&b, &children_of(vec![raw_node(3, 5)]), &limits).unwrap_err();
    assert!(
        err.to_string().contains("is a leaf: it has no children"),
        "{err}"
    );
    let err = respond(
        &b,
        &SyncRequest::Children {
            partition: 4,
            salt: 1,
            nodes: vec![NodeRef::ROOT],
        },
        &limits,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "partition 4 does not exist (the cluster has 4 partitions)"
    );
}

#[test]
fn requests_past_their_bounds_are_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = store(dir.path(), 1);
    let limits = SyncLimits::default();
    let nodes = vec![NodeRef::ROOT; CHILDREN_NODES_MAX + 1];
    let err = respond(&b, &children_of(nodes), &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "sync request over its limit: nodes in one children request is 257, the limit is 256"
    );

    let roots = (0..=ROOTS_PER_REQUEST_MAX as u16)
        .map(|p| RootSummary {
            partition: p,
            fp: 0,
            count: 0,
        })
        .collect();
    let err = respond(&b, &SyncRequest::Roots { salt: 1, roots }, &limits).unwrap_err();
    assert!(err.to_string().contains("the limit is 256"), "{err}");
    let twice = vec![
        RootSummary {
            partition: 0,
            fp: 0,
            count: 0,
        };
        2
    ];
    let err = respond(
        &b,
        &SyncRequest::Roots {
            salt: 1,
            roots: twice,
        },
        &limits,
    )
    .unwrap_err();
    assert!(err.to_string().contains("named twice"), "{err}");

    let item = ListItem {
        position: 0,
        version: Version::default(),
        dead_from_ms: None,
        typed: false,
    };
    let compare = |ranges| SyncRequest::Compare {
        partition: 0,
        purge_horizon_ms: 0,
        dry_run: false,
        ranges,
    };
    let big = vec![RangeList {
        node: NodeRef::ROOT,
        entries: vec![item; LIST_ITEMS_MAX + 1],
    }];
    let err = respond(&b, &compare(big), &limits).unwrap_err();
    assert!(
        err.to_string()
            .contains("list items in one compare request is 4097, the limit is 4096"),
        "{err}"
    );
    let overlapping = vec![
        RangeList {
            node: NodeRef::ROOT,
            entries: vec![],
        },
        RangeList {
            node: raw_node(3, 9),
            entries: vec![],
        },
    ];
    let err = respond(&b, &compare(overlapping), &limits).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    let pull = SyncRequest::Pull {
        partition: 0,
        node: NodeRef::ROOT,
        after: Some(vec![0; 600]),
        purge_horizon_ms: 0,
    };
    let err = respond(&b, &pull, &limits).unwrap_err();
    let limit = crate::limits::STORED_KEY_BYTES_MAX + 4;
    assert!(
        err.to_string().contains(&format!("the limit is {limit}")),
        "{err}"
    );
}

#[test]
fn a_compare_over_a_huge_range_reads_at_most_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = store(dir.path(), 1);
    let entries: Vec<Entry> = (0..COMPARE_ENTRIES_READ_MAX + 10)
        .map(|i| entry(&format!("k{i}"), 10, false))
        .collect();
    b.apply_now(&entries).unwrap();
    let request = SyncRequest::Compare {
        partition: 0,
        purge_horizon_ms: 0,
        dry_run: true,
        ranges: vec![RangeList {
            node: NodeRef::ROOT,
            entries: vec![],
        }],
    };
    let err = respond(&b, &request, &SyncLimits::default()).unwrap_err();
    assert!(matches!(
        err,
        SyncError::LimitExceeded {
            limit: COMPARE_ENTRIES_READ_MAX,
            ..
        }
    ));
    assert!(err.to_string().contains("the limit is 16384"), "{err}");
}

#[test]
fn entries_that_break_the_write_limits_are_refused_however_they_arrive() {
    let limits = SyncLimits {
        value_bytes_max: 100,
    };
    let mut empty = entry("x", 10, false);
    empty.key.clear();
    let err = check_push(0, &[empty.clone()], 1, &limits).unwrap_err();
    assert!(err.to_string().contains("empty key"), "{err}");
    let mut long = entry("x", 10, false);
    // A stored key may carry a bucket's prefix; one byte more is refused.
    long.key = vec![b'k'; crate::limits::STORED_KEY_BYTES_MAX + 1];
    assert!(check_push(0, &[long], 1, &limits).is_err());
    let mut large = entry("x", 10, false);
    large.record.payload = Payload::Value(vec![0; 101]);
    let err = check_push(0, &[large.clone()], 1, &limits).unwrap_err();
    assert!(err.to_string().contains("the limit is 100 bytes"), "{err}");
    let elsewhere = (0..)
        .map(|i| entry(&format!("k{i}"), 10, false))
        .find(|e| tree::locate(&e.key, 4).partition == 3)
        .unwrap();
    let err = check_push(1, &[elsewhere], 4, &limits).unwrap_err();
    assert!(err.to_string().contains("lies in partition 3"), "{err}");

    // In an answer: a protocol violation, and nothing of it is applied.
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 1), store(db.path(), 1));
    b.apply_now(&[entry("only-b", 10, false)]).unwrap();
    let SyncResponse::Roots { differing } = respond(
        &b,
        &SyncRequest::Roots {
            salt: 1,
            roots: vec![root_summary(&a, 0, 1).unwrap()],
        },
        &limits,
    )
    .unwrap() else {
        panic!("roots")
    };
    for bad in [empty, large] {
        let mut exchange = Exchange::new(&a, &differing[0], 1, 0, false, limits).unwrap();
        let request = exchange.poll_request(&a).unwrap();
        assert!(matches!(request, SyncRequest::Pull { .. }), "{request:?}");
        exchange.handle_response(
            &a,
            SyncResponse::Entries {
                entries: vec![bad],
                pending_purge: 0,
                next: None,
            },
        );
        assert!(matches!(exchange.failure(), Some(SyncError::Protocol(_))));
        assert_eq!(exchange.poll_apply(), None);
        assert!(exchange.poll_request(&a).is_none());
    }
}

#[test]
fn a_roots_answer_naming_partitions_not_asked_is_a_protocol_violation() {
    let root = |partition| DifferingRoot {
        partition,
        children: vec![NodeSummary { fp: 0, count: 0 }; FANOUT],
    };
    assert!(check_roots_answer(&[1, 2], &[root(2)]).is_ok());
    let err = check_roots_answer(&[1], &[root(1), root(2)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocol violation in the peer's answer: 2 partitions named as differing, but only 1 were compared"
    );
    assert!(check_roots_answer(&[1, 2], &[root(3)]).is_err());
    assert!(check_roots_answer(&[1, 2], &[root(1), root(1)]).is_err());
    let mut short = root(1);
    short.children.pop();
    assert!(check_roots_answer(&[1], &[short]).is_err());
}

#[test]
fn answers_cut_at_the_frame_limit_are_asked_again_until_everything_moved() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 1), store(db.path(), 1));
    let limits = SyncLimits {
        value_bytes_max: 20 << 10,
    };
    let big = |key: &str, hlc: u64| Entry {
        key: key.as_bytes().to_vec(),
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(hlc),
                node: NodeId(1),
            },
            payload: Payload::Value(vec![hlc as u8; 20 << 10]),
            expires_ms: None,
        },
    };
    let older: Vec<Entry> = (0..120).map(|i| big(&format!("k{i}"), 10)).collect();
    let newer: Vec<Entry> = (0..120).map(|i| big(&format!("k{i}"), 20)).collect();
    a.apply_now(&older).unwrap();
    b.apply_now(&newer).unwrap();
    let run = crate::antientropy::local::reconcile_within(&a, &b, 5, 0, false, limits).unwrap();
    assert_eq!(run.counts.keys_received, 120);
    assert_eq!(run.counts.keys_differing, 120);
    assert_eq!(contents(&a), contents(&b));
    assert!(
        run.counts.round_trips > 10,
        "4 MB cannot move in a few answers of 84 KiB: {run:?}"
    );
}

mod arbitrary;

/// Typed entries merge: where two replicas hold different states of one key (each
/// with updates the other lacks, whatever their times), an exchange sends both ways,
/// and both end with the merged state.
#[test]
fn an_exchange_merges_typed_entries_both_ways() {
    use crate::types::{Counter, State};
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), 16), store(db.path(), 16));
    let typed = |actor: u64, by: i64, hlc: u64| {
        let mut counter = Counter::default();
        counter.add(actor, by).unwrap();
        Entry {
            key: b"hits".to_vec(),
            record: crate::record::Record::typed(
                State::Counter(counter),
                crate::hlc::Timestamp::from_u64(hlc),
                None,
            ),
        }
    };
    a.apply_now(&[typed(1, 5, 10)]).unwrap();
    b.apply_now(&[typed(2, 7, 10)]).unwrap();
    reconcile(&a, &b, 3, 0, false);
    for s in [&a, &b] {
        match s.get(b"hits").unwrap().unwrap().payload {
            crate::record::Payload::Typed(State::Counter(c)) => assert_eq!(c.value(), 12),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reconcile(&a, &b, 4, 0, true).differing_keys, 0);
}
