//! `vergent rewrite-future`: rewrite the records a node holds from the future (beyond
//! the cluster's time plus the clock bound) to a present version of that node's, and
//! bring its clock back. Why rewrite and not drop: `node/future.rs`.
//!
//! Exit statuses: 0 when every record found was rewritten (or a dry run found none);
//! 1 when a dry run found some, or fewer were rewritten than found; 2 when the node
//! refused (it cannot tell the cluster's time) or could not be reached.

use clap::Args;

use super::{ClientArgs, Failure};
use crate::hlc::skew::describe_us;
use crate::protocol::{FutureVersions, Request, Response};

#[derive(Debug, Args)]
pub(crate) struct RewriteFutureArgs {
    /// Count and list them only; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rewrite them to this timestamp: the one the first node's run printed, so every
    /// node rewrites the same keys to the same time [default: the cluster's time now].
    #[arg(long, value_name = "TIMESTAMP")]
    at: Option<crate::hlc::Timestamp>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Lines describing what was found: the count, how far ahead, the first few keys.
pub(crate) fn describe(future: &FutureVersions) -> Vec<String> {
    let mut lines = vec![format!(
        "{} records from the future, the furthest {} ahead of the cluster's time",
        future.count,
        describe_us(future.ahead_ms_max.saturating_mul(1000))
    )];
    lines.extend(
        future
            .first
            .iter()
            .map(|(key, version)| format!("  {key:?} {version}")),
    );
    if future.count > future.first.len() as u64 {
        lines.push(format!(
            "  … and {} more",
            future.count - future.first.len() as u64
        ));
    }
    lines
}

pub(crate) async fn run(mut args: RewriteFutureArgs) -> Result<(), Failure> {
    args.client.timeout = args.client.timeout.max(std::time::Duration::from_secs(600));
    let client = args.client.connect().await?;
    let answer = client
        .request(&Request::RewriteFuture {
            dry_run: args.dry_run,
            at: args.at,
        })
        .await;
    client.close().await;
    let Response::RewroteFuture {
        found,
        rewritten,
        clock_rewound,
        at,
    } = answer?
    else {
        return Err(Failure::new("unexpected answer from the node"));
    };
    if found.count == 0 && !clock_rewound {
        println!("no records from the future on this node");
        return Ok(());
    }
    if found.count > 0 {
        for line in describe(&found) {
            println!("{line}");
        }
    }
    if args.dry_run {
        return Err(Failure {
            message: format!(
                "dry run: nothing rewritten; run without --dry-run to rewrite them to {at}"
            ),
            status: 1,
        });
    }
    println!(
        "{rewritten} records rewritten to {at}{}",
        if clock_rewound {
            ", and this node's clock brought back"
        } else {
            ""
        }
    );
    if args.at.is_none() {
        println!(
            "on every other node whose status reports versions from the future, run `vergent rewrite-future --at {at}`, then `vergent repair`"
        );
    }
    if rewritten < found.count {
        return Err(Failure {
            message: format!(
                "{} of the {} records found were not rewritten (written again meanwhile); run it again",
                found.count - rewritten,
                found.count
            ),
            status: 1,
        });
    }
    Ok(())
}
