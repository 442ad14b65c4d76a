//! The network ceiling: a raw quinn mutual-TLS request/response loop over loopback with
//! Vergent's certificates and TLS settings, one bidirectional stream per request, a
//! 128-byte request and a 32-byte answer, nothing else.
//!
//!     ceiling-quic serve --certs DIR --name n1 --listen 127.0.0.1:7901
//!     ceiling-quic load --certs DIR --addr 127.0.0.1:7901 --clients 64 --seconds 5

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vergent::net::{self, TlsMaterial};
use vergent_bench::{Latencies, OrExit, arg, arg_string};

#[tokio::main]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let certs = arg_string("--certs", "certs");
    match mode.as_str() {
        "serve" => {
            serve(
                &certs,
                &arg_string("--name", "n1"),
                &arg_string("--listen", "127.0.0.1:7901"),
            )
            .await
        }
        "load" => {
            load(
                &certs,
                &arg_string("--addr", "127.0.0.1:7901"),
                arg("--clients", 64),
                arg("--seconds", 5),
            )
            .await
        }
        _ => eprintln!("usage: ceiling-quic serve|load ..."),
    }
}

async fn serve(certs: &str, name: &str, listen: &str) {
    let material = TlsMaterial::load(certs.as_ref(), name).or_exit("loading certificates");
    let config = net::server_config(&material).or_exit("TLS configuration");
    let endpoint = quinn::Endpoint::server(config, listen.parse().or_exit("--listen"))
        .or_exit("binding the listener");
    println!(
        "listening on {}",
        endpoint
            .local_addr()
            .or_exit("reading the listening address")
    );
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    if recv.read_to_end(1 << 20).await.is_ok() {
                        let _ = send.write_all(&[0u8; 32]).await;
                        let _ = send.finish();
                    }
                });
            }
        });
    }
}

async fn load(certs: &str, addr: &str, clients: usize, seconds: u64) {
    let material = TlsMaterial::load(certs.as_ref(), "admin").or_exit("loading certificates");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let config = net::client_config(&material).or_exit("TLS configuration");
        let stop = stop.clone();
        let addr: std::net::SocketAddr = addr.parse().or_exit("--addr");
        tasks.push(tokio::spawn(async move {
            let mut endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())
                .or_exit("binding a client socket");
            endpoint.set_default_client_config(config);
            let connection = endpoint
                .connect(addr, "127.0.0.1")
                .or_exit("connecting")
                .await
                .or_exit("connecting");
            let mut latencies = Latencies::default();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let exchange = async {
                    let (mut send, mut recv) = connection.open_bi().await.ok()?;
                    send.write_all(&[1u8; 128]).await.ok()?;
                    send.finish().ok()?;
                    recv.read_to_end(1 << 10).await.ok()
                };
                match exchange.await {
                    Some(_) => latencies.record(began.elapsed()),
                    None => latencies.errors += 1,
                }
            }
            latencies
        }));
    }
    vergent_bench::finish(seconds, &stop, tasks, started).await;
}
