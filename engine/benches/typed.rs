//! Typed values on disk and in anti-entropy, beside a lww value of the same size class:
//! bytes of the `data` table per key for N keys (default 100,000) of each kind, and the
//! bytes an exchange moves per differing key when d of them (default 1,000) changed on
//! one replica.
//!
//!     cargo bench -p vergent --bench typed        # VERGENT_BENCH_KEYS=N, VERGENT_BENCH_DIFF=d
//!
//! The shapes: a lww value of 100 bytes; a counter incremented by three actors; a set of
//! five 8-byte members added by two actors; siblings of two 100-byte values written
//! concurrently by two actors. Typed values are made by `Store::update_now`, as an actor
//! makes them; an exchange sends a differing typed key both ways (it merges), a lww
//! key one way.

use vergent::antientropy::local::reconcile;
use vergent::hlc::Timestamp;
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::storage::{ClusterSettings, Store, StoreOptions};
use vergent::types::{Change, Context};

const SETTINGS: ClusterSettings = ClusterSettings {
    cluster_id: [1; 16],
    partitions: 256,
    replication_factor: 3,
    tree_key: [7; 32],
};

#[derive(Clone, Copy)]
enum Shape {
    Lww,
    Counter,
    Set,
    Siblings,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Lww => "lww 100 B",
            Shape::Counter => "counter, 3 actors",
            Shape::Set => "set, 5 x 8 B",
            Shape::Siblings => "siblings, 2 x 100 B",
        }
    }
}

fn store(dir: &std::path::Path) -> Store {
    let mut options = StoreOptions::new("bench");
    options.durable = false;
    let store = Store::open(dir, options).expect("open store");
    store.set_cluster(SETTINGS).expect("cluster");
    store
}

/// Writes key `i` of `shape` at time `t` (ms); `round` varies the content.
fn write(store: &Store, shape: Shape, i: u64, t: u64, round: u64) {
    let key = format!("key-{i:08}").into_bytes();
    let at = |n: u64| Timestamp::new(t, n as u16);
    match shape {
        Shape::Lww => {
            let entry = Entry {
                key,
                record: Record {
                    version: Version {
                        hlc: at(round),
                        node: NodeId(1),
                    },
                    payload: Payload::Value(vec![b'v'; 100]),
                    expires_ms: None,
                },
            };
            store.apply_now(&[entry]).expect("apply");
        }
        Shape::Counter => {
            for actor in 1..=3 {
                let change = Change::Incr(1 + round as i64);
                store
                    .update_now(&key, &change, actor, at(actor + 3 * round), None)
                    .expect("incr");
            }
        }
        Shape::Set => {
            for m in 0..5u64 {
                let member = format!("member{m}{}", round % 10).into_bytes();
                let change = Change::Add(vec![member]);
                store
                    .update_now(&key, &change, 1 + m % 2, at(m + 5 * round), None)
                    .expect("sadd");
            }
        }
        Shape::Siblings => {
            for actor in 1..=2 {
                let change = Change::Put {
                    value: Some(vec![b'a' + round as u8; 100]),
                    context: Context::default(),
                };
                store
                    .update_now(&key, &change, actor, at(actor + 2 * round), None)
                    .expect("put");
            }
        }
    }
}

fn main() {
    let keys: u64 = std::env::var("VERGENT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let diff: u64 = std::env::var("VERGENT_BENCH_DIFF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    println!(
        "{keys} keys of each kind; {diff} of them changed on one of two replicas before an exchange"
    );
    println!(
        "{:<20} {:>12} {:>10} {:>16} {:>16} {:>10}",
        "kind", "disk B/key", "vs lww", "AE entry B/key", "AE total B/key", "in sync"
    );
    let mut lww_bytes = 0.0;
    for shape in [Shape::Lww, Shape::Counter, Shape::Set, Shape::Siblings] {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (store(da.path()), store(db.path()));
        for i in 0..keys {
            write(&a, shape, i, 1_000_000, 0);
        }
        // The replica starts as a copy, made by an exchange.
        reconcile(&a, &b, 1, 0, false).expect("copy");
        let (data, _) = a.table_sizes().expect("sizes");
        let per_key = data.bytes as f64 / keys as f64;
        if matches!(shape, Shape::Lww) {
            lww_bytes = per_key;
        }
        for i in 0..diff {
            write(&a, shape, i * (keys / diff.max(1)).max(1), 2_000_000, 1);
        }
        let run = reconcile(&a, &b, 2, 0, false).expect("reconcile");
        let c = &run.counts;
        let in_sync =
            (0..SETTINGS.partitions).all(|p| a.tree_root(p).unwrap() == b.tree_root(p).unwrap());
        let entries = (c.entry_bytes_sent + c.entry_bytes_received) as f64 / diff as f64;
        let total = (c.entry_bytes_sent
            + c.entry_bytes_received
            + c.metadata_bytes_sent
            + c.metadata_bytes_received) as f64
            / diff as f64;
        println!(
            "{:<20} {:>12.1} {:>9.2}x {:>16.1} {:>16.1} {:>10}",
            shape.name(),
            per_key,
            per_key / lww_bytes,
            entries,
            total,
            if in_sync { "yes" } else { "NO" }
        );
        a.close();
        b.close();
    }
}
