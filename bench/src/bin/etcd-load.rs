//! The same load shape as `vergent bench --mix 100:0:0` against etcd's HTTP/JSON gateway:
//! C concurrent clients, each with one keep-alive HTTP/1.1 connection and one request in
//! flight, putting 100-byte values under keys drawn uniformly from `--keys`.
//!
//!     etcd-load --endpoints 127.0.0.1:2379,127.0.0.1:22379 --clients 64 --seconds 5

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use vergent_bench::{Latencies, OrExit, arg, arg_string};

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive connection: POST a JSON body, read the answer's status and body.
async fn post(
    stream: &mut BufReader<TcpStream>,
    host: &str,
    path: &str,
    body: &str,
) -> Option<u16> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(request.as_bytes()).await.ok()?;
    vergent_bench::http_answer(stream).await
}

#[tokio::main]
async fn main() {
    let endpoints: Vec<String> = arg_string("--endpoints", "127.0.0.1:2379")
        .split(',')
        .map(str::to_string)
        .collect();
    let clients: usize = arg("--clients", 64);
    let seconds: u64 = arg("--seconds", 5);
    let keys: u64 = arg("--keys", 100_000);
    let value = base64(&[b'x'; 100]);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoints[c % endpoints.len()].clone();
        let (stop, value) = (stop.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut stream = BufReader::new(
                TcpStream::connect(&endpoint)
                    .await
                    .or_exit("connecting to etcd"),
            );
            let _ = stream.get_mut().set_nodelay(true);
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ c as u64;
            while !stop.load(Ordering::Relaxed) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let key = base64(format!("bench-{:012}", state % keys).as_bytes());
                let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
                let began = Instant::now();
                match post(&mut stream, &endpoint, "/v3/kv/put", &body).await {
                    Some(200) => latencies.record(began.elapsed()),
                    Some(_) => latencies.errors += 1,
                    None => {
                        latencies.errors += 1;
                        match TcpStream::connect(&endpoint).await {
                            Ok(s) => stream = BufReader::new(s),
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
