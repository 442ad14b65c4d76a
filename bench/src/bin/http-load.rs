//! The load shape of `vergent bench --mix 100:0:0` against Vergent's HTTPS API: C
//! concurrent clients, each with one keep-alive HTTP/1.1 connection over TLS (a client
//! certificate of the cluster's CA) and one request in flight, putting 100-byte values
//! under keys drawn uniformly from `--keys`.
//!
//!     http-load --endpoints 127.0.0.1:8443,127.0.0.1:8444 --certs certs --clients 64 --seconds 5

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vergent_bench::{Latencies, OrExit, arg, arg_string};

type Stream = BufReader<TlsStream<TcpStream>>;

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(addr.ip().into());
    Ok(BufReader::new(connector.connect(name, tcp).await?))
}

/// One PUT on a keep-alive connection: the answer's status, its body read and dropped.
async fn put(stream: &mut Stream, host: &str, path: &str, body: &[u8]) -> Option<u16> {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.get_mut().write_all(&request).await.ok()?;
    vergent_bench::http_answer(stream).await
}

#[tokio::main]
async fn main() {
    let endpoints: Vec<SocketAddr> = arg_string("--endpoints", "127.0.0.1:8443")
        .split(',')
        .map(|e| e.parse().or_exit("an endpoint is IP:PORT"))
        .collect();
    let certs = PathBuf::from(arg_string("--certs", "certs"));
    let user = arg_string("--user", "admin");
    let clients: usize = arg("--clients", 64);
    let seconds: u64 = arg("--seconds", 5);
    let keys: u64 = arg("--keys", 100_000);
    let material = vergent::net::TlsMaterial::load(&certs, &user).or_exit("loading certificates");
    let tls = vergent::net::https_client_config(&material).or_exit("TLS configuration");
    let connector = TlsConnector::from(Arc::new(tls));
    let value = vec![b'x'; 100];
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoints[c % endpoints.len()];
        let (stop, value, connector) = (stop.clone(), value.clone(), connector.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let host = endpoint.to_string();
            let mut stream = connect(&connector, endpoint)
                .await
                .or_exit("connecting over HTTPS");
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ c as u64;
            while !stop.load(Ordering::Relaxed) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let path = format!("/v1/buckets/default/keys/bench-{:012}", state % keys);
                let began = Instant::now();
                match put(&mut stream, &host, &path, &value).await {
                    Some(200) => latencies.record(began.elapsed()),
                    Some(_) => latencies.errors += 1,
                    None => {
                        latencies.errors += 1;
                        match connect(&connector, endpoint).await {
                            Ok(s) => stream = s,
                            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                }
            }
            latencies
        }));
    }
    vergent_bench::finish(seconds, &stop, tasks, started).await;
}
