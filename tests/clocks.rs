//! Clocks that are wrong, on real `vergent serve` processes whose wall clocks are
//! shifted with libfaketime (monotonic time stays real): the node with the wrong clock
//! is the one that stops coordinating writes, a write it was refused lands nowhere, a
//! node whose clock ran ahead rejoins at once after a restart, and one client's
//! sequential writes keep their order whichever nodes coordinate them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{
    ServeProcess, TestCerts, cli, eventually, eventually_async, member, replica_record, status,
    stderr, stdout, wait_settled,
};
use vergent::client::{Client, Session};
use vergent::protocol::Consistency;

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// Starts `names` (the last one with its clock `offset`, when given), each joining the
/// first, with background anti-entropy off so only the paths under test move data.
fn start(
    certs: &TestCerts,
    dir: &std::path::Path,
    names: &[&str],
    offset: Option<&str>,
) -> Vec<ServeProcess> {
    start_skewing(certs, dir, names, |i| {
        offset.filter(|_| i == names.len() - 1)
    })
}

/// Like [`start`], node `i` with its clock `skew(i)` off the real one, when given.
fn start_skewing<'a>(
    certs: &TestCerts,
    dir: &std::path::Path,
    names: &[&str],
    skew: impl Fn(usize) -> Option<&'a str>,
) -> Vec<ServeProcess> {
    let mut nodes: Vec<ServeProcess> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let seed = nodes.first().map(|n| n.addr.to_string());
        let mut extra = vec!["--anti-entropy-interval", "off"];
        if let Some(seed) = &seed {
            extra.extend(["--join", seed.as_str()]);
        }
        let data = dir.join(name);
        nodes.push(match skew(i) {
            Some(offset) => ServeProcess::start_skewed(name, certs.path(), &data, &extra, offset),
            None => ServeProcess::start(name, certs.path(), &data, &extra),
        });
    }
    nodes
}

fn put(certs: &TestCerts, node: SocketAddr, key: &str, value: &str) -> std::process::Output {
    cli(
        certs.path(),
        node,
        &["put", key, value, "--consistency", "quorum"],
    )
}

fn quorum_get(certs: &TestCerts, node: SocketAddr, key: &str) -> String {
    let out = cli(certs.path(), node, &["get", key, "--consistency", "quorum"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// Waits until `node` reports that its clock is off the cluster's, and says why.
async fn wait_refusing(certs: &TestCerts, node: &ServeProcess) -> String {
    let why = |certs: &TestCerts| {
        status(certs, node.addr)
            .and_then(|s| s["clock_refusal"].as_str().map(str::to_string))
            .filter(|why| why.contains("this node's clock is"))
    };
    assert!(
        eventually_async(Duration::from_secs(20), || async { why(certs).is_some() }).await,
        "{} never reported its clock off the cluster's",
        node.name
    );
    why(certs).unwrap()
}

/// What `node` itself holds for `key`, read from it as a replica.
async fn held(certs: &TestCerts, node: SocketAddr, key: &str) -> Option<String> {
    replica_record(certs, node, key.as_bytes())
        .await
        .and_then(|r| {
            r.payload
                .value()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
}

/// Measured before: a write refused through a node 2 s ahead still landed on that node
/// and won later (read repair, a hint, repair) over a write acknowledged after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_ahead_of_the_cluster_issues_no_version_and_its_refused_write_lands_nowhere() {
    let certs = TestCerts::new(&NAMES[..3]).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(&certs, dir.path(), &NAMES[..3], Some("+2s"));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    let fast = &nodes[2];

    let refused = put(&certs, fast.addr, "k", "from-the-future");
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("this node's clock is") && why.contains("ahead of the cluster"),
        "{why}"
    );
    let refusal = wait_refusing(&certs, fast).await;
    assert!(refusal.contains("ahead of the cluster"), "{refusal}");

    std::thread::sleep(Duration::from_millis(200));
    let ok = put(&certs, nodes[0].addr, "k", "acknowledged");
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Reads through every node, the fast one included (it still serves reads), then
    // every path that could carry the refused version: read repair above, hints (none
    // may exist for it) and a repair run on every node.
    for node in &nodes {
        assert_eq!(quorum_get(&certs, node.addr, "k"), "acknowledged");
    }
    std::thread::sleep(Duration::from_secs(3));
    for node in &nodes {
        let out = cli(certs.path(), node.addr, &["repair"]);
        assert!(out.status.success(), "{}: {}", node.name, stderr(&out));
    }
    for node in &nodes {
        assert_eq!(
            held(&certs, node.addr, "k").await.as_deref(),
            Some("acknowledged"),
            "on {}",
            node.name
        );
        assert_eq!(quorum_get(&certs, node.addr, "k"), "acknowledged");
    }
    let hints = status(&certs, fast.addr).unwrap();
    assert_eq!(
        member(&hints, "n3")["hints"],
        0,
        "a refused write left hints"
    );
}

/// Measured before: a node 3 s slow acknowledged writes that lost at once to older
/// ones, and refused every replication from the healthy nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_cluster_stops_coordinating_but_takes_replication() {
    let certs = TestCerts::new(&NAMES[..3]).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(&certs, dir.path(), &NAMES[..3], Some("-3s"));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    let slow = &nodes[2];

    let refused = put(&certs, slow.addr, "k", "late");
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("this node's clock is 3.0 s behind the cluster"),
        "{why}"
    );
    // The healthy majority keeps taking writes, at `all` too: the slow node accepts
    // the versions of the clocks that are right.
    for i in 0..20 {
        let key = format!("k{i}");
        let out = cli(
            certs.path(),
            nodes[i % 2].addr,
            &["put", &key, "v", "--consistency", "all"],
        );
        assert!(out.status.success(), "{key}: {}", stderr(&out));
        assert_eq!(held(&certs, slow.addr, &key).await.as_deref(), Some("v"));
    }
    // It still answers reads, and everyone sees which clock is wrong.
    assert_eq!(quorum_get(&certs, slow.addr, "k3"), "v");
    let seen = status(&certs, nodes[0].addr).unwrap();
    let skew = member(&seen, "n3")["clock_skew_ms"].as_i64().unwrap();
    assert!(
        (-3_100..=-2_900).contains(&skew),
        "n3's skew from n1: {skew} ms"
    );
    assert!(seen["clock_refusal"].is_null(), "{seen}");
    let own = status(&certs, slow.addr).unwrap();
    let offset = own["clock_offset_ms"].as_i64().unwrap();
    assert!(
        (2_900..=3_100).contains(&offset),
        "the cluster from n3: {offset} ms"
    );
    let table = cli(certs.path(), slow.addr, &["status"]);
    assert!(
        stdout(&table).contains("behind the cluster"),
        "{}",
        stdout(&table)
    );
}

/// Measured before: a node restarted after running 10 s with its clock 60 s ahead was
/// dead for good (its new identity sorted below the old one), renewed itself in a loop
/// and logged 256,301 lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_its_clock_ran_ahead_rejoins_at_once_and_quietly() {
    let certs = TestCerts::new(&NAMES[..3]);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, dir.path(), &NAMES[..3], Some("+60s"));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    std::thread::sleep(Duration::from_secs(2));
    nodes[2].kill();
    let seed = nodes[0].addr.to_string();
    let restarted = ServeProcess::start(
        "n3",
        certs.path(),
        &dir.path().join("n3"),
        &["--anti-entropy-interval", "off", "--join", &seed],
    );
    let started = std::time::Instant::now();
    nodes[2] = restarted;
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "n3 took {took:?} to be alive everywhere"
    );
    // Writes at `all` reach it; its log stays quiet about renewals. The coordinator
    // compares its clock with the restarted member's new life first: until then it
    // says so and coordinates no write, which is waited out (and nothing else is).
    let mut out = cli(
        certs.path(),
        nodes[0].addr,
        &["put", "after", "v", "--consistency", "all"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !out.status.success()
        && stderr(&out).contains("has not compared its clock with the cluster yet")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        out = cli(
            certs.path(),
            nodes[0].addr,
            &["put", "after", "v", "--consistency", "all"],
        );
    }
    assert!(out.status.success(), "{}", stderr(&out));
    let log = nodes[2].log_text();
    let renewals = log.matches("declared dead").count();
    assert!(renewals <= 2, "{renewals} renewals:\n{log}");
}

/// Measured before: `put K a` through one node, then `put K b` through a node that
/// had not seen `a`, lost `b` in 19 of 1,000 pairs (same millisecond, the tie to the
/// higher node id). With the second coordinator's clock 300 ms slow (inside the bound)
/// every such pair would lose; a session orders them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sessions_sequential_writes_keep_their_order_through_any_coordinators() {
    let certs = TestCerts::new(&NAMES);
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(&certs, dir.path(), &NAMES, Some("-0.3"));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES).await;
    let session = Session::new();
    let material = certs.material("admin");
    let mut clients = Vec::new();
    for node in &nodes {
        let mut client = Client::connect(&node.addr.to_string(), &material)
            .await
            .unwrap();
        client.join_session(session.clone());
        clients.push(client);
    }
    let pairs = 1_000;
    let mut lost = Vec::new();
    for i in 0..pairs {
        let key = format!("pair-{i}");
        let first = &clients[i % 4];
        let second = &clients[4];
        first
            .put(key.as_bytes(), b"first", Some(Consistency::Quorum))
            .await
            .unwrap();
        second
            .put(key.as_bytes(), b"second", Some(Consistency::Quorum))
            .await
            .unwrap();
        let (value, _) = clients[(i + 1) % 4]
            .get(key.as_bytes(), Some(Consistency::Quorum))
            .await
            .unwrap()
            .expect("written twice");
        if value != b"second" {
            lost.push(key);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {pairs} second writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for client in clients {
        client.close().await;
    }
}

/// Measured before: nodes that ran 60 s ahead together and came back to the real time
/// kept issuing versions from the future (each write refused by the other replicas but
/// stored on its coordinator), and their records beat every later write for their keys
/// until the real time caught up (an accidental +11.7 h run: until the next morning).
/// Now each node says so, `verify` lists the records, and `rewrite-future` brings them
/// back to the present: the values stay, and later writes win again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_from_the_future_are_reported_and_rewritten_to_the_present() {
    let names = &NAMES[..3];
    let certs = TestCerts::new(names).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_skewing(&certs, dir.path(), names, |_| Some("+60s"));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, names).await;
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for key in &keys {
        let out = cli(
            certs.path(),
            nodes[0].addr,
            &["put", key, &format!("from-{key}"), "--consistency", "all"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Back to the real time, every node at once.
    for node in &mut nodes {
        node.kill();
    }
    let restarted = start_skewing(&certs, dir.path(), names, |_| None);
    let nodes = restarted;
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, names).await;

    // Each node says it holds versions from the future once it has measured the
    // cluster's time, and refuses to issue more of them.
    let refusal = |node: &ServeProcess| {
        status(&certs, node.addr)
            .and_then(|s| s["clock_refusal"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    for node in &nodes {
        assert!(
            eventually(Duration::from_secs(20), || refusal(node)
                .contains("issued or stored versions"))
            .await,
            "{}: {}",
            node.name,
            refusal(node)
        );
    }
    let refused = put(&certs, nodes[0].addr, "fresh", "v");
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("ahead of the cluster's time") && why.contains("rewrite-future"),
        "{why}"
    );
    let verify = cli(certs.path(), nodes[1].addr, &["verify"]);
    assert_eq!(verify.status.code(), Some(1), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("5 records from the future") && stdout(&verify).contains("\"k0\""),
        "{}",
        stdout(&verify)
    );
    let dry = cli(
        certs.path(),
        nodes[1].addr,
        &["rewrite-future", "--dry-run"],
    );
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    assert!(stdout(&dry).contains("5 records from the future"));
    let verify = cli(certs.path(), nodes[1].addr, &["verify"]);
    assert_eq!(verify.status.code(), Some(1), "a dry run changed nothing");

    // The first run names the time it rewrote to; the others rewrite to the same.
    let first = cli(certs.path(), nodes[0].addr, &["rewrite-future"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let printed = stdout(&first);
    let at = printed
        .split("--at ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no --at in {printed}"))
        .to_string();
    assert!(
        printed.contains(&format!("5 records rewritten to {at}")),
        "{printed}"
    );
    for node in &nodes {
        if node.name != nodes[0].name {
            let out = cli(certs.path(), node.addr, &["rewrite-future", "--at", &at]);
            assert!(out.status.success(), "{}: {}", node.name, stderr(&out));
            assert!(
                stdout(&out).contains(&format!("5 records rewritten to {at}")),
                "{}: {}",
                node.name,
                stdout(&out)
            );
        }
        let verify = cli(certs.path(), node.addr, &["verify"]);
        assert!(
            verify.status.success(),
            "{}: {}",
            node.name,
            stderr(&verify)
        );
        assert!(
            status(&certs, node.addr).unwrap()["clock_refusal"].is_null(),
            "{} still refuses writes",
            node.name
        );
    }
    for node in &nodes {
        let out = cli(certs.path(), node.addr, &["repair"]);
        assert!(out.status.success(), "{}: {}", node.name, stderr(&out));
    }
    for node in &nodes {
        for key in &keys {
            assert_eq!(quorum_get(&certs, node.addr, key), format!("from-{key}"));
            assert_eq!(
                held(&certs, node.addr, key).await,
                Some(format!("from-{key}")),
                "{key} on {}",
                node.name
            );
        }
    }
    // Later writes win again, through any node.
    for (i, node) in nodes.iter().enumerate() {
        let key = &keys[i];
        let out = put(&certs, node.addr, key, "later");
        assert!(out.status.success(), "{}: {}", node.name, stderr(&out));
        for reader in &nodes {
            assert_eq!(quorum_get(&certs, reader.addr, key), "later");
        }
    }
}
