//! Merkle anti-entropy between real nodes: `repair` finds exactly what differs and
//! moves each difference once; a wiped node is refilled; a new node's partitions are
//! handed to it before old owners drop them; a deleted key stays deleted.

mod support;

use std::time::Duration;

use support::{
    TestCerts, contents, entries, eventually_async, load, repair, start_cluster, start_node,
};
use vergent::node::Node;
use vergent::protocol::Consistency;
use vergent::record::Payload;
use vergent::wallclock::system_wall_ms;

const NAMES: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn roots(node: &Node) -> Vec<vergent::antientropy::tree::Node> {
    (0..node.view().settings.partitions)
        .map(|p| node.store().tree_root(p).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_finds_exactly_the_differing_keys_of_100k_and_moves_each_once() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&certs, &NAMES[..2], data.path(), |c| {
        c.anti_entropy_interval = None
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let base = system_wall_ms() - 60_000;
    let shared = entries("key", 0..100_000, base, "v1");
    load(&certs, a.local_addr(), &shared[..99_333]).await;
    load(&certs, b.local_addr(), &shared[..99_333]).await;
    // 1% of the keys differ, made by writing to one replica only: 333 stale on b
    // (newer on a), 333 missing on b, 334 extra on b.
    let newer = entries("key", 99_000..99_333, base + 1_000, "v2");
    load(&certs, a.local_addr(), &newer).await;
    load(&certs, a.local_addr(), &shared[99_333..99_666]).await;
    load(&certs, b.local_addr(), &shared[99_666..100_000]).await;
    assert_ne!(contents(a), contents(b));

    let dry = repair(&certs, a.local_addr(), true).await;
    assert_eq!(dry.counts.keys_differing, 1_000, "{dry:?}");
    assert_eq!((dry.counts.keys_sent, dry.counts.keys_received), (0, 0));
    assert!(!dry.in_sync);
    assert_ne!(contents(a), contents(b), "a dry run moves nothing");

    let run = repair(&certs, a.local_addr(), false).await;
    assert!(run.in_sync, "{run:?}");
    assert_eq!(run.counts.keys_differing, 1_000);
    assert_eq!(
        run.counts.keys_sent + run.counts.keys_received,
        1_000,
        "over-streaming 1.00"
    );
    let (ca, cb) = (contents(a), contents(b));
    assert_eq!(ca.len(), 100_000);
    assert_eq!(ca, cb, "identical key by key");
    assert_eq!(roots(a), roots(b));

    let again = repair(&certs, a.local_addr(), false).await;
    assert_eq!(again.counts.partitions_differing, 0);
    assert_eq!(
        again.counts.keys_sent + again.counts.keys_received,
        0,
        "a second repair moves nothing"
    );
    assert!(again.in_sync);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_directory_was_wiped_is_refilled_completely() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(&certs, &NAMES[..3], data.path(), |c| {
        c.anti_entropy_interval = None
    })
    .await;
    let all = entries("key", 0..5_000, system_wall_ms() - 10_000, "v");
    for node in &nodes {
        load(&certs, node.local_addr(), &all).await;
    }
    let client = certs.client(nodes[0].local_addr()).await;
    client
        .delete(b"key-7", Some(Consistency::All))
        .await
        .unwrap();
    client.close().await;
    let expected = contents(&nodes[0]);

    nodes.pop().unwrap().shutdown().await;
    std::fs::remove_dir_all(data.path().join("n3")).unwrap();
    let seed = nodes[0].local_addr().to_string();
    let n3 = start_node(&certs, "n3", data.path(), |c| {
        c.join = vec![seed];
        c.anti_entropy_interval = None;
    })
    .await;
    assert!(contents(&n3).is_empty());
    let knows_all = support::eventually(Duration::from_secs(20), || {
        n3.view()
            .members
            .iter()
            .filter(|m| m.state == vergent::membership::MemberState::Alive)
            .count()
            == 3
    })
    .await;
    assert!(knows_all);
    let refilled = eventually_async(Duration::from_secs(20), || async {
        repair(&certs, n3.local_addr(), false).await.in_sync
    })
    .await;
    assert!(refilled);
    assert_eq!(contents(&n3), expected);
    assert_eq!(
        contents(&n3).get(&b"key-7"[..]).unwrap().payload,
        Payload::Tombstone
    );
    assert_eq!(roots(&n3), roots(&nodes[0]));
    for p in 0..256 {
        assert!(n3.store().verify_tree(p).unwrap());
    }
    nodes.push(n3);
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_receives_its_partitions_before_old_owners_drop_them() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let fast =
        |c: &mut vergent::node::NodeConfig| c.anti_entropy_interval = Some(Duration::from_secs(1));
    let mut nodes = start_cluster(&certs, &NAMES[..3], data.path(), fast).await;
    let all = entries("key", 0..3_000, system_wall_ms() - 10_000, "v");
    for node in &nodes {
        load(&certs, node.local_addr(), &all).await;
    }
    let seed = nodes[0].local_addr().to_string();
    nodes.push(
        start_node(&certs, "n4", data.path(), |c| {
            c.join = vec![seed];
            fast(c);
        })
        .await,
    );
    // Until handoff completes, every key stays on at least three nodes, and at the
    // end each node holds exactly the partitions placement gives it.
    let settled = eventually_async(Duration::from_secs(90), || async {
        let view = nodes[0].view();
        if view.placement.members().len() != 4 {
            return false;
        }
        let holdings: Vec<_> = nodes.iter().map(contents).collect();
        for e in &all {
            let holders = holdings.iter().filter(|h| h.contains_key(&e.key)).count();
            assert!(
                holders >= 3,
                "{} on only {holders} nodes during handoff",
                String::from_utf8_lossy(&e.key)
            );
        }
        nodes.iter().all(|n| {
            let owned: Vec<u16> = view.placement.partitions_of(n.name()).collect();
            n.store()
                .partitions_with_data()
                .iter()
                .all(|p| owned.contains(p))
                && owned
                    .iter()
                    .all(|&p| n.store().tree_root(p).unwrap().count > 0)
        })
    })
    .await;
    assert!(settled, "handoff did not complete");
    let view = nodes[0].view();
    for e in &all {
        let owners = view.replicas_of(&e.key);
        for node in &nodes {
            let held = node.store().get(&e.key).unwrap().is_some();
            let owns = owners.iter().any(|o| o == node.name());
            assert_eq!(
                held,
                owns,
                "{} on {}",
                String::from_utf8_lossy(&e.key),
                node.name()
            );
        }
    }
    let client = certs.client(nodes[3].local_addr()).await;
    for e in all.iter().step_by(50) {
        assert!(
            client
                .get(&e.key, Some(Consistency::Quorum))
                .await
                .unwrap()
                .is_some(),
            "no key lost"
        );
    }
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_while_a_replica_was_down_past_the_hint_window_stays_deleted() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let config = |c: &mut vergent::node::NodeConfig| {
        c.anti_entropy_interval = None;
        c.hint_window = Duration::from_millis(500);
    };
    let mut nodes = start_cluster(&certs, &NAMES[..3], data.path(), config).await;
    let client = certs.client(nodes[0].local_addr()).await;
    client
        .put(b"doomed", b"alive", Some(Consistency::All))
        .await
        .unwrap();
    nodes.pop().unwrap().shutdown().await;
    client
        .delete(b"doomed", Some(Consistency::Quorum))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seed = nodes[0].local_addr().to_string();
    let n3 = start_node(&certs, "n3", data.path(), |c| {
        c.join = vec![seed];
        config(c);
    })
    .await;
    // The hint for n3 is past the window: dropped, not delivered.
    let dropped = eventually_async(Duration::from_secs(20), || async {
        nodes[0].store().hint_backlog().unwrap().is_empty()
    })
    .await;
    assert!(dropped);
    assert_eq!(
        n3.store().get(b"doomed").unwrap().unwrap().payload,
        Payload::Value(b"alive".to_vec())
    );

    // The returning replica repairs once it sees its co-replicas alive.
    let sees_all = support::eventually(Duration::from_secs(20), || {
        n3.view()
            .members
            .iter()
            .filter(|m| m.state == vergent::membership::MemberState::Alive)
            .count()
            == 3
    })
    .await;
    assert!(sees_all);
    let report = repair(&certs, n3.local_addr(), false).await;
    assert!(report.in_sync, "{report:?}");
    assert_eq!(
        n3.store().get(b"doomed").unwrap().unwrap().payload,
        Payload::Tombstone
    );
    nodes.push(n3);
    for node in &nodes {
        let reader = certs.client(node.local_addr()).await;
        assert_eq!(
            reader.get(b"doomed", Some(Consistency::All)).await.unwrap(),
            None,
            "came back on {}",
            node.name()
        );
        reader.close().await;
    }
    client.close().await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// A real process killed with SIGKILL in the middle of a repair: after a restart a
/// second repair converges, and the trees still equal the trees rebuilt from the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_repair_converges_on_the_next_one() {
    use support::{ServeProcess, cli, stderr, stdout, vergent};
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    // Slow repair (about 100 KB/s of entries) so the kill lands while it runs.
    let flags = [
        "--anti-entropy-interval",
        "off",
        "--repair-bytes-per-sec",
        "100000",
    ];
    let n1 = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &flags);
    let seed = n1.addr.to_string();
    let mut n2_flags = vec!["--join", seed.as_str()];
    n2_flags.extend(flags);
    let mut n2 = ServeProcess::start("n2", certs.path(), &data.path().join("n2"), &n2_flags);
    let ready = eventually_async(Duration::from_secs(20), || async {
        let out = cli(certs.path(), n2.addr, &["status", "--json"]);
        out.status.success() && stdout(&out).matches("\"alive\"").count() == 2
    })
    .await;
    assert!(ready);
    let wall = system_wall_ms() - 10_000;
    let value = "x".repeat(100);
    load(&certs, n1.addr, &entries("key", 0..6_000, wall, &value)).await;
    load(&certs, n2.addr, &entries("key", 0..1_000, wall, &value)).await;

    let mut running = vergent()
        .args(["repair", "--node", &n2.addr.to_string(), "--certs"])
        .arg(certs.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    n2.kill();
    let _ = running.wait();

    let n2 = ServeProcess::start("n2", certs.path(), &data.path().join("n2"), &n2_flags);
    let repaired = eventually_async(Duration::from_secs(60), || async {
        cli(certs.path(), n2.addr, &["repair", "--timeout-ms", "60000"])
            .status
            .success()
    })
    .await;
    assert!(repaired, "the second repair did not converge");
    let dry = cli(certs.path(), n2.addr, &["repair", "--dry-run", "--json"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["counts"]["keys_differing"], 0);
    for node in [&n1, &n2] {
        let verify = cli(certs.path(), node.addr, &["verify"]);
        assert!(
            verify.status.success(),
            "{}: {}",
            node.name,
            stderr(&verify)
        );
    }
}
