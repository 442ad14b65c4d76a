//! `vergent completions SHELL` and `vergent man`: shell completion scripts and man
//! pages, generated from the same clap definitions the commands parse with.

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, Failure};

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Where to write `vergent.1` and a page for every command (`vergent-serve.1`, …).
    #[arg(long, default_value = "man", value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script of `shell` (e.g. `vergent completions bash >
/// /etc/bash_completion.d/vergent`).
pub(crate) fn completions(args: CompletionsArgs) -> Result<(), Failure> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "vergent", &mut std::io::stdout());
    Ok(())
}

/// Writes the man pages into `--out`.
pub(crate) fn man(args: ManArgs) -> Result<(), Failure> {
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", out.display())))?;
    clap_mangen::generate_to(Cli::command(), out).map_err(|e| {
        Failure::new(format!(
            "cannot write the man pages to {}: {e}",
            out.display()
        ))
    })?;
    let pages = std::fs::read_dir(out).map(|d| d.count()).unwrap_or(0);
    println!("wrote {pages} man pages to {}", out.display());
    Ok(())
}
