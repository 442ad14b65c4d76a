//! `vergent cas`: compare-and-set on a key of a linearizable bucket.

use clap::Args;
use serde_json::json;

use super::{ClientArgs, Failure};
use crate::client::Cas;
use crate::paxos::Expect;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("expected").required(true).args(["expect", "expect_absent"])))]
pub(crate) struct CasArgs {
    /// The key.
    key: String,
    /// The value to write if the key holds what is expected.
    #[arg(required_unless_present = "delete")]
    value: Option<String>,
    /// Swap only if the key holds exactly this value.
    #[arg(long, value_name = "VALUE")]
    expect: Option<String>,
    /// Swap only if the key holds no value (never written, or deleted): create only.
    #[arg(long)]
    expect_absent: bool,
    /// Delete the key instead of writing a value, if it holds what is expected.
    #[arg(long, conflicts_with = "value")]
    delete: bool,
    /// The linearizable bucket.
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Exit 0 when swapped; 1, with what the key holds, when it held something else.
pub(crate) async fn cas(args: CasArgs) -> Result<(), Failure> {
    let expect = match args.expect {
        Some(value) => Expect::Value(value.into_bytes()),
        None => Expect::Absent,
    };
    let connection = args.client.connect().await?;
    let result = connection
        .cas(
            &args.bucket,
            args.key.as_bytes(),
            expect,
            args.value.as_deref().map(str::as_bytes),
        )
        .await;
    connection.close().await;
    match result? {
        Cas::Swapped(version) => super::data::print_written(&version, args.json),
        Cas::NotSwapped(found) => {
            let message = match &found {
                Some((value, version)) => format!(
                    "not swapped: the value is {} ({version})",
                    String::from_utf8_lossy(value)
                ),
                None => "not swapped: the key holds no value".to_string(),
            };
            if args.json {
                let doc = match &found {
                    Some((value, version)) => json!({
                        "ok": false,
                        "value": String::from_utf8_lossy(value),
                        "version": super::data::version_json(version),
                    }),
                    None => json!({ "ok": false, "value": null }),
                };
                println!("{doc}");
                return Err(Failure {
                    message: String::new(),
                    status: 1,
                });
            }
            Err(Failure { message, status: 1 })
        }
    }
}
