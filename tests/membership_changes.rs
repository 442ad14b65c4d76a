//! The moves operators make, on real `vergent serve` processes: a disk wiped and the
//! node restarted, a second process under a live name, a dead member removed for good,
//! a new node taking a dead one's place, a restart reached on a fresh connection.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{
    ServeProcess, TestCerts, cli, eventually_async, member, missing_on, put_all, replica_record,
    settled, status, stderr, stdout, wait_settled,
};
use vergent::protocol::Consistency;

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn start(certs: &TestCerts, dir: &std::path::Path, names: &[&str]) -> Vec<ServeProcess> {
    let mut nodes: Vec<ServeProcess> = Vec::new();
    for name in names {
        let seed = nodes.first().map(|n| n.addr.to_string());
        let mut extra = vec!["--anti-entropy-interval", "off"];
        if let Some(seed) = &seed {
            extra.extend(["--join", seed.as_str()]);
        }
        nodes.push(ServeProcess::start(
            name,
            certs.path(),
            &dir.join(name),
            &extra,
        ));
    }
    nodes
}

fn put(certs: &TestCerts, node: SocketAddr, key: &str, value: &str, level: &str) -> bool {
    cli(
        certs.path(),
        node,
        &["put", key, value, "--consistency", level],
    )
    .status
    .success()
}

async fn wait_dead(certs: &TestCerts, observers: &[&ServeProcess], name: &str) {
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            observers
                .iter()
                .all(|o| status(certs, o.addr).is_some_and(|s| member(&s, name)["state"] == "dead"))
        })
        .await,
        "{name} was not declared dead"
    );
}

/// A node's disk is wiped and it comes back under its name: it must not acknowledge a
/// write alone, nor answer a quorum read from its empty store. Measured before: for
/// ~5 s it knew no other member, acknowledged an `all` write as the only replica, and a
/// second wipe lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_neither_acknowledges_alone_nor_answers_from_an_empty_store() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, dir.path(), &NAMES[..3]);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    put_all(&certs, nodes[0].addr, &keys, "v5", Consistency::Quorum).await;

    for round in 0..2 {
        nodes[2].kill();
        std::fs::remove_dir_all(dir.path().join("n3")).unwrap();
        let seed = nodes[0].addr.to_string();
        nodes[2] = ServeProcess::start(
            "n3",
            certs.path(),
            &dir.path().join("n3"),
            &["--join", &seed, "--anti-entropy-interval", "off"],
        );
        let n3 = nodes[2].addr;
        // At once, before anything could have filled it.
        let key = format!("lost-write-{round}");
        let written = cli(
            certs.path(),
            n3,
            &["put", &key, "acked", "--consistency", "all"],
        );
        let read = cli(certs.path(), n3, &["get", "k5", "--consistency", "quorum"]);
        assert!(
            read.status.success() && stdout(&read) == "v5\n"
                || stderr(&read).contains("unavailable"),
            "a quorum read through the wiped node answered {:?} / {:?}",
            stdout(&read),
            stderr(&read)
        );
        if written.status.success() {
            // Acknowledged: it must be on the two replicas that held data.
            for holder in [nodes[0].addr, nodes[1].addr] {
                let record = replica_record(&certs, holder, key.as_bytes()).await;
                assert!(record.is_some(), "an acknowledged write is not on {holder}");
            }
        } else {
            // Either refusal is right: it is still filling, or nobody has spoken to it
            // yet, so it cannot know the cluster knows of it.
            let why = stderr(&written);
            assert!(
                why.contains("still filling") || why.contains("no other member has spoken"),
                "{why}"
            );
        }
        // Wipe it again at once: nothing acknowledged may go with it.
        nodes[2].kill();
        std::fs::remove_dir_all(dir.path().join("n3")).unwrap();
        if written.status.success() {
            let read = cli(
                certs.path(),
                nodes[0].addr,
                &["get", &key, "--consistency", "quorum"],
            );
            assert_eq!(stdout(&read), "acked\n", "{}", stderr(&read));
        }
        nodes[2] = ServeProcess::start(
            "n3",
            certs.path(),
            &dir.path().join("n3"),
            &["--join", &seed, "--anti-entropy-interval", "off"],
        );
        let refs: Vec<&ServeProcess> = nodes.iter().collect();
        wait_settled(&certs, &refs, &NAMES[..3]).await;
        // Filled: it answers reads itself, and holds every key.
        let read = cli(
            certs.path(),
            nodes[2].addr,
            &["get", "k5", "--consistency", "one"],
        );
        assert!(read.status.success() && stdout(&read) == "v5\n");
    }
}

/// A second process under the name of a live member is refused at join, and the live
/// one goes on serving with a quiet log. Measured before: the duplicate was accepted,
/// the cluster called the real one dead, and it renewed its identity 437,699 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_under_a_live_name_is_refused_and_the_first_keeps_serving() {
    let certs = TestCerts::new(&NAMES);
    let dir = tempfile::tempdir().unwrap();
    let nodes = start(&certs, dir.path(), &NAMES[..3]);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    let seed = nodes[1].addr.to_string();
    let refused = ServeProcess::try_start(
        "n1",
        certs.path(),
        &dir.path().join("dup"),
        &["--join", &seed, "--join-attempts", "1"],
    );
    let log = match refused {
        Ok(_) => panic!("a second n1 was accepted"),
        Err(log) => log,
    };
    assert!(
        log.contains(&format!("n1 is alive at {}", nodes[0].addr)),
        "{log}"
    );
    assert!(log.contains("a second process under the same name is refused"));
    // The original goes on: writes at all succeed, everyone sees it alive.
    for i in 0..20 {
        assert!(put(&certs, nodes[0].addr, &format!("d{i}"), "v", "all"));
    }
    assert!(settled(&certs, &refs, &NAMES[..3]));
    for node in &nodes {
        let log = node.log_text();
        assert!(!log.contains("declared dead"), "{}: {log}", node.name);
        assert!(!log.contains("rejoined with a new incarnation"), "{log}");
    }
}

/// A member that died for good leaves placement only by `vergent remove`, which is
/// refused while it is alive; then every key is back on three replicas and writes at
/// `all` succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_removed_and_every_key_is_back_on_three_replicas() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, dir.path(), &NAMES[..4]);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..4]).await;
    let keys: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    put_all(&certs, nodes[0].addr, &keys, "v", Consistency::All).await;
    let refused = cli(certs.path(), nodes[0].addr, &["remove", "n4"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("n4 is alive")
            && stderr(&refused).contains("only a dead member can be removed"),
        "{}",
        stderr(&refused)
    );

    nodes[3].kill();
    let observers: Vec<&ServeProcess> = nodes[..3].iter().collect();
    wait_dead(&certs, &observers, "n4").await;
    let failed = cli(
        certs.path(),
        nodes[0].addr,
        &["put", "before-remove", "v", "--consistency", "all"],
    );
    assert!(!failed.status.success());
    let removed = cli(certs.path(), nodes[1].addr, &["remove", "n4"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(stdout(&removed).contains("n4 removed from the cluster"));
    let survivors: Vec<&ServeProcess> = nodes[..3].iter().collect();
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            survivors.iter().all(|n| {
                status(&certs, n.addr).is_some_and(|s| member(&s, "n4")["state"] == "left")
            })
        })
        .await,
        "n4 is not out of the cluster everywhere"
    );
    wait_settled(&certs, &survivors, &NAMES[..3]).await;
    // Every key on each of the three, as each replica holds it itself.
    for node in &survivors {
        let missing = missing_on(&certs, node.addr, &keys).await;
        assert!(missing.is_empty(), "{} lacks {missing:?}", node.name);
    }
    assert!(put(&certs, nodes[0].addr, "after-remove", "v", "all"));
    let status = status(&certs, nodes[0].addr).unwrap();
    assert_eq!(member(&status, "n1")["hints"], 0);
    assert!(
        nodes[1].log_text().contains("dropped hints")
            || nodes[0].log_text().contains("dropped hints")
            || nodes[2].log_text().contains("dropped hints"),
        "hints kept for n4 were not dropped"
    );
}

/// `--replace` takes a dead member's place in one step: the new node holds exactly the
/// partitions the dead one held, and holds their data before it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_takes_exactly_the_dead_members_partitions_and_fills_them() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, dir.path(), &NAMES[..4]);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..4]).await;
    let keys: Vec<String> = (0..300).map(|i| format!("x{i}")).collect();
    put_all(&certs, nodes[0].addr, &keys, "v", Consistency::All).await;
    let before = status(&certs, nodes[0].addr).unwrap();
    let placement_of = |s: &serde_json::Value| -> Vec<Vec<String>> {
        s["placement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    let expected: Vec<Vec<String>> = placement_of(&before)
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|n| if n == "n4" { "n5".to_string() } else { n })
                .collect()
        })
        .collect();
    nodes[3].kill();
    let observers: Vec<&ServeProcess> = nodes[..3].iter().collect();
    wait_dead(&certs, &observers, "n4").await;
    let seed = nodes[0].addr.to_string();
    let n5 = ServeProcess::start(
        "n5",
        certs.path(),
        &dir.path().join("n5"),
        &[
            "--join",
            &seed,
            "--replace",
            "n4",
            "--anti-entropy-interval",
            "off",
        ],
    );
    let n5_addr = n5.addr;
    let mut all: Vec<&ServeProcess> = nodes[..3].iter().collect();
    all.push(&n5);
    wait_settled(&certs, &all, &["n1", "n2", "n3", "n5"]).await;
    let after = status(&certs, nodes[1].addr).unwrap();
    assert_eq!(placement_of(&after), expected);
    assert_eq!(member(&after, "n4")["state"], "left");
    // Filled: every key of its partitions is on n5 itself.
    let held: std::collections::BTreeSet<usize> = expected
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().any(|n| n == "n5"))
        .map(|(p, _)| p)
        .collect();
    let theirs: Vec<String> = keys
        .iter()
        .filter(|k| {
            held.contains(&usize::from(vergent::placement::partition_of(
                k.as_bytes(),
                256,
            )))
        })
        .cloned()
        .collect();
    assert!(
        theirs.len() > 100,
        "only {} keys in n5's partitions",
        theirs.len()
    );
    let missing = missing_on(&certs, n5_addr, &theirs).await;
    assert!(missing.is_empty(), "n5 lacks {missing:?}");
    assert!(put(&certs, nodes[0].addr, "after-replace", "v", "all"));
    drop(n5);
}

/// A repair on a node that knows no other member compared nothing: it says so and
/// fails, instead of reporting `in sync: yes`.
#[test]
fn a_repair_that_compared_nothing_fails() {
    let certs = TestCerts::new(&NAMES);
    let dir = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &dir.path().join("n1"), &[]);
    let out = cli(certs.path(), node.addr, &["repair"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("n1 knows no other member of the cluster: nothing was compared"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("in sync: no"), "{}", stdout(&out));
}

/// The first exchange with a peer right after it was killed and restarted goes to the
/// new process on a fresh connection. Measured before: it waited out the connection to
/// the dead process and failed with "the connection timed out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_exchange_after_a_peer_was_killed_and_restarted_succeeds() {
    let certs = TestCerts::new(&NAMES);
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, dir.path(), &NAMES[..3]);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &NAMES[..3]).await;
    for i in 0..20 {
        assert!(put(&certs, nodes[0].addr, &format!("e{i}"), "v", "all"));
    }
    // The exchange that warms n1's connection to n3.
    let warm = cli(certs.path(), nodes[0].addr, &["repair", "--dry-run"]);
    assert_eq!(warm.status.code(), Some(0), "{}", stderr(&warm));
    let listen = nodes[2].addr.to_string();
    nodes[2].kill();
    let seed = nodes[0].addr.to_string();
    nodes[2] = ServeProcess::try_start_at(
        "n3",
        &listen,
        certs.path(),
        &dir.path().join("n3"),
        &["--join", &seed, "--anti-entropy-interval", "off"],
    )
    .unwrap();
    let started = Instant::now();
    let out = cli(certs.path(), nodes[0].addr, &["repair", "--dry-run"]);
    assert!(
        out.status.code() != Some(2),
        "the first exchange after the restart failed after {:?}: {}",
        started.elapsed(),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("timed out"), "{}", stderr(&out));
}
