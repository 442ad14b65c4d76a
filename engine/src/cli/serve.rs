//! `vergent serve`: run a node until SIGINT or SIGTERM, then shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::Failure;
use crate::limits::VALUE_BYTES_MAX_DEFAULT;
use crate::node::{Node, NodeConfig};
use crate::storage::WRITE_BATCH_MAX_DEFAULT;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Read settings from this TOML file, each under its flag's long name
    /// (`data-dir = "data/n1"`); a flag or a VERGENT_* variable beats it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective settings, each with where it came from, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// The node's name; its certificate must carry the same name.
    #[arg(long)]
    name: String,
    /// Address to listen on (UDP); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7001", value_name = "ADDR")]
    listen: SocketAddr,
    /// Data directory [default: data/NAME].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Directory with ca.crt, NAME.crt and NAME.key.
    #[arg(
        long,
        env = "VERGENT_CERTS",
        default_value = "certs",
        value_name = "DIR"
    )]
    certs: PathBuf,
    /// A member to join the cluster through, host:port (repeatable). Without it the node
    /// creates a cluster, or restarts into the one its data belongs to.
    #[arg(long, value_name = "ADDR")]
    join: Vec<String>,
    /// Rounds of attempts at the --join addresses before a first join gives up.
    #[arg(long, default_value_t = crate::node::JOIN_ATTEMPTS_DEFAULT)]
    join_attempts: u32,
    /// Take the place of this dead member: it leaves the cluster, and this node takes
    /// over exactly its partitions, filling them before it counts in quorums (needs
    /// --join).
    #[arg(long, value_name = "NAME", requires = "join")]
    replace: Option<String>,
    /// Address the other nodes reach this one at [default: the listening address].
    #[arg(long, value_name = "ADDR")]
    advertise: Option<SocketAddr>,
    /// Partitions in the cluster; fixed when the cluster is created [default: 256].
    #[arg(long)]
    partitions: Option<u16>,
    /// Copies of each partition; fixed when the cluster is created [default: 3].
    #[arg(long)]
    replication_factor: Option<u8>,
    /// Consistency of operations that do not choose one.
    #[arg(long, value_enum, default_value = "quorum")]
    consistency: super::ConsistencyArg,
    /// Most hints (writes kept for unreachable replicas) this node keeps.
    #[arg(long, default_value_t = crate::storage::HINTS_MAX_DEFAULT)]
    hints_max: u64,
    /// Hints older than this are dropped and left to anti-entropy (e.g. 3h, 90m).
    #[arg(long, default_value = "3h", value_parser = humantime::parse_duration)]
    hint_window: std::time::Duration,
    /// Time between background anti-entropy runs (jittered by up to a fifth), or `off`
    /// for repair on demand only.
    #[arg(long, default_value = "60s", value_parser = parse_interval)]
    anti_entropy_interval: Interval,
    /// Tombstones older than this are purged once every replica holds them; must be
    /// longer than the hint window (a later hint would bring a deleted key back).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    tombstone_grace: std::time::Duration,
    /// Bytes of entries per second anti-entropy may move, e.g. 64MiB (0: unlimited).
    #[arg(long, default_value = "64MiB", value_parser = super::parse_size, value_name = "SIZE")]
    repair_bytes_per_sec: u64,
    /// Largest value accepted, e.g. 1MiB or 1048576.
    #[arg(long, default_value_t = VALUE_BYTES_MAX_DEFAULT as u64, value_parser = super::parse_size, value_name = "SIZE")]
    value_bytes_max: u64,
    /// Most write requests merged into one transaction and fsync (1 turns group commit off).
    #[arg(long, default_value_t = WRITE_BATCH_MAX_DEFAULT)]
    write_batch_max: usize,
    /// How far ahead of this node's clock a peer's timestamp may be: 500ms, 1s (a bare
    /// number is milliseconds, as the old --max-clock-offset-ms took).
    #[arg(
        long = "max-clock-offset",
        visible_alias = "max-clock-offset-ms",
        default_value = "500ms",
        value_parser = super::parse_timeout,
        value_name = "DURATION"
    )]
    max_clock_offset: std::time::Duration,
    /// LMDB map size (address space reserved for data): a size such as 64GiB or 512MiB,
    /// or a bare number of GiB (fractions such as 0.5 allowed); the least is about 1 MiB.
    #[arg(
        long = "map-size",
        visible_alias = "map-size-gib",
        default_value = "64GiB",
        value_parser = parse_map_size_gib,
        value_name = "SIZE"
    )]
    map_size_gib: MapSize,
    /// Most connections at once (clients and peers).
    #[arg(long, default_value_t = crate::node::CONNECTIONS_MAX_DEFAULT)]
    connections_max: usize,
    /// Most connections at once from one certificate.
    #[arg(long, default_value_t = crate::node::CONNECTIONS_PER_IDENTITY_MAX_DEFAULT)]
    connections_per_identity_max: usize,
    /// Most client requests in flight at once; further ones are refused as overloaded
    /// (HTTP 429) until one ends.
    #[arg(long, default_value_t = crate::node::REQUESTS_MAX_DEFAULT)]
    requests_max: usize,
    /// Time a request may take before it is answered as timed out (HTTP 504), e.g.
    /// 15s or 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: std::time::Duration,
    /// Serve Prometheus metrics (text format) on this address, e.g. 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Serve the HTTPS/JSON API on this address (TCP), e.g. 127.0.0.1:8443: the same
    /// certificates and CA, a client certificate required.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at /metrics of the HTTPS API too.
    #[arg(long, requires = "http_listen")]
    http_metrics: bool,
    /// Acknowledge writes before they are flushed to disk. Loses acknowledged writes on
    /// power failure; for benchmarks only.
    #[arg(long)]
    unsafe_no_fsync: bool,
}

/// The least `--map-size`: a map smaller than about a megabyte fills with the
/// node's own metadata before it holds any data.
const MAP_SIZE_GIB_MIN: f64 = 0.001;

/// A map size in bytes, from `--map-size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapSize(usize);

fn parse_map_size_gib(text: &str) -> Result<MapSize, String> {
    // With a unit (64GiB, 512MiB) it is a size; a bare number is GiB.
    let trimmed = text.trim();
    if trimmed.parse::<f64>().is_err()
        && trimmed.starts_with(|c: char| c.is_ascii_digit())
        && trimmed.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        let bytes = super::parse_size(text)?;
        let gib = bytes as f64 / f64::from(1u32 << 30);
        return parse_map_size_gib(&gib.to_string());
    }
    let gib: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of GiB (e.g. 64 or 0.5)"))?;
    if !gib.is_finite() || gib < MAP_SIZE_GIB_MIN {
        return Err(format!(
            "the map size must be at least {MAP_SIZE_GIB_MIN} GiB (about 1 MiB), not {text}"
        ));
    }
    let bytes = gib * f64::from(1u32 << 30);
    if bytes >= usize::MAX as f64 {
        return Err(format!(
            "a map size of {text} GiB does not fit in the address space"
        ));
    }
    // LMDB maps whole pages.
    let page = 4096;
    Ok(MapSize(bytes as usize / page * page))
}

/// A duration, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval(Option<std::time::Duration>);

fn parse_interval(text: &str) -> Result<Interval, String> {
    if text == "off" {
        return Ok(Interval(None));
    }
    humantime::parse_duration(text)
        .map(|d| Interval(Some(d)))
        .map_err(|e| format!("{e} (expected a duration like 60s or 5m, or off)"))
}

pub(crate) fn run(args: ServeArgs) -> Result<(), Failure> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from("data").join(&args.name));
    let mut config = NodeConfig::new(&args.name, args.listen, data_dir, args.certs);
    config.partitions = args.partitions;
    config.replication_factor = args.replication_factor;
    config.join = args.join;
    config.join_attempts = args.join_attempts;
    config.replace = args.replace;
    config.advertise = args.advertise;
    config.default_consistency = args.consistency.into();
    config.hints_max = args.hints_max;
    config.hint_window = args.hint_window;
    config.connections_max = args.connections_max.max(1);
    config.connections_per_identity_max = args.connections_per_identity_max.max(1);
    config.anti_entropy_interval = args
        .anti_entropy_interval
        .0
        .map(|d| d.max(std::time::Duration::from_secs(1)));
    config.tombstone_grace = args.tombstone_grace;
    config.repair_bytes_per_sec = args.repair_bytes_per_sec;
    config.value_bytes_max = usize::try_from(args.value_bytes_max).unwrap_or(usize::MAX);
    config.write_batch_max = args.write_batch_max;
    config.max_clock_offset_ms =
        u64::try_from(args.max_clock_offset.as_millis()).unwrap_or(u64::MAX);
    config.map_size_bytes = args.map_size_gib.0;
    config.durable = !args.unsafe_no_fsync;
    if args.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: acknowledged writes can be lost on power failure");
    }
    config.http_listen = args.http_listen;
    config.requests_max = args.requests_max.max(1);
    config.request_timeout = args
        .request_timeout
        .max(std::time::Duration::from_millis(1));
    let metrics_listen = args.metrics_listen;
    let http_metrics = args.http_metrics;
    super::runtime()?.block_on(async {
        if let Some(addr) = metrics_listen {
            crate::node::metrics::install(Some(addr)).map_err(Failure::new)?;
            tracing::info!(%addr, "serving Prometheus metrics");
        } else if http_metrics {
            crate::node::metrics::install(None).map_err(Failure::new)?;
        }
        let node = Node::start(config).await?;
        // Scripts and tests wait for this line: the node is ready when it appears.
        if let Some(addr) = node.http_addr() {
            println!("vergent: node {} serving HTTPS on {addr}", node.name());
        }
        println!(
            "vergent: node {} listening on {}",
            node.name(),
            node.local_addr()
        );
        tokio::select! {
            signal = wait_for_signal() => signal?,
            _ = node.left() => {}
        }
        node.shutdown().await;
        Ok(())
    })
}

pub(crate) async fn wait_for_signal() -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(format!("cannot handle SIGINT: {e}")))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_size_takes_fractions_of_a_gib_and_refuses_less_than_its_minimum() {
        assert_eq!(parse_map_size_gib("64").unwrap().0, 64 << 30);
        assert_eq!(parse_map_size_gib("0.5").unwrap().0, 512 << 20);
        assert!(parse_map_size_gib("0.001").unwrap().0 >= 1 << 20);
        assert_eq!(parse_map_size_gib("64GiB").unwrap().0, 64 << 30);
        assert_eq!(parse_map_size_gib("512MiB").unwrap().0, 512 << 20);
        assert!(
            parse_map_size_gib("512KiB")
                .unwrap_err()
                .contains("at least")
        );
        for bad in ["0", "0.0001", "-1", "NaN", "inf"] {
            let err = parse_map_size_gib(bad).unwrap_err();
            assert!(
                err.contains("at least 0.001 GiB (about 1 MiB)"),
                "{bad}: {err}"
            );
        }
        assert!(
            parse_map_size_gib("lots")
                .unwrap_err()
                .contains("not a number of GiB")
        );
    }
}
