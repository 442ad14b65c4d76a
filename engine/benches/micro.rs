//! Micro-benchmarks of the hot paths: the HLC tick, the stored record's encoding,
//! a Merkle leaf update, a diff of two 1M-key trees that differ by one key, and the
//! frame codec.
//!
//!     cargo bench -p vergent --bench micro

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vergent::antientropy::local::reconcile;
use vergent::antientropy::tree::{Delta, InnerTree, entry_hash};
use vergent::hlc::{Clock, Timestamp};
use vergent::protocol::frame;
use vergent::protocol::{Consistency, Request};
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::storage::{ClusterSettings, Store, StoreOptions};

fn record(hlc: u64) -> Record {
    Record {
        version: Version {
            hlc: Timestamp::from_u64(hlc),
            node: NodeId(7),
        },
        payload: Payload::Value(vec![b'x'; 100]),
        expires_ms: None,
    }
}

fn hlc(c: &mut Criterion) {
    let mut clock = Clock::new(500);
    let mut wall = 1_800_000_000_000u64;
    c.bench_function("hlc tick", |b| {
        b.iter(|| {
            wall += 1;
            black_box(clock.tick(black_box(wall)))
        })
    });
    let mut clock = Clock::new(500);
    c.bench_function("hlc observe", |b| {
        b.iter(|| {
            black_box(clock.observe(
                black_box(Timestamp::new(1_800_000_000_000, 3)),
                1_800_000_000_100,
            ))
        })
    });
}

fn records(c: &mut Criterion) {
    let r = record(42);
    c.bench_function("record encode (100-byte value)", |b| {
        b.iter(|| black_box(r.encode()))
    });
    let bytes = r.encode();
    c.bench_function("record decode (100-byte value)", |b| {
        b.iter(|| black_box(Record::decode(black_box(&bytes))))
    });
}

fn merkle(c: &mut Criterion) {
    let key = [3u8; 32];
    let r = record(42);
    c.bench_function("merkle entry hash", |b| {
        b.iter(|| black_box(entry_hash(&key, b"bench-000000001234", &r)))
    });
    let mut tree = InnerTree::default();
    let delta = Delta {
        digest_added: entry_hash(&key, b"a", &r),
        ..Delta::default()
    };
    let mut leaf = 0u16;
    c.bench_function("merkle leaf update (path of 3 inner nodes)", |b| {
        b.iter(|| {
            leaf = leaf.wrapping_add(97) % 4096;
            tree.apply(black_box(leaf), &delta);
        })
    });
}

fn diff(c: &mut Criterion) {
    let keys: u32 = std::env::var("VERGENT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let settings = ClusterSettings {
        cluster_id: [1; 16],
        partitions: 256,
        replication_factor: 3,
        tree_key: [2; 32],
    };
    let open = |dir: &std::path::Path| {
        let mut options = StoreOptions::new("bench");
        options.durable = false;
        let store = Store::open(dir, options).unwrap();
        store.set_cluster(settings).unwrap();
        store
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path()), open(db.path()));
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        let entries: Vec<Entry> = chunk
            .iter()
            .map(|i| Entry {
                key: format!("key-{i}").into_bytes(),
                record: record(1_000),
            })
            .collect();
        a.apply_now(&entries).unwrap();
        b.apply_now(&entries).unwrap();
    }
    b.apply_now(&[Entry {
        key: b"the-one-difference".to_vec(),
        record: record(2_000),
    }])
    .unwrap();
    let mut salt = 0;
    c.bench_function(
        &format!("diff of two {keys}-key trees differing by one key (dry run)"),
        |bench| {
            bench.iter(|| {
                salt += 1;
                let run = reconcile(&a, &b, salt, 0, true).unwrap();
                assert_eq!(run.counts.keys_differing, 1);
            })
        },
    );
}

fn codec(c: &mut Criterion) {
    let request = Request::Put {
        key: b"bench-000000001234".to_vec(),
        value: vec![b'x'; 100],
        consistency: Some(Consistency::Quorum),
        after: None,
    };
    c.bench_function("frame encode (put, 100-byte value)", |b| {
        b.iter(|| black_box(frame::encode(black_box(&request), 1 << 20).unwrap()))
    });
    let bytes = frame::encode(&request, 1 << 20).unwrap();
    c.bench_function("frame decode (put, 100-byte value)", |b| {
        b.iter_batched(
            || bytes.clone(),
            |bytes| black_box(frame::decode_frame::<Request>(&bytes, 1 << 20).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, hlc, records, merkle, codec, diff);
criterion_main!(benches);
