//! `vergent bench`: a load generator against a running node or cluster.
//!
//! Each client is its own connection issuing one request at a time, so `--clients` is
//! the concurrency the node sees. Latencies are recorded per operation and reported as
//! percentiles at the end; a progress line shows the running rate.

use std::collections::BTreeMap;
use std::io::IsTerminal;
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
    /// How long to run, with a unit: 10s, 2m (a bare number is seconds, as the old
    /// --duration-secs took); ignored when --ops is given.
    #[arg(
        long = "duration",
        visible_alias = "duration-secs",
        default_value = "10s",
        value_parser = parse_seconds,
        value_name = "DURATION"
    )]
    duration: Duration,
    /// Exit 1 when more than this share of operations failed, in percent.
    #[arg(long, default_value_t = 1.0, value_name = "PERCENT")]
    max_error_rate: f64,
    /// Run this many operations in all instead of for a duration.
    #[arg(long, value_name = "N")]
    ops: Option<u64>,
    /// Distinct keys written and read.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// How keys are drawn: every key equally often, or a few hot keys most of the time.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Skew of the zipfian distribution (0 < theta < 1; 0.99 is YCSB's default).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Value size: bytes, or with a unit (4KiB).
    #[arg(long, default_value = "100", value_parser = super::parse_size, value_name = "SIZE")]
    value_bytes: u64,
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
    /// Write to this bucket instead of `default` (puts, or the updates of --update).
    #[arg(long, value_name = "NAME")]
    bucket: Option<String>,
    /// Every operation is this update of a key drawn as for puts: `incr` adds 1 to a
    /// counter, `sadd` adds a member (one of 16) to a set, `cas` swaps a linearizable
    /// key from the value the client last saw to one of its own (`--keys 1`: one hot
    /// key); needs --bucket.
    #[arg(long, value_enum, requires = "bucket")]
    update: Option<UpdateOp>,
    /// Spread the clients over these nodes (comma-separated host:port) instead of --node.
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    spread: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UpdateOp {
    Incr,
    Sadd,
    Cas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Distribution {
    Uniform,
    Zipfian,
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
    /// Compare-and-sets that swapped.
    swaps: u64,
    /// Errors by kind: how many, and the first message seen.
    errors: BTreeMap<&'static str, (u64, String)>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    let mix = parse_mix(&args.mix)?;
    if args.clients == 0 || args.keys == 0 {
        return Err(Failure::new("--clients and --keys must be at least 1"));
    }
    if args.ops == Some(0) {
        return Err(Failure::new("--ops must be at least 1"));
    }
    let keys = match args.distribution {
        Distribution::Uniform => Keys::Uniform(args.keys),
        Distribution::Zipfian => Keys::Zipfian(Arc::new(Zipfian::new(args.keys, args.zipf_theta)?)),
    };
    let consistency: Option<Consistency> = args.consistency.map(Into::into);
    let mut clients = Vec::with_capacity(args.clients);
    for i in 0..args.clients {
        let mut target = args.client.clone();
        if !args.spread.is_empty() {
            target.node = Some(args.spread[i % args.spread.len()].clone());
        }
        clients.push(target.connect().await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // Operations handed out so far, when the run is bounded by a count.
    let issued = Arc::new(AtomicU64::new(0));
    let limit = args.ops.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (stop, done, issued) = (stop.clone(), done.clone(), issued.clone());
        let (keys, value) = (
            keys.clone(),
            vec![b'x'; usize::try_from(args.value_bytes).unwrap_or(usize::MAX)],
        );
        let (bucket, update) = (args.bucket.clone(), args.update);
        tasks.push(tokio::spawn(async move {
            let mut rng = SplitMix(0x5eed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut result = ClientResult::default();
            let mut seen: std::collections::HashMap<String, Option<Vec<u8>>> =
                std::collections::HashMap::new();
            let total = mix.put + mix.get + mix.delete;
            while !stop.load(Ordering::Relaxed) && issued.fetch_add(1, Ordering::Relaxed) < limit {
                let key = format!("bench-{:012}", keys.draw(&mut rng));
                let pick = (rng.next() % u64::from(total)) as u32;
                let began = Instant::now();
                let outcome = if let (Some(bucket), Some(UpdateOp::Cas)) = (&bucket, update) {
                    let expect = match seen.get(&key) {
                        Some(Some(v)) => crate::paxos::Expect::Value(v.clone()),
                        _ => crate::paxos::Expect::Absent,
                    };
                    let mine = format!("c{i}-{}", rng.next()).into_bytes();
                    match client
                        .cas(bucket, key.as_bytes(), expect, Some(&mine))
                        .await
                    {
                        Ok(crate::client::Cas::Swapped(_)) => {
                            result.swaps += 1;
                            seen.insert(key.clone(), Some(mine));
                            Ok(())
                        }
                        Ok(crate::client::Cas::NotSwapped(found)) => {
                            seen.insert(key.clone(), found.map(|(v, _)| v));
                            Ok(())
                        }
                        Err(err) => Err(err),
                    }
                } else if let (Some(bucket), Some(update @ (UpdateOp::Incr | UpdateOp::Sadd))) =
                    (&bucket, update)
                {
                    let change = if update == UpdateOp::Incr {
                        crate::types::Change::Incr(1)
                    } else {
                        crate::types::Change::Add(vec![vec![b'a' + (rng.next() % 16) as u8]])
                    };
                    client
                        .update(bucket, key.as_bytes(), change, consistency)
                        .await
                        .map(|_| ())
                } else if let (Some(bucket), true) = (&bucket, pick < mix.put) {
                    client
                        .write(
                            bucket,
                            key.as_bytes(),
                            Some(&value),
                            None,
                            None,
                            consistency,
                        )
                        .await
                        .map(|_| ())
                } else if pick < mix.put {
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
                    Err(err) => {
                        let entry = result
                            .errors
                            .entry(err.kind())
                            .or_insert_with(|| (0, err.to_string()));
                        entry.0 += 1;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            client.close().await;
            result
        }));
    }
    let duration = match args.ops {
        Some(_) => Duration::MAX,
        None => args.duration,
    };
    // The progress line rewrites itself with \r: only for a person watching a terminal.
    let progress = !args.quiet && !args.json && std::io::stderr().is_terminal();
    let mut last = 0;
    // Ctrl-C ends the run early; what was measured is still reported.
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    while started.elapsed() < duration && tasks.iter().any(|t| !t.is_finished()) {
        let tick = Duration::from_secs(1).min(duration.saturating_sub(started.elapsed()));
        // Wake early when a counted run finishes, so its elapsed time is not rounded up.
        let deadline = Instant::now() + tick;
        while Instant::now() < deadline && tasks.iter().any(|t| !t.is_finished()) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10).min(tick)) => {}
                _ = &mut interrupt => {
                    interrupted = true;
                    break;
                }
            }
        }
        if interrupted {
            break;
        }
        let now = done.load(Ordering::Relaxed);
        if progress {
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
    let mut swaps = 0;
    let mut errors: BTreeMap<&'static str, (u64, String)> = BTreeMap::new();
    for task in tasks {
        let result = task
            .await
            .map_err(|e| Failure::new(format!("bench client failed: {e}")))?;
        latencies.extend(result.latencies_us);
        swaps += result.swaps;
        for (kind, (count, example)) in result.errors {
            errors.entry(kind).or_insert((0, example)).0 += count;
        }
    }
    if progress {
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
    let error_count: u64 = errors.values().map(|(count, _)| count).sum();
    let attempted = ops + error_count;
    let error_percent = if attempted == 0 {
        0.0
    } else {
        100.0 * error_count as f64 / attempted as f64
    };
    if args.json {
        let doc = json!({
            "interrupted": interrupted,
            "error_percent": error_percent,
            "clients": args.clients,
            "duration_s": elapsed.as_secs_f64(),
            "ops": ops,
            "ops_per_s": rate,
            "swaps": swaps,
            "swaps_per_s": swaps as f64 / elapsed.as_secs_f64(),
            "latency_ms": { "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "p999": pct(0.999), "max": pct(1.0) },
            "errors": error_count,
            "errors_by_kind": errors
                .iter()
                .map(|(kind, (count, example))| (kind.to_string(), json!({ "count": count, "example": example })))
                .collect::<serde_json::Map<_, _>>(),
            "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "mix": args.mix,
        });
        println!("{doc}");
    } else {
        if interrupted {
            println!("interrupted: a partial run");
        }
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
        if args.update == Some(UpdateOp::Cas) {
            println!(
                "swaps: {swaps} ({:.0}/s)",
                swaps as f64 / elapsed.as_secs_f64()
            );
        }
        println!("errors: {error_count} ({error_percent:.2}%)");
        for (kind, (count, example)) in &errors {
            println!("  {count} × {kind} (e.g. {example})");
        }
    }
    if error_percent > args.max_error_rate {
        return Err(Failure {
            message: format!(
                "{error_count} of {attempted} operations failed ({error_percent:.2}%), over --max-error-rate {}%",
                args.max_error_rate
            ),
            status: 1,
        });
    }
    Ok(())
}

/// A duration with a unit, or a bare number of seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 10s, 2m)"))
}

/// How each client draws key numbers.
#[derive(Clone)]
enum Keys {
    Uniform(u64),
    Zipfian(Arc<Zipfian>),
}

impl Keys {
    fn draw(&self, rng: &mut SplitMix) -> u64 {
        match self {
            Keys::Uniform(n) => rng.next() % n,
            Keys::Zipfian(z) => z.draw(rng),
        }
    }
}

/// Zipfian key ranks by Gray et al.'s method ("Quickly generating billion-record
/// synthetic databases", the generator YCSB uses): rank r is drawn with probability
/// proportional to 1/r^theta. Ranks are then scattered over the key space by a hash, so
/// the hot keys land in different partitions rather than next to each other.
struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    fn new(n: u64, theta: f64) -> Result<Zipfian, Failure> {
        if !(theta > 0.0 && theta < 1.0) {
            return Err(Failure::new(format!(
                "--zipf-theta {theta}: must be above 0 and below 1"
            )));
        }
        // zeta(n) is a sum over every rank: computed once, linear in --keys.
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let eta = if n < 2 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        };
        Ok(Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        })
    }

    fn rank(&self, rng: &mut SplitMix) -> u64 {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    fn draw(&self, rng: &mut SplitMix) -> u64 {
        let mut z = self.rank(rng).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % self.n
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_ranks_follow_the_power_law() {
        let z = Zipfian::new(1000, 0.99).unwrap();
        let mut rng = SplitMix(7);
        let mut counts = vec![0u64; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        // P(rank r) = 1 / ((r+1)^theta * zeta(n)). The method is exact for the first two
        // ranks and an approximation beyond, so the rest is checked in bulk.
        let expected = |r: usize| draws as f64 / ((r + 1) as f64).powf(0.99) / z.zetan;
        for (r, &seen) in counts.iter().enumerate().take(2) {
            let seen = seen as f64;
            assert!(
                (seen - expected(r)).abs() < expected(r) * 0.05,
                "rank {r}: {seen} draws, expected about {:.0}",
                expected(r)
            );
        }
        let head: u64 = counts[..100].iter().sum();
        let want: f64 = (0..100).map(expected).sum();
        assert!(
            (head as f64 - want).abs() < want * 0.1,
            "top 100 ranks: {head} draws, expected about {want:.0}"
        );
        assert!(
            counts[0] > counts[10] * 5,
            "the head must dominate the tail"
        );
    }

    #[test]
    fn every_draw_is_a_valid_key_number() {
        for n in [1, 2, 3, 100] {
            let z = Zipfian::new(n, 0.5).unwrap();
            let mut rng = SplitMix(n);
            assert!((0..10_000).all(|_| z.draw(&mut rng) < n));
        }
    }

    #[test]
    fn bad_theta_is_refused_with_the_limit() {
        for theta in [0.0, 1.0, -1.0, f64::NAN] {
            let err = Zipfian::new(10, theta).err().expect("refused");
            assert!(
                err.message.contains("above 0 and below 1"),
                "{}",
                err.message
            );
        }
    }
}
