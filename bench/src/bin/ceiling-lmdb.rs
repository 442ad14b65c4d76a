//! The storage ceiling: raw heed inserts of the same records Vergent stores (a 100-byte
//! value with its 17-byte version header under a partition-prefixed key), durable (LMDB's
//! default fsync at commit), `--batch` records per transaction from one thread.
//!
//!     ceiling-lmdb --seconds 5 --batch 1000 [--dir DIR]

use std::time::{Duration, Instant};

use heed::EnvOpenOptions;
use heed::types::Bytes;
use vergent_bench::{Latencies, OrExit, arg, arg_string};

fn main() {
    let seconds: u64 = arg("--seconds", 5);
    let batch: usize = arg("--batch", 1000);
    let dir = arg_string("--dir", "");
    let temp = tempfile::tempdir().or_exit("creating a temporary directory");
    let path = if dir.is_empty() {
        temp.path().to_path_buf()
    } else {
        dir.into()
    };
    std::fs::create_dir_all(&path).or_exit("creating the data directory");
    let mut options = EnvOpenOptions::new();
    options.map_size(16 << 30).max_dbs(2);
    // SAFETY: a fresh directory this program owns; nothing else maps it.
    #[allow(unsafe_code)]
    let env = unsafe { options.open(&path) }.or_exit("opening LMDB");
    let mut wtxn = env.write_txn().or_exit("starting a write transaction");
    let db: heed::Database<Bytes, Bytes> = env
        .create_database(&mut wtxn, Some("data"))
        .or_exit("creating the table");
    wtxn.commit().or_exit("committing");
    let mut value = vec![0u8; 17];
    value.extend_from_slice(&[b'x'; 100]);
    let started = Instant::now();
    let mut latencies = Latencies::default();
    let mut i: u64 = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        let began = Instant::now();
        let mut wtxn = env.write_txn().or_exit("starting a write transaction");
        for _ in 0..batch {
            let key = format!("\0\0\0\0bench-{:012}", i % 100_000);
            db.put(&mut wtxn, key.as_bytes(), &value)
                .or_exit("writing a record");
            i += 1;
        }
        wtxn.commit().or_exit("committing");
        let took = began.elapsed();
        for _ in 0..batch {
            latencies.record(took);
        }
    }
    println!("{}", latencies.report(started, 1));
}
