//! Clients of a linearizable bucket for process tests: each does puts, reads and
//! compare-and-sets on a few keys through random nodes and records every operation's
//! call and return; the recorded history of each key is then judged by the external
//! checker (see `lincheck`). An operation that failed or timed out is recorded with
//! its outcome unknown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use vergent::client::{Cas, Read};
use vergent::paxos::Expect;

use super::TestCerts;
use super::lincheck::{LinOp, Timed, linearizable};

/// Every operation recorded, with its key's index.
pub type History = Arc<Mutex<Vec<(usize, Timed)>>>;

/// The bucket the clients use.
pub const BUCKET: &str = "locks";

fn key_name(key: usize) -> String {
    format!("k{key}")
}

/// Starts `clients` clients on `keys` keys, through the nodes at `addrs`, until
/// `run_for` after `start`.
pub async fn spawn(
    certs: &TestCerts,
    addrs: &[SocketAddr],
    keys: usize,
    clients: u64,
    start: Instant,
    run_for: Duration,
    history: &History,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for c in 0..clients {
        let mut conns = Vec::new();
        for addr in addrs {
            conns.push(certs.client(*addr).await);
        }
        let history = history.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(c);
            let mut seen: Vec<Option<Vec<u8>>> = vec![None; keys];
            let mut n = 0;
            while start.elapsed() < run_for {
                n += 1;
                let key = rng.random_range(0..keys);
                let name = key_name(key);
                let conn = &conns[rng.random_range(0..conns.len())];
                let value = format!("c{c}-{n}").into_bytes();
                let called = start.elapsed().as_micros() as u64;
                let limit = Duration::from_secs(3);
                let (op, returned) = match rng.random_range(0..10) {
                    0..=3 => {
                        let done = tokio::time::timeout(
                            limit,
                            conn.write(BUCKET, name.as_bytes(), Some(&value), None, None, None),
                        )
                        .await;
                        let ok = matches!(done, Ok(Ok(_)));
                        if ok {
                            seen[key] = Some(value.clone());
                        }
                        (LinOp::Put(Some(value)), ok)
                    }
                    4..=6 => {
                        match tokio::time::timeout(limit, conn.read(BUCKET, name.as_bytes(), None))
                            .await
                        {
                            Ok(Ok(Read::Value(found))) => {
                                let found = found.map(|(v, _)| v);
                                seen[key] = found.clone();
                                (LinOp::Get(found), true)
                            }
                            _ => (LinOp::Get(None), false),
                        }
                    }
                    _ => {
                        let expect = seen[key].clone();
                        let want = match &expect {
                            Some(v) => Expect::Value(v.clone()),
                            None => Expect::Absent,
                        };
                        let done = tokio::time::timeout(
                            limit,
                            conn.cas(BUCKET, name.as_bytes(), want, Some(&value)),
                        )
                        .await;
                        let result = match done {
                            Ok(Ok(Cas::Swapped(_))) => {
                                seen[key] = Some(value.clone());
                                Some(Ok(()))
                            }
                            Ok(Ok(Cas::NotSwapped(found))) => {
                                let found = found.map(|(v, _)| v);
                                seen[key] = found.clone();
                                Some(Err(found))
                            }
                            _ => None,
                        };
                        let known = result.is_some();
                        (
                            LinOp::Cas {
                                expect,
                                value,
                                result,
                            },
                            known,
                        )
                    }
                };
                let returned = returned.then(|| start.elapsed().as_micros() as u64);
                history.lock().unwrap().push((
                    key,
                    Timed {
                        called,
                        returned,
                        op,
                    },
                ));
            }
        }));
    }
    handles
}

/// The final word on each key, read through the node at `addr`, added to the history:
/// whatever was acknowledged must show there.
pub async fn final_reads(
    certs: &TestCerts,
    addr: SocketAddr,
    keys: usize,
    start: Instant,
    history: &History,
) {
    let last = certs.client(addr).await;
    for key in 0..keys {
        let called = start.elapsed().as_micros() as u64;
        let name = key_name(key);
        let found = match last.read(BUCKET, name.as_bytes(), None).await.unwrap() {
            Read::Value(found) => found.map(|(v, _)| v),
            other => panic!("{other:?}"),
        };
        let returned = Some(start.elapsed().as_micros() as u64);
        history.lock().unwrap().push((
            key,
            Timed {
                called,
                returned,
                op: LinOp::Get(found),
            },
        ));
    }
}

/// Judges every key's history; panics with the first one that is not linearizable.
/// Returns how many operations were judged, and how many of them ended unknown.
pub fn judge(history: &History, keys: usize) -> (usize, usize) {
    let history = history.lock().unwrap().clone();
    let mut judged = 0;
    for key in 0..keys {
        let ops: Vec<Timed> = history
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, t)| t.clone())
            .collect();
        judged += ops.len();
        if let Err(lines) = linearizable(&ops) {
            panic!("the history of k{key} is not linearizable (times in µs):\n  {lines}");
        }
    }
    let unknown = history.iter().filter(|(_, t)| t.returned.is_none()).count();
    (judged, unknown)
}
