//! `vergent bench`: a load generator against a running node or cluster.
//!
//! Each client is its own connection issuing one request at a time, so `--clients` is
//! the concurrency the node sees. Latencies are recorded per operation and reported as
//! percentiles at the end; a progress line shows the running rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::{ClientArgs, ConsistencyArg, Failure};
use crate::protocol::Consistency;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Operation mix as put:get:delete weights.
    #[arg(long, default_value = "100:0:0", value_name = "P:G:D")]
    mix: String,
    /// Consistency of every operation [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Print no progress line.
    #[arg(long)]
    quiet: bool,
    /// Spread the clients over these nodes (comma-separated host:port) instead of --node.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    spread: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Clone, Copy)]
struct Mix {
    put: u32,
    get: u32,
    delete: u32,
}

fn parse_mix(text: &str) -> Result<Mix, Failure> {
    let parts: Vec<u32> = text
        .split(':')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            Failure::new(format!(
                "--mix {text:?}: expected three weights put:get:delete, e.g. 80:20:0"
            ))
        })?;
    match parts[..] {
        [put, get, delete] if put + get + delete > 0 => Ok(Mix { put, get, delete }),
        _ => Err(Failure::new(format!(
            "--mix {text:?}: expected three weights put:get:delete with a positive sum"
        ))),
    }
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    errors: Vec<String>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    let mix = parse_mix(&args.mix)?;
    if args.clients == 0 || args.keys == 0 {
        return Err(Failure::new("--clients and --keys must be at least 1"));
    }
    let consistency: Option<Consistency> = args.consistency.map(Into::into);
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut target = args.client.clone();
        if !args.spread.is_empty() {
            target.node = args.spread[i % args.spread.len()].clone();
        }
        clients.push(target.connect().await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (stop, done) = (stop.clone(), done.clone());
        let (keys, value) = (args.keys, vec![b'x'; args.value_bytes]);
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix(0x5eed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut result = ClientResult::default();
            let total = mix.put + mix.get + mix.delete;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("bench-{:012}", rng.next() % keys);
                let pick = (rng.next() % u64::from(total)) as u32;
                let began = Instant::now();
                let outcome = if pick < mix.put {
                    client
                        .put(key.as_bytes(), &value, consistency)
                        .await
                        .map(|_| ())
                } else if pick < mix.put + mix.get {
                    client.get(key.as_bytes(), consistency).await.map(|_| ())
                } else {
                    client.delete(key.as_bytes(), consistency).await.map(|_| ())
                };
                match outcome {
                    Ok(()) => result
                        .latencies_us
                        .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32),
                    Err(err) => result.errors.push(err.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            client.close().await;
            result
        }));
    }
    let duration = Duration::from_secs(args.duration_secs);
    let mut last = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())))
            .await;
        let now = done.load(Ordering::Relaxed);
        if !args.quiet && !args.json {
            eprint!(
                "\r{:>4.0} s  {:>9} ops  {:>9} ops/s   ",
                started.elapsed().as_secs_f64(),
                now,
                now - last
            );
        }
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for task in tasks {
        let result = task
            .await
            .map_err(|e| Failure::new(format!("bench client failed: {e}")))?;
        latencies.extend(result.latencies_us);
        for err in result.errors {
            *errors.entry(err).or_default() += 1;
        }
    }
    if !args.quiet && !args.json {
        eprintln!();
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[at]) / 1000.0
    };
    let ops = latencies.len() as u64;
    let rate = ops as f64 / elapsed.as_secs_f64();
    let error_count: u64 = errors.values().sum();
    if args.json {
        let doc = json!({
            "clients": args.clients,
            "duration_s": elapsed.as_secs_f64(),
            "ops": ops,
            "ops_per_s": rate,
            "latency_ms": { "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) },
            "errors": error_count,
            "errors_by_kind": errors,
        });
        println!("{doc}");
    } else {
        println!(
            "{ops} ops in {:.1} s: {rate:.0} ops/s with {} clients",
            elapsed.as_secs_f64(),
            args.clients
        );
        println!(
            "latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
        println!("errors: {error_count}");
        for (err, count) in &errors {
            println!("  {count} × {err}");
        }
    }
    Ok(())
}

/// A small, fast, seeded generator for choosing keys; not for anything secret.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
