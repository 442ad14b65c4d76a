//! The Rust client in a few lines: `cargo run --example client -- 127.0.0.1:7001 certs`
//! writes a key and reads it back with the `admin` certificate of `certs/`.

use std::path::PathBuf;

use vergent::client::Client;
use vergent::net::TlsMaterial;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let node = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let certs = PathBuf::from(args.next().unwrap_or_else(|| "certs".into()));
    // The cluster's CA and a client certificate: certs/ca.crt, certs/admin.{crt,key}.
    let material = TlsMaterial::load(&certs, "admin")?;
    let client = Client::connect(&node, &material).await?;
    let version = client.put(b"greeting", b"hello from Rust", None).await?;
    println!("written at {version}");
    match client.get(b"greeting", None).await? {
        Some((value, version)) => {
            println!("{} ({version})", String::from_utf8_lossy(&value))
        }
        None => println!("not found"),
    }
    client.close().await;
    Ok(())
}
