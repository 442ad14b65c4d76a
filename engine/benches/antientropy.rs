//! Anti-entropy figures: for two replicas of N keys (default 1,000,000) differing in d
//! keys, d in {0, 1, 1000, 100000}: time to converge, round trips, bytes on the wire
//! (tree metadata and entries apart), over-streaming. Then the write throughput with
//! and without tree maintenance, measured in one run, and the tree's size per key.
//!
//!     cargo bench -p vergent --bench antientropy            # VERGENT_BENCH_KEYS=N to change N
//!
//! The exchange runs in one process through the same state machine and responder as
//! over the network; bytes are the exact encoded sizes of the messages (plus the
//! 4-byte frame prefix), so the transport's time is left out of "time to converge".

use std::sync::Arc;
use std::time::{Duration, Instant};

use vergent::antientropy::local::reconcile;
use vergent::antientropy::tree::{INNER_NODES, Node};
use vergent::hlc::Timestamp;
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::storage::{ClusterSettings, Store, StoreOptions};

const SETTINGS: ClusterSettings = ClusterSettings {
    cluster_id: [1; 16],
    partitions: 256,
    replication_factor: 3,
    tree_key: [7; 32],
};

fn store(dir: &std::path::Path, durable: bool, maintain_tree: bool) -> Store {
    let mut options = StoreOptions::new("bench");
    options.durable = durable;
    options.maintain_tree = maintain_tree;
    let store = Store::open(dir, options).expect("open store");
    store.set_cluster(SETTINGS).expect("cluster");
    store
}

fn entry(key: String, hlc: u64) -> Entry {
    Entry {
        key: key.into_bytes(),
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(hlc),
                node: NodeId(1),
            },
            payload: Payload::Value(vec![b'v'; 100]),
            expires_ms: None,
        },
    }
}

fn load(store: &Store, entries: impl Iterator<Item = Entry>) {
    let mut batch = Vec::with_capacity(10_000);
    for e in entries {
        batch.push(e);
        if batch.len() == 10_000 {
            store.apply_now(&batch).expect("load");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.apply_now(&batch).expect("load");
    }
}

fn main() {
    let n: u32 = std::env::var("VERGENT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(da.path(), false, true), store(db.path(), false, true));
    let started = Instant::now();
    load(&a, (0..n).map(|i| entry(format!("key-{i}"), 1_000)));
    load(&b, (0..n).map(|i| entry(format!("key-{i}"), 1_000)));
    println!(
        "loaded {n} keys into each of two replicas in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{:>8} {:>10} {:>8} {:>7} {:>12} {:>12} {:>12} {:>10} {:>9} {:>8}",
        "d",
        "converge",
        "requests",
        "rounds",
        "meta sent",
        "meta recv",
        "entries",
        "meta/key",
        "over-str",
        "in sync"
    );
    for (salt, d) in (1u64..).zip([0u32, 1, 1_000, 100_000]) {
        // A third missing on b, a third newer on a (stale on b), a third only on b.
        let third = d / 3;
        let missing = (0..third).map(|i| entry(format!("missing-{d}-{i}"), 2_000));
        let stale = (0..third).map(|i| entry(format!("key-{}", i * 7 + d), 3_000 + u64::from(d)));
        let extra = (0..d - 2 * third).map(|i| entry(format!("extra-{d}-{i}"), 2_000));
        load(&a, missing);
        load(&a, stale);
        load(&b, extra);
        let started = Instant::now();
        let run = reconcile(&a, &b, salt, 0, false).expect("reconcile");
        let took = started.elapsed();
        let c = &run.counts;
        let in_sync =
            (0..SETTINGS.partitions).all(|p| a.tree_root(p).unwrap() == b.tree_root(p).unwrap());
        let meta = c.metadata_bytes_sent + c.metadata_bytes_received;
        println!(
            "{:>8} {:>8.1}ms {:>8} {:>7} {:>12} {:>12} {:>12} {:>10} {:>9} {:>8}",
            d,
            took.as_secs_f64() * 1000.0,
            c.round_trips,
            run.sequential_rounds,
            c.metadata_bytes_sent,
            c.metadata_bytes_received,
            c.entry_bytes_sent + c.entry_bytes_received,
            if d == 0 {
                format!("{:.1}/part", meta as f64 / 256.0)
            } else {
                format!("{:.1}", meta as f64 / f64::from(d))
            },
            if d == 0 {
                "-".to_string()
            } else {
                format!("{:.2}", c.over_streaming())
            },
            if in_sync { "yes" } else { "NO" },
        );
    }

    let (data, tree) = a.table_sizes().unwrap();
    let keys = data.entries as f64;
    let memory = 256 * INNER_NODES * std::mem::size_of::<Node>();
    println!(
        "\ntree size: {:.1} bytes/key on disk ({} leaves, {:.1} MiB; data table {:.1} MiB), {:.2} bytes/key in memory ({:.1} MiB for 256 partitions)",
        tree.bytes as f64 / keys,
        tree.entries,
        tree.bytes as f64 / 1_048_576.0,
        data.bytes as f64 / 1_048_576.0,
        memory as f64 / keys,
        memory as f64 / 1_048_576.0
    );
    drop((a, b));

    // Write throughput with and without tree maintenance, interleaved, durable, with
    // 64 concurrent writers sharing group commits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut with_tree = Vec::new();
    let mut without_tree = Vec::new();
    for round in 0..5 {
        for maintain in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let durable = std::env::var("VERGENT_BENCH_NOSYNC").is_err();
            let store = Arc::new(store(dir.path(), durable, maintain));
            let rate = runtime.block_on(write_rate(store.clone(), Duration::from_secs(3), round));
            if maintain {
                with_tree.push(rate);
            } else {
                without_tree.push(rate);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (w, wo) = (median(&mut with_tree), median(&mut without_tree));
    println!(
        "write throughput, durable, 64 writers, medians of 5 x 3 s: with tree {w:.0}/s, without {wo:.0}/s, cost {:.1}%",
        (1.0 - w / wo) * 100.0
    );
}

async fn write_rate(store: Arc<Store>, duration: Duration, round: u32) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..64u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < duration {
                let key = format!("w{round}-{writer}-{done}");
                store
                    .apply(vec![entry(key, 5_000 + done)])
                    .await
                    .expect("write");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}
