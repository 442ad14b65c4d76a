//! The command line with real values: bytes from standard input and files, byte for
//! byte back out, JSON that says how it wrote a value, a watch that outlives its node,
//! bench's exit status, sizes and durations with units, and certificates dialled as
//! localhost.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use support::{ServeProcess, TestCerts, cli, stderr, stdout, vergent};

/// Runs `vergent ARGS --node NODE --certs DIR` with `input` on its standard input.
fn with_input(certs: &TestCerts, node: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = vergent()
        .args(args)
        .args(["--node", node, "--certs"])
        .arg(certs.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The command may refuse before reading it all.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn bytes(n: usize, seed: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn values_from_standard_input_and_files_round_trip_byte_for_byte() {
    let certs = TestCerts::new(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &dir.path().join("n1"), &[]);
    let addr = node.addr.to_string();
    let c = certs.path();

    // 900 KiB of arbitrary bytes through --file and through standard input.
    let big = bytes(900 * 1024, b"big");
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let out = cli(
        c,
        node.addr,
        &["put", "from-file", "--file", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = with_input(&certs, &addr, &["put", "from-stdin", "-"], &big);
    assert!(out.status.success(), "{}", stderr(&out));
    for key in ["from-file", "from-stdin"] {
        let back = dir.path().join(format!("{key}.out"));
        let out = cli(
            c,
            node.addr,
            &["get", key, "--output", back.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            std::fs::read(&back).unwrap() == big,
            "{key} came back changed"
        );
    }

    // Bytes that are not UTF-8, as an argument and from standard input; JSON says it
    // wrote them as base64.
    let binary = [0xffu8, 0xfe, 0x00, 0x01, b'\n'];
    let out = with_input(&certs, &addr, &["put", "bin", "-"], &binary);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(c, node.addr, &["get", "bin", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["encoding"], "base64");
    assert_eq!(doc["value"], "//4AAQo=");
    assert_eq!(doc["found"], true);
    {
        use std::os::unix::ffi::OsStrExt;
        let arg = std::ffi::OsStr::from_bytes(&[0xff, 0xfe]);
        let out = vergent()
            .args(["put", "bin-arg"])
            .arg(arg)
            .args(["--node", &addr, "--certs"])
            .arg(c)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let back = dir.path().join("bin-arg.out");
    cli(
        c,
        node.addr,
        &["get", "bin-arg", "--output", back.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&back).unwrap(), vec![0xff, 0xfe]);

    // A missing key in JSON, and the refusals.
    let out = cli(c, node.addr, &["get", "nothing", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["found"], false);
    let out = with_input(&certs, &addr, &["put", "huge", "-"], &vec![b'v'; 2_000_000]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("value too large") && err.contains("1048576 bytes"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = cli(c, node.addr, &["put", "no-value"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_goes_on_through_another_node_after_its_node_is_killed() {
    let certs = TestCerts::new(&support::procs::NAMES).with_probe();
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = support::procs::three(&certs, dir.path()).await;
    let list = format!("{},{}", nodes[0].addr, nodes[1].addr);
    let mut watch = vergent()
        .args(["watch", "--prefix", "w/", "--node", &list, "--certs"])
        .arg(certs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(watch.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(watch.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let third = nodes[2].addr;
    // Writes through the third node until the watch shows one; returns every line seen.
    let mut lines = Vec::new();
    let see = |tag: &str, lines: &mut Vec<String>| -> bool {
        for i in 0..100 {
            let key = format!("w/{tag}-{i}");
            let out = cli(certs.path(), third, &["put", &key, "line\none"]);
            assert!(out.status.success(), "{}", stderr(&out));
            while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                let hit = line.starts_with(&format!("PUT w/{tag}-"));
                lines.push(line);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    assert!(see("before", &mut lines), "{lines:?}");
    nodes[0].kill();
    assert!(see("after", &mut lines), "the watch went on: {lines:?}");
    let _ = watch.kill();
    let _ = watch.wait();
    let text = lines.join("\n");
    assert!(text.contains("resumed through n2"), "{text}");
    // A value's newline is escaped: one change, one line.
    assert!(text.contains("= line\\none hlc="), "{text}");
}

#[test]
fn bench_exits_non_zero_past_its_error_rate() {
    let certs = TestCerts::new(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &dir.path().join("n1"), &[]);
    let args = [
        "bench",
        "--bucket",
        "nosuch",
        "--update",
        "incr",
        "--ops",
        "40",
        "--clients",
        "2",
    ];
    let out = cli(certs.path(), node.addr, &args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("40 of 40 operations failed (100.00%), over --max-error-rate 1%"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("errors: 40"), "{}", stdout(&out));
    let mut lenient = args.to_vec();
    lenient.extend(["--max-error-rate", "100"]);
    let out = cli(certs.path(), node.addr, &lenient);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        certs.path(),
        node.addr,
        &[
            "bench",
            "--ops",
            "200",
            "--clients",
            "4",
            "--duration",
            "5s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sizes_and_durations_take_units_and_loopback_certificates_name_localhost() {
    let certs = TestCerts::new(&[]);
    let issued = vergent()
        .args(["certs", "node", "n1", "--dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", stderr(&issued));
    assert!(
        stdout(&issued).contains("n1, localhost, 127.0.0.1"),
        "{}",
        stdout(&issued)
    );
    let dir = tempfile::tempdir().unwrap();
    let node = ServeProcess::start(
        "n1",
        certs.path(),
        &dir.path().join("n1"),
        &[
            "--repair-bytes-per-sec",
            "64MiB",
            "--value-bytes-max",
            "1KiB",
            "--map-size",
            "1GiB",
            "--max-clock-offset",
            "500ms",
        ],
    );
    let local = format!("localhost:{}", node.addr.port());
    let out = vergent()
        .args([
            "put",
            "k",
            "v",
            "--node",
            &local,
            "--timeout",
            "15s",
            "--certs",
        ])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        certs.path(),
        node.addr,
        &["get", "k", "--timeout-ms", "15000"],
    );
    assert_eq!(stdout(&out), "v\n");
    // The value limit given with a unit is the one in force.
    let out = cli(certs.path(), node.addr, &["put", "k", &"v".repeat(1025)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the limit is 1024 bytes"),
        "{}",
        stderr(&out)
    );
    // A wrong --certs says what it looked for and where.
    let out = vergent()
        .args([
            "get",
            "k",
            "--node",
            &local,
            "--certs",
            "/nonexistent/certs",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("looked in /nonexistent/certs for ca.crt, admin.crt and admin.key"),
        "{err}"
    );
}
