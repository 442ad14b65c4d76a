//! The `vergent` command line: one binary, one subcommand per task.
//!
//! Exit statuses: 0 success; 1 a `get` found nothing; 2 any other failure, reported as
//! one line on stderr that names the cause (and the limit, where one was passed).

mod bench;
mod bucket;
mod cas;
mod certs_cmd;
mod config;
mod data;
mod demo;
mod docs;
mod future;
mod repair;
mod serve;
mod shell;
mod top;
mod typed;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::Client;
use crate::net::TlsMaterial;
use crate::protocol::Consistency;

/// A leaderless, peer-to-peer key-value database.
#[derive(Debug, Parser)]
#[command(name = "vergent", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive; RUST_LOG overrides.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node.
    Serve(serve::ServeArgs),
    /// Create a certificate authority and issue node and client certificates.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCommand),
    /// Define, list, show and delete buckets.
    #[command(subcommand)]
    Bucket(bucket::BucketCommand),
    /// Read a key.
    Get(data::GetArgs),
    /// Write a key.
    Put(data::PutArgs),
    /// Delete a key.
    Delete(data::DeleteArgs),
    /// Add to a counter (a negative amount takes away).
    Incr(typed::IncrArgs),
    /// Add members to a set.
    Sadd(typed::MembersArgs),
    /// Remove members from a set.
    Srem(typed::MembersArgs),
    /// Compare-and-set a key of a linearizable bucket: write it only if it holds what
    /// is expected (exit 1, with what it holds, if not).
    Cas(cas::CasArgs),
    /// Show the cluster as the node sees it: members, states, clocks, hints.
    Status(data::StatusArgs),
    /// Stream every change the node applies.
    Watch(watch::WatchArgs),
    /// Make the node leave the cluster gracefully (admin).
    Leave(data::LeaveArgs),
    /// Remove a dead member from the cluster for good; its partitions are re-replicated
    /// to the others (admin).
    Remove(data::RemoveArgs),
    /// Compare the node's partitions with their co-replicas and repair them (admin).
    Repair(repair::RepairArgs),
    /// Check the node's Merkle trees against its data, and list records from the
    /// future (admin).
    Verify(repair::VerifyArgs),
    /// Rewrite the records the node holds from beyond the cluster's time to the present,
    /// and bring its clock back (admin).
    RewriteFuture(future::RewriteFutureArgs),
    /// The live dashboard: members, clocks, hints, partitions, sync lag, events.
    Top(top::TopArgs),
    /// An interactive shell against one node.
    Shell(shell::ShellArgs),
    /// A local cluster on loopback with a light workload and the dashboard.
    ///
    /// Three nodes by default, with fresh certificates in a temporary directory; it
    /// prints how to reach them from another terminal. q quits, stops the nodes and
    /// removes everything.
    Demo(demo::DemoArgs),
    /// Generate load against a node and report throughput and latency.
    Bench(bench::BenchArgs),
    /// Print a shell completion script: `vergent completions bash > /etc/bash_completion.d/vergent`.
    Completions(docs::CompletionsArgs),
    /// Write the man pages of vergent and every command into a directory.
    Man(docs::ManArgs),
}

/// How a client command finds its node and certificates.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// The node to talk to, host:port, or several separated by commas: each is tried in
    /// turn until one answers (required, except by `bench --spread`).
    #[arg(long, env = "VERGENT_NODE", value_name = "ADDR[,ADDR...]")]
    node: Option<String>,
    /// Directory with ca.crt and the client certificate.
    #[arg(
        long,
        env = "VERGENT_CERTS",
        default_value = "certs",
        value_name = "DIR"
    )]
    certs: PathBuf,
    /// The client certificate's name (certs/USER.crt, certs/USER.key).
    #[arg(long, env = "VERGENT_USER", default_value = crate::certs::ADMIN_NAME, value_name = "NAME")]
    user: String,
    /// Time allowed per request, with a unit: 15s, 500ms, 2m (a bare number is
    /// milliseconds, as the old --timeout-ms took).
    #[arg(
        long = "timeout",
        visible_alias = "timeout-ms",
        default_value = "15s",
        value_parser = parse_timeout,
        value_name = "DURATION"
    )]
    pub(crate) timeout: std::time::Duration,
}

/// A size in bytes: a bare number, or one with a unit (`64MiB`, `1 GiB`, `500kB`; a
/// trailing `/s` is allowed for rates).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let trimmed = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim_end();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1048576, 64MiB, 1 GiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{other:?} is not a size unit (B, kB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// A duration with a unit, or a bare number of milliseconds.
pub(crate) fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(ms) = text.trim().parse::<u64>() {
        return Ok(std::time::Duration::from_millis(ms));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 15s, 500ms, 2m)"))
}

impl ClientArgs {
    /// The nodes given with --node or VERGENT_NODE, in order. Optional for clap only
    /// so that `bench --spread` can stand in for it; every other command needs it.
    pub(crate) fn nodes(&self) -> Result<Vec<&str>, Failure> {
        let nodes: Vec<&str> = self
            .node
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if nodes.is_empty() {
            return Err(Failure::new(
                "no node given: pass --node HOST:PORT (or several, comma-separated) or set VERGENT_NODE",
            ));
        }
        Ok(nodes)
    }

    /// The first node given.
    pub(crate) fn node(&self) -> Result<&str, Failure> {
        Ok(self.nodes()?[0])
    }

    /// Connects to the first node given that answers.
    pub(crate) async fn connect(&self) -> Result<Client, Failure> {
        self.connect_from(0).await.map(|(client, _)| client)
    }

    /// Connects to the first node that answers, trying them in turn from the `start`th
    /// (wrapping around); the client and the index of its node.
    pub(crate) async fn connect_from(&self, start: usize) -> Result<(Client, usize), Failure> {
        let nodes = self.nodes()?;
        let material = TlsMaterial::load(&self.certs, &self.user)?;
        let mut failures = Vec::new();
        for i in 0..nodes.len() {
            let index = (start + i) % nodes.len();
            match Client::connect(nodes[index], &material).await {
                Ok(mut client) => {
                    client.set_request_timeout(self.timeout);
                    if !failures.is_empty() {
                        eprintln!("vergent: {}; using {}", failures.join("; "), nodes[index]);
                    }
                    return Ok((client, index));
                }
                Err(err) if nodes.len() == 1 => return Err(err.into()),
                Err(err) => failures.push(format!("{}: {err}", nodes[index])),
            }
        }
        Err(Failure::new(format!(
            "no node answered: {}",
            failures.join("; ")
        )))
    }
}

/// Consistency as written on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ConsistencyArg {
    /// One replica.
    One,
    /// A majority of replicas.
    Quorum,
    /// Every replica.
    All,
}

impl From<ConsistencyArg> for Consistency {
    fn from(arg: ConsistencyArg) -> Consistency {
        match arg {
            ConsistencyArg::One => Consistency::One,
            ConsistencyArg::Quorum => Consistency::Quorum,
            ConsistencyArg::All => Consistency::All,
        }
    }
}

/// A failed command: its message and exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) status: u8,
}

impl Failure {
    pub(crate) fn new(message: impl std::fmt::Display) -> Failure {
        Failure {
            message: message.to_string(),
            status: 2,
        }
    }

    pub(crate) fn not_found() -> Failure {
        Failure {
            message: "not found".into(),
            status: 1,
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(err: E) -> Failure {
        Failure::new(err)
    }
}

/// Parses the command line, runs the command, and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    let (cli, sources) = match config::parse() {
        Ok(parsed) => (parsed.cli, parsed.sources),
        Err(Ok(err)) => return usage_error(err),
        Err(Err(failure)) => {
            eprintln!("error: {}", failure.message);
            return ExitCode::from(failure.status);
        }
    };
    if let Command::Serve(args) = &cli.command
        && args.print_config
    {
        config::print(&sources);
        return ExitCode::SUCCESS;
    }
    // A dashboard or a shell shares the terminal with the logs: only errors show there.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Demo(_) | Command::Top(_) | Command::Shell(_) => "error",
        _ => "warn",
    };
    init_logging(cli.log_level.as_deref().unwrap_or(default_level));
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Demo(_) | Command::Top(_) | Command::Shell(_)
    ) {
        end_quietly_when_stdout_closes();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Certs(command) => certs_cmd::run(command),
        Command::Bucket(command) => with_runtime(|| bucket::run(command)),
        Command::Get(args) => with_runtime(|| data::get(args)),
        Command::Put(args) => with_runtime(|| data::put(args)),
        Command::Delete(args) => with_runtime(|| data::delete(args)),
        Command::Incr(args) => with_runtime(|| typed::incr(args)),
        Command::Sadd(args) => with_runtime(|| typed::sadd(args)),
        Command::Srem(args) => with_runtime(|| typed::srem(args)),
        Command::Cas(args) => with_runtime(|| cas::cas(args)),
        Command::Status(args) => with_runtime(|| data::status(args)),
        Command::Watch(args) => with_runtime(|| watch::watch(args)),
        Command::Leave(args) => with_runtime(|| data::leave(args)),
        Command::Remove(args) => with_runtime(|| data::remove(args)),
        Command::Repair(args) => with_runtime(|| repair::run(args)),
        Command::Verify(args) => with_runtime(|| repair::verify(args)),
        Command::RewriteFuture(args) => with_runtime(|| future::run(args)),
        Command::Top(args) => top::run(args),
        Command::Shell(args) => shell::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => with_runtime(|| bench::run(args)),
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if failure.status == 1 {
                // A JSON answer said it on stdout already.
                if !failure.message.is_empty() {
                    eprintln!("{}", failure.message);
                }
            } else {
                eprintln!("error: {}", failure.message);
            }
            ExitCode::from(failure.status)
        }
    }
}

/// A command line that does not parse: help and version as clap prints them; anything
/// else in one line (what clap says before its usage block), exit status 2, so a
/// script's log shows the whole reason on the line it greps.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let rendered = err.render().to_string();
    let said: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{} (see --help)", said.join(" "));
    ExitCode::from(2)
}

/// A command whose output goes to a reader that stops early (`vergent watch | head`)
/// ends there, as other Unix tools do, instead of failing on a broken pipe. Not for
/// commands that run nodes: a node must never die of a closed log pipe.
fn end_quietly_when_stdout_closes() {
    // SAFETY: called on the main thread before any other thread exists; it only
    // restores SIGPIPE's default action, which the Rust runtime set to "ignore".
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal; a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the async runtime: {e}")))
}

fn with_runtime<F, Fut>(f: F) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    runtime()?.block_on(f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units_and_durations_take_a_unit_or_milliseconds() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 MiB/s"), Ok(64 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(
            parse_size("64 parsecs")
                .unwrap_err()
                .contains("not a size unit")
        );
        assert!(parse_size("lots").unwrap_err().contains("is not a size"));
        assert_eq!(
            parse_timeout("15000"),
            Ok(std::time::Duration::from_secs(15))
        );
        assert_eq!(parse_timeout("15s"), Ok(std::time::Duration::from_secs(15)));
        assert!(parse_timeout("soon").is_err());
    }
}
