//! The HTTPS/JSON API through real `vergent serve` processes and real `curl`: every
//! resource and every error code, binary values byte for byte, roles, the handshake's
//! refusals, server-sent events of a write made over QUIC, and the OpenAPI description
//! against the routes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ServeProcess, TestCerts, cli, eventually_async, stderr, unsafe_kill};
use vergent::certs::LeafSpec;
use vergent::protocol::Role;

/// What `curl` got: the status (0 when no HTTP answer came), the headers (lower-case
/// names), the body, and curl's own error line.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    error: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` field of a JSON error body.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Runs curl against `addr` as `user` (a certificate name in `certs`, or none), with
/// `args` before the URL of `path`.
fn curl(certs: &Path, user: Option<&str>, addr: SocketAddr, path: &str, args: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(certs.join("ca.crt"))
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"]);
    if let Some(user) = user {
        command
            .arg("--cert")
            .arg(certs.join(format!("{user}.crt")))
            .arg("--key")
            .arg(certs.join(format!("{user}.key")));
    }
    let out = command
        .args(args)
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("curl runs (installed by .ci/run)");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let headers = std::fs::read_to_string(&headers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Got {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        error: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn start(certs: &TestCerts, dir: &Path, name: &str, extra: &[&str]) -> ServeProcess {
    let mut args = vec!["--http-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let node = ServeProcess::start(name, certs.path(), &dir.join(name), &args);
    assert!(node.http.is_some(), "{name} said where it serves HTTPS");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_answers_over_https() {
    let certs = TestCerts::new(&["n1"]);
    certs.issue(&LeafSpec::new("app", Role::Client, 30));
    let dir = tempfile::tempdir().unwrap();
    let node = start(&certs, dir.path(), "n1", &["--http-metrics"]);
    let http = node.http.unwrap();
    let c = certs.path();
    let app = |path: &str, args: &[&str]| curl(c, Some("app"), http, path, args);
    let admin = |path: &str, args: &[&str]| curl(c, Some("admin"), http, path, args);

    // A 200 KiB binary value, byte for byte.
    let mut value = vec![0u8; 200 * 1024];
    blake3::Hasher::new()
        .update(b"a binary value")
        .finalize_xof()
        .fill(&mut value);
    let file = dir.path().join("value.bin");
    std::fs::write(&file, &value).unwrap();
    let upload = format!("@{}", file.display());
    let put = app(
        "/v1/buckets/default/keys/photo",
        &["-X", "PUT", "--data-binary", &upload],
    );
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert_eq!(put.json()["node"], "n1");
    let got = app("/v1/buckets/default/keys/photo?consistency=quorum", &[]);
    assert_eq!(got.status, 200);
    assert!(got.body == value, "the value came back changed");
    assert_eq!(got.header("etag"), put.header("etag"));
    assert!(got.header("x-vergent-version").is_some());
    assert_eq!(got.header("x-vergent-node"), Some("n1"));
    // A key with a slash, percent-encoded in the path.
    let put = app(
        "/v1/buckets/default/keys/user%2F1",
        &["-X", "PUT", "--data-binary", "alice"],
    );
    assert_eq!(put.status, 200);
    assert_eq!(
        cli(c, node.addr, &["get", "user/1"]).stdout,
        b"alice\n".to_vec(),
        "the QUIC side reads the HTTP write"
    );

    // A delete, then the key is gone.
    let gone = app(
        "/v1/buckets/default/keys/to-delete",
        &["-X", "PUT", "--data-binary", "x"],
    );
    assert_eq!(gone.status, 200);
    let deleted = app("/v1/buckets/default/keys/to-delete", &["-X", "DELETE"]);
    assert_eq!(
        deleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    assert_eq!(app("/v1/buckets/default/keys/to-delete", &[]).status, 404);

    // 400, 404.
    let bad = app("/v1/buckets/default/keys/photo?consistency=most", &[]);
    assert_eq!((bad.status, bad.error().as_str()), (400, "bad-request"));
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("one, quorum, all")
    );
    let missing = app("/v1/buckets/default/keys/nothing", &[]);
    assert_eq!(
        (missing.status, missing.error().as_str()),
        (404, "not-found")
    );
    let no_bucket = app("/v1/buckets/nope/keys/k", &[]);
    assert_eq!(
        (no_bucket.status, no_bucket.error().as_str()),
        (404, "no-such-bucket")
    );
    let no_route = app("/v2/anything", &[]);
    assert_eq!(no_route.status, 404);

    // Roles: a client certificate cannot create a bucket; an admin's can.
    let create = |who: &dyn Fn(&str, &[&str]) -> Got, body: &str| {
        who("/v1/buckets", &["-X", "POST", "--data", body])
    };
    let refused = create(&app, r#"{"name":"hits","type":"counter"}"#);
    assert_eq!(
        (refused.status, refused.error().as_str()),
        (403, "forbidden")
    );
    assert!(String::from_utf8_lossy(&refused.body).contains("admin certificate"));
    for body in [
        r#"{"name":"hits","type":"counter"}"#,
        r#"{"name":"tags","type":"set"}"#,
        r#"{"name":"locks","type":"linearizable"}"#,
    ] {
        let made = create(&admin, body);
        assert_eq!(made.status, 200, "{}", String::from_utf8_lossy(&made.body));
    }
    let refused = app("/v1/buckets/hits", &["-X", "DELETE"]);
    assert_eq!(
        (refused.status, refused.error().as_str()),
        (403, "forbidden")
    );
    let listed = app("/v1/buckets", &[]).json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert!(
        names.contains(&"locks") && names.contains(&"hits"),
        "{listed}"
    );

    // Typed values; 409 for an operation of another type.
    for _ in 0..2 {
        let incr = app(
            "/v1/buckets/hits/keys/page",
            &["-X", "POST", "--data", r#"{"incr": 5}"#],
        );
        assert_eq!(incr.status, 200);
    }
    assert_eq!(app("/v1/buckets/hits/keys/page", &[]).json()["value"], "10");
    let wrong = app(
        "/v1/buckets/hits/keys/page",
        &["-X", "POST", "--data", r#"{"add": ["x"]}"#],
    );
    assert_eq!((wrong.status, wrong.error().as_str()), (409, "wrong-type"));
    let added = app(
        "/v1/buckets/tags/keys/t",
        &["-X", "POST", "--data", r#"{"add": ["red", "blue"]}"#],
    );
    assert_eq!(added.status, 200);
    let set = app("/v1/buckets/tags/keys/t", &[]).json();
    assert_eq!(set["kind"], "set");
    assert_eq!(set["values"].as_array().unwrap().len(), 2);

    // Siblings: two writes without a context are both kept; one with the context a
    // read gave replaces them.
    let made = create(&admin, r#"{"name":"carts","type":"siblings"}"#);
    assert_eq!(made.status, 200);
    let cart = "/v1/buckets/carts/keys/c1";
    for v in ["apple", "pear"] {
        assert_eq!(app(cart, &["-X", "PUT", "--data-binary", v]).status, 200);
    }
    let both = app(cart, &[]);
    let doc = both.json();
    assert_eq!(doc["kind"], "siblings");
    assert_eq!(doc["values"].as_array().unwrap().len(), 2, "{doc}");
    let context = both.header("x-vergent-context").unwrap().to_string();
    assert_eq!(doc["context"], context.as_str());
    let header = format!("X-Vergent-Context: {context}");
    let resolved = app(
        cart,
        &["-X", "PUT", "-H", &header, "--data-binary", "apple+pear"],
    );
    assert_eq!(resolved.status, 200);
    assert_eq!(
        app(cart, &[]).json()["values"],
        serde_json::json!(["apple+pear"])
    );

    // Conditional writes: compare-and-set on a linearizable bucket, 412 when the
    // condition fails, 400 on any other bucket.
    let key = "/v1/buckets/locks/keys/leader";
    let create_only = |v: &str| {
        app(
            key,
            &["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", v],
        )
    };
    assert_eq!(create_only("n1").status, 200);
    let lost = create_only("n2");
    assert_eq!((lost.status, lost.error().as_str()), (412, "not-swapped"));
    assert!(String::from_utf8_lossy(&lost.body).contains("the value is n1"));
    let tag = app(key, &[]).header("etag").unwrap().to_string();
    let if_match = format!("If-Match: {tag}");
    let swap = |v: &str| app(key, &["-X", "PUT", "-H", &if_match, "--data-binary", v]);
    assert_eq!(swap("n3").status, 200);
    assert_eq!(
        swap("n4").status,
        412,
        "the tag names a value no longer there"
    );
    assert_eq!(app(key, &[]).body, b"n3");
    let elsewhere = app(
        "/v1/buckets/default/keys/user%2F1",
        &["-X", "PUT", "-H", "If-None-Match: *", "--data-binary", "x"],
    );
    assert_eq!(elsewhere.status, 400);
    assert!(String::from_utf8_lossy(&elsewhere.body).contains("need a linearizable bucket"));

    // 413 without reading the body: a length over the limit is refused while the body
    // is still being sent (the sender holds the upload open, 64 KiB of 2,000,000 sent).
    let mut slow = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "60", "-o", "/dev/null"])
        .arg("--cacert")
        .arg(c.join("ca.crt"))
        .arg("--cert")
        .arg(c.join("app.crt"))
        .arg("--key")
        .arg(c.join("app.key"))
        .args([
            "-H",
            "Transfer-Encoding:",
            "-H",
            "Content-Length: 2000000",
            "-T",
            "-",
        ])
        .arg(format!("https://{http}/v1/buckets/default/keys/big"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = slow.stdin.take().unwrap();
    let _ = stdin.write_all(&[b'v'; 64 * 1024]);
    let answer = BufReader::new(slow.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("< HTTP/1.1 "));
    let _ = slow.kill();
    let _ = slow.wait();
    drop(stdin);
    assert!(
        answer.as_deref().is_some_and(|l| l.contains(" 413 ")),
        "{answer:?}"
    );
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'v'; 1_100_000]).unwrap();
    let over = app(
        "/v1/buckets/default/keys/big",
        &["-X", "PUT", "--data-binary", &format!("@{}", big.display())],
    );
    assert_eq!(
        (over.status, over.error().as_str()),
        (413, "limit-exceeded")
    );
    assert_eq!(over.json()["limit"], 1_048_576);

    // Status, metrics, and the description.
    let status = app("/v1/status", &[]).json();
    assert_eq!(status["node"], "n1", "{status}");
    let metrics = app("/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("vergent_requests_total"));
    let spec = app("/v1/openapi.json", &[]).json();
    assert!(spec["paths"].as_object().unwrap().len() >= 6, "{spec}");

    // The handshake refuses a caller without a certificate, or with one of another CA.
    let anonymous = curl(c, None, http, "/v1/status", &[]);
    assert_eq!(
        anonymous.status, 0,
        "no answer without a client certificate"
    );
    assert!(
        anonymous.error.contains("certificate required") || anonymous.error.contains("alert"),
        "{}",
        anonymous.error
    );
    let other = TestCerts::new(&[]);
    std::fs::copy(c.join("ca.crt"), other.path().join("their-ca.crt")).unwrap();
    let stranger = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(c.join("ca.crt"))
        .arg("--cert")
        .arg(other.path().join("admin.crt"))
        .arg("--key")
        .arg(other.path().join("admin.key"))
        .arg(format!("https://{http}/v1/status"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stranger.stdout), "000");
    let node_cert = app("/v1/status", &[]);
    assert_eq!(node_cert.status, 200);
    let as_node = curl(c, Some("n1"), http, "/v1/status", &[]);
    assert_eq!(as_node.status, 403, "a node certificate is not a user");
}

/// Every path and method the description names is served (none falls through to the
/// "no such route" answer), so a route cannot be documented and missing; and the
/// routes are built from the description's own list (`routes!`), so none is served
/// without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_matches_the_routes() {
    let certs = TestCerts::new(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    let node = start(&certs, dir.path(), "n1", &[]);
    let http = node.http.unwrap();
    let served = curl(certs.path(), Some("admin"), http, "/v1/openapi.json", &[]).json();
    let built = serde_json::to_value(vergent::node::http_openapi()).unwrap();
    assert_eq!(served, built);
    let mut checked = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        let concrete = path.replace("{bucket}", "default").replace("{key}", "k");
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let method = method.to_ascii_uppercase();
            let mut args = vec!["-X", method.as_str()];
            if method == "PUT" || method == "POST" {
                args.extend(["--data", "{}"]);
            }
            if path == "/v1/watch" {
                args.extend(["--max-time", "1"]);
            }
            let got = curl(certs.path(), Some("admin"), http, &concrete, &args);
            let text = String::from_utf8_lossy(&got.body);
            assert!(
                got.status != 405 && !text.contains("no such route"),
                "{method} {path} is described but not served: {} {text}",
                got.status
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} operations described");
}

/// A change made through the QUIC side reaches an HTTP watcher as a server-sent event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_a_put_made_over_quic() {
    let certs = TestCerts::new(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    let node = start(&certs, dir.path(), "n1", &[]);
    let http = node.http.unwrap();
    let c = certs.path();
    let mut watcher = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "60", "--cacert"])
        .arg(c.join("ca.crt"))
        .arg("--cert")
        .arg(c.join("admin.crt"))
        .arg("--key")
        .arg(c.join("admin.key"))
        .arg(format!("https://{http}/v1/watch?prefix=user/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch is live once a write shows: keep writing until one does.
    let mut seen = None;
    for attempt in 0..50 {
        let out = cli(c, node.addr, &["put", &format!("user/{attempt}"), "hello"]);
        assert!(out.status.success(), "{}", stderr(&out));
        cli(c, node.addr, &["put", "other", "x"]);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = Some(line);
            break;
        }
    }
    let mut lines = vec![seen.expect("the watcher saw a change")];
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        lines.push(line);
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    let text = lines.join("\n");
    assert!(text.contains("event: change"), "{text}");
    let data: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(!data.is_empty(), "{text}");
    for change in &data {
        assert!(
            change["key"].as_str().unwrap().starts_with("user/"),
            "{text}"
        );
        assert_eq!(change["value"], "hello");
        assert_eq!(change["node"], "n1");
    }
}

/// 429 past the node's requests in flight, 504 past its request time, 503 when the
/// replicas are gone: three processes, two of them stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_timeout_and_unavailable_have_their_codes() {
    let certs = TestCerts::new(&support::procs::NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    // n1, with its low limits, joins last: a join through it would count against
    // them.
    let n2 = ServeProcess::start("n2", certs.path(), &dir.path().join("n2"), &[]);
    let join = n2.addr.to_string();
    let n3 = ServeProcess::start(
        "n3",
        certs.path(),
        &dir.path().join("n3"),
        &["--join", &join],
    );
    let n1 = start(
        &certs,
        dir.path(),
        "n1",
        &[
            "--join",
            &join,
            "--requests-max",
            "4",
            "--request-timeout",
            "700ms",
        ],
    );
    let nodes = [&n1, &n2, &n3];
    assert!(
        eventually_async(Duration::from_secs(40), || async {
            support::settled(&certs, &nodes, &support::procs::NAMES)
        })
        .await
    );
    let http = n1.http.unwrap();
    let c = certs.path().to_path_buf();
    // Stopped, not dead yet: a quorum write waits for them past the request time.
    unsafe_kill(n2.pid(), libc::SIGSTOP);
    unsafe_kill(n3.pid(), libc::SIGSTOP);
    let put = |key: &str| {
        curl(
            &c,
            Some("admin"),
            http,
            &format!("/v1/buckets/default/keys/{key}?consistency=all"),
            &["-X", "PUT", "--data-binary", "v"],
        )
    };
    let timed_out = put("slow");
    assert_eq!(
        (timed_out.status, timed_out.error().as_str()),
        (504, "timeout"),
        "{}",
        String::from_utf8_lossy(&timed_out.body)
    );
    // Four requests in flight at most: one more beside four waiting ones is refused.
    let mut overloaded = None;
    for round in 0..20 {
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let c2 = c.clone();
                std::thread::spawn(move || {
                    curl(
                        &c2,
                        Some("admin"),
                        http,
                        &format!("/v1/buckets/default/keys/w{round}-{i}?consistency=all"),
                        &["-X", "PUT", "--data-binary", "v"],
                    )
                })
            })
            .collect();
        while waiting.iter().any(|w| !w.is_finished()) {
            let got = curl(&c, Some("admin"), http, "/v1/status", &[]);
            if got.status == 429 {
                overloaded = Some(got);
                break;
            }
        }
        for w in waiting {
            let _ = w.join();
        }
        if overloaded.is_some() {
            break;
        }
    }
    let overloaded = overloaded.expect("a request beside a waiting one was refused");
    assert_eq!(overloaded.error(), "overloaded");
    assert_eq!(overloaded.header("retry-after"), Some("1"));
    // Once the cluster knows they are gone, a write that needs them fails at once.
    let unavailable = eventually_async(Duration::from_secs(30), || async {
        put("gone").status == 503
    })
    .await;
    assert!(
        unavailable,
        "a write needing stopped replicas is answered 503"
    );
    let gone = put("gone");
    assert_eq!(gone.error(), "unavailable");
    let message = gone.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("n2") || message.contains("n3"),
        "{message}"
    );
    unsafe_kill(n2.pid(), libc::SIGCONT);
    unsafe_kill(n3.pid(), libc::SIGCONT);
}
