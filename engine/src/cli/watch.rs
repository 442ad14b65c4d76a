//! `vergent watch`: every change a node applies, as lines or JSON, going on through
//! the next node given when its node goes away.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::data::version_json;
use super::{ClientArgs, Failure};
use crate::protocol::{Request, Response};

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Print one JSON object per change.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Prints every change the node applies until interrupted. When its node goes away it
/// says so and goes on through the next node given (`--node a,b,c`), or the same one
/// once it answers again; changes made meanwhile are not shown (a watch is live only).
pub(crate) async fn watch(args: WatchArgs) -> Result<(), Failure> {
    let request = Request::Watch {
        prefix: args.prefix.clone().into_bytes(),
    };
    let nodes = args.client.nodes()?.len();
    let mut next = 0;
    let mut lost: Option<String> = None;
    loop {
        let (client, index) = match args.client.connect_from(next).await {
            Ok(connected) => connected,
            Err(err) if lost.is_some() => {
                eprintln!(
                    "watch: no node answers ({}); trying again in 1 s",
                    err.message
                );
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
            Err(err) => return Err(err),
        };
        let mut changes = match client.stream(&request).await {
            Ok(changes) => changes,
            Err(err) if lost.is_some() => {
                eprintln!("watch: {err}; trying the next node");
                next = (index + 1) % nodes;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(why) = lost.take() {
            eprintln!(
                "watch: {why}; resumed through {} at {} (changes made meanwhile are not shown)",
                client.node_name(),
                client.addr()
            );
        }
        let ended = loop {
            let change = tokio::select! {
                change = changes.next() => change,
                _ = tokio::signal::ctrl_c() => {
                    client.close().await;
                    return Ok(());
                }
            };
            match change {
                Ok(Some(change)) => print_change(change, args.json)?,
                Ok(None) => break "the node ended the watch".to_string(),
                Err(err) => break err.to_string(),
            }
        };
        lost = Some(format!(
            "lost {} at {} ({ended})",
            client.node_name(),
            client.addr()
        ));
        eprintln!("watch: {}", lost.as_deref().unwrap_or_default());
        next = (index + 1) % nodes;
    }
}

/// One change as `watch` prints it: a line of text (control characters escaped, so a
/// value never breaks the line), or a JSON object.
fn print_change(change: Response, json: bool) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match change {
        Response::Change {
            key,
            value,
            version,
        } => {
            let key_text = String::from_utf8_lossy(&key);
            if json {
                let mut doc = version_json(&version);
                doc["key"] = json!(key_text);
                match value.as_ref().map(|v| String::from_utf8(v.clone())) {
                    None => doc["value"] = serde_json::Value::Null,
                    Some(Ok(text)) => doc["value"] = json!(text),
                    Some(Err(bytes)) => {
                        use base64::Engine;
                        doc["value"] = json!(
                            base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes())
                        );
                        doc["encoding"] = json!("base64");
                    }
                }
                doc["deleted"] = json!(value.is_none());
                writeln!(out, "{doc}")?;
            } else {
                match value {
                    Some(value) => writeln!(
                        out,
                        "PUT {} = {} {version}",
                        escaped(&key_text),
                        escaped(&String::from_utf8_lossy(&value))
                    )?,
                    None => writeln!(out, "DEL {} {version}", escaped(&key_text))?,
                }
            }
            out.flush()?;
        }
        Response::Error(reply) => eprintln!("warning: {}", reply.message),
        other => {
            return Err(Failure::new(format!(
                "unexpected answer from the node: {other:?}"
            )));
        }
    }
    Ok(())
}

/// Text with its control characters escaped (`\n`, `\t`, `\u{1b}`).
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
