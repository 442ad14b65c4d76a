//! `vergent demo`: a local cluster in a temporary directory with fresh certificates, a
//! light workload, and the dashboard. Quitting stops the nodes and removes everything.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::Failure;
use crate::certs::{self, LEAF_DAYS_DEFAULT, LeafSpec};
use crate::client::Client;
use crate::net::TlsMaterial;
use crate::node::{Node, NodeConfig};
use crate::protocol::{Consistency, Role};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Nodes in the demo cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    nodes: u8,
    /// Start no write workload.
    #[arg(long)]
    no_workload: bool,
    /// An interactive shell on the first node instead of the dashboard (works without a
    /// terminal: commands can come from a pipe).
    #[arg(long)]
    shell: bool,
}

/// Writes and reads per second of the demo workload.
const WORKLOAD_WRITES_PER_S: u64 = 40;

pub(crate) fn run(args: DemoArgs) -> Result<(), Failure> {
    use std::io::IsTerminal;
    if !args.shell && !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            "vergent demo shows a dashboard and needs a terminal; `vergent demo --shell` runs the cluster with a shell instead",
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("vergent-demo-")
        .tempdir()
        .map_err(|e| Failure::new(format!("cannot create a temporary directory: {e}")))?;
    let certs_dir = dir.path().join("certs");
    let authority = certs::init(&certs_dir, false)?;
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    for name in &names {
        let mut spec = LeafSpec::new(name, Role::Node, LEAF_DAYS_DEFAULT);
        spec.ips.push(IpAddr::from([127, 0, 0, 1]));
        authority.issue_to(&certs_dir, &spec, false)?;
    }

    let runtime = super::runtime()?;
    let mut nodes: Vec<Node> = Vec::new();
    for name in &names {
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = NodeConfig::new(
            name,
            listen,
            dir.path().join("data").join(name),
            certs_dir.clone(),
        );
        config.join = nodes
            .first()
            .map(|n| n.local_addr().to_string())
            .into_iter()
            .collect();
        config.anti_entropy_interval = Some(Duration::from_secs(15));
        match runtime.block_on(Node::start(config)) {
            Ok(node) => nodes.push(node),
            Err(err) => {
                for node in nodes {
                    runtime.block_on(node.shutdown());
                }
                return Err(err.into());
            }
        }
    }
    let first = nodes[0].local_addr();

    // A signal must not leave the temporary directory behind.
    let dir_path = dir.path().to_path_buf();
    runtime.spawn(async move {
        if super::serve::wait_for_signal().await.is_ok() {
            let _ = std::fs::remove_dir_all(&dir_path);
            std::process::exit(130);
        }
    });

    let reach = format!(
        "vergent shell --node {first} --certs {}",
        certs_dir.display()
    );
    println!(
        "vergent demo: {} nodes on {}, files in {}",
        nodes.len(),
        nodes
            .iter()
            .map(|n| n.local_addr().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        dir.path().display()
    );
    println!("from another terminal: {reach}");
    let material = Arc::new(TlsMaterial::load(&certs_dir, certs::ADMIN_NAME)?);
    let stop = tokio_util::sync::CancellationToken::new();
    if !args.no_workload {
        let addrs: Vec<String> = nodes.iter().map(|n| n.local_addr().to_string()).collect();
        runtime.spawn(workload(addrs, material.clone(), stop.clone()));
    }
    let result = if args.shell {
        runtime
            .block_on(Client::connect(&first.to_string(), &material))
            .map_err(Failure::from)
            .and_then(|client| {
                let result = super::shell::session(&runtime, &client, &first.to_string());
                runtime.block_on(client.close());
                result
            })
    } else {
        let notes = vec![format!(
            "demo cluster of {} nodes; from another terminal: {reach}",
            nodes.len()
        )];
        super::top::dashboard(
            &runtime,
            material,
            first.to_string(),
            notes.into_iter().next(),
        )
    };
    stop.cancel();
    for node in nodes {
        runtime.block_on(node.shutdown());
    }
    drop(runtime);
    let path = dir.path().to_path_buf();
    dir.close()
        .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
    println!("vergent demo: stopped and removed {}", path.display());
    result
}

/// A light, steady workload: writes (and a few deletes and reads) at quorum, spread
/// over every node, so the dashboard has something to show.
async fn workload(
    addrs: Vec<String>,
    material: Arc<TlsMaterial>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut clients = Vec::new();
    for addr in &addrs {
        if let Ok(client) = Client::connect(addr, &material).await {
            clients.push(client);
        }
    }
    if clients.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / WORKLOAD_WRITES_PER_S));
    let mut i: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        i += 1;
        let client = &clients[(i as usize) % clients.len()];
        let key = format!("demo-{}", (i * 7919) % 1000);
        let _ = match i % 10 {
            0 => client
                .delete(key.as_bytes(), Some(Consistency::Quorum))
                .await
                .map(|_| ()),
            1..=3 => client
                .get(key.as_bytes(), Some(Consistency::Quorum))
                .await
                .map(|_| ()),
            _ => client
                .put(
                    key.as_bytes(),
                    format!("value {i}").as_bytes(),
                    Some(Consistency::Quorum),
                )
                .await
                .map(|_| ()),
        };
    }
    for client in clients {
        client.close().await;
    }
}
