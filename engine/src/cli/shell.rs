//! `vergent shell`: an interactive session with one node.
//!
//! The prompt names the node; a write answers with its version (`OK hlc=...`). An
//! error is printed and the shell goes on; only `quit`, `exit` or end of input end it.

use std::path::PathBuf;

use clap::Args;
use rustyline::error::ReadlineError;

use super::{ClientArgs, Failure};
use crate::client::Client;

/// Most lines kept in the history file.
const HISTORY_LINES_MAX: usize = 1000;

#[derive(Debug, Args)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(args: ShellArgs) -> Result<(), Failure> {
    let runtime = super::runtime()?;
    let client = runtime.block_on(args.client.connect())?;
    let result = session(&runtime, &client, args.client.node()?);
    runtime.block_on(client.close());
    result
}

const HELP: &str = "\
commands:
  put KEY VALUE...   write VALUE (the rest of the line) under KEY; prints the version
  get KEY            print the value of KEY
  getv KEY           print the value of KEY and its version
  delete KEY         delete KEY (also: del)
  status             the node's status
  help               this text
  quit               leave (also: exit, Ctrl-D)";

/// Reads and runs lines until `quit` or end of input.
pub(crate) fn session(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    node: &str,
) -> Result<(), Failure> {
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES_MAX)
        .map_err(|e| Failure::new(format!("shell: {e}")))?
        .auto_add_history(true)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .map_err(|e| Failure::new(format!("shell: {e}")))?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let prompt = format!("vergent({node})> ");
    println!(
        "connected to {} at {node}; type help for commands",
        client.node_name()
    );
    loop {
        match editor.readline(&prompt) {
            Ok(line) => match run_line(runtime, client, line.trim()) {
                Flow::Continue => {}
                Flow::Quit => break,
            },
            Err(ReadlineError::Interrupted) => println!("(quit or Ctrl-D to leave)"),
            Err(ReadlineError::Eof) => break,
            Err(err) => {
                eprintln!("error: cannot read input: {err}");
                break;
            }
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

enum Flow {
    Continue,
    Quit,
}

fn run_line(runtime: &tokio::runtime::Runtime, client: &Client, line: &str) -> Flow {
    let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let key_only = |what: &str| -> Option<&str> {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            eprintln!("error: usage: {what} KEY");
            None
        } else {
            Some(rest)
        }
    };
    match command {
        "" => {}
        "quit" | "exit" => return Flow::Quit,
        "help" | "?" => println!("{HELP}"),
        "put" | "set" => match rest.split_once(char::is_whitespace) {
            Some((key, value)) => match runtime.block_on(client.put(
                key.as_bytes(),
                value.trim_start().as_bytes(),
                None,
            )) {
                Ok(version) => println!("OK {version}"),
                Err(err) => eprintln!("error: {err}"),
            },
            None => eprintln!("error: usage: put KEY VALUE"),
        },
        "get" | "getv" => {
            if let Some(key) = key_only(command) {
                match runtime.block_on(client.get(key.as_bytes(), None)) {
                    Ok(Some((value, version))) => {
                        println!("{}", String::from_utf8_lossy(&value));
                        if command == "getv" {
                            println!("{version}");
                        }
                    }
                    Ok(None) => println!("(not found)"),
                    Err(err) => eprintln!("error: {err}"),
                }
            }
        }
        "delete" | "del" => {
            if let Some(key) = key_only(command) {
                match runtime.block_on(client.delete(key.as_bytes(), None)) {
                    Ok(version) => println!("OK {version}"),
                    Err(err) => eprintln!("error: {err}"),
                }
            }
        }
        "status" => match runtime.block_on(client.status()) {
            Ok(status) => print!("{}", super::data::status_table(&status)),
            Err(err) => eprintln!("error: {err}"),
        },
        other => eprintln!("error: unknown command {other:?}; type help for commands"),
    }
    Flow::Continue
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".vergent_history"))
}
