//! Resource abuse: one client opening very many connections or streams, never reading
//! its answers, or trickling a frame a byte at a time. The node bounds each, and every
//! other client keeps being served.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{ServeProcess, TestCerts, start_node};
use vergent::certs::LeafSpec;
use vergent::client::Client;
use vergent::node::Node;
use vergent::protocol::frame;
use vergent::protocol::{ErrorCode, Request, Response, Role};

/// The well-behaved client: a put and a get, each well within a second.
async fn served(certs: &TestCerts, node: &Node) {
    let client = certs.client(node.local_addr()).await;
    let started = Instant::now();
    client.put(b"polite", b"yes", None).await.expect("served");
    assert_eq!(
        client.get(b"polite", None).await.unwrap().unwrap().0,
        b"yes"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow: {:?}",
        started.elapsed()
    );
    client.close().await;
}

fn mallory(certs: &TestCerts) {
    certs.issue(&LeafSpec::new("mallory", Role::Client, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_too_many_connections_is_refused_past_its_share() {
    let certs = TestCerts::new(&["n1"]);
    mallory(&certs);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |c| {
        c.connections_per_identity_max = 16
    })
    .await;
    let addr = node.local_addr().to_string();
    let material = certs.material("mallory");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match Client::connect(&addr, &material).await {
            Ok(c) => held.push(c),
            Err(err) => {
                assert!(
                    err.to_string()
                        .contains("too many connections for \"mallory\": the limit is 16"),
                    "{err}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (16, 24));
    served(&certs, &node).await;
    drop(held);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_trickled_frames_and_unread_answers_cost_only_their_sender() {
    let certs = TestCerts::new(&["n1"]);
    mallory(&certs);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |c| {
        c.request_timeout = Duration::from_secs(1)
    })
    .await;
    let mal = Client::connect(&node.local_addr().to_string(), &certs.material("mallory"))
        .await
        .unwrap();
    let connection = mal.connection().clone();

    // Very many streams that never send a request: QUIC's stream credit bounds them.
    let mut idle = Vec::new();
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(200), connection.open_bi()).await {
            Ok(Ok((mut send, recv))) => {
                send.write_all(&[0]).await.unwrap();
                idle.push((send, recv));
            }
            _ => break,
        }
    }
    assert!(idle.len() >= 100, "opened {}", idle.len());
    served(&certs, &node).await;

    // A frame trickled a byte every 250 ms: the request time limit ends it.
    let trickle = tokio::spawn({
        let connection = connection.clone();
        async move {
            let (mut send, mut recv) = connection.open_bi().await?;
            let frame = frame::encode(
                &Request::Get {
                    key: b"k".to_vec(),
                    consistency: None,
                    after: None,
                },
                1024,
            )
            .unwrap();
            for byte in frame {
                if send.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let answer = frame::read_message::<Response, _>(&mut recv, 1 << 20).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(answer)
        }
    });
    served(&certs, &node).await;
    match trickle.await.unwrap() {
        Ok(Response::Error(reply)) => {
            assert_eq!(reply.code, ErrorCode::Timeout);
            assert!(
                reply.message.contains("within 1000 ms"),
                "{}",
                reply.message
            );
        }
        other => panic!("the trickled request must time out, got {other:?}"),
    }

    // Answers never read: large values requested again and again, nothing read back.
    let admin = certs.client(node.local_addr()).await;
    admin
        .put(b"big", &vec![7u8; 512 << 10], None)
        .await
        .unwrap();
    let mut unread = Vec::new();
    for _ in 0..40 {
        if let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(Duration::from_millis(200), connection.open_bi()).await
        {
            let frame = frame::encode(
                &Request::Get {
                    key: b"big".to_vec(),
                    consistency: None,
                    after: None,
                },
                1024,
            )
            .unwrap();
            send.write_all(&frame).await.unwrap();
            let _ = send.finish();
            unread.push(recv);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    served(&certs, &node).await;
    admin.close().await;
    drop((idle, unread));
    mal.close().await;
    let started = Instant::now();
    node.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown waited {:?}",
        started.elapsed()
    );
}

/// Frames that announce huge lengths allocate nothing: the process stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_announcing_huge_lengths_allocate_nothing() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let client = Arc::new(certs.client(node.addr).await);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let connection = client.connection().clone();
        tasks.push(tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3])
                .await
                .unwrap();
            frame::read_message::<Response, _>(&mut recv, 1 << 20)
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            Response::Error(reply) => assert_eq!(reply.code, ErrorCode::LimitExceeded),
            other => panic!("{other:?}"),
        }
    }
    let after = rss();
    assert!(
        after < before + (64 << 20),
        "RSS grew from {before} to {after} bytes"
    );
    client.put(b"k", b"v", None).await.unwrap();
}
