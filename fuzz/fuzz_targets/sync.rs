//! Anti-entropy as a peer drives it: any bytes as a request to a real store's
//! responder, and as an answer to a real exchange. Nothing may panic, every answer must
//! fit in the frame limit, and only entries that obey the limits may come out of an
//! exchange to be applied.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vergent::antientropy::exchange::{Exchange, root_summary};
use vergent::antientropy::messages::{DifferingRoot, SyncLimits, SyncRequest, SyncResponse};
use vergent::antientropy::respond::{check_entries, respond};
use vergent::hlc::Timestamp;
use vergent::limits::frame_bytes_max;
use vergent::protocol::{Response, frame};
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::storage::{ClusterSettings, Store, StoreOptions};

const LIMITS: SyncLimits = SyncLimits {
    value_bytes_max: 4096,
};
const PARTITIONS: u16 = 4;

/// Two replicas that differ, opened once: the requester `a` and the responder `b`.
struct Replicas {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    a: Store,
    b: Store,
    differing: Vec<DifferingRoot>,
}

fn store(dir: &std::path::Path, entries: &[Entry]) -> Store {
    let store = Store::open(dir, StoreOptions::new("fuzz")).expect("open");
    store
        .set_cluster(ClusterSettings {
            cluster_id: [1; 16],
            partitions: PARTITIONS,
            replication_factor: 3,
            tree_key: [2; 32],
        })
        .expect("cluster");
    store.apply_now(entries).expect("apply");
    store
}

fn entry(i: u64, size: usize) -> Entry {
    Entry {
        key: format!("key-{i}").into_bytes(),
        record: Record {
            version: Version {
                hlc: Timestamp::from_u64(100 + i),
                node: NodeId(1),
            },
            payload: if i % 9 == 0 {
                Payload::Tombstone
            } else {
                Payload::Value(vec![i as u8; size])
            },
        },
    }
}

fn replicas() -> &'static Replicas {
    static REPLICAS: OnceLock<Replicas> = OnceLock::new();
    REPLICAS.get_or_init(|| {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let few: Vec<Entry> = (0..40).map(|i| entry(i, 8)).collect();
        let many: Vec<Entry> = (0..400)
            .map(|i| entry(i, if i % 50 == 0 { 4096 } else { 16 }))
            .collect();
        let a = store(dirs.0.path(), &few);
        let b = store(dirs.1.path(), &many);
        let roots = (0..PARTITIONS)
            .map(|p| root_summary(&a, p, 7).unwrap())
            .collect();
        let Ok(SyncResponse::Roots { differing }) =
            respond(&b, &SyncRequest::Roots { salt: 7, roots }, &LIMITS)
        else {
            panic!("the roots round of two real stores failed");
        };
        Replicas {
            _dirs: dirs,
            a,
            b,
            differing,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let replicas = replicas();
    if let Ok(request) = frame::decode::<SyncRequest>(data)
        && let Ok(answer) = respond(&replicas.b, &request, &LIMITS)
    {
        let framed = frame::encode(&Response::Sync(answer), usize::MAX).unwrap();
        assert!(framed.len() <= frame_bytes_max(LIMITS.value_bytes_max));
    }
    if let Ok(answer) = frame::decode::<SyncResponse>(data) {
        for root in &replicas.differing {
            let Ok(mut exchange) = Exchange::new(&replicas.a, root, 7, 0, false, LIMITS) else {
                continue;
            };
            if exchange.poll_request(&replicas.a).is_none() {
                continue;
            }
            exchange.handle_response(&replicas.a, answer.clone());
            while let Some(entries) = exchange.poll_apply() {
                assert!(check_entries(&entries, &LIMITS).is_ok());
            }
            let _ = exchange.poll_request(&replicas.a);
        }
    }
});
