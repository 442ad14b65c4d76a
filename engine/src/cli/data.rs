//! `vergent get`, `put`, `delete` and `status`.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::{ClientArgs, ConsistencyArg, Failure};
use crate::client::Read;
use crate::protocol::{ClusterStatus, Request, Response, TypedValue, VersionInfo};

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The key.
    key: String,
    /// The bucket [default: default, the lww bucket every key is in unless it names
    /// another].
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: Option<String>,
    /// Also print the version: HLC as UTC time and logical counter, and the writing node.
    #[arg(long)]
    show_version: bool,
    /// In a siblings bucket, also print the context token: pass it to `put --context`
    /// to replace exactly the values read.
    #[arg(long)]
    show_context: bool,
    /// Replicas to consult [default: the bucket's, or the node's]. In a linearizable
    /// bucket every read is linearizable, except at one: a local read that may be stale.
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Order this after a version the caller has seen (as `put` prints it, or just its
    /// timestamp): a write gets a later version, whichever node coordinates it.
    #[arg(long, value_name = "VERSION")]
    after: Option<crate::hlc::Timestamp>,
    /// Write the value's bytes to this file, exactly (no newline added).
    #[arg(long, value_name = "PATH")]
    output: Option<std::path::PathBuf>,
    /// Print JSON (a value that is not UTF-8 as base64, with `"encoding": "base64"`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The key.
    key: String,
    /// The value (any bytes), or `-` to read it from standard input.
    #[arg(value_parser = clap::value_parser!(std::ffi::OsString), required_unless_present = "file")]
    value: Option<std::ffi::OsString>,
    /// Read the value from this file (for values too large for an argument).
    #[arg(long, value_name = "PATH", conflicts_with = "value")]
    file: Option<std::path::PathBuf>,
    /// The bucket [default: default, the lww bucket every key is in unless it names
    /// another].
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: Option<String>,
    /// In a siblings bucket, the context token a read printed: the write replaces
    /// exactly the values that read saw (without it, the value joins them as a sibling).
    #[arg(long, value_name = "TOKEN")]
    context: Option<String>,
    /// In a lww bucket, how long the value lives (e.g. 10m, 24h), from this write
    /// [default: the bucket's TTL].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    ttl: Option<std::time::Duration>,
    /// Replicas that must acknowledge [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Order this after a version the caller has seen (as `put` prints it, or just its
    /// timestamp): a write gets a later version, whichever node coordinates it.
    #[arg(long, value_name = "VERSION")]
    after: Option<crate::hlc::Timestamp>,
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
    /// The bucket [default: default, the lww bucket every key is in unless it names
    /// another].
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: Option<String>,
    /// In a siblings bucket, the context token a read printed: the delete removes
    /// exactly the values that read saw.
    #[arg(long, value_name = "TOKEN")]
    context: Option<String>,
    /// Replicas that must acknowledge [default: the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Order this after a version the caller has seen (as `put` prints it, or just its
    /// timestamp): a write gets a later version, whichever node coordinates it.
    #[arg(long, value_name = "VERSION")]
    after: Option<crate::hlc::Timestamp>,
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

/// A value to write: the argument's bytes, standard input for `-`, or a file's
/// contents. Reads at most one byte past the largest value any node takes, so a huge
/// input is refused without being held.
pub(crate) fn read_value(
    value: Option<&std::ffi::OsStr>,
    file: Option<&std::path::Path>,
) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let limit = crate::limits::VALUE_BYTES_MAX_CEILING;
    let bounded = |reader: &mut dyn Read, from: &str| -> Result<Vec<u8>, Failure> {
        let mut bytes = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::new(format!("cannot read {from}: {e}")))?;
        if bytes.len() > limit {
            return Err(Failure::new(format!(
                "value too large: {from} holds more than {limit} bytes, the most any node takes"
            )));
        }
        Ok(bytes)
    };
    match (value, file) {
        (_, Some(path)) => {
            let mut f = std::fs::File::open(path)
                .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
            bounded(&mut f, &path.display().to_string())
        }
        (Some(v), None) if v == "-" => bounded(&mut std::io::stdin().lock(), "standard input"),
        (Some(v), None) => Ok(v.as_bytes().to_vec()),
        (None, None) => Err(Failure::new(
            "no value: give VALUE, - to read standard input, or --file PATH",
        )),
    }
}

/// The bucket a command names, unless it is `default`.
fn named(bucket: &Option<String>) -> Option<&str> {
    bucket
        .as_deref()
        .filter(|b| *b != crate::buckets::DEFAULT_BUCKET)
}

pub(crate) async fn get(args: GetArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    if let Some(after) = args.after {
        client.session().observe(after);
    }
    let consistency = args.consistency.map(Into::into);
    let found = match named(&args.bucket) {
        None => client
            .get(args.key.as_bytes(), consistency)
            .await
            .map(Read::Value),
        Some(bucket) => client.read(bucket, args.key.as_bytes(), consistency).await,
    };
    client.close().await;
    let found = match found? {
        Read::Value(found) => found,
        Read::Typed(value) => return print_typed(&args.key, value, args.show_context, args.json),
    };
    let Some((value, version)) = found else {
        if args.json {
            println!("{}", json!({ "key": args.key, "found": false }));
        }
        return Err(Failure::not_found());
    };
    let mut out = std::io::stdout().lock();
    if let Some(path) = &args.output {
        std::fs::write(path, &value)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))?;
        if args.show_version {
            writeln!(out, "{version}")?;
        }
    } else if args.json {
        let mut doc = version_json(&version);
        doc["key"] = json!(args.key);
        doc["found"] = json!(true);
        match String::from_utf8(value) {
            Ok(text) => doc["value"] = json!(text),
            Err(bytes) => {
                use base64::Engine;
                doc["value"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes()));
                doc["encoding"] = json!("base64");
            }
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
    if let Some(after) = args.after {
        client.session().observe(after);
    }
    let consistency = args.consistency.map(Into::into);
    let ttl_ms = args.ttl.map(super::bucket::ttl_ms).transpose()?;
    let value = read_value(args.value.as_deref(), args.file.as_deref())?;
    let written = match named(&args.bucket) {
        None if args.context.is_none() && ttl_ms.is_none() => {
            client.put(args.key.as_bytes(), &value, consistency).await
        }
        bucket => {
            client
                .write(
                    bucket.unwrap_or(crate::buckets::DEFAULT_BUCKET),
                    args.key.as_bytes(),
                    Some(&value),
                    args.context.as_deref(),
                    ttl_ms,
                    consistency,
                )
                .await
        }
    };
    client.close().await;
    print_written(&written?, args.json)
}

pub(crate) async fn delete(args: DeleteArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    if let Some(after) = args.after {
        client.session().observe(after);
    }
    let consistency = args.consistency.map(Into::into);
    let written = match named(&args.bucket) {
        None if args.context.is_none() => client.delete(args.key.as_bytes(), consistency).await,
        bucket => {
            client
                .write(
                    bucket.unwrap_or(crate::buckets::DEFAULT_BUCKET),
                    args.key.as_bytes(),
                    None,
                    args.context.as_deref(),
                    None,
                    consistency,
                )
                .await
        }
    };
    client.close().await;
    print_written(&written?, args.json)
}

/// A typed value as `get` prints it: a counter's value; a set's members, one a line,
/// sorted; a register's values, one a line, and its context when asked.
fn print_typed(
    key: &str,
    value: TypedValue,
    show_context: bool,
    json: bool,
) -> Result<(), Failure> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut out = std::io::stdout().lock();
    match value {
        TypedValue::Counter(n) => {
            if json {
                writeln!(out, "{}", json!({ "key": key, "counter": n.to_string() }))?;
            } else {
                writeln!(out, "{n}")?;
            }
        }
        TypedValue::Set(members) => {
            if json {
                let members: Vec<String> = members.iter().map(|m| text(m)).collect();
                writeln!(out, "{}", json!({ "key": key, "members": members }))?;
            } else {
                for m in &members {
                    out.write_all(m)?;
                    writeln!(out)?;
                }
            }
        }
        TypedValue::Siblings { values, context } => {
            if json {
                let values: Vec<String> = values.iter().map(|v| text(v)).collect();
                writeln!(
                    out,
                    "{}",
                    json!({ "key": key, "siblings": values, "context": context })
                )?;
            } else {
                if values.is_empty() && !show_context {
                    return Err(Failure::not_found());
                }
                for v in &values {
                    out.write_all(v)?;
                    writeln!(out)?;
                }
                if show_context {
                    writeln!(out, "context: {context}")?;
                }
            }
        }
    }
    Ok(())
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

pub(crate) fn print_written(version: &VersionInfo, json: bool) -> Result<(), Failure> {
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

pub(crate) fn status_json(status: &ClusterStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or_default()
}

/// A table for people: one line per member.
/// What the node's proposals on linearizable keys did, when it made any.
fn linearizable_line(status: &ClusterStatus) -> String {
    let lin = &status.linearizable;
    if lin.ops == 0 && lin.in_flight == 0 {
        return String::new();
    }
    let per_op = lin.round_trips as f64 / lin.ops.max(1) as f64;
    let fast = 100.0 * lin.fast as f64 / lin.ops.max(1) as f64;
    format!(
        "\nlinearizable ({}): {} operations, {per_op:.2} round trips each, {fast:.0}% in one, {} retries, {} in flight\n",
        status.node, lin.ops, lin.retries, lin.in_flight
    )
}

pub(crate) fn status_table(status: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}  partitions {}  replication factor {}  placement {}  (as seen by {})\n",
        status.cluster_id,
        status.partitions,
        status.replication_factor,
        status.placement_digest,
        status.node
    );
    let header = [
        "NAME",
        "ADDRESS",
        "STATE",
        "INC",
        "HLC",
        "SKEW",
        "PARTITIONS",
        "RECORDS",
        "HINTS",
        "OLDEST HINT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for m in &status.members {
        rows.push(vec![
            m.name.clone(),
            m.address.clone(),
            member_state(m, &status.node),
            m.incarnation.to_string(),
            m.hlc.map_or("-".into(), |h| h.to_string()),
            m.clock_skew_ms.map_or("-".into(), |s| format!("{s:+} ms")),
            m.partitions_held.to_string(),
            m.records.map_or("-".into(), |r| r.to_string()),
            m.hints.to_string(),
            if m.hints == 0 {
                "-".into()
            } else {
                format_age(m.hints_oldest_age_ms)
            },
        ]);
    }
    out.push_str(&aligned(&rows));
    if let Some(why) = &status.clock_refusal {
        out.push_str(&format!("clock: {}: {why}\n", status.node));
    }
    out.push_str(&sync_table(status));
    out.push_str(&buckets_table(status));
    out.push_str(&linearizable_line(status));
    out
}

/// The buckets, with what the answering node saw of their concurrent writes; only
/// when some bucket besides `default` exists or something was seen.
fn buckets_table(status: &ClusterStatus) -> String {
    let shown = status.bucket_stats.len() > 1
        || status
            .bucket_stats
            .iter()
            .any(|b| b.lost_writes > 0 || b.siblings_max > 0);
    if !shown {
        return String::new();
    }
    let header = [
        "BUCKET",
        "TYPE",
        "TTL",
        "RECORDS",
        "CONFLICTS",
        "HOTTEST KEYS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for b in &status.bucket_stats {
        let (conflicts, hot) = match b.kind {
            crate::buckets::BucketType::Lww => {
                (format!("{} lost writes", b.lost_writes), &b.lost_keys)
            }
            crate::buckets::BucketType::Siblings => (
                format!("up to {} siblings", b.siblings_max.max(1)),
                &b.sibling_keys,
            ),
            _ => ("merged".to_string(), &b.lost_keys),
        };
        let hot = hot
            .iter()
            .map(|k| format!("{} ({})", k.key, k.count))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(vec![
            b.name.clone(),
            b.kind.as_str().to_string(),
            b.ttl_ms.map_or("-".into(), |ms| {
                humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
            }),
            b.keys.map_or("-".into(), |k| k.to_string()),
            conflicts,
            if hot.is_empty() { "-".into() } else { hot },
        ]);
    }
    format!("\n{}", aligned(&rows))
}

/// The state as people read it: a live member still filling partitions is joining,
/// and one this node cannot reach directly says so.
fn member_state(m: &crate::protocol::MemberStatus, observer: &str) -> String {
    let mut state = m.state.clone();
    if m.state == "alive" && m.partitions_filling > 0 {
        state = format!(
            "joining ({}/{} filled)",
            m.partitions_held.saturating_sub(m.partitions_filling),
            m.partitions_held
        );
    }
    if m.state == "alive" && !m.reachable {
        state.push_str(&format!(", unreachable from {observer}"));
    }
    state
}

/// Rows as left-aligned columns two spaces apart, one line each.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The anti-entropy lines of the status table: one per peer.
fn sync_table(status: &ClusterStatus) -> String {
    if status.sync.is_empty() {
        return partitions_line(status);
    }
    let now = crate::wallclock::system_wall_ms();
    let age = |t: Option<u64>| t.map_or("never".to_string(), |t| format_age(now.saturating_sub(t)));
    let mut rows = vec![vec![
        "PEER".to_string(),
        "LAST EXCHANGE".to_string(),
        "SYNC LAG".to_string(),
        "DIFFERING".to_string(),
        "MOVED".to_string(),
        "LAST ERROR".to_string(),
    ]];
    for s in &status.sync {
        let lag = status
            .members
            .iter()
            .find(|m| m.name == s.peer)
            .and_then(|m| m.sync_lag_ms)
            .map_or("-".to_string(), format_age);
        rows.push(vec![
            s.peer.clone(),
            age(s.last_exchange_ms),
            lag,
            s.partitions_differing.to_string(),
            format!("{:.1} KiB", s.bytes_moved as f64 / 1024.0),
            s.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    format!(
        "\nanti-entropy with peers (as seen by {})\n{}{}",
        status.node,
        aligned(&rows),
        partitions_line(status)
    )
}

/// `partitions: 500 in sync (oldest confirmation 12s ago), 12 unconfirmed, ...`.
fn partitions_line(status: &ClusterStatus) -> String {
    use crate::antientropy::confirm::PartitionSyncState as S;
    let states = &status.partition_states;
    if states.is_empty() {
        return String::new();
    }
    let count = |state: S| states.iter().filter(|s| s.state == state).count();
    let now = crate::wallclock::system_wall_ms();
    let oldest = states
        .iter()
        .filter(|s| s.state == S::InSync)
        .filter_map(|s| s.confirmed_ms)
        .min()
        .map(|t| {
            format!(
                " (oldest confirmation {} ago)",
                format_age(now.saturating_sub(t))
            )
        })
        .unwrap_or_default();
    let mut parts = vec![format!("{} in sync{oldest}", count(S::InSync))];
    for state in [S::Unconfirmed, S::Differing, S::Repairing, S::ReplicaDown] {
        let n = count(state);
        if n > 0 {
            parts.push(format!("{n} {}", state.as_str()));
        }
    }
    format!("partitions: {}\n", parts.join(", "))
}

/// `1h 02m`, `3m 20s`, `12s`: ages at the precision a person needs.
pub(crate) fn format_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[derive(Debug, Args)]
pub(crate) struct LeaveArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Asks the node to leave the cluster (admin certificate).
pub(crate) async fn leave(args: LeaveArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let answer = client.request(&Request::Leave).await;
    client.close().await;
    match answer? {
        Response::Leaving { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(Failure::new(format!(
            "unexpected answer from the node: {other:?}"
        ))),
    }
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The dead member's name.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Asks the node to remove a dead member from the cluster (admin certificate).
pub(crate) async fn remove(args: RemoveArgs) -> Result<(), Failure> {
    let client = args.client.connect().await?;
    let answer = client.request(&Request::Remove { name: args.name }).await;
    client.close().await;
    match answer? {
        Response::Removed { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(Failure::new(format!(
            "unexpected answer from the node: {other:?}"
        ))),
    }
}
