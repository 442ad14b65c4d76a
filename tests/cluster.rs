//! In-process clusters over real QUIC on loopback: replication at each consistency
//! level, a dead replica and its hints, joins, read repair, refused joins.

mod support;

use std::time::{Duration, Instant};

use support::{
    TestCerts, converged, eventually, eventually_async, replica_record, start_cluster, start_node,
};
use vergent::client::Client;
use vergent::hlc::Timestamp;
use vergent::membership::MemberState;
use vergent::node::{Node, NodeConfig};
use vergent::protocol::{Consistency, ErrorCode, Request, Response};
use vergent::record::{Entry, NodeId, Payload, Record, Version};
use vergent::wallclock::system_wall_ms;

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

async fn quorum_write_is_readable_at_quorum_everywhere(size: usize) {
    let names = &NAMES[..size];
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&certs, names, data.path(), |_| {}).await;
    let writer = certs.client(nodes[0].local_addr()).await;
    for i in 0..20 {
        let key = format!("key-{i}");
        writer
            .put(key.as_bytes(), b"value", Some(Consistency::Quorum))
            .await
            .unwrap();
    }
    for node in &nodes[1..] {
        let reader = certs.client(node.local_addr()).await;
        for i in 0..20 {
            let key = format!("key-{i}");
            let (value, version) = reader
                .get(key.as_bytes(), Some(Consistency::Quorum))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} missing on {}", node.name()));
            assert_eq!(value, b"value");
            assert_eq!(version.origin.as_deref(), Some("n1"));
        }
        reader.close().await;
    }
    // A write at `one` still reaches every replica, shortly after.
    let started = Instant::now();
    let version = writer
        .put(b"fast", b"1", Some(Consistency::One))
        .await
        .unwrap();
    let replicas = nodes[0].view().replicas_of(b"fast");
    assert_eq!(replicas.len(), size.min(3));
    for replica in &replicas {
        let node = nodes.iter().find(|n| n.name() == replica).unwrap();
        let addr = node.local_addr();
        let reached = eventually_async(Duration::from_secs(5), || async {
            replica_record(&certs, addr, b"fast")
                .await
                .map(|r| r.version)
                == Some(version.version)
        })
        .await;
        assert!(reached, "{replica} did not receive a write at one");
    }
    eprintln!(
        "a write at one reached all {} replicas within {:?}",
        replicas.len(),
        started.elapsed()
    );
    writer.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_a_quorum_write_is_readable_at_quorum_from_every_node() {
    quorum_write_is_readable_at_quorum_everywhere(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_a_quorum_write_is_readable_at_quorum_from_every_node() {
    quorum_write_is_readable_at_quorum_everywhere(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_gets_hints_and_catches_up_when_it_returns() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(&certs, &NAMES[..3], data.path(), |_| {}).await;
    let n3 = nodes.pop().unwrap();
    n3.shutdown().await;
    let client = certs.client(nodes[0].local_addr()).await;

    let mut written = Vec::new();
    for i in 0..30 {
        let key = format!("while-down-{i}");
        let version = client
            .put(key.as_bytes(), b"v", Some(Consistency::Quorum))
            .await
            .unwrap();
        written.push((key, version.version));
    }
    let err = client
        .put(b"all", b"v", Some(Consistency::All))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable));
    assert_eq!(
        err.to_string(),
        "unavailable: 2 of 3 replicas acknowledged, 3 required; the write may still be applied (n3: dead)"
    );
    // Hints are kept as soon as a replica is known to have missed a write, which can be
    // just after the client has its answer.
    let hinted = eventually_async(Duration::from_secs(10), || async {
        let status = client.status().await.unwrap();
        status
            .members
            .iter()
            .find(|m| m.name == "n1")
            .unwrap()
            .hints
            >= 31
    })
    .await;
    assert!(hinted, "n1 keeps a hint for every write n3 missed");

    // n3 comes back (a new port: its address is learned again through gossip).
    let n3 = start_node(&certs, "n3", data.path(), |config| {
        config.join = vec![nodes[0].local_addr().to_string()];
    })
    .await;
    let n3_addr = n3.local_addr();
    nodes.push(n3);
    let drained = eventually_async(Duration::from_secs(20), || async {
        let status = client.status().await.unwrap();
        status.members.iter().all(|m| m.hints == 0)
    })
    .await;
    assert!(drained, "hint backlog did not return to 0");
    for (key, version) in &written {
        let record = replica_record(&certs, n3_addr, key.as_bytes()).await;
        assert_eq!(record.map(|r| r.version), Some(*version), "{key} on n3");
    }
    assert!(
        replica_record(&certs, n3_addr, b"all").await.is_some(),
        "the failed `all` write was hinted too"
    );
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_makes_every_node_agree_on_membership_and_placement() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(&certs, &NAMES[..3], data.path(), |_| {}).await;
    let before = nodes[0].view().placement.digest();
    // Joining through a node other than the first one.
    let seed = nodes[2].local_addr().to_string();
    let n4 = start_node(&certs, "n4", data.path(), |config| config.join = vec![seed]).await;
    nodes.push(n4);
    let refs: Vec<&Node> = nodes.iter().collect();
    assert!(
        eventually(Duration::from_secs(20), || converged(&refs, &NAMES[..4])).await,
        "membership did not converge"
    );
    let after = nodes[0].view().placement.digest();
    assert_ne!(before, after, "placement includes the new node");
    for node in &nodes {
        assert_eq!(node.view().placement.members(), ["n1", "n2", "n3", "n4"]);
        assert_eq!(node.view().placement.digest(), after);
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_repairs_a_stale_replica() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    // Background anti-entropy, woken by the joins, would repair the stale replica too,
    // at a moment of its own: off, so what repairs it here is the read.
    let nodes = start_cluster(&certs, &NAMES[..3], data.path(), |config| {
        config.anti_entropy_interval = None;
    })
    .await;
    let client = certs.client(nodes[0].local_addr()).await;
    let old = client
        .put(b"k", b"old", Some(Consistency::All))
        .await
        .unwrap();

    // A newer version reaches n1 and n2 only, as if n3 had missed it.
    let newer = Entry {
        key: b"k".to_vec(),
        record: Record {
            version: Version {
                hlc: Timestamp::new(system_wall_ms(), 0),
                node: NodeId::from_name("n2"),
            },
            payload: Payload::Value(b"new".to_vec()),
            expires_ms: None,
        },
    };
    assert!(newer.record.version > old.version);
    for node in &nodes[..2] {
        let peer = Client::connect(&node.local_addr().to_string(), &certs.material("n-probe"))
            .await
            .unwrap();
        let answer = peer
            .request(&Request::Replicate {
                entries: vec![newer.clone()],
            })
            .await
            .unwrap();
        assert_eq!(answer, Response::Replicated { applied: 1 });
        peer.close().await;
    }
    let n3 = nodes[2].local_addr();
    assert_eq!(
        replica_record(&certs, n3, b"k").await.unwrap().version,
        old.version
    );

    let reader = certs.client(nodes[2].local_addr()).await;
    let (value, _) = reader
        .get(b"k", Some(Consistency::Quorum))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value, b"new");
    let repaired = eventually_async(Duration::from_secs(5), || async {
        replica_record(&certs, n3, b"k").await.map(|r| r.version) == Some(newer.record.version)
    })
    .await;
    assert!(repaired, "n3 was not repaired by the read");
    reader.close().await;
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_cannot_send_internode_messages() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    let client = certs.client(node.local_addr()).await;
    let me = node.view().members[0].id.clone();
    for request in [
        Request::ReadLocal { key: b"k".to_vec() },
        Request::Join {
            id: me,
            cluster: None,
            replace: None,
        },
        Request::Replicate { entries: vec![] },
    ] {
        let err = client.request(&request).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
        assert!(
            err.to_string().contains("requires a node certificate"),
            "{err}"
        );
    }
    client.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_from_another_ca_cannot_join() {
    let certs = TestCerts::new(&NAMES);
    let stranger = TestCerts::new(&["n9"]);
    let data = tempfile::tempdir().unwrap();
    let node = start_node(&certs, "n1", data.path(), |_| {}).await;
    let mut config = NodeConfig::new(
        "n9",
        "127.0.0.1:0".parse().unwrap(),
        data.path().join("n9"),
        stranger.path().to_path_buf(),
    );
    config.join = vec![node.local_addr().to_string()];
    config.join_attempts = 2;
    let err = Node::start(config)
        .await
        .err()
        .expect("a foreign node must not join");
    let message = err.to_string();
    assert!(message.contains("cannot join the cluster"), "{message}");
    assert!(message.contains("TLS"), "{message}");
    assert_eq!(node.view().members.len(), 1, "nobody joined");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_dead_address_or_something_else_fails_clearly_after_bounded_retries() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    // Something that is not Vergent: a UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    // A dead address: a port nothing listens on.
    let dead_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for seed in [silent_addr, dead_addr] {
        let started = Instant::now();
        let mut config = NodeConfig::new(
            "n1",
            "127.0.0.1:0".parse().unwrap(),
            data.path().join(format!("n1-{}", seed.port())),
            certs.path().to_path_buf(),
        );
        config.join = vec![seed.to_string()];
        config.join_attempts = 2;
        let err = Node::start(config)
            .await
            .err()
            .expect("joining nothing must fail");
        let message = err.to_string();
        assert!(
            message.contains(&format!("cannot join the cluster: {seed}")),
            "{message}"
        );
        assert!(message.contains("gave up after 2 attempts"), "{message}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_cluster_settings_or_data_is_refused() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    let n1 = start_node(&certs, "n1", data.path(), |_| {}).await;
    let seed = n1.local_addr().to_string();

    let mut config = NodeConfig::new(
        "n2",
        "127.0.0.1:0".parse().unwrap(),
        data.path().join("n2"),
        certs.path().to_path_buf(),
    );
    config.join = vec![seed.clone()];
    config.partitions = Some(64);
    let err = Node::start(config)
        .await
        .err()
        .expect("other partitions must be refused");
    assert!(
        err.to_string().contains("the cluster has 256 partitions"),
        "{err}"
    );

    // n3 created a cluster of its own, then tries to join n1's.
    let n3 = start_node(&certs, "n3", data.path(), |_| {}).await;
    n3.shutdown().await;
    let mut config = NodeConfig::new(
        "n3",
        "127.0.0.1:0".parse().unwrap(),
        data.path().join("n3"),
        certs.path().to_path_buf(),
    );
    config.join = vec![seed];
    let err = Node::start(config)
        .await
        .err()
        .expect("another cluster's data must be refused");
    assert!(err.to_string().contains("holds data of cluster"), "{err}");
    assert_eq!(n1.view().members.len(), 1);
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fewer_nodes_than_copies_every_node_holds_everything() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&certs, &NAMES[..2], data.path(), |_| {}).await;
    let client = certs.client(nodes[1].local_addr()).await;
    for i in 0..20 {
        client
            .put(format!("k{i}").as_bytes(), b"v", Some(Consistency::All))
            .await
            .unwrap();
    }
    for node in &nodes {
        for i in 0..20 {
            assert!(
                replica_record(&certs, node.local_addr(), format!("k{i}").as_bytes())
                    .await
                    .is_some()
            );
        }
        assert_eq!(node.view().placement.copies(), 2);
    }
    assert_eq!(nodes[0].view().count(MemberState::Alive), 2);
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_streams_a_peer_closed_for_idleness_are_reopened_without_failing_writes() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(300);
    let nodes = start_cluster(&certs, &NAMES[..3], data.path(), |config| {
        config.stream_idle_timeout = idle;
    })
    .await;
    let client = certs.client(nodes[0].local_addr()).await;
    for round in 0..4 {
        let key = format!("after-idle-{round}");
        let started = Instant::now();
        client
            .put(key.as_bytes(), b"v", Some(Consistency::All))
            .await
            .unwrap_or_else(|err| panic!("write {round} after an idle spell: {err}"));
        eprintln!("write {round} took {:?}", started.elapsed());
        // Idle past the peers' limit: the next write finds its replication streams
        // closed by the peers.
        tokio::time::sleep(idle * 3).await;
    }
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_map_refuses_writes_with_its_limit_and_keeps_serving() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let small = 2 << 20;
    let node = start_node(&certs, "n1", data.path(), |config| {
        config.map_size_bytes = small;
    })
    .await;
    let client = certs.client(node.local_addr()).await;
    let value = vec![b'x'; 16 << 10];
    let mut written = 0;
    let err = loop {
        match client
            .put(format!("k{written}").as_bytes(), &value, None)
            .await
        {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(
            written < 1000,
            "a 2 MiB map took {written} values of 16 KiB"
        );
    };
    eprintln!("after {written} writes: {err}");
    assert!(written > 0);
    assert!(
        err.to_string().contains(&format!(
            "storage is full: the LMDB map size of {small} bytes is reached"
        )),
        "{err}"
    );
    // Reads go on; so does the node.
    let (found, _) = client.get(b"k0", None).await.unwrap().unwrap();
    assert_eq!(found, value);
    assert!(client.status().await.is_ok());
    client.close().await;
    node.shutdown().await;

    // Restarted with a larger map, it takes writes again and has lost nothing.
    let node = start_node(&certs, "n1", data.path(), |config| {
        config.map_size_bytes = 64 << 20;
    })
    .await;
    let client = certs.client(node.local_addr()).await;
    client.put(b"after", &value, None).await.unwrap();
    for i in 0..written {
        let key = format!("k{i}");
        assert!(
            client.get(key.as_bytes(), None).await.unwrap().is_some(),
            "{key} lost"
        );
    }
    client.close().await;
    node.shutdown().await;
}
