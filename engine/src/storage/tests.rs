use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::record::{Payload, Record};

fn entry(key: &[u8], hlc: u64, node: u64, value: Option<&[u8]>) -> Entry {
    Entry {
        key: key.to_vec(),
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(hlc),
                node: NodeId(node),
            },
            payload: value.map_or(Payload::Tombstone, |v| Payload::Value(v.to_vec())),
            expires_ms: None,
        },
    }
}

const CLUSTER: ClusterSettings = ClusterSettings {
    cluster_id: [7; 16],
    partitions: 256,
    replication_factor: 3,
    tree_key: [9; 32],
};

fn open(dir: &Path) -> Store {
    let store = Store::open(dir, StoreOptions::new("n1")).unwrap();
    store.set_cluster(CLUSTER).unwrap();
    store
}

#[test]
fn a_reopened_store_keeps_its_records_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.apply_now(&[entry(b"k", 10, 1, Some(b"v"))]).unwrap();
    assert_eq!(store.next_incarnation().unwrap(), 1);
    store.close();
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    assert_eq!(store.cluster(), Some(CLUSTER));
    assert_eq!(store.next_incarnation().unwrap(), 2);
    assert_eq!(
        store.get(b"k").unwrap().unwrap().payload,
        Payload::Value(b"v".to_vec())
    );
    assert_eq!(store.hlc_high_water().unwrap(), Timestamp::from_u64(10));
}

#[test]
fn apply_is_last_writer_wins_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let newer = entry(b"k", 20, 1, Some(b"new"));
    let older = entry(b"k", 10, 9, Some(b"old"));
    assert!(store.apply_now(std::slice::from_ref(&newer)).unwrap()[0].applied());
    assert_eq!(
        store.apply_now(&[older]).unwrap()[0],
        ApplyOutcome::Superseded {
            current: newer.record.version
        }
    );
    assert_eq!(
        store.apply_now(&[newer]).unwrap()[0],
        ApplyOutcome::AlreadyPresent
    );
    assert_eq!(
        store.get(b"k").unwrap().unwrap().payload.value(),
        Some(&b"new"[..])
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = Store::open(dir.path(), StoreOptions::new("n1"))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"));
}

#[test]
fn an_unknown_format_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.apply_now(&[entry(b"k", 10, 1, Some(b"v"))]).unwrap();
    {
        let tables = store.tables();
        let mut wtxn = tables.env.write_txn().unwrap();
        tables
            .meta
            .put(&mut wtxn, meta::FORMAT, &99u32.to_be_bytes())
            .unwrap();
        wtxn.commit().unwrap();
    }
    store.close();
    let before = std::fs::read(dir.path().join("data.mdb")).unwrap();
    let err = Store::open(dir.path(), StoreOptions::new("n1"))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains(&format!(
            "has storage format 99, this build reads format {FORMAT_VERSION}"
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join("data.mdb")).unwrap(), before);
}

#[test]
fn a_directory_of_another_node_or_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close();
    let err = Store::open(dir.path(), StoreOptions::new("n2"))
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::WrongNode { .. }), "{err}");
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    let err = store
        .set_cluster(ClusterSettings {
            partitions: 64,
            ..CLUSTER
        })
        .unwrap_err();
    assert!(err.to_string().contains("partitions = 256"), "{err}");
    let err = store
        .set_cluster(ClusterSettings {
            cluster_id: [8; 16],
            ..CLUSTER
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::OtherCluster { .. }), "{err}");
    store.set_cluster(CLUSTER).unwrap();
}

#[test]
fn a_file_that_is_not_lmdb_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.mdb"), vec![7u8; 8192]).unwrap();
    let err = Store::open(dir.path(), StoreOptions::new("n1"))
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Lmdb { .. }),
        "{err}"
    );
}

#[test]
fn a_store_without_a_cluster_refuses_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    let err = store
        .apply_now(&[entry(b"k", 1, 1, Some(b"v"))])
        .unwrap_err();
    assert!(matches!(err, StoreError::NoCluster));
}

fn hint(target: &str, key: &[u8], created_ms: u64) -> Hint {
    Hint {
        target: target.into(),
        entry: entry(key, 5, 1, Some(b"v")),
        created_ms,
    }
}

#[test]
fn hints_are_kept_per_target_in_order_survive_restarts_and_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut options = StoreOptions::new("n1");
    options.hints_max = 3;
    let store = Store::open(dir.path(), options.clone()).unwrap();
    store.set_cluster(CLUSTER).unwrap();
    let stored = runtime
        .block_on(store.put_hints(vec![
            hint("n2", b"a", 10),
            hint("n3", b"b", 11),
            hint("n2", b"c", 12),
            hint("n2", b"d", 13),
        ]))
        .unwrap();
    assert_eq!(stored, 3, "the fourth is over hints_max");
    assert_eq!(store.hints_dropped(), 1);
    let backlog = store.hint_backlog().unwrap();
    assert_eq!(backlog.len(), 2);
    assert_eq!(
        (
            backlog[0].target.as_str(),
            backlog[0].count,
            backlog[0].oldest_ms
        ),
        ("n2", 2, 10)
    );
    store.close();

    let store = Store::open(dir.path(), options).unwrap();
    let n2 = store.hints_for("n2", 10, 1 << 20).unwrap();
    let keys: Vec<&[u8]> = n2.iter().map(|h| h.hint.entry.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"a"[..], &b"c"[..]]);
    runtime
        .block_on(store.delete_hints(vec![n2[0].key.clone()]))
        .unwrap();
    let backlog = store.hint_backlog().unwrap();
    assert_eq!((backlog[0].count, backlog[0].oldest_ms), (1, 12));
    assert_eq!(store.hints_for("n3", 10, 1 << 20).unwrap().len(), 1);
}

/// A runtime for tests that write from many tasks at once.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn group_commit_answers_every_concurrent_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let runtime = runtime();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..500u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("key-{i}");
                store
                    .apply(vec![entry(key.as_bytes(), 100 + i, 1, Some(b"v"))])
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().unwrap()[0].applied());
        }
    });
    assert_eq!(store.len().unwrap(), 500);
}

#[derive(Debug, Clone)]
struct Write {
    key: u8,
    hlc: u64,
    node: u64,
    value: Option<u8>,
}

fn write() -> impl Strategy<Value = Write> {
    (0u8..4, 0u64..8, 0u64..3, proptest::option::of(any::<u8>())).prop_map(
        |(key, hlc, node, value)| Write {
            key,
            hlc,
            node,
            value,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever order versions arrive in, duplicated or not, each key ends at its
    /// highest version: a tombstone beats an older value and a newer value beats a
    /// tombstone.
    #[test]
    fn any_arrival_order_converges_to_the_highest_version(
        writes in proptest::collection::vec(write(), 1..40),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut expected: BTreeMap<u8, (Version, Option<u8>)> = BTreeMap::new();
        let mut ordered = writes.clone();
        // A cheap deterministic shuffle, then replay some writes twice.
        let mut state = seed | 1;
        for i in (1..ordered.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            ordered.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let replays: Vec<Write> = ordered.iter().step_by(3).cloned().collect();
        ordered.extend(replays);
        for w in &ordered {
            let e = entry(&[w.key], w.hlc, w.node, w.value.as_ref().map(std::slice::from_ref));
            let version = e.record.version;
            store.apply_now(&[e]).unwrap();
            let slot = expected.entry(w.key).or_insert((version, w.value));
            // Equal versions carry equal payloads in a real cluster; keep the first seen.
            if version > slot.0 {
                *slot = (version, w.value);
            }
        }
        for (key, (version, value)) in expected {
            let got = store.get(&[key]).unwrap().unwrap();
            prop_assert_eq!(got.version, version);
            prop_assert_eq!(got.payload.value(), value.as_ref().map(std::slice::from_ref));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The tree kept incrementally (leaves in LMDB, inner nodes in memory) equals the
    /// tree rebuilt from the data, after any sequence of writes, overwrites, deletes
    /// and stale or repeated applies, and again after a restart.
    #[test]
    fn the_incremental_tree_equals_the_rebuilt_tree(
        writes in proptest::collection::vec(write(), 1..60),
        partitions in prop_oneof![Just(1u16), Just(3u16), Just(256u16)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
        store.set_cluster(ClusterSettings { partitions, ..CLUSTER }).unwrap();
        for w in &writes {
            let e = entry(&[w.key], w.hlc, w.node, w.value.as_ref().map(std::slice::from_ref));
            store.apply_now(&[e]).unwrap();
        }
        let touched: std::collections::BTreeSet<u16> =
            writes.iter().map(|w| crate::tree::locate(&[w.key], partitions).partition).collect();
        for &p in &touched {
            prop_assert!(store.verify_tree(p).unwrap(), "partition {}", p);
        }
        let total: u64 = (0..partitions).map(|p| store.tree_root(p).unwrap().count).sum();
        prop_assert_eq!(total, store.len().unwrap());
        store.close();
        let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
        for &p in &touched {
            prop_assert!(store.verify_tree(p).unwrap(), "partition {} after reopen", p);
        }
    }
}

#[test]
fn two_stores_with_the_same_entries_have_the_same_roots_whatever_the_order() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = open(a_dir.path());
    let b = open(b_dir.path());
    let entries: Vec<Entry> = (0..200u32)
        .map(|i| {
            entry(
                format!("k{}", i % 150).as_bytes(),
                u64::from(i),
                1,
                Some(b"v"),
            )
        })
        .collect();
    a.apply_now(&entries).unwrap();
    let mut reversed = entries.clone();
    reversed.reverse();
    b.apply_now(&reversed).unwrap();
    for p in 0..256 {
        assert_eq!(
            a.tree_root(p).unwrap(),
            b.tree_root(p).unwrap(),
            "partition {p}"
        );
    }
    let c_dir = tempfile::tempdir().unwrap();
    let c = Store::open(c_dir.path(), StoreOptions::new("n1")).unwrap();
    c.set_cluster(ClusterSettings {
        tree_key: [1; 32],
        ..CLUSTER
    })
    .unwrap();
    c.apply_now(&entries).unwrap();
    let p = crate::tree::locate(b"k1", 256).partition;
    assert_ne!(
        a.tree_root(p).unwrap().digest,
        c.tree_root(p).unwrap().digest,
        "the tree key matters"
    );
}

#[test]
fn a_leaf_range_is_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    store
        .set_cluster(ClusterSettings {
            partitions: 1,
            ..CLUSTER
        })
        .unwrap();
    let entries: Vec<Entry> = (0..100u32)
        .map(|i| entry(format!("k{i}").as_bytes(), 1, 1, Some(&[0u8; 10])))
        .collect();
    store.apply_now(&entries).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = store.entries_in(0, 0..4096, after.as_deref(), 95).unwrap();
        assert!(page.len() <= 10);
        seen.extend(page.into_iter().map(|e| e.key));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    let mut expected: Vec<Vec<u8>> = entries.iter().map(|e| e.key.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let (half, _) = store.entries_in(0, 0..2048, None, usize::MAX).unwrap();
    assert!(
        half.iter()
            .all(|e| crate::tree::locate(&e.key, 1).leaf < 2048)
    );
    assert!(!half.is_empty() && half.len() < 100);
}

#[test]
fn a_full_device_is_named_by_its_own_error_even_when_lmdb_reports_eio() {
    let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
    let eio = std::io::Error::from_raw_os_error(libc::EIO);
    let plenty = || Some(1 << 30);
    let mut streak = None;
    // An EIO on a device with room is a real I/O error.
    assert_eq!(no_space_cause(&eio, &mut streak, plenty), None);
    // ENOSPC names itself, and the EIOs of short writes that follow are the same full
    // device, whatever statvfs says by then.
    let cause = no_space_cause(&enospc, &mut streak, plenty).unwrap();
    assert_eq!(cause, "No space left on device, os error 28");
    assert_eq!(no_space_cause(&eio, &mut streak, plenty), Some(cause));
    // A short write with no ENOSPC before it, on a device with nothing left.
    let mut streak = None;
    let cause = no_space_cause(&eio, &mut streak, || Some(0)).unwrap();
    assert!(cause.starts_with("No space left on device"), "{cause}");
    let other = std::io::Error::from_raw_os_error(libc::EACCES);
    assert_eq!(no_space_cause(&other, &mut streak, || Some(0)), None);
    let err = StoreError::DeviceFull {
        path: "/data".into(),
        cause: "No space left on device, os error 28".into(),
        available_bytes: Some(0),
    };
    assert_eq!(
        err.to_string(),
        "storage is full: the device has no space left (No space left on device, os error 28); the write was not applied; 0 bytes free on /data: free space there or move --data-dir"
    );
}

#[test]
fn storage_refuses_keys_outside_the_key_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .apply_now(&[entry(b"", 10, 1, Some(b"v"))])
        .unwrap_err();
    assert!(matches!(err, StoreError::BadKey(_)), "{err}");
    assert!(
        store
            .apply_now(&[entry(
                &[b'k'; crate::limits::STORED_KEY_BYTES_MAX + 1],
                10,
                1,
                Some(b"v")
            )])
            .is_err()
    );
    assert!(store.is_empty().unwrap());
    assert!(
        store
            .verify_tree(crate::tree::locate(b"", 256).partition)
            .unwrap()
    );
}

#[test]
fn a_request_that_fails_in_a_group_commit_fails_alone_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let runtime = runtime();
    runtime.block_on(async {
        // The first request holds the writer so the rest queue up into one batch (they
        // are checked the same whichever batches they land in).
        let (started, running) = std::sync::mpsc::channel();
        let hold = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .writer
                    .submit(move |batch| {
                        let _ = started.send(());
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        batch.apply(&[entry(b"first", 1, 1, Some(b"v"))])
                    })
                    .await
            })
        };
        running.recv().expect("the first request runs");
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("key-{i}");
                let e = entry(key.as_bytes(), 100 + i, 1, Some(b"v"));
                store
                    .writer
                    .submit(move |batch| {
                        let outcome = batch.apply(std::slice::from_ref(&e))?;
                        if i == 7 {
                            // Its change is made, then it fails: the change must go too.
                            return Err(StoreError::Closed);
                        }
                        Ok(outcome)
                    })
                    .await
            }));
        }
        assert!(hold.await.unwrap().is_ok());
        for (i, task) in tasks.into_iter().enumerate() {
            let answer = task.await.unwrap();
            if i == 7 {
                assert!(matches!(answer, Err(StoreError::Closed)), "{answer:?}");
            } else {
                assert!(answer.expect("the others commit")[0].applied());
            }
        }
    });
    assert_eq!(store.len().unwrap(), 20, "first and 19 others");
    assert!(store.get(b"key-7").unwrap().is_none());
    assert!(store.get(b"key-6").unwrap().is_some());
}

/// A typed record whose counter was raised by `by` by `actor`.
fn counted(key: &[u8], actor: u64, by: i64, hlc: u64) -> Entry {
    let mut counter = crate::types::Counter::default();
    counter.add(actor, by).unwrap();
    Entry {
        key: key.to_vec(),
        record: Record::typed(
            crate::types::State::Counter(counter),
            Timestamp::from_u64(hlc),
            None,
        ),
    }
}

fn counter_value(store: &Store, key: &[u8]) -> i128 {
    match store.get(key).unwrap().unwrap().payload {
        Payload::Typed(crate::types::State::Counter(c)) => c.value(),
        other => panic!("not a counter: {other:?}"),
    }
}

#[test]
fn a_typed_record_merges_with_what_the_key_holds_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Two actors' increments, the second with an older time: merged, not replaced.
    let a = counted(b"hits", 1, 5, 20);
    let b = counted(b"hits", 2, 3, 10);
    assert!(store.apply_now(std::slice::from_ref(&a)).unwrap()[0].applied());
    assert!(store.apply_now(std::slice::from_ref(&b)).unwrap()[0].applied());
    assert_eq!(counter_value(&store, b"hits"), 8);
    // Again: nothing new.
    assert_eq!(
        store.apply_now(&[a.clone(), b.clone()]).unwrap(),
        vec![ApplyOutcome::AlreadyPresent, ApplyOutcome::AlreadyPresent]
    );
    // The other order gives the same record, and the tree covers the merged state.
    let dir2 = tempfile::tempdir().unwrap();
    let other = open(dir2.path());
    other.apply_now(&[b, a]).unwrap();
    assert_eq!(other.get(b"hits").unwrap(), store.get(b"hits").unwrap());
    let p = tree::locate(b"hits", CLUSTER.partitions).partition;
    assert_eq!(other.tree_root(p).unwrap(), store.tree_root(p).unwrap());
    assert!(store.verify_tree(p).unwrap());
}

/// Marks a directory as the build before buckets left it (format 1, the same layout).
fn as_before_buckets(store: Store) {
    let mut wtxn = store.tables.write_txn().unwrap();
    store
        .tables
        .meta
        .put(&mut wtxn, meta::FORMAT, &1u32.to_be_bytes())
        .unwrap();
    wtxn.commit().unwrap();
    store.close();
}

#[test]
fn a_directory_from_before_buckets_serves_its_keys_as_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply_now(&[entry(b"a", 10, 1, Some(b"1")), entry(b"b", 11, 1, None)])
        .unwrap();
    as_before_buckets(store);
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    assert_eq!(
        store.get(b"a").unwrap().unwrap().payload,
        Payload::Value(b"1".to_vec())
    );
    assert!(store.get(b"b").unwrap().unwrap().payload.is_tombstone());
    assert!(store.catalog().unwrap().get("default").is_some());
    for p in 0..CLUSTER.partitions {
        assert!(store.verify_tree(p).unwrap());
    }
    store.close();
    // Taken as format 2 for good.
    let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
    let rtxn = store.tables.read_txn().unwrap();
    let format = store.tables.meta.get(&rtxn, meta::FORMAT).unwrap().unwrap();
    assert_eq!(format, FORMAT_VERSION.to_be_bytes());
}

#[test]
fn a_directory_from_before_buckets_with_a_key_like_a_buckets_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut odd = crate::buckets::BUCKET_KEY_PREFIX.to_vec();
    odd.extend_from_slice(b"\x00\x00\x00\x07k");
    store.apply_now(&[entry(&odd, 10, 1, Some(b"1"))]).unwrap();
    as_before_buckets(store);
    let Err(err) = Store::open(dir.path(), StoreOptions::new("n1")) else {
        panic!("a key like a bucket's is refused");
    };
    let text = err.to_string();
    assert!(text.contains("1 keys that start with the bytes"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
}
