//! One real `vergent serve` process, driven through the `vergent` command and the client
//! library: durability across SIGKILL, the command line end to end, exclusive data
//! directories, graceful shutdown and the demo.

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{ServeProcess, TestCerts, cli, stderr, stdout, vergent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_sigkill() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("n1");
    let mut node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let client = certs.client(node.addr).await;
    let client = std::sync::Arc::new(client);
    let mut writes = Vec::new();
    for i in 0..200 {
        let client = client.clone();
        writes.push(tokio::spawn(async move {
            let key = format!("key-{i}");
            client
                .put(key.as_bytes(), format!("value-{i}").as_bytes(), None)
                .await
        }));
    }
    for write in writes {
        write.await.unwrap().expect("put acknowledged");
    }
    // Killed the moment the last acknowledgement arrived: no chance to flush anything.
    node.kill();

    let node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let client = certs.client(node.addr).await;
    for i in 0..200 {
        let key = format!("key-{i}");
        let (value, _) = client
            .get(key.as_bytes(), None)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} lost after SIGKILL"));
        assert_eq!(value, format!("value-{i}").as_bytes());
    }
}

#[test]
fn the_command_line_end_to_end() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let run = |args: &[&str]| cli(certs.path(), node.addr, args);

    let put = run(&["put", "greeting", "hello"]);
    assert!(put.status.success(), "{}", stderr(&put));
    let line = stdout(&put);
    assert!(
        line.starts_with("OK hlc=") && line.trim_end().ends_with("node=n1"),
        "{line}"
    );

    let get = run(&["get", "greeting"]);
    assert_eq!(
        (get.status.code(), stdout(&get).as_str()),
        (Some(0), "hello\n")
    );

    let get = run(&["get", "greeting", "--show-version"]);
    let text = stdout(&get);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "hello");
    assert_eq!(
        lines[1],
        line.trim_end().trim_start_matches("OK "),
        "the version put printed"
    );
    // The HLC reads as UTC time with milliseconds, then the logical counter.
    let hlc = lines[1]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("hlc=");
    let (time, logical) = hlc.rsplit_once('+').unwrap();
    humantime::parse_rfc3339(time).unwrap();
    logical.parse::<u16>().unwrap();

    let json = run(&["get", "greeting", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["value"], "hello");
    assert_eq!(doc["node"], "n1");

    let delete = run(&["delete", "greeting"]);
    assert!(delete.status.success() && stdout(&delete).starts_with("OK hlc="));
    let missing = run(&["get", "greeting"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(stdout(&missing), "");
    assert_eq!(stderr(&missing), "not found\n");

    let long_key = "k".repeat(600);
    let refused = run(&["get", &long_key]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr(&refused),
        "error: key too long: 600 bytes, the limit is 480 bytes\n"
    );

    let empty = run(&["put", "", "v"]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("empty key"), "{}", stderr(&empty));

    // Flags can come from the environment instead.
    let from_env = vergent()
        .args(["get", "absent"])
        .env("VERGENT_NODE", node.addr.to_string())
        .env("VERGENT_CERTS", certs.path())
        .env("VERGENT_USER", "admin")
        .output()
        .unwrap();
    assert_eq!(from_env.status.code(), Some(1), "{}", stderr(&from_env));

    // A client certificate for an application.
    let issued = vergent()
        .args(["certs", "client", "app1", "--dir"])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", stderr(&issued));
    let as_app = vergent()
        .args([
            "put",
            "k",
            "v",
            "--user",
            "app1",
            "--node",
            &node.addr.to_string(),
            "--certs",
        ])
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(as_app.status.success(), "{}", stderr(&as_app));

    let no_cert = vergent()
        .args([
            "get",
            "k",
            "--user",
            "nobody",
            "--node",
            &node.addr.to_string(),
            "--certs",
        ])
        .arg(certs.path())
        .output()
        .unwrap();
    assert_eq!(no_cert.status.code(), Some(2));
    assert!(
        stderr(&no_cert).contains("nobody.crt"),
        "{}",
        stderr(&no_cert)
    );
    assert_eq!(stderr(&no_cert).lines().count(), 1);

    let status = run(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["node"], "n1");
    assert_eq!(doc["partitions"], 256);
    assert_eq!(doc["members"][0]["name"], "n1");
    assert_eq!(doc["members"][0]["state"], "alive");
}

#[test]
fn a_node_that_is_not_there_is_a_one_line_error() {
    let certs = TestCerts::new(&[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // A bound UDP socket that never answers: the client must give up, not hang.
    let silent = socket.local_addr().unwrap();
    let out = cli(certs.path(), silent, &["get", "k", "--timeout-ms", "2000"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: cannot connect to"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn the_shell_survives_errors_and_answers_writes_with_versions() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let home = tempfile::tempdir().unwrap();
    let mut shell = vergent()
        .args(["shell", "--node", &node.addr.to_string(), "--certs"])
        .arg(certs.path())
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "put greeting 'hello world'\nget greeting\nput \"x y\" \"a \\\"quoted\\\" value\"\nget 'x y'\nput unclosed 'quote\nbogus\nput\nget {}\nput big {}\ndelete greeting\nget greeting\nhelp\nquit\nget never-run\n",
        "k".repeat(600),
        "v".repeat(2_000_000)
    );
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    let (text, errors) = (stdout(&out), stderr(&out));
    // A script whose commands failed says how many and exits 1.
    assert_eq!(out.status.code(), Some(1), "{errors}");
    assert!(errors.contains("5 of 12 commands failed"), "{errors}");
    assert!(text.contains("OK hlc="), "{text}");
    assert!(text.contains("hello world\n"), "{text}");
    assert!(text.contains("a \"quoted\" value\n"), "{text}");
    assert!(errors.contains("missing closing quote"), "{errors}");
    assert!(
        errors.contains("value too large") && errors.contains("limit"),
        "{errors}"
    );
    assert!(text.contains("(not found)"), "{text}");
    assert!(text.contains("commands:"), "{text}");
    assert!(errors.contains("unknown command \"bogus\""), "{errors}");
    assert!(errors.contains("the limit is 480 bytes"), "{errors}");
    assert!(!text.contains("never-run") && !errors.contains("never-run"));
}

#[test]
fn a_second_process_on_the_same_data_directory_is_refused() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("n1");
    let first = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let log = ServeProcess::try_start("n1", certs.path(), &data_dir, &[])
        .err()
        .expect("the second process must not start");
    assert!(log.contains("exit status: 2"), "{log}");
    assert!(log.contains("is in use by another process"), "{log}");
    // The first one is unaffected.
    let out = cli(certs.path(), first.addr, &["put", "k", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sigterm_shuts_down_gracefully_and_keeps_the_data() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("n1");
    let mut node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    assert!(
        cli(certs.path(), node.addr, &["put", "k", "v"])
            .status
            .success()
    );
    let status = node.terminate();
    assert!(status.success(), "exit {status}: {}", node.log_text());
    assert!(node.log_text().contains("stopped"));
    let node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let out = cli(certs.path(), node.addr, &["get", "k"]);
    assert_eq!(stdout(&out), "v\n");
}

#[test]
fn a_node_refuses_a_certificate_that_is_not_its_own() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(certs.path().join("n1.crt"), certs.path().join("n2.crt")).unwrap();
    std::fs::copy(certs.path().join("n1.key"), certs.path().join("n2.key")).unwrap();
    let log = ServeProcess::try_start("n2", certs.path(), &data.path().join("n2"), &[])
        .err()
        .expect("n2 must not start with n1's certificate");
    assert!(log.contains("is for node \"n1\""), "{log}");
}

#[test]
fn the_demo_runs_a_shell_and_removes_its_files() {
    let home = tempfile::tempdir().unwrap();
    let mut demo = vergent()
        .args(["demo", "--shell", "--nodes", "1"])
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    demo.stdin
        .take()
        .unwrap()
        .write_all(b"put a 1\nget a\nquit\n")
        .unwrap();
    let out = demo.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("OK hlc="), "{text}");
    assert!(text.contains("\n1\n"), "{text}");
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("vergent demo: stopped and removed "))
        .expect("the demo reports its directory");
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let node = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    for command in [&["status"][..], &["watch"][..]] {
        let mut child = vergent()
            .args(command)
            .arg("--node")
            .arg(node.addr.to_string())
            .arg("--certs")
            .arg(certs.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command has connected, let alone printed.
        drop(child.stdout.take());
        if command == ["watch"] {
            // Writes until watch has something to print; it may subscribe after the first.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                let out = cli(certs.path(), node.addr, &["put", "k", "v"]);
                assert!(out.status.success(), "{}", stderr(&out));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                panic!("watch did not end within 20 s of its reader going away");
            }
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{command:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{command:?}: {err}"
        );
    }
}
