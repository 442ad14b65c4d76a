//! Buckets through real `vergent serve` processes and the `vergent` command: every type
//! written and read through every node, TTLs, a bucket deleted and made again, a node
//! away while the catalog changed, and bad input answered in one line with exit 2.

mod support;

use std::time::Duration;

use support::procs::{NAMES, catalogs_agree, ok, refused, three};
use support::{ServeProcess, TestCerts, cli, eventually_async, status, stderr, stdout};

/// How many records a node holds: the counts of its trees' roots.
fn held(certs: &TestCerts, node: &ServeProcess) -> Option<u64> {
    let status = status(certs, node.addr)?;
    Some(
        status["roots"]
            .as_array()?
            .iter()
            .filter_map(|r| r["count"].as_u64())
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_works_through_every_node() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three(&certs, dir.path()).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    ok(
        &certs,
        n1,
        &["bucket", "create", "hits", "--type", "counter"],
    );
    ok(
        &certs,
        n2,
        &["bucket", "create", "tags", "--type", "set", "--ttl", "24h"],
    );
    ok(
        &certs,
        n3,
        &["bucket", "create", "carts", "--type", "siblings"],
    );
    ok(&certs, n1, &["bucket", "create", "sessions", "--ttl", "2s"]);
    assert!(
        catalogs_agree(&certs, &[n1, n2, n3]).await,
        "catalogs differ"
    );
    for node in &nodes {
        let list = ok(&certs, node, &["bucket", "list"]);
        for name in ["default", "hits", "tags", "carts", "sessions"] {
            assert!(list.contains(name), "{} lists no {name}: {list}", node.name);
        }
    }
    let show = ok(&certs, n3, &["bucket", "show", "tags", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(shown[0]["kind"], "set", "{show}");
    assert_eq!(shown[0]["ttl_ms"], 24 * 3_600_000, "{show}");

    // Counter: increments and decrements through every node add up everywhere.
    let q = ["--consistency", "quorum"];
    for (node, by) in [(n1, "3"), (n2, "4"), (n3, "-2"), (n1, "10")] {
        let mut args = vec!["incr", "page:/home", by, "--bucket", "hits"];
        args.extend(q);
        ok(&certs, node, &args);
    }
    for node in &nodes {
        let got = ok(
            &certs,
            node,
            &[
                "get",
                "page:/home",
                "--bucket",
                "hits",
                "--consistency",
                "quorum",
            ],
        );
        assert_eq!(got, "15\n", "on {}", node.name);
    }

    // Set: adds win over concurrent removes; a remove removes what it saw.
    ok(
        &certs,
        n1,
        &[
            "sadd",
            "user:7",
            "premium",
            "beta",
            "--bucket",
            "tags",
            "--consistency",
            "all",
        ],
    );
    ok(
        &certs,
        n2,
        &[
            "srem",
            "user:7",
            "beta",
            "--bucket",
            "tags",
            "--consistency",
            "all",
        ],
    );
    ok(
        &certs,
        n3,
        &[
            "sadd",
            "user:7",
            "alpha",
            "--bucket",
            "tags",
            "--consistency",
            "all",
        ],
    );
    for node in &nodes {
        let got = ok(
            &certs,
            node,
            &[
                "get",
                "user:7",
                "--bucket",
                "tags",
                "--consistency",
                "quorum",
            ],
        );
        assert_eq!(got, "alpha\npremium\n", "on {}", node.name);
    }

    // Siblings: two writes that saw nothing are both kept; a write with the context of
    // a read that saw both replaces both, on every node.
    ok(
        &certs,
        n1,
        &[
            "put",
            "cart:9",
            "{\"items\":[1]}",
            "--bucket",
            "carts",
            "--consistency",
            "all",
        ],
    );
    ok(
        &certs,
        n2,
        &[
            "put",
            "cart:9",
            "{\"items\":[2]}",
            "--bucket",
            "carts",
            "--consistency",
            "all",
        ],
    );
    let read = ok(
        &certs,
        n3,
        &[
            "get",
            "cart:9",
            "--bucket",
            "carts",
            "--json",
            "--consistency",
            "all",
        ],
    );
    let doc: serde_json::Value = serde_json::from_str(read.trim()).unwrap();
    assert_eq!(doc["siblings"].as_array().unwrap().len(), 2, "{read}");
    let token = doc["context"].as_str().unwrap().to_string();
    ok(
        &certs,
        n3,
        &[
            "put",
            "cart:9",
            "{\"items\":[1,2]}",
            "--bucket",
            "carts",
            "--context",
            &token,
            "--consistency",
            "all",
        ],
    );
    for node in &nodes {
        let got = ok(
            &certs,
            node,
            &[
                "get",
                "cart:9",
                "--bucket",
                "carts",
                "--consistency",
                "quorum",
            ],
        );
        assert_eq!(got, "{\"items\":[1,2]}\n", "on {}", node.name);
    }

    // TTL: a write's own, and a bucket's; expired keys read as absent on every node.
    ok(
        &certs,
        n1,
        &["put", "token", "abc", "--ttl", "2s", "--consistency", "all"],
    );
    ok(
        &certs,
        n2,
        &[
            "put",
            "s1",
            "x",
            "--bucket",
            "sessions",
            "--consistency",
            "all",
        ],
    );
    ok(&certs, n3, &["put", "kept", "y", "--consistency", "all"]);
    assert_eq!(ok(&certs, n3, &["get", "token"]), "abc\n");
    assert_eq!(
        ok(&certs, n1, &["get", "s1", "--bucket", "sessions"]),
        "x\n"
    );
    let gone = eventually_async(Duration::from_secs(15), || async {
        nodes.iter().all(|node| {
            let a = cli(
                certs.path(),
                node.addr,
                &["get", "token", "--consistency", "all"],
            );
            let b = cli(
                certs.path(),
                node.addr,
                &["get", "s1", "--bucket", "sessions"],
            );
            a.status.code() == Some(1) && b.status.code() == Some(1)
        })
    })
    .await;
    assert!(gone, "expired keys still read");
    assert_eq!(ok(&certs, n2, &["get", "kept"]), "y\n", "no TTL, no expiry");
    // A write after the expiry brings the key back, with a fresh TTL.
    ok(&certs, n2, &["put", "s1", "z", "--bucket", "sessions"]);
    assert_eq!(
        ok(&certs, n1, &["get", "s1", "--bucket", "sessions"]),
        "z\n"
    );

    // A deleted bucket's data is gone; a new bucket of the name never sees it.
    ok(&certs, n1, &["bucket", "delete", "carts", "--yes"]);
    assert!(
        catalogs_agree(&certs, &[n1, n2, n3]).await,
        "catalogs differ"
    );
    refused(
        &certs,
        n2,
        &["get", "cart:9", "--bucket", "carts"],
        "unknown bucket carts",
    );
    ok(&certs, n2, &["bucket", "create", "carts"]);
    assert!(
        catalogs_agree(&certs, &[n1, n2, n3]).await,
        "catalogs differ"
    );
    for node in &nodes {
        let got = cli(
            certs.path(),
            node.addr,
            &["get", "cart:9", "--bucket", "carts", "--consistency", "all"],
        );
        assert_eq!(
            got.status.code(),
            Some(1),
            "old data on {}: {}",
            node.name,
            stdout(&got)
        );
    }

    // Bad input: one line, exit 2, and the node keeps serving.
    refused(
        &certs,
        n1,
        &["get", "k", "--bucket", "nope"],
        "unknown bucket nope",
    );
    refused(
        &certs,
        n1,
        &["incr", "user:7", "1", "--bucket", "tags"],
        "bucket tags, a set bucket",
    );
    refused(
        &certs,
        n2,
        &["sadd", "k", "a", "--bucket", "hits"],
        "bucket hits, a counter bucket",
    );
    refused(
        &certs,
        n2,
        &["put", "k", "v", "--bucket", "hits"],
        "bucket hits, a counter bucket",
    );
    refused(
        &certs,
        n3,
        &["put", "k", "v", "--ttl", "0s"],
        "at least 1ms",
    );
    refused(
        &certs,
        n3,
        &["put", "k", "v", "--ttl", "11000days"],
        "the longest is",
    );
    refused(&certs, n3, &["put", "k", "v", "--ttl", "soon"], "soon");
    refused(
        &certs,
        n1,
        &["put", "k", "v", "--ttl", "1m", "--bucket", "hits"],
        "applies to lww buckets",
    );
    refused(&certs, n1, &["bucket", "create", "Bad Name"], "bucket name");
    refused(&certs, n1, &["bucket", "create", &"x".repeat(65)], "64");
    refused(
        &certs,
        n1,
        &["bucket", "create", "hits", "--type", "set"],
        "exists already",
    );
    refused(
        &certs,
        n1,
        &["bucket", "create", "t", "--type", "map"],
        "map",
    );
    refused(
        &certs,
        n1,
        &["bucket", "delete", "default", "--yes"],
        "default",
    );
    refused(
        &certs,
        n2,
        &[
            "put",
            "cart:9",
            "v",
            "--bucket",
            "carts",
            "--context",
            "c1.AAAA",
        ],
        "context",
    );
    let long = "m".repeat(1025);
    refused(
        &certs,
        n3,
        &["sadd", "k", &long, "--bucket", "tags"],
        "set member is 1025 bytes, the limit is 1024",
    );
    ok(
        &certs,
        n1,
        &["bucket", "create", "lists", "--type", "siblings"],
    );
    assert!(
        catalogs_agree(&certs, &[n1, n2, n3]).await,
        "catalogs differ"
    );
    for i in 0..64 {
        ok(
            &certs,
            &nodes[i % 3],
            &[
                "put",
                "many",
                &format!("v{i}"),
                "--bucket",
                "lists",
                "--consistency",
                "all",
            ],
        );
    }
    refused(
        &certs,
        n1,
        &["put", "many", "v64", "--bucket", "lists"],
        "too many siblings",
    );
    let huge = i64::MAX.to_string();
    ok(&certs, n1, &["incr", "big", &huge, "--bucket", "hits"]);
    refused(
        &certs,
        n1,
        &["incr", "big", "1", "--bucket", "hits"],
        "counter overflow",
    );
    assert_eq!(
        ok(&certs, n2, &["get", "big", "--bucket", "hits"]),
        format!("{huge}\n")
    );
    assert_eq!(
        ok(&certs, n3, &["get", "page:/home", "--bucket", "hits"]),
        "15\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_while_the_catalog_changed_catches_up_and_serves_no_old_data() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three(&certs, dir.path()).await;
    ok(
        &certs,
        &nodes[0],
        &["bucket", "create", "old", "--type", "set"],
    );
    assert!(catalogs_agree(&certs, &[&nodes[0], &nodes[1], &nodes[2]]).await);
    for i in 0..20 {
        let key = format!("k{i}");
        ok(
            &certs,
            &nodes[i % 3],
            &["sadd", &key, "m", "--bucket", "old", "--consistency", "all"],
        );
    }
    let held_before = held(&certs, &nodes[2]).unwrap();
    assert!(held_before >= 20, "n3 holds {held_before} records");

    // n3 goes away; meanwhile the bucket is deleted, made again as another type, and
    // a bucket is created.
    nodes[2].terminate();
    ok(&certs, &nodes[0], &["bucket", "delete", "old", "--yes"]);
    ok(
        &certs,
        &nodes[1],
        &["bucket", "create", "old", "--type", "counter"],
    );
    ok(&certs, &nodes[0], &["bucket", "create", "fresh"]);
    ok(
        &certs,
        &nodes[1],
        &[
            "incr",
            "k1",
            "5",
            "--bucket",
            "old",
            "--consistency",
            "quorum",
        ],
    );

    let back = ServeProcess::start("n3", certs.path(), &dir.path().join("n3"), &[]);
    nodes[2] = back;
    assert!(
        catalogs_agree(&certs, &[&nodes[0], &nodes[1], &nodes[2]]).await,
        "n3 did not learn the catalog"
    );
    let show = ok(&certs, &nodes[2], &["bucket", "show", "old", "--json"]);
    assert!(show.contains("\"counter\""), "{show}");
    ok(&certs, &nodes[2], &["bucket", "show", "fresh"]);
    // The old bucket's records are dropped on n3 too, and never served.
    let dropped = eventually_async(Duration::from_secs(20), || async {
        // The 20 records went; the counter's one key came.
        held(&certs, &nodes[2]).is_some_and(|keys| keys + 19 == held_before)
    })
    .await;
    assert!(dropped, "n3 still holds the deleted bucket's records");
    for i in 0..20 {
        let key = format!("k{i}");
        let got = ok(
            &certs,
            &nodes[2],
            &["get", &key, "--bucket", "old", "--consistency", "one"],
        );
        let want = if i == 1 { "5\n" } else { "0\n" };
        assert_eq!(got, want, "{key} on n3");
    }
}

mod counter_under_faults {
    //! Three processes in a network namespace of the test's own: a counter incremented
    //! at `one` through every node while one node is SIGSTOPped and another cut off,
    //! then healed and repaired: every node reads the exact sum of the acknowledged
    //! increments.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::support::netns::{NetNs, unavailable};
    use super::support::{ServeProcess, TestCerts, repair, unsafe_kill};
    use vergent::buckets::BucketType;
    use vergent::certs::LeafSpec;
    use vergent::client::{Client, Read};
    use vergent::protocol::{
        BucketRequest, ClusterStatus, Consistency, ErrorCode, Request, Response, Role, TypedValue,
    };
    use vergent::types::Change;

    const NAMES: [&str; 3] = ["n1", "n2", "n3"];
    const PORT: u16 = 7000;
    const KEY: &[u8] = b"page:/home";

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, 31 + i as u8)
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(ip(i)), PORT)
    }

    async fn client(certs: &TestCerts, i: usize) -> Option<Client> {
        let mut client = Client::connect(&addr(i).to_string(), &certs.material("admin"))
            .await
            .ok()?;
        client.set_request_timeout(Duration::from_secs(8));
        Some(client)
    }

    async fn status(certs: &TestCerts, i: usize) -> Option<ClusterStatus> {
        let client = client(certs, i).await?;
        let status = client.status().await.ok();
        client.close().await;
        status
    }

    /// Polls the statuses of `nodes` until `check` holds for all of them.
    async fn until(
        certs: &TestCerts,
        nodes: &[usize],
        what: &str,
        check: impl Fn(&ClusterStatus) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let mut all = true;
            for &i in nodes {
                if !status(certs, i).await.is_some_and(|s| check(&s)) {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "{what}: not within 40 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn alive(s: &ClusterStatus) -> usize {
        s.members.iter().filter(|m| m.state == "alive").count()
    }

    /// The tally of one run: increments acknowledged (their sum), and those whose
    /// outcome is unknown.
    #[derive(Default, Debug)]
    struct Tally {
        acked: i128,
        acked_count: u32,
        unknown: Vec<i64>,
        refused: Vec<String>,
    }

    /// `count` increments through node `i` at `one`.
    async fn increments(certs: &TestCerts, i: usize, count: u32, tally: &mut Tally) {
        let client = client(certs, i).await.expect("the node answers");
        for n in 0..count {
            let by: i64 = if n % 5 == 0 { -3 } else { i64::from(n % 7) + 1 };
            let result = client
                .update("hits", KEY, Change::Incr(by), Some(Consistency::One))
                .await;
            match result {
                Ok(_) => {
                    tally.acked += i128::from(by);
                    tally.acked_count += 1;
                }
                // Refused before any actor made it: nothing was counted.
                Err(err)
                    if err.code().is_some_and(|c| {
                        !matches!(c, ErrorCode::Unavailable | ErrorCode::Timeout)
                    }) =>
                {
                    tally.refused.push(format!("via {}: {err}", NAMES[i]));
                }
                Err(err) => {
                    eprintln!("increment via {} has an unknown outcome: {err}", NAMES[i]);
                    tally.unknown.push(by);
                }
            }
        }
        client.close().await;
    }

    async fn counter(certs: &TestCerts, i: usize, consistency: Consistency) -> i128 {
        let client = client(certs, i).await.expect("the node answers");
        let read = client.read("hits", KEY, Some(consistency)).await;
        client.close().await;
        match read {
            Ok(Read::Typed(TypedValue::Counter(n))) => n,
            other => panic!("read via {}: {other:?}", NAMES[i]),
        }
    }

    #[test]
    fn a_counter_at_one_is_exact_after_a_stop_and_a_partition() {
        if let Some(why) = unavailable() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the partition test must run on CI, but {why}"
            );
            eprintln!("partition test not run: {why}");
            return;
        }
        let ns = Arc::new(NetNs::new("counter"));
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
            for name in NAMES {
                let log = std::fs::read_to_string(dir.path().join(name).with_extension("log"))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("--- {name}: last lines of its log\n{}", tail.join("\n"));
            }
            std::panic::resume_unwind(panic);
        }
    }

    async fn scenario(ns: Arc<NetNs>, certs: Arc<TestCerts>, data: std::path::PathBuf) {
        let start = |i: usize, extra: &[&str]| {
            ServeProcess::try_start_at(
                NAMES[i],
                &addr(i).to_string(),
                certs.path(),
                &data.join(NAMES[i]),
                extra,
            )
            .unwrap_or_else(|log| panic!("{} did not start: {log}", NAMES[i]))
        };
        let seed = addr(0).to_string();
        let nodes = [
            start(0, &[]),
            start(1, &["--join", &seed]),
            start(2, &["--join", &seed]),
        ];
        until(&certs, &[0, 1, 2], "three nodes up", |s| alive(s) == 3).await;
        let admin = client(&certs, 0).await.unwrap();
        let created = admin
            .request(&Request::Buckets(BucketRequest::Create {
                name: "hits".into(),
                kind: BucketType::Counter,
                ttl_ms: None,
                consistency: None,
            }))
            .await
            .unwrap();
        assert!(matches!(created, Response::Buckets(_)), "{created:?}");
        admin.close().await;
        let digest = status(&certs, 0).await.unwrap().buckets_digest;
        until(&certs, &[1, 2], "the bucket known everywhere", |s| {
            s.buckets_digest == digest
        })
        .await;

        let mut tally = Tally::default();
        // n3 stopped, n2 cut off from n1: n1 and n2 each count alone.
        unsafe_kill(nodes[2].pid(), libc::SIGSTOP);
        ns.cut(&[ip(1)], &[ip(0)]);
        increments(&certs, 0, 40, &mut tally).await;
        increments(&certs, 1, 40, &mut tally).await;
        // n3 back, n1 stopped, n2 cut off from n3.
        unsafe_kill(nodes[2].pid(), libc::SIGCONT);
        ns.heal();
        unsafe_kill(nodes[0].pid(), libc::SIGSTOP);
        ns.cut(&[ip(1)], &[ip(2)]);
        increments(&certs, 2, 40, &mut tally).await;
        increments(&certs, 1, 40, &mut tally).await;
        // Everyone back.
        unsafe_kill(nodes[0].pid(), libc::SIGCONT);
        ns.heal();
        until(&certs, &[0, 1, 2], "all alive after the heal", |s| {
            alive(s) == 3
        })
        .await;
        for (i, name) in NAMES.iter().enumerate() {
            let report = repair(&certs, addr(i), false).await;
            eprintln!("repair via {name}: {report:?}");
        }
        eprintln!("tally: {tally:?}");
        assert!(
            tally.refused.is_empty(),
            "refused at one: {:?}",
            tally.refused
        );
        assert!(
            tally.unknown.is_empty(),
            "increments at one whose outcome is unknown: {:?}",
            tally.unknown
        );
        assert_eq!(tally.acked_count, 160);
        for (i, name) in NAMES.iter().enumerate() {
            assert_eq!(
                counter(&certs, i, Consistency::One).await,
                tally.acked,
                "the counter at one via {name}"
            );
            assert_eq!(counter(&certs, i, Consistency::All).await, tally.acked);
        }
        eprintln!(
            "{} increments at one through every node under a SIGSTOP and a partition: every node reads {}",
            tally.acked_count, tally.acked
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_writes_and_siblings_are_counted_per_bucket_in_status() {
    use vergent::protocol::{BucketRequest, Request, Response};
    use vergent::record::{Entry, NodeId, Payload, Record, Version};

    let certs = TestCerts::new(&["n1"]).with_probe();
    let data = tempfile::tempdir().unwrap();
    let node = support::start_node(&certs, "n1", data.path(), |_| {}).await;
    let addr = node.local_addr();
    let client = certs.client(addr).await;
    let mut buckets = Vec::new();
    for (name, kind) in [
        ("prices", vergent::buckets::BucketType::Lww),
        ("carts", vergent::buckets::BucketType::Siblings),
    ] {
        let request = Request::Buckets(BucketRequest::Create {
            name: name.into(),
            kind,
            ttl_ms: None,
            consistency: None,
        });
        match client.request(&request).await.unwrap() {
            Response::Buckets(mut made) => buckets.push(made.remove(0)),
            other => panic!("{other:?}"),
        }
    }
    // Writes of `prices` that reach the node older than what it holds: they lost.
    let now = vergent::wallclock::system_wall_ms();
    let write = |key: &[u8], age_ms: u64| Entry {
        key: buckets[0].internal_key(key),
        record: Record {
            version: Version {
                hlc: vergent::hlc::Timestamp::new(now - age_ms, 0),
                node: NodeId::from_name("n-probe"),
            },
            payload: Payload::Value(b"v".to_vec()),
            expires_ms: None,
        },
    };
    support::load(&certs, addr, &[write(b"p1", 0), write(b"p2", 0)]).await;
    for age in [10, 20, 30] {
        support::load(&certs, addr, &[write(b"p1", age)]).await;
    }
    support::load(&certs, addr, &[write(b"p2", 5)]).await;
    // Two writes of `carts` that saw nothing: siblings.
    for value in ["a", "b"] {
        client
            .write("carts", b"x", Some(value.as_bytes()), None, None, None)
            .await
            .unwrap();
    }
    client.read("carts", b"x", None).await.unwrap();

    let status = client.status().await.unwrap();
    let stats = |name: &str| {
        status
            .bucket_stats
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", status.bucket_stats))
            .clone()
    };
    let prices = stats("prices");
    assert_eq!(prices.lost_writes, 4);
    assert_eq!(prices.lost_keys[0].key, "p1");
    assert_eq!(prices.lost_keys[0].count, 3);
    assert_eq!(stats("default").lost_writes, 0);
    let carts = stats("carts");
    assert_eq!(carts.siblings_max, 2);
    assert_eq!(carts.sibling_keys[0].key, "x");
    // The records of each bucket are counted apart, off the core.
    let counted = eventually_async(Duration::from_secs(20), || async {
        let status = client.status().await.unwrap();
        let keys = |name: &str| {
            status
                .bucket_stats
                .iter()
                .find(|b| b.name == name)
                .and_then(|b| b.keys)
        };
        keys("prices") == Some(2) && keys("carts") == Some(1) && keys("default") == Some(0)
    })
    .await;
    assert!(counted, "bucket records not counted");
    client.close().await;
    node.shutdown().await;
}

/// Leaves a stopped node's directory as the build before buckets wrote it: storage
/// format 1 and no bucket catalog (the layout is otherwise the same).
fn as_before_buckets(dir: &std::path::Path) {
    // SAFETY: the node that used the directory has exited; nothing else maps the file.
    #[allow(unsafe_code)]
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .map_size(1 << 30)
            .max_dbs(8)
            .open(dir)
            .unwrap()
    };
    let mut wtxn = env.write_txn().unwrap();
    let meta: heed::Database<heed::types::Str, heed::types::Bytes> = env
        .open_database(&wtxn, Some("meta"))
        .unwrap()
        .expect("a meta table");
    meta.put(&mut wtxn, "format_version", &1u32.to_be_bytes())
        .unwrap();
    meta.delete(&mut wtxn, "bucket_catalog").unwrap();
    wtxn.commit().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_from_before_buckets_serves_every_key_from_default() {
    let certs = TestCerts::new(&["n1"]).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let mut node = ServeProcess::start("n1", certs.path(), &data, &[]);
    for i in 0..30 {
        ok(&certs, &node, &["put", &format!("k{i}"), &format!("v{i}")]);
    }
    ok(&certs, &node, &["delete", "k7"]);
    node.terminate();
    as_before_buckets(&data);

    let node = ServeProcess::start("n1", certs.path(), &data, &[]);
    for i in 0..30 {
        let key = format!("k{i}");
        let plain = cli(certs.path(), node.addr, &["get", &key]);
        let named = cli(
            certs.path(),
            node.addr,
            &["get", &key, "--bucket", "default"],
        );
        if i == 7 {
            assert_eq!(plain.status.code(), Some(1), "the delete holds");
            assert_eq!(named.status.code(), Some(1));
        } else {
            assert_eq!(
                stdout(&plain),
                format!("v{i}\n"),
                "{key}: {}",
                stderr(&plain)
            );
            assert_eq!(
                stdout(&named),
                format!("v{i}\n"),
                "{key}: {}",
                stderr(&named)
            );
        }
    }
    let list = ok(&certs, &node, &["bucket", "list"]);
    assert!(list.contains("default"), "{list}");
    // Buckets work on it from then on.
    ok(
        &certs,
        &node,
        &["bucket", "create", "hits", "--type", "counter"],
    );
    ok(&certs, &node, &["incr", "k1", "2", "--bucket", "hits"]);
    assert_eq!(ok(&certs, &node, &["get", "k1", "--bucket", "hits"]), "2\n");
    assert_eq!(ok(&certs, &node, &["get", "k1"]), "v1\n");
    let verify = cli(certs.path(), node.addr, &["verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}
