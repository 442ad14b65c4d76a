//! Real `vergent serve` processes on loopback, driven through the `vergent` command:
//! replication, SIGKILL and restart, failure detection, watch, leave.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{
    ServeProcess, TestCerts, cli, eventually_async, member, replica_record, settled, status,
    stderr, stdout, vergent,
};

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn start(certs: &TestCerts, dir: &std::path::Path, names: &[&str]) -> Vec<ServeProcess> {
    let mut nodes: Vec<ServeProcess> = Vec::new();
    for name in names {
        let seed = nodes.first().map(|n| n.addr.to_string());
        let mut extra = vec![];
        if let Some(seed) = &seed {
            extra = vec!["--join", seed.as_str()];
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

async fn wait_settled(
    certs: &TestCerts,
    nodes: &[&ServeProcess],
    alive: &[&str],
    timeout: Duration,
) {
    let agreed = eventually_async(timeout, || async { settled(certs, nodes, alive) }).await;
    assert!(agreed, "processes did not agree on {alive:?}");
}

async fn replicate_at_quorum(size: usize) {
    let names = &NAMES[..size];
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start(&certs, data.path(), names);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, names, Duration::from_secs(30)).await;

    let put = cli(
        certs.path(),
        nodes[0].addr,
        &["put", "k", "v", "--consistency", "quorum"],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    for node in &nodes[1..] {
        let get = cli(
            certs.path(),
            node.addr,
            &["get", "k", "--consistency", "quorum"],
        );
        assert_eq!(stdout(&get), "v\n", "on {}: {}", node.name, stderr(&get));
    }

    let one = cli(
        certs.path(),
        nodes[size - 1].addr,
        &["put", "fast", "1", "--consistency", "one", "--json"],
    );
    assert!(one.status.success(), "{}", stderr(&one));
    let written: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    let hlc = written["hlc_raw"].as_u64().unwrap();
    let started = Instant::now();
    let mut holders = 0;
    for node in &nodes {
        let held = eventually_async(Duration::from_secs(5), || async {
            replica_record(&certs, node.addr, b"fast").await.is_some()
        })
        .await;
        if held {
            let record = replica_record(&certs, node.addr, b"fast").await.unwrap();
            assert_eq!(record.version.hlc.as_u64(), hlc);
            holders += 1;
        }
    }
    assert_eq!(
        holders,
        size.min(3),
        "every replica, and only the replicas, hold the write"
    );
    eprintln!(
        "a write at one reached its replicas within {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_replicate_at_quorum_and_at_one() {
    replicate_at_quorum(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_replicate_at_quorum_and_at_one() {
    replicate_at_quorum(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_declared_dead_gets_hints_and_catches_up_after_restart() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, data.path(), &NAMES[..3]);
    {
        let refs: Vec<&ServeProcess> = nodes.iter().collect();
        wait_settled(&certs, &refs, &NAMES[..3], Duration::from_secs(30)).await;
    }
    nodes[2].kill();
    let killed = Instant::now();
    let declared = eventually_async(Duration::from_secs(30), || async {
        nodes[..2]
            .iter()
            .all(|n| status(&certs, n.addr).is_some_and(|s| member(&s, "n3")["state"] == "dead"))
    })
    .await;
    assert!(declared, "n3 not declared dead by n1 and n2");
    eprintln!(
        "SIGKILLed n3 declared dead everywhere after {:?}",
        killed.elapsed()
    );

    for i in 0..20 {
        let out = cli(
            certs.path(),
            nodes[0].addr,
            &["put", &format!("k{i}"), "v", "--consistency", "quorum"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let all = cli(
        certs.path(),
        nodes[0].addr,
        &["put", "all", "v", "--consistency", "all"],
    );
    assert_eq!(all.status.code(), Some(2));
    assert_eq!(
        stderr(&all),
        "error: unavailable: 2 of 3 replicas acknowledged, 3 required; the write may still be applied (n3: dead)\n"
    );
    // Hints are kept as soon as a replica is known to have missed a write, which can be
    // just after the client has its answer.
    let hinted = eventually_async(Duration::from_secs(10), || async {
        status(&certs, nodes[0].addr)
            .is_some_and(|s| member(&s, "n1")["hints"].as_u64().unwrap_or(0) >= 21)
    })
    .await;
    assert!(hinted, "n1 keeps a hint for every write n3 missed");

    let n3 = ServeProcess::start(
        "n3",
        certs.path(),
        &data.path().join("n3"),
        &["--join", &nodes[0].addr.to_string()],
    );
    let restarted = Instant::now();
    nodes[2] = n3;
    {
        let refs: Vec<&ServeProcess> = nodes.iter().collect();
        wait_settled(&certs, &refs, &NAMES[..3], Duration::from_secs(30)).await;
    }
    eprintln!(
        "restarted n3 alive everywhere after {:?}",
        restarted.elapsed()
    );
    let after = status(&certs, nodes[1].addr).unwrap();
    assert!(
        member(&after, "n3")["incarnation"].as_u64().unwrap() >= 2,
        "{after}"
    );
    let drained = eventually_async(Duration::from_secs(20), || async {
        status(&certs, nodes[0].addr).is_some_and(|s| member(&s, "n1")["hints"] == 0)
    })
    .await;
    assert!(drained, "hints not delivered");
    for i in 0..20 {
        assert!(
            replica_record(&certs, nodes[2].addr, format!("k{i}").as_bytes())
                .await
                .is_some(),
            "k{i} on n3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_replication_live_and_leave_takes_a_node_out() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    let mut nodes = start(&certs, data.path(), &NAMES[..3]);
    {
        let refs: Vec<&ServeProcess> = nodes.iter().collect();
        wait_settled(&certs, &refs, &NAMES[..3], Duration::from_secs(30)).await;
    }
    let mut watch = vergent()
        .args([
            "watch",
            "--prefix",
            "w/",
            "--node",
            &nodes[1].addr.to_string(),
            "--certs",
        ])
        .arg(certs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watch is subscribed once a change shows; keep writing until one does.
    let mut seen = None;
    for i in 0..50 {
        assert!(
            cli(
                certs.path(),
                nodes[0].addr,
                &["put", &format!("w/{i}"), "hello"]
            )
            .status
            .success()
        );
        assert!(
            cli(certs.path(), nodes[0].addr, &["put", "other", "x"])
                .status
                .success()
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let line = seen.expect("watch printed a change");
    assert!(
        line.starts_with("PUT w/") && line.contains("= hello hlc=") && line.ends_with("node=n1"),
        "{line}"
    );
    let _ = cli(certs.path(), nodes[0].addr, &["delete", "w/0"]);
    let deleted = (0..50).find_map(|_| {
        rx.recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.starts_with("DEL"))
    });
    assert!(deleted.is_some_and(|l| l.starts_with("DEL w/0 hlc=")));
    let _ = watch.kill();
    let _ = watch.wait();

    let leave = cli(certs.path(), nodes[2].addr, &["leave"]);
    assert!(leave.status.success(), "{}", stderr(&leave));
    assert!(stdout(&leave).contains("n3 is leaving the cluster"));
    let exited = eventually_async(Duration::from_secs(20), || async {
        cli(
            certs.path(),
            nodes[2].addr,
            &["status", "--timeout-ms", "500"],
        )
        .status
        .code()
            == Some(2)
    })
    .await;
    assert!(exited, "n3 stopped after leaving");
    let status_after = eventually_async(Duration::from_secs(20), || async {
        nodes[..2].iter().all(|n| {
            status(&certs, n.addr).is_some_and(|s| {
                member(&s, "n3")["state"] == "left" && member(&s, "n1")["partitions_held"] == 256
            })
        })
    })
    .await;
    assert!(status_after, "n3 not seen as left");
    nodes.pop();
}

#[test]
fn a_process_started_with_other_settings_is_refused() {
    let certs = TestCerts::new(&NAMES);
    let data = tempfile::tempdir().unwrap();
    let n1 = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let log = ServeProcess::try_start(
        "n2",
        certs.path(),
        &data.path().join("n2"),
        &["--join", &n1.addr.to_string(), "--replication-factor", "2"],
    )
    .err()
    .expect("n2 must be refused");
    assert!(log.contains("exit status: 2"), "{log}");
    assert!(log.contains("the cluster has replication factor 3, but this node was started with --replication-factor 2"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_spreads_its_clients_over_the_cluster_and_reports_as_json() {
    let names = &NAMES[..3];
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start(&certs, data.path(), names);
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, names, Duration::from_secs(30)).await;

    let spread: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let bench = |extra: &[&str]| {
        vergent()
            .args(["bench", "--certs"])
            .arg(certs.path())
            .args(extra)
            .output()
            .unwrap()
    };
    // No --node: --spread stands in for it.
    let out = bench(&[
        "--spread",
        &spread.join(","),
        "--clients",
        "6",
        "--ops",
        "300",
        "--mix",
        "70:25:5",
        "--keys",
        "40",
        "--distribution",
        "zipfian",
        "--consistency",
        "quorum",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ops"], 300, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["distribution"], "zipfian");
    let p = &report["latency_ms"];
    assert!(p["p50"].as_f64().unwrap() > 0.0, "{report}");
    assert!(p["p50"].as_f64() <= p["p99"].as_f64() && p["p99"].as_f64() <= p["max"].as_f64());
    // The puts landed, on every replica (RF 3 on three nodes), within the 40 keys.
    for node in &nodes {
        let held = eventually_async(Duration::from_secs(10), || async {
            status(&certs, node.addr).is_some_and(|s| {
                let records = member(&s, &node.name)["records"].as_u64().unwrap_or(0);
                (1..=40).contains(&records)
            })
        })
        .await;
        assert!(held, "{} holds the benchmark's keys", node.name);
    }

    let nowhere = bench(&["--ops", "1"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(
        stderr(&nowhere).contains(
            "no node given: pass --node HOST:PORT (or several, comma-separated) or set VERGENT_NODE"
        ),
        "{}",
        stderr(&nowhere)
    );
}
