//! The storage ceiling: raw heed inserts of the same records Vergent stores (a 100-byte
//! value with its 17-byte version header under a partition-prefixed key), durable (LMDB's
//! default fsync at commit), `--batch` records per transaction from one thread.
//!
//!     ceiling-lmdb --seconds 5 --batch 1000 [--dir DIR]

use std::time::{Duration, Instant};

use heed::EnvOpenOptions;
use heed::types::Bytes;
use vergent_bench::{Latencies, arg, arg_string};

fn main() {
    let seconds: u64 = arg("--seconds", 5);
    let batch: usize = arg("--batch", 1000);
    let dir = arg_string("--dir", "");
    let temp = tempfile::tempdir().expect("temp dir");
    let path = if dir.is_empty() {
        temp.path().to_path_buf()
    } else {
        dir.into()
    };
    std::fs::create_dir_all(&path).expect("dir");
    let mut options = EnvOpenOptions::new();
    options.map_size(16 << 30).max_dbs(2);
    // SAFETY: a fresh directory this program owns; nothing else maps it.
    #[allow(unsafe_code)]
    let env = unsafe { options.open(&path) }.expect("open");
    let mut wtxn = env.write_txn().unwrap();
    let db: heed::Database<Bytes, Bytes> = env.create_database(&mut wtxn, Some("data")).unwrap();
    wtxn.commit().unwrap();
    let mut value = vec![0u8; 17];
    value.extend_from_slice(&[b'x'; 100]);
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let mut i: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let began = Instant::now();
        let mut wtxn = env.write_txn().unwrap();
        for _ in 0..batch {
            let key = format!("\0\0\0\0bench-{:012}", i % 100_000);
            db.put(&mut wtxn, key.as_bytes(), &value).unwrap();
            i += 1;
        }
        wtxn.commit().unwrap();
        let took = began.elapsed();
        for _ in 0..batch {
            latencies.record(took);
        }
    }
    println!("{}", latencies.report(started, 1));
}
