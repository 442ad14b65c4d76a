//! Shared helpers for the system tests: certificates in a temporary directory, real
//! `vergent serve` processes that are always killed, and in-process nodes.

#![allow(dead_code)]

pub mod lincheck;
pub mod linclients;
pub mod netns;
pub mod procs;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vergent::certs::{self, Authority, LeafSpec};
use vergent::client::Client;
use vergent::net::TlsMaterial;
use vergent::node::{Node, NodeConfig};
use vergent::protocol::Role;

/// How long a process gets to say it is listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A CA, the admin certificate and node certificates, in a temporary directory.
pub struct TestCerts {
    pub dir: TempDir,
}

impl TestCerts {
    pub fn new(nodes: &[&str]) -> TestCerts {
        let dir = tempfile::tempdir().unwrap();
        let authority = certs::init(dir.path(), false).unwrap();
        for node in nodes {
            let mut spec = LeafSpec::new(node, Role::Node, 30);
            spec.ips.push(IpAddr::from([127, 0, 0, 1]));
            authority.issue_to(dir.path(), &spec, false).unwrap();
        }
        TestCerts { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn authority(&self) -> Authority {
        Authority::load(self.path()).unwrap()
    }

    pub fn issue(&self, spec: &LeafSpec) {
        self.authority().issue_to(self.path(), spec, true).unwrap();
    }

    pub fn material(&self, name: &str) -> TlsMaterial {
        TlsMaterial::load(self.path(), name).unwrap()
    }

    pub async fn client(&self, addr: SocketAddr) -> Client {
        Client::connect(&addr.to_string(), &self.material(certs::ADMIN_NAME))
            .await
            .unwrap()
    }
}

/// The `vergent` binary built for these tests.
pub fn vergent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vergent"));
    command
        .env_remove("VERGENT_NODE")
        .env_remove("VERGENT_CERTS")
        .env_remove("VERGENT_USER");
    command.env_remove("RUST_LOG");
    command
}

/// Runs a client command against `node` with the admin certificate.
pub fn cli(certs: &Path, node: SocketAddr, args: &[&str]) -> Output {
    vergent()
        .args(args)
        .arg("--node")
        .arg(node.to_string())
        .arg("--certs")
        .arg(certs)
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `vergent serve` process, killed when dropped.
pub struct ServeProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// Where it serves HTTPS, when started with `--http-listen`.
    pub http: Option<SocketAddr>,
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts `vergent serve` on a free port and waits until it says it is listening.
    pub fn start(name: &str, certs: &Path, data_dir: &Path, extra: &[&str]) -> ServeProcess {
        Self::try_start(name, certs, data_dir, extra)
            .unwrap_or_else(|log| panic!("{name} did not start:\n{log}"))
    }

    /// Like [`ServeProcess::start`], but returns the log when the process exits first.
    pub fn try_start(
        name: &str,
        certs: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<ServeProcess, String> {
        Self::try_start_at(name, "127.0.0.1:0", certs, data_dir, extra)
    }

    /// Like [`ServeProcess::try_start`], listening on `listen`.
    pub fn try_start_at(
        name: &str,
        listen: &str,
        certs: &Path,
        data_dir: &Path,
        extra: &[&str],
    ) -> Result<ServeProcess, String> {
        Self::try_start_with(name, listen, certs, data_dir, extra, &[])
    }

    /// Like [`ServeProcess::start`], with its wall clock `offset` from the real one
    /// (libfaketime: `+2s`, `-3s`, `+60s`); monotonic time stays real.
    pub fn start_skewed(
        name: &str,
        certs: &Path,
        data_dir: &Path,
        extra: &[&str],
        offset: &str,
    ) -> ServeProcess {
        Self::try_start_with(
            name,
            "127.0.0.1:0",
            certs,
            data_dir,
            extra,
            &faketime_env(offset),
        )
        .unwrap_or_else(|log| panic!("{name} did not start under faketime {offset}:\n{log}"))
    }

    /// Like [`ServeProcess::try_start_at`], with extra environment variables.
    pub fn try_start_with(
        name: &str,
        listen: &str,
        certs: &Path,
        data_dir: &Path,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Result<ServeProcess, String> {
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = vergent()
            .args(["serve", "--name", name, "--listen", listen, "--certs"])
            .arg(certs)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut http = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once("serving HTTPS on ") {
                        http = Some(addr.trim().parse().unwrap());
                    }
                    if let Some(addr) = line
                        .rsplit("listening on ")
                        .next()
                        .filter(|_| line.contains("listening on"))
                    {
                        return Ok(ServeProcess {
                            child: Some(child),
                            addr: addr.trim().parse().unwrap(),
                            http,
                            name: name.to_string(),
                            data_dir: data_dir.to_path_buf(),
                            log,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!("exit {status}\n{text}"));
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process running");
        unsafe_kill(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal to a process the test started.
pub fn unsafe_kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a pid of a child this test spawned and still owns.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal);
    }
}

/// An in-process node on a free loopback port, with its data in `dir`.
pub async fn start_node(
    certs: &TestCerts,
    name: &str,
    dir: &Path,
    configure: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut config = NodeConfig::new(
        name,
        "127.0.0.1:0".parse().unwrap(),
        dir.join(name),
        certs.path().to_path_buf(),
    );
    configure(&mut config);
    Node::start(config).await.unwrap()
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for checks that need to await.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether every node's view has exactly `names` alive, the same placement, and every
/// member holding the data of every partition it owns (none is still filling).
pub fn converged(nodes: &[&Node], names: &[&str]) -> bool {
    let mut digests = std::collections::BTreeSet::new();
    for node in nodes {
        let view = node.view();
        if names.iter().any(|n| view.filling_of(n) > 0) {
            return false;
        }
        let alive: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.state == vergent::membership::MemberState::Alive)
            .map(|m| m.id.name.as_str())
            .collect();
        if alive != names {
            return false;
        }
        digests.insert(view.placement.digest());
    }
    digests.len() == 1
}

/// An in-process cluster: `names[0]` creates it, the others join through it. Waits
/// until every node sees every other alive.
pub async fn start_cluster(
    certs: &TestCerts,
    names: &[&str],
    dir: &Path,
    configure: impl Fn(&mut NodeConfig),
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for name in names {
        let seed = nodes.first().map(|n| n.local_addr().to_string());
        let node = start_node(certs, name, dir, |config| {
            config.join = seed.into_iter().collect();
            configure(config);
        })
        .await;
        nodes.push(node);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    assert!(
        eventually(Duration::from_secs(20), || converged(&refs, names)).await,
        "cluster {names:?} did not converge"
    );
    nodes
}

/// What replica `node` holds for `key`, asked over the wire with a node certificate.
/// A node that neither owns the key's partition nor holds its data refuses to answer
/// as its replica; that reads as holding nothing.
pub async fn replica_record(
    certs: &TestCerts,
    node: SocketAddr,
    key: &[u8],
) -> Option<vergent::record::Record> {
    let peer = Client::connect(&node.to_string(), &certs.material("n-probe"))
        .await
        .unwrap();
    let answer = peer
        .request(&vergent::protocol::Request::ReadLocal { key: key.to_vec() })
        .await;
    peer.close().await;
    match answer {
        Ok(vergent::protocol::Response::Record { record }) => record,
        Err(err)
            if err.code() == Some(vergent::protocol::ErrorCode::Refused)
                && err.to_string().contains("does not hold partition") =>
        {
            None
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

impl TestCerts {
    /// Adds a node certificate the tests use to talk to replicas directly.
    pub fn with_probe(self) -> TestCerts {
        let mut spec = LeafSpec::new("n-probe", Role::Node, 30);
        spec.ips.push(IpAddr::from([127, 0, 0, 1]));
        self.issue(&spec);
        self
    }
}

/// Entries with distinct keys `prefix-i` for `i` in `range`, at wall time `wall_ms`.
pub fn entries(
    prefix: &str,
    range: std::ops::Range<u32>,
    wall_ms: u64,
    value: &str,
) -> Vec<vergent::record::Entry> {
    range
        .map(|i| vergent::record::Entry {
            key: format!("{prefix}-{i}").into_bytes(),
            record: vergent::record::Record {
                version: vergent::record::Version {
                    hlc: vergent::hlc::Timestamp::new(wall_ms, (i % 60_000) as u16),
                    node: vergent::record::NodeId::from_name("n-probe"),
                },
                payload: vergent::record::Payload::Value(format!("{value}-{i}").into_bytes()),
                expires_ms: None,
            },
        })
        .collect()
}

/// Writes `entries` straight into one replica, bypassing replication.
pub async fn load(certs: &TestCerts, node: SocketAddr, entries: &[vergent::record::Entry]) {
    let peer = Client::connect(&node.to_string(), &certs.material("n-probe"))
        .await
        .unwrap();
    for batch in entries.chunks(1000) {
        let answer = peer
            .request(&vergent::protocol::Request::Replicate {
                entries: batch.to_vec(),
            })
            .await
            .unwrap();
        assert!(
            matches!(answer, vergent::protocol::Response::Replicated { .. }),
            "{answer:?}"
        );
    }
    peer.close().await;
}

/// Runs `vergent repair` through the protocol and returns its report.
pub async fn repair(
    certs: &TestCerts,
    node: SocketAddr,
    dry_run: bool,
) -> vergent::antientropy::report::RepairReport {
    let mut client = certs.client(node).await;
    client.set_request_timeout(Duration::from_secs(600));
    let request = vergent::protocol::Request::Repair {
        partition: None,
        peer: None,
        dry_run,
    };
    let mut answers = client.stream(&request).await.unwrap();
    loop {
        match answers.next().await.unwrap() {
            Some(vergent::protocol::Response::RepairProgress(_)) => {}
            Some(vergent::protocol::Response::Repaired(report)) => {
                client.close().await;
                return report;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

/// Every record a replica holds, by key.
pub fn contents(node: &Node) -> std::collections::BTreeMap<Vec<u8>, vergent::record::Record> {
    let store = node.store();
    let partitions = store.cluster().unwrap().partitions;
    let mut out = std::collections::BTreeMap::new();
    for p in 0..partitions {
        let (entries, next) = store.entries_in(p, 0..4096, None, usize::MAX).unwrap();
        assert!(next.is_none());
        out.extend(entries.into_iter().map(|e| (e.key, e.record)));
    }
    out
}

/// The keys of `keys` replica `node` does not hold itself (one connection for all).
pub async fn missing_on(certs: &TestCerts, node: SocketAddr, keys: &[String]) -> Vec<String> {
    let peer = Client::connect(&node.to_string(), &certs.material("n-probe"))
        .await
        .unwrap();
    let mut missing = Vec::new();
    for key in keys {
        let answer = peer
            .request(&vergent::protocol::Request::ReadLocal {
                key: key.as_bytes().to_vec(),
            })
            .await
            .unwrap();
        match answer {
            vergent::protocol::Response::Record { record: Some(_) } => {}
            vergent::protocol::Response::Record { record: None } => missing.push(key.clone()),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    peer.close().await;
    missing
}

/// Writes `value` under every key of `keys` through `node` at `consistency`, on one
/// connection; panics on a failed write.
pub async fn put_all(
    certs: &TestCerts,
    node: SocketAddr,
    keys: &[String],
    value: &str,
    consistency: vergent::protocol::Consistency,
) {
    let client = certs.client(node).await;
    for key in keys {
        client
            .put(key.as_bytes(), value.as_bytes(), Some(consistency))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    client.close().await;
}

/// A process's `status --json`, or `None` when it does not answer.
pub fn status(certs: &TestCerts, node: SocketAddr) -> Option<serde_json::Value> {
    let out = cli(
        certs.path(),
        node,
        &["status", "--json", "--timeout-ms", "3000"],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub fn member<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or(&serde_json::Value::Null)
}

/// Every process sees `alive` alive, none still filling, and all agree on placement.
pub fn settled(certs: &TestCerts, nodes: &[&ServeProcess], alive: &[&str]) -> bool {
    let mut digests = std::collections::BTreeSet::new();
    for node in nodes {
        let Some(status) = status(certs, node.addr) else {
            return false;
        };
        let members = status["members"].as_array().unwrap();
        let seen: Vec<&str> = members
            .iter()
            .filter(|m| m["state"] == "alive")
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        if seen != alive
            || members
                .iter()
                .any(|m| m["partitions_filling"].as_u64() != Some(0))
        {
            return false;
        }
        digests.insert(status["placement_digest"].as_str().unwrap().to_string());
    }
    digests.len() == 1
}

pub async fn wait_settled(certs: &TestCerts, nodes: &[&ServeProcess], alive: &[&str]) {
    assert!(
        eventually_async(Duration::from_secs(40), || async {
            settled(certs, nodes, alive)
        })
        .await,
        "the cluster did not settle with {alive:?} alive"
    );
}

/// Where the faketime package puts the library that shifts a process's wall clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a process with its wall clock `offset` from the real one.
pub fn faketime_env(offset: &str) -> Vec<(String, String)> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install the faketime package (.ci/run does)"
    );
    vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}
