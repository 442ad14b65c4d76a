//! Shared by the benchmark programs: latency recording and the one-line JSON result
//! every program prints, in the same shape as `vergent bench --json`.

#![deny(missing_docs)]

use std::time::{Duration, Instant};

/// Latencies of one run, microseconds.
#[derive(Default)]
pub struct Latencies {
    samples: Vec<u32>,
    /// Failed operations.
    pub errors: u64,
}

impl Latencies {
    /// Records one operation that took `took`.
    pub fn record(&mut self, took: Duration) {
        self.samples
            .push(took.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Merges another client's latencies.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.errors += other.errors;
    }

    /// The result line: ops/s and latency percentiles in milliseconds.
    pub fn report(mut self, started: Instant, clients: usize) -> String {
        self.samples.sort_unstable();
        let n = self.samples.len();
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let at = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
            f64::from(self.samples[at]) / 1000.0
        };
        let elapsed = started.elapsed().as_secs_f64();
        serde_json::json!({
            "clients": clients,
            "duration_s": elapsed,
            "ops": n,
            "ops_per_s": n as f64 / elapsed,
            "latency_ms": { "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) },
            "errors": self.errors,
        })
        .to_string()
    }
}

/// Reads `--name value` from the command line, or `default`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads `--name value` as a string, or `default`.
pub fn arg_string(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Ends the program with a one-line error naming what failed. These programs drive a
/// benchmark and have nothing to fall back to; a message beats a panic's backtrace.
pub trait OrExit<T> {
    /// The value, or the end of the program with `error: {what}: {cause}`.
    fn or_exit(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self, what: &str) -> T {
        self.unwrap_or_else(|err| {
            eprintln!("error: {what}: {err}");
            std::process::exit(2)
        })
    }
}

/// Lets the client tasks run for `seconds`, stops them, and prints the one-line result
/// of all of them together.
pub async fn finish(
    seconds: u64,
    stop: &std::sync::atomic::AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Latencies>>,
    started: Instant,
) {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let clients = tasks.len();
    let mut all = Latencies::default();
    for task in tasks {
        all.merge(task.await.or_exit("a client task"));
    }
    println!("{}", all.report(started, clients));
}

/// Reads one HTTP/1.1 answer off a keep-alive connection: its status, with its body read
/// (by `Content-Length`) and dropped. `None` when the connection failed or the answer
/// is not HTTP.
pub async fn http_answer<R>(stream: &mut R) -> Option<u16>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status)
}
