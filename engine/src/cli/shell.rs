//! `vergent shell`: an interactive session with one node.
//!
//! The prompt names the node; a write answers with its version (`OK hlc=...`). Words
//! are split as a POSIX shell splits them (quotes and backslashes), so a key or value
//! may hold spaces. An error is printed and the shell goes on; only `quit`, `exit` or
//! end of input end it. Fed a script (standard input not a terminal), it exits 1 when
//! any command failed, saying how many.

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
  put KEY VALUE      write VALUE under KEY; prints the version (quote words with
                     spaces: put \"my key\" 'hello world')
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
    let (mut commands, mut failed) = (0usize, 0usize);
    loop {
        match editor.readline(&prompt) {
            Ok(line) => match run_line(runtime, client, line.trim()) {
                Flow::Continue(ok) => {
                    commands += usize::from(ok.is_some());
                    failed += usize::from(ok == Some(false));
                }
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
    use std::io::IsTerminal;
    if failed > 0 && !std::io::stdin().is_terminal() {
        return Err(Failure {
            message: format!("{failed} of {commands} commands failed"),
            status: 1,
        });
    }
    Ok(())
}

enum Flow {
    /// Go on; whether the line's command succeeded (`None`: no command).
    Continue(Option<bool>),
    Quit,
}

fn run_line(runtime: &tokio::runtime::Runtime, client: &Client, line: &str) -> Flow {
    let words = match shell_words::split(line) {
        Ok(words) => words,
        Err(err) => {
            eprintln!("error: {err}: close the quote, or escape it with a backslash");
            return Flow::Continue(Some(false));
        }
    };
    let Some((command, args)) = words.split_first() else {
        return Flow::Continue(None);
    };
    let failed = |message: String| {
        eprintln!("error: {message}");
        Flow::Continue(Some(false))
    };
    let key_only = |what: &str| -> Result<&str, String> {
        match args {
            [key] => Ok(key.as_str()),
            _ => Err(format!("usage: {what} KEY (quote a key with spaces)")),
        }
    };
    match command.as_str() {
        "quit" | "exit" => return Flow::Quit,
        "help" | "?" => println!("{HELP}"),
        "put" | "set" => {
            let [key, value] = args else {
                return failed(
                    "usage: put KEY VALUE (quote a value with spaces: put k 'hello world')".into(),
                );
            };
            match runtime.block_on(client.put(key.as_bytes(), value.as_bytes(), None)) {
                Ok(version) => println!("OK {version}"),
                Err(err) => return failed(err.to_string()),
            }
        }
        "get" | "getv" => {
            let key = match key_only(command) {
                Ok(key) => key,
                Err(usage) => return failed(usage),
            };
            match runtime.block_on(client.get(key.as_bytes(), None)) {
                Ok(Some((value, version))) => {
                    println!("{}", String::from_utf8_lossy(&value));
                    if command == "getv" {
                        println!("{version}");
                    }
                }
                Ok(None) => println!("(not found)"),
                Err(err) => return failed(err.to_string()),
            }
        }
        "delete" | "del" => {
            let key = match key_only(command) {
                Ok(key) => key,
                Err(usage) => return failed(usage),
            };
            match runtime.block_on(client.delete(key.as_bytes(), None)) {
                Ok(version) => println!("OK {version}"),
                Err(err) => return failed(err.to_string()),
            }
        }
        "status" => match runtime.block_on(client.status()) {
            Ok(status) => print!("{}", super::data::status_table(&status)),
            Err(err) => return failed(err.to_string()),
        },
        other => return failed(format!("unknown command {other:?}; type help for commands")),
    }
    Flow::Continue(Some(true))
}

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".vergent_history"))
}
