//! Real network partitions: five `vergent serve` processes on 127.0.0.11–15 in a network
//! namespace of the test's own, links cut with nftables — two nodes joining while one
//! is cut off, majority against minority, one node isolated, a bridge (one node sees
//! both sides), a one-way cut. Quorum writers on every node record each acknowledged
//! write; after the last heal every node repairs and every acknowledged key is read
//! back through every node. Nothing acknowledged may be lost.
//!
//! A second test runs clients of a linearizable bucket through the same kinds of cut
//! and judges each key's history with the external checker.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::netns::{NetNs, unavailable};
use support::{ServeProcess, TestCerts};
use vergent::certs::LeafSpec;
use vergent::client::Client;
use vergent::protocol::{ClusterStatus, Consistency, Role};

const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
const PORT: u16 = 7000;

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + i as u8)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip(i)), PORT)
}

fn ips(nodes: &[usize]) -> Vec<Ipv4Addr> {
    nodes.iter().map(|&i| ip(i)).collect()
}

#[derive(Default)]
struct Record {
    /// Acknowledged writes: key → value.
    acked: BTreeMap<String, String>,
    /// Failed writes by kind.
    failed: BTreeMap<String, u64>,
    /// Acknowledgement times per node, to count rates per phase.
    acks: Vec<(usize, Instant)>,
}

/// Writes through node `i` at quorum until stopped, recording every outcome.
async fn writer(
    certs: Arc<TestCerts>,
    i: usize,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
) {
    let mut client: Option<Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match Client::connect(&addr(i).to_string(), &certs.material("admin")).await {
                Ok(mut c) => {
                    c.set_request_timeout(Duration::from_secs(8));
                    client = Some(c);
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let key = format!("{}-{seq}", NAMES[i]);
        let value = format!("v{seq}");
        seq += 1;
        let result = client
            .as_ref()
            .unwrap()
            .put(key.as_bytes(), value.as_bytes(), Some(Consistency::Quorum))
            .await;
        {
            let mut record = record.lock().unwrap();
            match result {
                Ok(_) => {
                    record.acked.insert(key, value);
                    record.acks.push((i, Instant::now()));
                }
                Err(err) => {
                    *record.failed.entry(err.kind().to_string()).or_default() += 1;
                    if err.code().is_none() {
                        client = None;
                    }
                }
            }
        }
        // A failed write comes back at once when the node refuses; do not spin.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status(certs: &TestCerts, i: usize) -> Option<ClusterStatus> {
    let mut client = Client::connect(&addr(i).to_string(), &certs.material("admin"))
        .await
        .ok()?;
    client.set_request_timeout(Duration::from_secs(3));
    let status = client.status().await.ok();
    client.close().await;
    status
}

fn state_of(status: &ClusterStatus, name: &str) -> String {
    status
        .members
        .iter()
        .find(|m| m.name == name)
        .map_or("unknown".into(), |m| m.state.clone())
}

/// Polls until `check` holds on the statuses of `observers`; returns how long it took.
async fn until(
    certs: &TestCerts,
    observers: &[usize],
    timeout: Duration,
    what: &str,
    check: impl Fn(usize, &ClusterStatus) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for &o in observers {
            match status(certs, o).await {
                Some(s) if check(o, &s) => {}
                _ => {
                    all = false;
                    break;
                }
            }
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node's view of every member's state and incarnation has held
/// still for `quiet`.
async fn settled_incarnations(certs: &TestCerts, quiet: Duration, timeout: Duration) {
    let started = Instant::now();
    let mut last: Option<Vec<String>> = None;
    let mut since = Instant::now();
    loop {
        let mut views = Vec::new();
        for o in 0..NAMES.len() {
            let view = status(certs, o).await.map_or("no status".to_string(), |s| {
                s.members
                    .iter()
                    .map(|m| format!("{}={}#{}", m.name, m.state, m.incarnation))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            views.push(view);
        }
        if last.as_ref() != Some(&views) {
            last = Some(views);
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "membership did not settle within {timeout:?}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every observer sees every member of `alive` alive.
fn sees_alive(alive: &[usize]) -> impl Fn(usize, &ClusterStatus) -> bool + '_ {
    move |_, s| alive.iter().all(|&i| state_of(s, NAMES[i]) == "alive")
}

/// Every observer sees every member of `gone` suspect or dead.
fn sees_gone(gone: &[usize]) -> impl Fn(usize, &ClusterStatus) -> bool + '_ {
    move |_, s| {
        gone.iter()
            .all(|&i| matches!(state_of(s, NAMES[i]).as_str(), "suspect" | "dead"))
    }
}

fn acks_between(record: &Record, node: usize, from: Instant, to: Instant) -> usize {
    record
        .acks
        .iter()
        .filter(|(n, t)| *n == node && *t >= from && *t < to)
        .count()
}

/// The two tests each run five nodes; one at a time, so that neither starves the other
/// of the machine's cores (their timings are part of what they judge).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the namespace tests can run; on CI they must.
fn can_run() -> bool {
    if let Some(why) = unavailable() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the partition tests must run on CI, but {why}"
        );
        eprintln!("partition test not run: {why}");
        return false;
    }
    true
}

/// Runs `scenario` on a thread inside a fresh namespace, with certificates for the
/// five nodes; on failure, prints the tail of every node's log.
fn in_namespace<F, Fut>(tag: &str, scenario: F)
where
    F: FnOnce(Arc<NetNs>, Arc<TestCerts>, std::path::PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Arc::new(NetNs::new(tag));
    let certs = Arc::new(TestCerts::new(&[]));
    for (i, name) in NAMES.iter().enumerate() {
        let mut spec = LeafSpec::new(name, Role::Node, 30);
        spec.ips.push(IpAddr::V4(ip(i)));
        certs.issue(&spec);
    }
    let dir = tempfile::tempdir().unwrap();
    let inside = ns.clone();
    let data = dir.path().to_path_buf();
    let outcome = std::thread::spawn(move || {
        inside.enter();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario(inside, certs, data))
    })
    .join();
    drop(ns);
    if let Err(panic) = outcome {
        // What each node logged is the only record of why; the directory goes with the
        // test.
        for name in NAMES {
            let log = std::fs::read_to_string(dir.path().join(name).with_extension("log"))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- {name}: last {} lines of its log\n{}",
                tail.len(),
                tail.join("\n")
            );
        }
        std::panic::resume_unwind(panic);
    }
}

/// Starts node `i` in the namespace.
fn start_node(certs: &TestCerts, data: &std::path::Path, i: usize, extra: &[&str]) -> ServeProcess {
    ServeProcess::try_start_at(
        NAMES[i],
        &addr(i).to_string(),
        certs.path(),
        &data.join(NAMES[i]),
        extra,
    )
    .unwrap_or_else(|log| panic!("{} did not start: {log}", NAMES[i]))
}

#[test]
fn acknowledged_writes_survive_real_partitions() {
    if !can_run() {
        return;
    }
    in_namespace("partitions", scenario);
}

#[test]
fn linearizable_histories_survive_real_partitions() {
    if !can_run() {
        return;
    }
    in_namespace("linearizable", linearizable_scenario);
}

/// Five nodes, a linearizable bucket, six clients on three keys through every node
/// for 24 s while the links are cut: majority against minority, one node cut off one
/// way, one isolated; then healed. Every key's history, final reads included, must be
/// linearizable.
async fn linearizable_scenario(ns: Arc<NetNs>, certs: Arc<TestCerts>, data: std::path::PathBuf) {
    use support::linclients;
    let mut nodes: Vec<ServeProcess> = vec![start_node(&certs, &data, 0, &[])];
    let seed = addr(0).to_string();
    for i in 1..NAMES.len() {
        nodes.push(start_node(&certs, &data, i, &["--join", &seed]));
    }
    let all: Vec<usize> = (0..NAMES.len()).collect();
    until(
        &certs,
        &all,
        Duration::from_secs(30),
        "five nodes up",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s),
    )
    .await;
    support::procs::ok(
        &certs,
        &nodes[0],
        &[
            "bucket",
            "create",
            linclients::BUCKET,
            "--type",
            "linearizable",
        ],
    );
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    assert!(support::procs::catalogs_agree(&certs, &refs).await);

    let start = Instant::now();
    let addrs: Vec<SocketAddr> = (0..NAMES.len()).map(addr).collect();
    let history = linclients::History::default();
    let run_for = Duration::from_secs(24);
    let clients = linclients::spawn(&certs, &addrs, 3, 6, start, run_for, &history).await;
    let phases: [(&str, Vec<usize>, Vec<usize>, bool); 3] = [
        ("majority/minority", vec![0, 1, 2], vec![3, 4], false),
        ("n1 cut off one way", vec![0], vec![1, 2, 3, 4], true),
        ("n3 isolated", vec![2], vec![0, 1, 3, 4], false),
    ];
    for (what, a, b, one_way) in &phases {
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("{:>5.1} s: {what}", start.elapsed().as_secs_f64());
        if *one_way {
            ns.cut_one_way(&ips(a), &ips(b));
        } else {
            ns.cut(&ips(a), &ips(b));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        ns.heal();
    }
    for client in clients {
        client.await.unwrap();
    }
    until(
        &certs,
        &all,
        Duration::from_secs(30),
        "all alive after the cuts",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s),
    )
    .await;
    linclients::final_reads(&certs, addrs[3], 3, start, &history).await;
    let (judged, unknown) = linclients::judge(&history, 3);
    eprintln!("{judged} operations judged linearizable, {unknown} of unknown outcome");
    assert!(judged > 100, "too few operations to judge: {judged}");
    drop(nodes);
}

async fn scenario(ns: Arc<NetNs>, certs: Arc<TestCerts>, data: std::path::PathBuf) {
    let start = |i: usize, extra: &[&str]| start_node(&certs, &data, i, extra);
    let mut nodes: Vec<ServeProcess> = vec![start(0, &[])];
    let seed = addr(0).to_string();
    nodes.push(start(1, &["--join", &seed]));
    nodes.push(start(2, &["--join", &seed]));
    until(
        &certs,
        &[0, 1, 2],
        Duration::from_secs(30),
        "three nodes up",
        |_, s| s.members.iter().filter(|m| m.state == "alive").count() == 3,
    )
    .await;

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for i in 0..NAMES.len() {
        writers.push(tokio::spawn(writer(
            certs.clone(),
            i,
            record.clone(),
            stop.clone(),
        )));
    }
    let mut figures: Vec<String> = Vec::new();
    let mut heal_times: Vec<(String, Duration)> = Vec::new();

    // Two nodes join at once, through n2, while n1 is cut off from everyone.
    ns.cut(&ips(&[0]), &ips(&[1, 2, 3, 4]));
    let seed2 = addr(1).to_string();
    nodes.push(start(3, &["--join", &seed2]));
    nodes.push(start(4, &["--join", &seed2]));
    until(
        &certs,
        &[1, 2, 3, 4],
        Duration::from_secs(30),
        "n1 suspected by the others",
        |_, s| sees_gone(&[0])(0, s) && sees_alive(&[1, 2, 3, 4])(0, s),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ns.heal();
    let healed = until(
        &certs,
        &[0, 1, 2, 3, 4],
        Duration::from_secs(30),
        "all alive after the join cut",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s),
    )
    .await;
    heal_times.push(("two joins while n1 was cut off".into(), healed));

    // Majority against minority.
    ns.cut(&ips(&[0, 1, 2]), &ips(&[3, 4]));
    until(
        &certs,
        &[0, 1, 2],
        Duration::from_secs(20),
        "the majority sees the minority gone",
        |_, s| sees_gone(&[3, 4])(0, s),
    )
    .await;
    until(
        &certs,
        &[3, 4],
        Duration::from_secs(20),
        "the minority sees the majority gone",
        |_, s| sees_gone(&[0, 1, 2])(0, s),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ns.heal();
    let healed = until(
        &certs,
        &[0, 1, 2, 3, 4],
        Duration::from_secs(30),
        "all alive after majority/minority",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s),
    )
    .await;
    heal_times.push(("majority/minority".into(), healed));
    // Both sides declared the other dead, so members renew for a while after the heal;
    // the next phase judges its own heal, so it starts once every view has held still.
    settled_incarnations(&certs, Duration::from_secs(5), Duration::from_secs(40)).await;

    // One node isolated; on healing, nobody that was not cut is ever called dead.
    ns.cut(&ips(&[4]), &ips(&[0, 1, 2, 3]));
    until(
        &certs,
        &[0, 1, 2, 3],
        Duration::from_secs(20),
        "n5 seen gone",
        |_, s| sees_gone(&[4])(0, s),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ns.heal();
    let heal_started = Instant::now();
    let mut wrongly_dead: Vec<String> = Vec::new();
    loop {
        let mut all_alive = true;
        for (o, observer) in NAMES.iter().enumerate() {
            let Some(s) = status(&certs, o).await else {
                all_alive = false;
                continue;
            };
            for name in &NAMES[..4] {
                if o != 4 && state_of(&s, name) == "dead" {
                    wrongly_dead.push(format!("{observer} called {name} dead"));
                }
            }
            all_alive &= sees_alive(&[0, 1, 2, 3, 4])(o, &s);
        }
        if all_alive {
            break;
        }
        if heal_started.elapsed() > Duration::from_secs(30) {
            let mut views = String::new();
            for (o, name) in NAMES.iter().enumerate() {
                if let Some(s) = status(&certs, o).await {
                    let states: Vec<String> = s
                        .members
                        .iter()
                        .map(|m| format!("{}={}#{}", m.name, m.state, m.incarnation))
                        .collect();
                    views.push_str(&format!("{name} sees {}\n", states.join(" ")));
                } else {
                    views.push_str(&format!("{name} answers no status\n"));
                }
            }
            panic!("n5 did not come back within 30 s of the heal:\n{views}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heal_times.push(("one node isolated".into(), heal_started.elapsed()));
    assert!(
        wrongly_dead.is_empty(),
        "healing called live nodes dead: {wrongly_dead:?}"
    );

    // A bridge: {n1, n2} and {n4, n5} cut apart, n3 reaches both. Membership says all
    // alive (n3 relays the probes); n1 must see n4 and n5 unreachable itself and hint
    // their writes without waiting.
    let before_bridge = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let bridge_started = Instant::now();
    ns.cut(&ips(&[0, 1]), &ips(&[3, 4]));
    until(
        &certs,
        &[0],
        Duration::from_secs(20),
        "n1 sees n4 and n5 unreachable",
        |_, s| {
            s.members
                .iter()
                .filter(|m| m.name == "n4" || m.name == "n5")
                .all(|m| !m.reachable || m.state != "alive")
        },
    )
    .await;
    let unreachable_seen = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bridge_ended = Instant::now();
    ns.heal();
    let healed = until(
        &certs,
        &[0, 1, 2, 3, 4],
        Duration::from_secs(30),
        "all alive and reachable after the bridge",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s) && s.members.iter().all(|m| m.reachable),
    )
    .await;
    heal_times.push(("bridge".into(), healed));
    {
        let r = record.lock().unwrap();
        let rate = |from: Instant, to: Instant| {
            acks_between(&r, 0, from, to) as f64 / to.duration_since(from).as_secs_f64()
        };
        figures.push(format!(
            "writes/s through n1: {:.0} before the bridge, {:.0} once it saw n4 and n5 unreachable (after {:.1} s), {} acknowledged from the cut until then",
            rate(before_bridge, bridge_started),
            rate(unreachable_seen, bridge_ended),
            unreachable_seen.duration_since(bridge_started).as_secs_f64(),
            acks_between(&r, 0, bridge_started, unreachable_seen),
        ));
    }

    // One way: n1's packets to n2 are lost, n2's to n1 arrive.
    ns.cut_one_way(&ips(&[0]), &ips(&[1]));
    tokio::time::sleep(Duration::from_secs(8)).await;
    ns.heal();
    let healed = until(
        &certs,
        &[0, 1, 2, 3, 4],
        Duration::from_secs(30),
        "all alive after the one-way cut",
        |_, s| sees_alive(&[0, 1, 2, 3, 4])(0, s),
    )
    .await;
    heal_times.push(("one-way cut".into(), healed));

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let drained = until(
        &certs,
        &[0, 1, 2, 3, 4],
        Duration::from_secs(60),
        "hints drained",
        |o, s| {
            s.members
                .iter()
                .find(|m| m.name == NAMES[o])
                .is_some_and(|m| m.hints == 0)
        },
    )
    .await;
    for (i, name) in NAMES.iter().enumerate() {
        let report = support::repair(&certs, addr(i), false).await;
        assert!(
            report.problems.is_empty(),
            "repair on {name}: {:?}",
            report.problems
        );
    }
    let record = Arc::try_unwrap(record).ok().unwrap().into_inner().unwrap();
    let mut lost = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let client = certs.client(addr(i)).await;
        for (key, value) in &record.acked {
            match client.get(key.as_bytes(), Some(Consistency::Quorum)).await {
                Ok(Some((found, _))) if found == value.as_bytes() => {}
                other => lost.push(format!("{key} through {name}: {other:?}")),
            }
        }
        client.close().await;
    }
    eprintln!(
        "partitions: {} writes acknowledged, failed by kind {:?}, {} lost",
        record.acked.len(),
        record.failed,
        lost.len()
    );
    for (phase, took) in &heal_times {
        eprintln!(
            "  heal → all alive everywhere after {phase}: {:.1} s",
            took.as_secs_f64()
        );
    }
    eprintln!(
        "  hints drained {:.1} s after the last heal",
        drained.as_secs_f64()
    );
    for f in &figures {
        eprintln!("  {f}");
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        record.acked.len() > 100,
        "only {} writes acknowledged",
        record.acked.len()
    );
    drop(nodes);
}
