//! `vergent demo`: a node in a temporary directory with fresh certificates, and a shell
//! on it. Everything is removed when the shell ends or the process is told to stop.

use std::net::{IpAddr, SocketAddr};

use clap::Args;

use super::Failure;
use crate::certs::{self, Authority, LEAF_DAYS_DEFAULT, LeafSpec};
use crate::client::Client;
use crate::net::TlsMaterial;
use crate::node::{Node, NodeConfig};
use crate::protocol::Role;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

const DEMO_NODE: &str = "demo1";

pub(crate) fn run(_args: DemoArgs) -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("vergent-demo-")
        .tempdir()
        .map_err(|e| Failure::new(format!("cannot create a temporary directory: {e}")))?;
    let certs_dir = dir.path().join("certs");
    let authority = certs::init(&certs_dir, false)?;
    let mut spec = LeafSpec::new(DEMO_NODE, Role::Node, LEAF_DAYS_DEFAULT);
    spec.ips.push(IpAddr::from([127, 0, 0, 1]));
    authority.issue_to(&certs_dir, &spec, false)?;
    drop::<Authority>(authority);

    let runtime = super::runtime()?;
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = NodeConfig::new(
        DEMO_NODE,
        listen,
        dir.path().join("data").join(DEMO_NODE),
        certs_dir.clone(),
    );
    let node = runtime.block_on(Node::start(config))?;
    let addr = node.local_addr();

    // A signal must not leave the temporary directory behind.
    let dir_path = dir.path().to_path_buf();
    runtime.spawn(async move {
        if super::serve::wait_for_signal().await.is_ok() {
            let _ = std::fs::remove_dir_all(&dir_path);
            std::process::exit(130);
        }
    });

    println!(
        "vergent demo: node {DEMO_NODE} on {addr}, files in {}",
        dir.path().display()
    );
    println!(
        "from another terminal: vergent shell --node {addr} --certs {}",
        certs_dir.display()
    );
    let material = TlsMaterial::load(&certs_dir, certs::ADMIN_NAME)?;
    let result = runtime
        .block_on(Client::connect(&addr.to_string(), &material))
        .map_err(Failure::from)
        .and_then(|client| {
            let result = super::shell::session(&runtime, &client, &addr.to_string());
            runtime.block_on(client.close());
            result
        });
    runtime.block_on(node.shutdown());
    drop(runtime);
    let path = dir.path().to_path_buf();
    dir.close()
        .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
    println!("vergent demo: stopped and removed {}", path.display());
    result
}
