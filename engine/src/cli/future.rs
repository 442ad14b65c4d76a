//! `vergent rewrite-future`: rewrite the records a node holds from the future (beyond
//! the cluster's time plus the clock bound) to a present version of that node's, and
//! bring its clock back. Why rewrite and not drop: `node/future.rs`.
//!
//! Exit statuses: 0 when nothing from the future is left (a dry run that found none);
//! 1 when a dry run found some; 2 when the node refused (it cannot tell the cluster's
//! time) or could not be reached.

use clap::Args;

use super::{ClientArgs, Failure};
use crate::hlc::skew::describe_us;
use crate::protocol::{FutureVersions, Request, Response};

#[derive(Debug, Args)]
pub(crate) struct RewriteFutureArgs {
    /// Count and list them only; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Lines describing what was found: the count, how far ahead, the first few keys.
pub(crate) fn describe(future: &FutureVersions) -> Vec<String> {
    let mut lines = vec![format!(
        "{} records from the future, the furthest {} ahead of the cluster's time",
        future.count,
        describe_us(future.ahead_ms_max * 1000)
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
    args.client.timeout_ms = args.client.timeout_ms.max(600_000);
    let client = args.client.connect().await?;
    let answer = client
        .request(&Request::RewriteFuture {
            dry_run: args.dry_run,
        })
        .await;
    client.close().await;
    let Response::RewroteFuture {
        found,
        rewritten,
        clock_rewound,
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
            message:
                "dry run: nothing rewritten; run without --dry-run to rewrite them to the present"
                    .into(),
            status: 1,
        });
    }
    println!(
        "{rewritten} records rewritten to the present{}; run it on every node whose status reports versions from the future, then `vergent repair`",
        if clock_rewound {
            ", and this node's clock brought back"
        } else {
            ""
        }
    );
    Ok(())
}
