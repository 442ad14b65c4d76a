//! `vergent bucket`: define, list, show and delete buckets.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{ClientArgs, ConsistencyArg, Failure};
use crate::buckets::{Bucket, BucketType};
use crate::protocol::{BucketRequest, Request, Response};

#[derive(Debug, Subcommand)]
pub(crate) enum BucketCommand {
    /// Define a bucket (admin): its type never changes afterwards.
    Create(CreateArgs),
    /// List the buckets.
    List(ListArgs),
    /// Show one bucket.
    Show(ShowArgs),
    /// Delete a bucket and all its data, everywhere (admin).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Its name: lowercase letters, digits, '_', '-' and '.', up to 64.
    name: String,
    /// What its keys hold: lww (bytes, the last write wins), counter, set, siblings
    /// (concurrent writes are kept and shown).
    #[arg(long = "type", default_value = "lww", value_parser = BucketType::parse, value_name = "TYPE")]
    kind: BucketType,
    /// How long a write lives (e.g. 30m, 24h); none by default.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    ttl: Option<Duration>,
    /// Consistency of its operations that choose none (the node's default otherwise).
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The bucket.
    name: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The bucket.
    name: String,
    /// Do not ask (the question needs a terminal; without one, --yes is required).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// A `--ttl` in milliseconds, checked against the bounds every TTL has.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64, Failure> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    crate::buckets::check_ttl(ms)
        .map_err(|why| Failure::new(format!("--ttl {}: {why}", humantime::format_duration(ttl))))?;
    Ok(ms)
}

pub(crate) async fn run(command: BucketCommand) -> Result<(), Failure> {
    match command {
        BucketCommand::Create(args) => {
            let ttl_ms = args.ttl.map(ttl_ms).transpose()?;
            let request = BucketRequest::Create {
                name: args.name,
                kind: args.kind,
                ttl_ms,
                consistency: args.consistency.map(Into::into),
            };
            let buckets = ask(&args.client, request).await?;
            print(&buckets, args.json, "created")
        }
        BucketCommand::List(args) => {
            let buckets = ask(&args.client, BucketRequest::List).await?;
            print(&buckets, args.json, "")
        }
        BucketCommand::Show(args) => {
            let buckets = ask(&args.client, BucketRequest::Show { name: args.name }).await?;
            print(&buckets, args.json, "")
        }
        BucketCommand::Delete(args) => {
            if !args.yes {
                confirm(&args.name)?;
            }
            let buckets = ask(&args.client, BucketRequest::Delete { name: args.name }).await?;
            print(&buckets, false, "deleted")
        }
    }
}

/// Asks before a delete: it takes the bucket's data everywhere.
fn confirm(name: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(format!(
            "deleting bucket {name} deletes all its data on every node: pass --yes to confirm (there is no terminal to ask on)"
        )));
    }
    print!("delete bucket {name} and all its data on every node? type its name to confirm: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::new(format!("cannot read the answer: {e}")))?;
    if line.trim() != name {
        return Err(Failure::new(format!(
            "not deleted: the answer was not {name}"
        )));
    }
    Ok(())
}

async fn ask(client: &ClientArgs, request: BucketRequest) -> Result<Vec<Bucket>, Failure> {
    let connection = client.connect().await?;
    let answer = connection.request(&Request::Buckets(request)).await;
    connection.close().await;
    match answer? {
        Response::Buckets(buckets) => Ok(buckets),
        other => Err(Failure::new(format!(
            "unexpected answer from the node: {other:?}"
        ))),
    }
}

fn print(buckets: &[Bucket], json: bool, done: &str) -> Result<(), Failure> {
    if json {
        let text = serde_json::to_string_pretty(buckets)
            .map_err(|e| Failure::new(format!("cannot write JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    if !done.is_empty() {
        for b in buckets {
            println!("{done} bucket {} (type {})", b.name, b.kind.as_str());
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<9} {:<10} {:<12}",
        "NAME", "TYPE", "TTL", "CONSISTENCY"
    );
    for b in buckets {
        let ttl = b.ttl_ms.map_or("-".to_string(), |ms| {
            humantime::format_duration(Duration::from_millis(ms)).to_string()
        });
        let consistency = b.consistency.map_or("-", |c| c.as_str());
        println!(
            "{:<24} {:<9} {:<10} {:<12}",
            b.name,
            b.kind.as_str(),
            ttl,
            consistency
        );
    }
    Ok(())
}
