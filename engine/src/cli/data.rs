//! `vergent get`, `put`, `delete` and `status`.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::{ClientArgs, ConsistencyArg, Failure};
use crate::protocol::{NodeStatus, VersionInfo};

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The key.
    key: String,
    /// Also print the version: HLC as UTC time and logical counter, and the writing node.
    #[arg(long)]
    show_version: bool,
    /// Replicas to consult [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The key.
    key: String,
    /// The value.
    value: String,
    /// Replicas that must acknowledge [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The key.
    key: String,
    /// Replicas that must acknowledge [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn get(args: GetArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let found = client
        .get(args.key.as_bytes(), args.consistency.map(Into::into))
        .await;
    client.close().await;
    let Some((value, version)) = found? else {
        return Err(Failure::not_found());
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut doc = version_json(&version);
        doc["key"] = json!(args.key);
        match String::from_utf8(value) {
            Ok(text) => doc["value"] = json!(text),
            Err(bytes) => doc["value_hex"] = json!(hex(bytes.as_bytes())),
        }
        writeln!(out, "{doc}")?;
    } else {
        out.write_all(&value)?;
        writeln!(out)?;
        if args.show_version {
            writeln!(out, "{version}")?;
        }
    }
    Ok(())
}

pub(crate) async fn put(args: PutArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let written = client
        .put(
            args.key.as_bytes(),
            args.value.as_bytes(),
            args.consistency.map(Into::into),
        )
        .await;
    client.close().await;
    print_written(&written?, args.json)
}

pub(crate) async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let written = client
        .delete(args.key.as_bytes(), args.consistency.map(Into::into))
        .await;
    client.close().await;
    print_written(&written?, args.json)
}

pub(crate) async fn status(args: StatusArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let status = client.status().await;
    client.close().await;
    let status = status?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
    } else {
        print!("{}", status_table(&status));
    }
    Ok(())
}

fn print_written(version: &VersionInfo, json: bool) -> Result<(), Failure> {
    if json {
        let mut doc = version_json(version);
        doc["ok"] = json!(true);
        println!("{doc}");
    } else {
        println!("OK {version}");
    }
    Ok(())
}

pub(crate) fn version_json(version: &VersionInfo) -> serde_json::Value {
    json!({
        "hlc": version.version.hlc.to_string(),
        "hlc_raw": version.version.hlc.as_u64(),
        "node": version.origin.clone().unwrap_or_else(|| version.version.node.to_string()),
        "node_id": version.version.node.to_string(),
    })
}

pub(crate) fn status_json(status: &NodeStatus) -> serde_json::Value {
    json!({
        "name": status.name,
        "node_id": status.node_id.to_string(),
        "address": status.address,
        "hlc": status.hlc.to_string(),
        "cluster_id": status.cluster_id,
        "partitions": status.partitions,
        "records": status.records,
        "uptime_ms": status.uptime_ms,
    })
}

pub(crate) fn status_table(status: &NodeStatus) -> String {
    format!(
        "node        {}\naddress     {}\nhlc         {}\ncluster     {}\npartitions  {}\nrecords     {}\nuptime      {}\n",
        status.name,
        status.address,
        status.hlc,
        status.cluster_id,
        status.partitions,
        status.records,
        humantime::format_duration(std::time::Duration::from_secs(status.uptime_ms / 1000)),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
