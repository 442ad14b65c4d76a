//! Process chaos: five real `vergent serve` processes; clients write while a chaos loop
//! SIGKILLs, restarts, SIGSTOPs and SIGCONTs random nodes (never more than a minority
//! down at once). Then everything heals, `vergent repair` runs on every node, and every
//! write acknowledged at quorum must read back with its value through every node, and
//! `repair --dry-run` must find nothing.
//!
//! `VERGENT_CHAOS_SECS` sets the length of the chaos phase (default 20 s).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use support::{ServeProcess, TestCerts, cli, eventually_async, stdout, unsafe_kill};
use vergent::client::Client;
use vergent::protocol::Consistency;

const NODES: usize = 5;
/// Writes that must be acknowledged under chaos for the run to prove anything. How many
/// a fixed time yields depends on the machine and on the chaos (a write whose replicas
/// are paused waits out the client's timeout), so the run is extended until this many
/// are in, up to `EXTENSION_MAX` past the planned end.
const ACKED_MIN: usize = 100;
const EXTENSION_MAX: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    acked: BTreeMap<String, String>,
    /// Failed writes by kind of failure.
    failed: BTreeMap<&'static str, u64>,
    kills: u64,
    pauses: u64,
}

fn alive_everywhere(certs: &TestCerts, addrs: &[SocketAddr]) -> bool {
    addrs.iter().all(|addr| {
        let out = cli(
            certs.path(),
            *addr,
            &["status", "--json", "--timeout-ms", "3000"],
        );
        out.status.success() && stdout(&out).matches("\"state\": \"alive\"").count() == NODES
    })
}

/// Brings node `i` back: a killed one is restarted (on a new port) and joins through a
/// node that is `up`; a paused one is continued.
#[allow(clippy::too_many_arguments)]
fn bring_back(
    i: usize,
    killed: bool,
    nodes: &mut [ServeProcess],
    names: &[String],
    certs: &TestCerts,
    data: &std::path::Path,
    addrs: &Mutex<Vec<SocketAddr>>,
    up: impl Fn(usize) -> bool,
) {
    if !killed {
        unsafe_kill(nodes[i].pid(), libc::SIGCONT);
        return;
    }
    let seed = (0..NODES).find(|&j| j != i && up(j)).unwrap();
    let seed = addrs.lock().unwrap()[seed].to_string();
    let name = &names[i];
    nodes[i] = ServeProcess::start(name, certs.path(), &data.join(name), &["--join", &seed]);
    addrs.lock().unwrap()[i] = nodes[i].addr;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kills_and_pauses() {
    let chaos_secs: u64 = std::env::var("VERGENT_CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let certs = TestCerts::new(&name_refs);
    let data = tempfile::tempdir().unwrap();
    let mut nodes: Vec<ServeProcess> = Vec::new();
    for name in &names {
        let seed = nodes.first().map(|n| n.addr.to_string());
        let extra: Vec<&str> = match &seed {
            Some(seed) => vec!["--join", seed.as_str()],
            None => vec![],
        };
        nodes.push(ServeProcess::start(
            name,
            certs.path(),
            &data.path().join(name),
            &extra,
        ));
    }
    let addrs = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect::<Vec<_>>()));
    let ready = eventually_async(Duration::from_secs(30), || async {
        alive_everywhere(&certs, &addrs.lock().unwrap().clone())
    })
    .await;
    assert!(ready, "the cluster did not form");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop_at = Instant::now() + Duration::from_secs(chaos_secs);
    let give_up_at = stop_at + EXTENSION_MAX;
    let keep_writing = {
        let tally = tally.clone();
        move || {
            let now = Instant::now();
            now < stop_at || (now < give_up_at && tally.lock().unwrap().acked.len() < ACKED_MIN)
        }
    };
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (addrs, tally) = (addrs.clone(), tally.clone());
        let material = certs.material("admin");
        let keep_writing = keep_writing.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w);
            let mut clients: BTreeMap<usize, Client> = BTreeMap::new();
            // Like a real client, stay away for a while from a node that just failed.
            let mut avoid: BTreeMap<usize, Instant> = BTreeMap::new();
            let mut n = 0u64;
            while keep_writing() {
                let now = Instant::now();
                let usable: Vec<usize> = (0..NODES)
                    .filter(|t| avoid.get(t).is_none_or(|until| *until <= now))
                    .collect();
                if usable.is_empty() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let target = usable[rng.random_range(0..usable.len())];
                let addr = addrs.lock().unwrap()[target];
                if let std::collections::btree_map::Entry::Vacant(slot) = clients.entry(target) {
                    let connect = tokio::time::timeout(
                        Duration::from_secs(1),
                        Client::connect(&addr.to_string(), &material),
                    )
                    .await;
                    match connect {
                        Ok(Ok(mut client)) => {
                            client.set_request_timeout(Duration::from_secs(3));
                            slot.insert(client);
                        }
                        _ => {
                            avoid.insert(target, Instant::now() + Duration::from_secs(2));
                            continue;
                        }
                    }
                }
                n += 1;
                let (key, value) = (format!("w{w}-{n}"), format!("v{w}-{n}"));
                let client = clients.get(&target).unwrap();
                match client
                    .put(key.as_bytes(), value.as_bytes(), Some(Consistency::Quorum))
                    .await
                {
                    Ok(_) => {
                        tally.lock().unwrap().acked.insert(key, value);
                    }
                    Err(err) => {
                        *tally.lock().unwrap().failed.entry(err.kind()).or_default() += 1;
                        if err.code().is_none() {
                            // The connection is gone or stuck (a killed or paused node).
                            clients.remove(&target);
                            avoid.insert(target, Instant::now() + Duration::from_secs(2));
                        }
                    }
                }
            }
            for (_, client) in clients {
                client.close().await;
            }
        }));
    }

    // The chaos loop.
    let mut rng = SmallRng::seed_from_u64(7);
    let mut down: BTreeMap<usize, (Instant, bool)> = BTreeMap::new(); // node -> (back at, killed)
    while !writers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        let now = Instant::now();
        let due: Vec<usize> = down
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            let (_, killed) = down.remove(&i).unwrap();
            let up = |j: usize| !down.contains_key(&j);
            bring_back(
                i,
                killed,
                &mut nodes,
                &names,
                &certs,
                data.path(),
                &addrs,
                up,
            );
        }
        if down.len() < (NODES - 1) / 2 {
            let i = rng.random_range(0..NODES);
            if down.contains_key(&i) {
                continue;
            }
            let back = now + Duration::from_millis(rng.random_range(1_000..3_000));
            if rng.random_bool(0.5) {
                nodes[i].kill();
                tally.lock().unwrap().kills += 1;
                down.insert(i, (back, true));
            } else {
                unsafe_kill(nodes[i].pid(), libc::SIGSTOP);
                tally.lock().unwrap().pauses += 1;
                down.insert(i, (back, false));
            }
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    // Heal: everything back.
    let down = std::mem::take(&mut down);
    for (&i, &(_, killed)) in &down {
        // A killed node joins through one that was never down in this last round.
        let up = |j: usize| !down.contains_key(&j);
        bring_back(
            i,
            killed,
            &mut nodes,
            &names,
            &certs,
            data.path(),
            &addrs,
            up,
        );
    }
    let addrs: Vec<SocketAddr> = addrs.lock().unwrap().clone();
    let healed = eventually_async(Duration::from_secs(60), || async {
        alive_everywhere(&certs, &addrs)
    })
    .await;
    assert!(healed, "the cluster did not heal");

    for addr in &addrs {
        let repaired = eventually_async(Duration::from_secs(60), || async {
            cli(certs.path(), *addr, &["repair", "--timeout-ms", "120000"])
                .status
                .success()
        })
        .await;
        assert!(repaired, "repair on {addr} did not converge");
    }
    for addr in &addrs {
        let dry = cli(certs.path(), *addr, &["repair", "--dry-run", "--json"]);
        assert!(
            dry.status.success(),
            "{}",
            String::from_utf8_lossy(&dry.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
        assert_eq!(report["counts"]["keys_differing"], 0, "{report}");
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "chaos: {} writes acknowledged at quorum, failed by kind {:?}, {} kills, {} pauses",
        tally.acked.len(),
        tally.failed,
        tally.kills,
        tally.pauses,
    );
    assert!(
        tally.acked.len() >= ACKED_MIN,
        "only {} writes acknowledged under chaos in {chaos_secs} s + {EXTENSION_MAX:?}",
        tally.acked.len()
    );
    let mut lost = Vec::new();
    for addr in &addrs {
        let client = certs.client(*addr).await;
        for (key, value) in &tally.acked {
            match client.get(key.as_bytes(), Some(Consistency::Quorum)).await {
                Ok(Some((found, _))) if found == value.as_bytes() => {}
                other => lost.push(format!("{key} through {addr}: {other:?}")),
            }
        }
        client.close().await;
    }
    eprintln!(
        "chaos: {} acknowledged writes read back through {} nodes, {} lost",
        tally.acked.len(),
        addrs.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged writes lost:\n{}",
        lost.join("\n")
    );
}
