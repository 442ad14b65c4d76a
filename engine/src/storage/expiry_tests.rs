//! Expiry in storage: expired records are purged by the tombstones' rules, and a typed
//! update of an expired key starts from an empty value.

use super::*;
use crate::record::{Payload, Record};
use crate::types::{Change, State};

const CLUSTER: ClusterSettings = ClusterSettings {
    cluster_id: [7; 16],
    partitions: 16,
    replication_factor: 3,
    tree_key: [9; 32],
};

fn open(dir: &Path) -> Store {
    let store = Store::open(dir, StoreOptions::new("n1")).unwrap();
    store.set_cluster(CLUSTER).unwrap();
    store
}

fn at(wall_ms: u64) -> Timestamp {
    Timestamp::new(wall_ms, 0)
}

fn expiring(key: &[u8], wall_ms: u64, expires_ms: Option<u64>) -> Entry {
    Entry {
        key: key.to_vec(),
        record: Record {
            version: Version {
                hlc: at(wall_ms),
                node: NodeId(1),
            },
            payload: Payload::Value(b"v".to_vec()),
            expires_ms,
        },
    }
}

#[test]
fn an_expiring_record_is_kept_with_its_expiry_and_the_tree_covers_it() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    a.apply_now(&[expiring(b"k", 1_000, Some(5_000))]).unwrap();
    b.apply_now(&[expiring(b"k", 1_000, Some(6_000))]).unwrap();
    assert_eq!(a.get(b"k").unwrap().unwrap().expires_ms, Some(5_000));
    let p = tree::locate(b"k", CLUSTER.partitions).partition;
    // The same write with another expiry is another entry: the trees say so.
    assert_ne!(a.tree_root(p).unwrap(), b.tree_root(p).unwrap());
}

#[test]
fn expired_records_are_purged_by_the_tombstones_rules_and_live_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_now(&[
            expiring(b"gone", 1_000, Some(2_000)),
            expiring(b"later", 1_000, Some(9_000)),
            expiring(b"never", 1_000, None),
        ])
        .unwrap();
    let mut dead = Vec::new();
    for p in 0..CLUSTER.partitions {
        dead.extend(store.tombstones_before(p, 5_000, 100).unwrap());
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, b"gone".to_vec());
    assert_eq!(store.purge_now(dead).unwrap(), 1);
    assert!(store.get(b"gone").unwrap().is_none());
    assert!(store.get(b"later").unwrap().is_some());
    assert!(store.get(b"never").unwrap().is_some());
    for p in 0..CLUSTER.partitions {
        assert!(store.verify_tree(p).unwrap(), "partition {p}'s tree");
    }
}

#[test]
fn a_rewritten_key_is_not_purged_by_a_stale_choice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_now(&[expiring(b"k", 1_000, Some(2_000))])
        .unwrap();
    let p = tree::locate(b"k", CLUSTER.partitions).partition;
    let dead = store.tombstones_before(p, 5_000, 100).unwrap();
    // A write lands between the choice and the purge: it resets the expiry.
    store
        .apply_now(&[expiring(b"k", 4_000, Some(90_000))])
        .unwrap();
    assert_eq!(store.purge_now(dead).unwrap(), 0);
    assert_eq!(store.get(b"k").unwrap().unwrap().expires_ms, Some(90_000));
}

fn members(store: &Store, key: &[u8]) -> Vec<Vec<u8>> {
    match store.get(key).unwrap().unwrap().payload {
        Payload::Typed(State::Set(set)) => set.members().map(<[u8]>::to_vec).collect(),
        other => panic!("not a set: {other:?}"),
    }
}

#[test]
fn a_typed_update_of_an_expired_key_starts_from_empty_and_resets_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let add = |m: &str| Change::Add(vec![m.as_bytes().to_vec()]);
    let ttl = Some(1_000);
    let r = store
        .update_now(b"s", &add("a"), 7, at(10_000), ttl)
        .unwrap();
    assert_eq!(r.expires_ms, Some(11_000));
    // Before the expiry, an update adds to what is there and pushes the expiry on.
    let r = store
        .update_now(b"s", &add("b"), 7, at(10_500), ttl)
        .unwrap();
    assert_eq!(r.expires_ms, Some(11_500));
    assert_eq!(members(&store, b"s"), vec![b"a".to_vec(), b"b".to_vec()]);
    // After it, the old members are gone: only the new one is.
    let r = store
        .update_now(b"s", &add("c"), 7, at(20_000), ttl)
        .unwrap();
    assert_eq!(r.expires_ms, Some(21_000));
    assert_eq!(members(&store, b"s"), vec![b"c".to_vec()]);
}

#[test]
fn an_expired_typed_state_arriving_late_does_not_bring_its_members_back() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    let add = |m: &str| Change::Add(vec![m.as_bytes().to_vec()]);
    let ttl = Some(1_000);
    // Both replicas hold the key's first state; it expires; a is updated afresh.
    let old = a.update_now(b"s", &add("old"), 7, at(10_000), ttl).unwrap();
    b.apply_now(&[Entry {
        key: b"s".to_vec(),
        record: old,
    }])
    .unwrap();
    let new = a.update_now(b"s", &add("new"), 7, at(20_000), ttl).unwrap();
    // Each side's state reaches the other (an exchange sends typed entries both ways).
    let b_old = b.get(b"s").unwrap().unwrap();
    a.apply_now(&[Entry {
        key: b"s".to_vec(),
        record: b_old,
    }])
    .unwrap();
    b.apply_now(&[Entry {
        key: b"s".to_vec(),
        record: new,
    }])
    .unwrap();
    assert_eq!(members(&a, b"s"), vec![b"new".to_vec()]);
    assert_eq!(members(&b, b"s"), vec![b"new".to_vec()]);
    assert_eq!(a.get(b"s").unwrap(), b.get(b"s").unwrap());
}

#[test]
fn a_counter_that_expired_counts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ttl = Some(1_000);
    store
        .update_now(b"c", &Change::Incr(5), 7, at(10_000), ttl)
        .unwrap();
    store
        .update_now(b"c", &Change::Incr(2), 8, at(30_000), ttl)
        .unwrap();
    match store.get(b"c").unwrap().unwrap().payload {
        Payload::Typed(State::Counter(c)) => assert_eq!(c.value(), 2),
        other => panic!("not a counter: {other:?}"),
    }
}
