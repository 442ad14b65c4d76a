//! Linearizable buckets through real `vergent serve` processes: the commands a user
//! types (put, get, cas, delete) through every node, what is refused there and why,
//! and compare-and-set under contention from many clients at once.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use support::procs::{catalogs_agree, ok, refused, three};
use support::{TestCerts, cli, stderr, stdout};
use vergent::client::{Cas, Client, Read};
use vergent::paxos::Expect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_cas_and_delete_through_every_node_and_lww_operations_refused() {
    let certs = TestCerts::new(&support::procs::NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three(&certs, dir.path()).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    ok(
        &certs,
        n1,
        &["bucket", "create", "locks", "--type", "linearizable"],
    );
    assert!(catalogs_agree(&certs, &[n1, n2, n3]).await);

    let locks = ["--bucket", "locks"];
    let with = |args: &[&'static str]| -> Vec<&'static str> {
        args.iter().chain(locks.iter()).copied().collect()
    };
    ok(&certs, n1, &with(&["put", "leader", "n1"]));
    for node in &nodes {
        assert_eq!(ok(&certs, node, &with(&["get", "leader"])).trim(), "n1");
    }
    // Swapped: exit 0 with the version.
    let swapped = ok(
        &certs,
        n2,
        &with(&["cas", "leader", "--expect", "n1", "n2"]),
    );
    assert!(swapped.starts_with("OK "), "{swapped}");
    // Not swapped: exit 1, saying what the key holds.
    let out = cli(
        certs.path(),
        n3.addr,
        &with(&["cas", "leader", "--expect", "n1", "n3"]),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("not swapped: the value is n2 (hlc="),
        "{}",
        stderr(&out)
    );
    // Create only if absent.
    let out = cli(
        certs.path(),
        n1.addr,
        &with(&["cas", "leader", "--expect-absent", "n9"]),
    );
    assert_eq!(out.status.code(), Some(1));
    ok(
        &certs,
        n3,
        &with(&["cas", "fresh", "--expect-absent", "first"]),
    );
    assert_eq!(ok(&certs, n2, &with(&["get", "fresh"])).trim(), "first");
    // A stale local read is allowed, and says so in --help.
    assert_eq!(
        ok(
            &certs,
            n2,
            &with(&["get", "leader", "--consistency", "one"])
        )
        .trim(),
        "n2"
    );
    let help = stdout(&cli(certs.path(), n1.addr, &["get", "--help"]));
    assert!(
        help.contains("possibly stale") || help.contains("may be stale"),
        "{help}"
    );
    // Delete, then the key is absent for a read and for cas.
    ok(&certs, n3, &with(&["delete", "leader"]));
    let out = cli(certs.path(), n1.addr, &with(&["get", "leader"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    ok(
        &certs,
        n2,
        &with(&["cas", "leader", "--expect-absent", "n4"]),
    );
    assert_eq!(ok(&certs, n1, &with(&["get", "leader"])).trim(), "n4");

    // What mixes models is refused in one line, exit 2, and the nodes keep serving.
    refused(
        &certs,
        n1,
        &with(&["put", "leader", "x", "--ttl", "5s"]),
        "a TTL (its keys do not expire) does not apply to bucket locks, a linearizable bucket",
    );
    refused(
        &certs,
        n2,
        &with(&["put", "leader", "x", "--consistency", "one"]),
        "its writes are always linearizable",
    );
    refused(
        &certs,
        n3,
        &with(&["incr", "leader"]),
        "incr does not apply to bucket locks, a linearizable bucket",
    );
    refused(
        &certs,
        n1,
        &["cas", "leader", "--expect", "a", "b", "--bucket", "default"],
        "cas applies to linearizable buckets; default is a lww bucket",
    );
    refused(
        &certs,
        n1,
        &[
            "bucket",
            "create",
            "timed",
            "--type",
            "linearizable",
            "--ttl",
            "1h",
        ],
        "a linearizable bucket's keys do not expire",
    );
    refused(&certs, n1, &with(&["cas", "leader", "x"]), "--expect");
    assert_eq!(ok(&certs, n3, &with(&["get", "leader"])).trim(), "n4");

    // Each node tells what its proposals did: in status, and in the table.
    // (Each operation is proposed by its key's home node, so add them up.)
    let mut ops = 0;
    for node in &nodes {
        let lin = &support::status(&certs, node.addr).expect("status")["linearizable"];
        assert!(lin["round_trips"].as_u64() >= lin["ops"].as_u64(), "{lin}");
        ops += lin["ops"].as_u64().unwrap();
        if lin["ops"].as_u64() > Some(0) {
            let table = ok(&certs, node, &["status"]);
            let line = format!("linearizable ({}): ", node.name);
            assert!(table.contains(&line), "{table}");
        }
    }
    assert!(ops >= 12, "{ops} linearizable operations counted");
}

/// A client of each node, sharing nothing.
async fn clients(certs: &TestCerts, nodes: &[support::ServeProcess]) -> Vec<Arc<Client>> {
    let mut out = Vec::new();
    for node in nodes {
        out.push(Arc::new(certs.client(node.addr).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_of_many_concurrent_creates_wins_and_cas_increments_count_exactly() {
    let certs = TestCerts::new(&support::procs::NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three(&certs, dir.path()).await;
    ok(
        &certs,
        &nodes[0],
        &["bucket", "create", "locks", "--type", "linearizable"],
    );
    let refs: Vec<_> = nodes.iter().collect();
    assert!(catalogs_agree(&certs, &refs).await);
    let clients = clients(&certs, &nodes).await;

    // Twelve clients through the three nodes race to create one key.
    let mut racers = Vec::new();
    for i in 0..12usize {
        let client = clients[i % 3].clone();
        racers.push(tokio::spawn(async move {
            let mine = format!("owner-{i}");
            let result = client
                .cas("locks", b"the-lock", Expect::Absent, Some(mine.as_bytes()))
                .await;
            (mine, result)
        }));
    }
    let mut winners = Vec::new();
    let mut unknown = Vec::new();
    for racer in racers {
        let (mine, result) = racer.await.unwrap();
        match result {
            Ok(Cas::Swapped(_)) => winners.push(mine),
            Ok(Cas::NotSwapped(Some((value, _)))) => {
                assert_ne!(value, mine.as_bytes(), "told it lost to its own value")
            }
            Ok(Cas::NotSwapped(None)) => panic!("a failed create found the key absent"),
            Err(err) => unknown.push((mine, err.to_string())),
        }
    }
    let held = match clients[1].read("locks", b"the-lock", None).await.unwrap() {
        Read::Value(Some((value, _))) => String::from_utf8(value).unwrap(),
        other => panic!("the lock is held by nobody: {other:?}"),
    };
    assert!(winners.len() <= 1, "several creates won: {winners:?}");
    match winners.first() {
        Some(winner) => assert_eq!(&held, winner),
        None => assert!(
            unknown.iter().any(|(mine, _)| *mine == held),
            "nobody won, yet {held} holds the lock; unknown outcomes: {unknown:?}"
        ),
    }
    eprintln!(
        "create race: winner {held}, {} told they lost, {} unknown",
        12 - winners.len() - unknown.len(),
        unknown.len()
    );

    // Eight clients take turns incrementing one key by compare-and-set until it reads
    // 200. Each successful cas moved it from a distinct value: no two clients swapped
    // from the same one.
    let target = 200u64;
    let swaps = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let unknowns = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..8usize {
        let client = clients[i % 3].clone();
        let swaps = swaps.clone();
        let unknowns = unknowns.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let current = match client.read("locks", b"count", None).await {
                    Ok(Read::Value(Some((value, _)))) => {
                        String::from_utf8(value).unwrap().parse::<u64>().unwrap()
                    }
                    Ok(Read::Value(None)) => 0,
                    Ok(other) => panic!("a linearizable read answered {other:?}"),
                    Err(_) => continue,
                };
                if current >= target {
                    return;
                }
                let expect = if current == 0 {
                    Expect::Absent
                } else {
                    Expect::Value(current.to_string().into_bytes())
                };
                let next = (current + 1).to_string();
                match client
                    .cas("locks", b"count", expect, Some(next.as_bytes()))
                    .await
                {
                    Ok(Cas::Swapped(_)) => swaps.lock().unwrap().push(current),
                    Ok(Cas::NotSwapped(_)) => {}
                    Err(err) => {
                        if std::env::var_os("VERGENT_TEST_SHOW_ERRORS").is_some() {
                            eprintln!("cas: {err}");
                        }
                        unknowns.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let final_value = match clients[2].read("locks", b"count", None).await.unwrap() {
        Read::Value(Some((value, _))) => String::from_utf8(value).unwrap(),
        other => panic!("count reads {other:?}"),
    };
    assert_eq!(final_value, "200");
    let swaps = swaps.lock().unwrap().clone();
    let distinct: BTreeSet<u64> = swaps.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        swaps.len(),
        "two clients swapped from the same value"
    );
    let unknowns = unknowns.load(Ordering::Relaxed);
    assert!(
        swaps.len() as u64 <= target && swaps.len() as u64 + unknowns >= target,
        "{} swaps and {unknowns} unknown outcomes for {target} increments",
        swaps.len()
    );
    eprintln!(
        "cas increments: {} swapped, {unknowns} unknown outcomes",
        swaps.len()
    );
}

/// Five processes, one of them with its wall clock 300 ms ahead (inside the bound);
/// six clients doing puts, reads and compare-and-sets on three keys through random
/// nodes while one node is paused (SIGSTOP) and another is killed for good. Every
/// key's history, recorded by the clients, is judged by the external checker, final
/// reads included: nothing acknowledged is lost and nothing is seen out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_a_skewed_clock_a_paused_and_a_killed_node_are_linearizable() {
    use support::{ServeProcess, linclients, unsafe_kill, wait_settled};

    const FIVE: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
    let certs = TestCerts::new(&FIVE).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let first = ServeProcess::start("n1", certs.path(), &dir.path().join("n1"), &[]);
    let seed = first.addr.to_string();
    let mut nodes = vec![first];
    for name in &FIVE[1..4] {
        nodes.push(ServeProcess::start(
            name,
            certs.path(),
            &dir.path().join(name),
            &["--join", &seed],
        ));
    }
    nodes.push(ServeProcess::start_skewed(
        "n5",
        certs.path(),
        &dir.path().join("n5"),
        &["--join", &seed],
        "+0.3",
    ));
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    wait_settled(&certs, &refs, &FIVE).await;
    ok(
        &certs,
        &nodes[0],
        &["bucket", "create", "locks", "--type", "linearizable"],
    );
    assert!(catalogs_agree(&certs, &refs).await);

    let start = std::time::Instant::now();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let history = linclients::History::default();
    let run_for = std::time::Duration::from_secs(12);
    let clients = linclients::spawn(&certs, &addrs, 3, 6, start, run_for, &history).await;
    // A node paused for three seconds, and later another killed for good.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    unsafe_kill(nodes[1].pid(), libc::SIGSTOP);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    unsafe_kill(nodes[1].pid(), libc::SIGCONT);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    nodes[2].kill();
    for client in clients {
        client.await.unwrap();
    }
    // The final word on each key, through a node that stayed up.
    linclients::final_reads(&certs, addrs[3], 3, start, &history).await;
    let (judged, unknown) = linclients::judge(&history, 3);
    eprintln!("{judged} operations judged linearizable, {unknown} of unknown outcome");
    assert!(judged > 100, "too few operations to judge: {judged}");
}
