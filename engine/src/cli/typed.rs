//! `vergent incr`, `sadd` and `srem`: updates of counter and set buckets.

use clap::Args;

use super::{ClientArgs, ConsistencyArg, Failure};
use crate::types::Change;

#[derive(Debug, Args)]
pub(crate) struct IncrArgs {
    /// The key.
    key: String,
    /// How much to add; negative takes away.
    #[arg(default_value_t = 1, allow_negative_numbers = true)]
    amount: i64,
    /// The counter bucket.
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: String,
    /// Replicas that must acknowledge [default: the bucket's, or the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MembersArgs {
    /// The key.
    key: String,
    /// The members.
    #[arg(required = true)]
    members: Vec<String>,
    /// The set bucket.
    #[arg(long, env = "VERGENT_BUCKET", value_name = "NAME")]
    bucket: String,
    /// Replicas that must acknowledge [default: the bucket's, or the node's].
    #[arg(long, value_enum)]
    consistency: Option<ConsistencyArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn incr(args: IncrArgs) -> Result<(), Failure> {
    let change = Change::Incr(args.amount);
    update(
        &args.client,
        &args.bucket,
        &args.key,
        change,
        args.consistency,
        args.json,
    )
    .await
}

pub(crate) async fn sadd(args: MembersArgs) -> Result<(), Failure> {
    let change = Change::Add(members(&args.members));
    update(
        &args.client,
        &args.bucket,
        &args.key,
        change,
        args.consistency,
        args.json,
    )
    .await
}

pub(crate) async fn srem(args: MembersArgs) -> Result<(), Failure> {
    let change = Change::Remove(members(&args.members));
    update(
        &args.client,
        &args.bucket,
        &args.key,
        change,
        args.consistency,
        args.json,
    )
    .await
}

fn members(members: &[String]) -> Vec<Vec<u8>> {
    members.iter().map(|m| m.as_bytes().to_vec()).collect()
}

async fn update(
    client: &ClientArgs,
    bucket: &str,
    key: &str,
    change: Change,
    consistency: Option<ConsistencyArg>,
    json: bool,
) -> Result<(), Failure> {
    let connection = client.connect().await?;
    let written = connection
        .update(bucket, key.as_bytes(), change, consistency.map(Into::into))
        .await;
    connection.close().await;
    super::data::print_written(&written?, json)
}
