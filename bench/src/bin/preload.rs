//! Loads the same N keys straight into replicas, as a node's replication would: one
//! `Replicate` batch after another with a node certificate, every replica given the
//! same versions. A fast way to a node holding a million keys, for the refill benchmark.
//!
//!     preload --nodes 127.0.0.1:7401,127.0.0.1:7402 --certs DIR --as loader --keys 1000000

use std::time::{Duration, Instant};

use vergent::client::Client;
use vergent::hlc::Timestamp;
use vergent::net::TlsMaterial;
use vergent::protocol::{Request, Response};
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent_bench::{OrExit, arg, arg_string};

#[tokio::main]
async fn main() {
    let nodes = arg_string("--nodes", "127.0.0.1:7401");
    let certs = arg_string("--certs", "certs");
    let name = arg_string("--as", "loader");
    let keys: u64 = arg("--keys", 1_000_000);
    let value_bytes: usize = arg("--value-bytes", 100);
    let batch: u64 = arg("--batch", 2_000);
    let material =
        TlsMaterial::load(std::path::Path::new(&certs), &name).or_exit("the node certificate");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .or_exit("the clock")
        .as_millis() as u64
        - 60_000;
    let value = vec![b'v'; value_bytes];
    let started = Instant::now();
    for node in nodes.split(',') {
        let mut client = Client::connect(node, &material).await.or_exit("connecting");
        client.set_request_timeout(Duration::from_secs(60));
        let mut next = 0u64;
        while next < keys {
            let end = (next + batch).min(keys);
            let entries: Vec<Entry> = (next..end)
                .map(|i| Entry {
                    key: format!("key-{i:08}").into_bytes(),
                    record: Record {
                        version: Version {
                            hlc: Timestamp::new(wall, (i % 60_000) as u16),
                            node: NodeId::from_name(&name),
                        },
                        payload: Payload::Value(value.clone()),
                        expires_ms: None,
                    },
                })
                .collect();
            match client
                .request(&Request::Replicate { entries })
                .await
                .or_exit("replicating")
            {
                Response::Replicated { .. } => {}
                other => {
                    eprintln!("error: unexpected answer {other:?}");
                    std::process::exit(2);
                }
            }
            next = end;
        }
        client.close().await;
    }
    eprintln!(
        "preloaded {keys} keys of {value_bytes} bytes into {} in {:.1} s",
        nodes,
        started.elapsed().as_secs_f64()
    );
}
