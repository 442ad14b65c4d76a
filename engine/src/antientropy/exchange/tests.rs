//! Two real stores reconciled by the exchange, in process.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::hlc::Timestamp;
use crate::record::{NodeId, Record, Version};
use crate::storage::{ClusterSettings, Store, StoreOptions};

fn store(dir: &std::path::Path, partitions: u16) -> Store {
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

fn entry(key: &str, hlc: u64, tombstone: bool) -> Entry {
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
