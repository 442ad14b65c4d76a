//! `vergent repair`: compare (and repair) a node's partitions with their co-replicas.
//!
//! Exit statuses: 0 when every compared partition is in sync at the end; 1 when
//! differences remain (a dry run found some, or a partition did not converge); 2 when
//! something failed (a peer could not be reached, the node refused).

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::{ClientArgs, Failure};
use crate::antientropy::report::RepairReport;
use crate::protocol::{Request, Response};

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    /// Compare only: report which partitions differ and by how many keys; move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this partition.
    #[arg(long)]
    partition: Option<u16>,
    /// Only with this peer (a member's name).
    #[arg(long)]
    peer: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(mut args: RepairArgs) -> Result<(), Failure> {
    // A repair of a large node takes a while; the node bounds each step itself.
    args.client.timeout = args
        .client
        .timeout
        .max(std::time::Duration::from_secs(3600));
    let client = args.client.connect().await?;
    let request = Request::Repair {
        partition: args.partition,
        peer: args.peer.clone(),
        dry_run: args.dry_run,
    };
    let mut answers = client.stream(&request).await?;
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} partition comparisons, {msg}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let report = loop {
        match answers.next().await? {
            Some(Response::RepairProgress(p)) => {
                if let Some(bar) = &bar {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                    bar.set_message(format!("{} keys moved", p.keys_moved));
                }
            }
            Some(Response::Repaired(report)) => break report,
            Some(Response::Error(reply)) => return Err(Failure::new(reply.message)),
            Some(other) => {
                return Err(Failure::new(format!(
                    "unexpected answer from the node: {other:?}"
                )));
            }
            None => return Err(Failure::new("the node ended the repair without a report")),
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    client.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if !report.problems.is_empty() && !report.problems.iter().all(|p| p.contains("still differs")) {
        return Err(Failure::new(report.problems.join("; ")));
    }
    if !report.in_sync {
        return Err(Failure {
            message: if report.dry_run {
                format!(
                    "{} partitions differ ({} keys); run `vergent repair` without --dry-run to repair them",
                    report.differences.len(),
                    report.counts.keys_differing
                )
            } else {
                report.problems.join("; ")
            },
            status: 1,
        });
    }
    Ok(())
}

fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The report for people.
pub(crate) fn render(report: &RepairReport) -> String {
    let c = &report.counts;
    let mut out = String::new();
    let what = if report.dry_run { "dry run" } else { "repair" };
    let peers = if report.peers.is_empty() {
        "no peers".to_string()
    } else {
        report.peers.join(", ")
    };
    out.push_str(&format!(
        "{what} on {} with {peers}: {} partitions compared, {} differed, {:.2} s\n",
        report.node,
        c.partitions_compared,
        c.partitions_differing,
        report.duration_ms as f64 / 1000.0
    ));
    if report.dry_run {
        out.push_str(&format!("keys differing: {}", c.keys_differing));
    } else {
        out.push_str(&format!(
            "keys: {} differed, {} sent, {} received",
            c.keys_differing, c.keys_sent, c.keys_received
        ));
        if c.keys_differing > 0 {
            out.push_str(&format!(" (over-streaming {:.2})", c.over_streaming()));
        }
    }
    if c.pending_purge > 0 {
        out.push_str(&format!(
            "; {} pending tombstone purges (not divergence)",
            c.pending_purge
        ));
    }
    out.push('\n');
    if let Some(w) = &report.waited_for {
        out.push_str(&format!(
            "includes a run that was already going on {} when the repair was asked for: {} keys sent, {} received while the repair waited for it\n",
            report.node, w.keys_sent, w.keys_received
        ));
    }
    out.push_str(&format!(
        "bytes: tree metadata {} sent, {} received; entries {} sent, {} received; {} round trips\n",
        bytes(c.metadata_bytes_sent),
        bytes(c.metadata_bytes_received),
        bytes(c.entry_bytes_sent),
        bytes(c.entry_bytes_received),
        c.round_trips
    ));
    for d in &report.differences {
        if d.keys > 0 || d.still_differing {
            out.push_str(&format!(
                "  partition {:>5} with {}: {} keys {}{}\n",
                d.partition,
                d.peer,
                d.keys,
                if report.dry_run { "differ" } else { "differed" },
                if d.still_differing {
                    " (still differs)"
                } else {
                    ""
                }
            ));
        }
    }
    for problem in &report.problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    out.push_str(if report.in_sync {
        "in sync: yes\n"
    } else {
        "in sync: no\n"
    });
    out
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// `vergent verify`: the node rebuilds every partition's tree from its data and
/// compares it with the tree it keeps, and lists records whose version is from the
/// future. Exit 1 when any tree differs or any such record exists.
pub(crate) async fn verify(mut args: VerifyArgs) -> Result<(), Failure> {
    args.client.timeout = args.client.timeout.max(std::time::Duration::from_secs(600));
    let client = args.client.connect().await?;
    let answer = client.request(&Request::Verify).await;
    client.close().await;
    let Response::Verified {
        checked,
        mismatched,
        future,
    } = answer?
    else {
        return Err(Failure::new("unexpected answer from the node"));
    };
    let mut problems = Vec::new();
    if mismatched.is_empty() {
        println!("{checked} partitions checked: every tree equals the tree rebuilt from the data");
    } else {
        problems.push(format!(
            "{checked} partitions checked; trees differ from the data in partitions {mismatched:?}"
        ));
    }
    if future.count > 0 {
        for line in super::future::describe(&future) {
            println!("{line}");
        }
        problems.push(format!(
            "{} records are from the future; `vergent rewrite-future` on this node rewrites them to the present",
            future.count
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Failure {
        message: problems.join("; "),
        status: 1,
    })
}
