//! The dashboard as a person sees it, driven in tmux: the demo, `vergent top` watching a
//! node die and come back, partitions not shown in sync before a compare confirms them,
//! a repair on another node seen from the watched one, and the metrics listener.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{ServeProcess, TestCerts, cli, entries, load, stderr};

/// A tmux session the test owns; killed when dropped.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let status = Command::new("tmux").arg("-V").output();
        assert!(
            status.is_ok_and(|s| s.status.success()),
            "tmux is required for the dashboard tests (.ci/run installs it)"
        );
        let name = format!("vergent-test-{}-{}", std::process::id(), rand_suffix());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Tmux { name }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys])
            .status()
            .unwrap();
    }

    /// Waits until the pane shows something for which `check` holds.
    fn wait_for(&self, timeout: Duration, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let pane = self.capture();
            if check(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the pane shows:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

fn vergent_path() -> &'static str {
    env!("CARGO_BIN_EXE_vergent")
}

fn demo_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vergent-demo-"))
        .collect()
}

#[test]
fn the_demo_shows_three_live_members_and_the_partition_map_then_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let done = tmp.path().join("exit-status");
    // Written aside and renamed: the file appears with its status in it, never empty.
    let command = format!(
        "TMPDIR={} {} demo; echo $? > {}.part && mv {}.part {}; sleep 600",
        tmp.path().display(),
        vergent_path(),
        done.display(),
        done.display(),
        done.display()
    );
    let tmux = Tmux::start(&command, 100, 30);
    tmux.wait_for(
        Duration::from_secs(60),
        "three live members, none still filling, and the partition map",
        |pane| {
            pane.contains("nodes 3 alive")
                && pane.contains("Partitions (256)")
                // Under the demo's writes a cell is in sync or unconfirmed, by
                // whether a compare came after its last write.
                && map_symbols(pane, '·') + map_symbols(pane, '?') >= 256
                && ["n1", "n2", "n3"].iter().all(|name| {
                    pane.lines()
                        .any(|l| l.contains(name) && l.contains("● alive"))
                })
        },
    );
    assert_eq!(
        demo_dirs(tmp.path()).len(),
        1,
        "the demo works in its own directory"
    );
    tmux.keys("q");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.exists() {
        assert!(
            Instant::now() < deadline,
            "the demo did not exit; the pane shows:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read_to_string(&done).unwrap().trim(),
        "0",
        "{}",
        tmux.capture()
    );
    assert!(
        demo_dirs(tmp.path()).is_empty(),
        "the temporary directory is gone"
    );
    assert!(tmux.capture().contains("vergent demo: stopped and removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_a_killed_node_dead_and_then_alive_again() {
    let certs = TestCerts::new(&["n1", "n2", "n3"]);
    let data = tempfile::tempdir().unwrap();
    let mut n1 = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &[]);
    let seed = n1.addr.to_string();
    let _n2 = ServeProcess::start(
        "n2",
        certs.path(),
        &data.path().join("n2"),
        &["--join", &seed],
    );
    let mut n3 = ServeProcess::start(
        "n3",
        certs.path(),
        &data.path().join("n3"),
        &["--join", &seed],
    );
    let command = format!(
        "{} top --node {} --certs {}; sleep 600",
        vergent_path(),
        n1.addr,
        certs.path().display()
    );
    let tmux = Tmux::start(&command, 120, 36);
    tmux.wait_for(Duration::from_secs(30), "three live members", |p| {
        p.contains("nodes 3 alive")
    });
    n3.kill();
    let killed = Instant::now();
    let pane = tmux.wait_for(Duration::from_secs(20), "n3 declared dead", |p| {
        p.contains("n3 declared dead")
    });
    assert!(
        pane.lines()
            .any(|l| l.contains("n3") && l.contains("✕ dead")),
        "{pane}"
    );
    assert!(pane.contains("u down"), "{pane}");
    eprintln!(
        "the dashboard showed n3 dead {:?} after SIGKILL",
        killed.elapsed()
    );
    let _n3 = ServeProcess::start(
        "n3",
        certs.path(),
        &data.path().join("n3"),
        &["--join", &seed],
    );
    let pane = tmux.wait_for(Duration::from_secs(30), "n3 alive again", |p| {
        p.contains("n3 alive again")
    });
    assert!(pane.contains("nodes 3 alive"), "{pane}");

    // The watched node itself dies: the dashboard says so and fails over.
    n1.kill();
    let pane = tmux.wait_for(Duration::from_secs(30), "a failover", |p| {
        p.contains("n1 unreachable; now watching")
    });
    assert!(pane.contains("n1 stopped answering"), "{pane}");
    // It comes back where it was: the dashboard goes back to it.
    let addr = n1.addr.to_string();
    let _n1 = ServeProcess::try_start_at(
        "n1",
        &addr,
        certs.path(),
        &data.path().join("n1"),
        &["--join", &_n2.addr.to_string()],
    )
    .expect("n1 restarts on its address");
    tmux.wait_for(Duration::from_secs(30), "the return to n1", |p| {
        p.contains("n1 is back; watching it again")
    });
    tmux.keys("q");
}

/// The partition map's cells, counted by symbol: the map is the block titled
/// `Partitions`, its cells the lines between that title and the block's bottom border.
fn map_symbols(pane: &str, symbol: char) -> usize {
    let mut inside = false;
    let mut count = 0;
    for line in pane.lines() {
        if line.contains("Partitions (") {
            inside = true;
            continue;
        }
        if inside {
            // The bottom border carries the legend; the map ends there.
            if line.contains('└') || line.contains('╰') {
                break;
            }
            count += line.chars().filter(|c| *c == symbol).count();
        }
    }
    count
}

/// Measured before: with anti-entropy off, a replica that missed 20,000 writes showed
/// every partition `·` (in sync), and a repair run on n3 was invisible from n1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_unconfirmed_partitions_and_a_repair_on_another_node() {
    let certs = TestCerts::new(&["n1", "n2", "n3"]).with_probe();
    let data = tempfile::tempdir().unwrap();
    let quiet = ["--anti-entropy-interval", "off", "--hints-max", "0"];
    let n1 = ServeProcess::start("n1", certs.path(), &data.path().join("n1"), &quiet);
    let seed = n1.addr.to_string();
    let joined = |extra: &[&str]| {
        let mut args = quiet.to_vec();
        args.extend_from_slice(&["--join", &seed]);
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let n2_args = joined(&[]);
    let n2_refs: Vec<&str> = n2_args.iter().map(String::as_str).collect();
    let n2 = ServeProcess::start("n2", certs.path(), &data.path().join("n2"), &n2_refs);
    // n3 repairs at 200,000 B/s, so its repair lasts long enough to watch.
    let n3_args = joined(&["--repair-bytes-per-sec", "200000"]);
    let n3_refs: Vec<&str> = n3_args.iter().map(String::as_str).collect();
    let mut n3 = ServeProcess::start("n3", certs.path(), &data.path().join("n3"), &n3_refs);
    let command = format!(
        "{} top --node {} --certs {}; sleep 600",
        vergent_path(),
        n1.addr,
        certs.path().display()
    );
    let tmux = Tmux::start(&command, 120, 40);
    tmux.wait_for(Duration::from_secs(30), "three live members", |p| {
        p.contains("nodes 3 alive")
    });

    // n3 misses every write, then comes back: until it has compared (its fill, held to
    // 200,000 B/s, takes a few seconds), nothing may show in sync.
    n3.kill();
    let value = "v".repeat(100);
    let writes = entries(
        "key",
        0..10_000,
        vergent::wallclock::system_wall_ms(),
        &value,
    );
    load(&certs, n1.addr, &writes).await;
    load(&certs, n2.addr, &writes).await;
    let n3 = ServeProcess::start("n3", certs.path(), &data.path().join("n3"), &n3_refs);
    let pane = tmux.wait_for(Duration::from_secs(30), "n3 back", |p| {
        p.contains("nodes 3 alive") && map_symbols(p, 'u') == 0
    });
    assert_eq!(
        map_symbols(&pane, '·'),
        0,
        "no partition may show in sync before a compare\n{pane}"
    );
    assert!(map_symbols(&pane, '?') > 0, "{pane}");
    assert!(
        pane.contains("? unconf"),
        "the legend names the state\n{pane}"
    );
    // A repair on n3 (after its fill, if one runs) compares every partition with both
    // others: confirmed.
    let out = cli(certs.path(), n3.addr, &["repair"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tmux.wait_for(Duration::from_secs(30), "every partition confirmed", |p| {
        map_symbols(p, '?') == 0 && map_symbols(p, '·') > 0
    });

    // Writes that reach n1 and n2 only, while n3 is up: unconfirmed again, until a
    // repair on n3 compares them.
    let more = entries(
        "more",
        0..5_000,
        vergent::wallclock::system_wall_ms(),
        &value,
    );
    load(&certs, n1.addr, &more).await;
    load(&certs, n2.addr, &more).await;
    tmux.wait_for(
        Duration::from_secs(10),
        "unconfirmed after the writes",
        |p| map_symbols(p, '·') == 0,
    );

    // A repair on n3, from the command line: n1's dashboard shows it running and ended.
    let mut repair = support::vergent()
        .args(["repair", "--node", &n3.addr.to_string(), "--certs"])
        .arg(certs.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pane = tmux.wait_for(Duration::from_secs(30), "the repair's gauge", |p| {
        p.contains("repair started on n3") && p.contains("n3 →")
    });
    assert!(pane.contains("ETA") || pane.contains("/"), "{pane}");
    assert!(repair.wait().unwrap().success(), "the repair failed");
    let pane = tmux.wait_for(Duration::from_secs(30), "the repair's end", |p| {
        p.contains("repair on n3 ended")
    });
    let _ = pane;
    let pane = tmux.wait_for(
        Duration::from_secs(30),
        "every partition confirmed again",
        |p| map_symbols(p, '?') == 0 && map_symbols(p, '·') > 0,
    );
    assert_eq!(map_symbols(&pane, '!'), 0, "{pane}");
    tmux.keys("q");
    drop((n2, n3));
}

#[test]
fn the_metrics_listener_serves_prometheus_text() {
    let certs = TestCerts::new(&["n1"]);
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let node = ServeProcess::start(
        "n1",
        certs.path(),
        &data.path().join("n1"),
        &["--metrics-listen", &listen],
    );
    assert!(
        cli(certs.path(), node.addr, &["put", "k", "v"])
            .status
            .success()
    );
    assert!(
        cli(
            certs.path(),
            node.addr,
            &["get", "k", "--consistency", "one"]
        )
        .status
        .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let out = Command::new("curl")
            .args(["-s", "-f", &format!("http://{listen}/metrics")])
            .output();
        let out = out.expect("curl is required for this test (.ci/run installs it)");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        // The status gauges appear after the first status tick.
        if out.status.success() && body.contains("vergent_members") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics: {} {}",
            body,
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for series in [
        "vergent_requests_total{",
        "vergent_request_duration_seconds_bucket{",
        "vergent_hints ",
        "vergent_hint_oldest_age_seconds ",
        "vergent_members{state=\"alive\"} 1",
        "vergent_hlc_skew_seconds{member=\"n1\"}",
        "vergent_records ",
    ] {
        assert!(body.contains(series), "{series} missing:\n{body}");
    }
    assert!(
        body.contains("op=\"put\"")
            && body.contains("consistency=\"quorum\"")
            && body.contains("outcome=\"ok\"")
    );
    // Every sample line is `name{labels} value`, and every metric has a TYPE line.
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name in {line:?}"
        );
        let family = metric
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
}
