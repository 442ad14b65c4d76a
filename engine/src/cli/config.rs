//! `vergent serve --config FILE`: every serve setting from a TOML file, under its long
//! flag's name (`data-dir = "/var/lib/vergent"`, `repair-bytes-per-sec = "64MiB"`), or
//! from a `VERGENT_*` variable (`VERGENT_DATA_DIR`); a flag beats a variable, which
//! beats the file, which beats the default. `--print-config` shows the effective
//! settings and where each came from.
//!
//! The file's values go through the flags' own parsers (they are handed to clap as the
//! flags they name), so a unit or a value is checked the same way wherever it comes
//! from, and an unknown key is refused with its name.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Failure};

/// serve's flags that are not settings.
const NOT_SETTINGS: [&str; 4] = ["config", "print-config", "help", "version"];

/// The variable that sets a serve flag: `VERGENT_` and its long name in capitals.
fn variable(long: &str) -> String {
    format!("VERGENT_{}", long.replace('-', "_").to_ascii_uppercase())
}

/// The command, with a `VERGENT_*` variable for every serve setting that has none, and
/// later occurrences of a serve flag overriding earlier ones.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", |serve| {
        serve.mut_args(|arg| match arg.get_long().map(str::to_string) {
            Some(long) if !NOT_SETTINGS.contains(&long.as_str()) && arg.get_env().is_none() => {
                arg.env(variable(&long))
            }
            _ => arg,
        })
    })
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Flag,
    Variable(String),
    File(PathBuf),
    Default,
}

/// The command line parsed, with a serve `--config` file's settings taken in, and
/// where each serve setting came from.
pub(crate) struct Parsed {
    pub(crate) cli: Cli,
    pub(crate) sources: BTreeMap<String, (Vec<String>, Source)>,
}

/// Parses the process's arguments.
pub(crate) fn parse() -> Result<Parsed, Result<clap::Error, Failure>> {
    parse_from(std::env::args_os().collect())
}

fn parse_from(mut args: Vec<OsString>) -> Result<Parsed, Result<clap::Error, Failure>> {
    let serve_at = args.iter().position(|a| a == "serve");
    let mut from_file: BTreeMap<String, PathBuf> = BTreeMap::new();
    if let Some(at) = serve_at
        && let Some(path) = config_path(&args[at + 1..])
    {
        let injected = file_args(&command(), &path, &args[at + 1..]).map_err(Err)?;
        for (long, values) in injected.iter().rev() {
            for value in values.iter().rev() {
                args.insert(at + 1, value.into());
            }
            from_file.insert(long.clone(), path.clone());
        }
    }
    let matches = command().try_get_matches_from(&args).map_err(Ok)?;
    let cli = Cli::from_arg_matches(&matches).map_err(Ok)?;
    let mut sources = BTreeMap::new();
    if let Some(serve) = matches.subcommand_matches("serve") {
        sources = provenance(serve, &from_file);
    }
    Ok(Parsed { cli, sources })
}

/// The `--config` path among serve's arguments, or `VERGENT_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("VERGENT_CONFIG").map(PathBuf::from)
}

/// The file's settings as the flags they name, in file order, leaving out those given
/// as a flag or by a variable (they win).
fn file_args(
    command: &clap::Command,
    path: &Path,
    given: &[OsString],
) -> Result<Vec<(String, Vec<String>)>, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("cannot read the configuration {shown}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::new(format!(
            "{shown} is not TOML: {}",
            e.to_string().lines().next().unwrap_or_default()
        ))
    })?;
    let serve = command
        .find_subcommand("serve")
        .expect("serve is a subcommand");
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !NOT_SETTINGS.contains(&key.as_str()))
        else {
            return Err(Failure::new(format!(
                "unknown key {key:?} in {shown}: the keys are the long names of `vergent serve`'s flags (see vergent serve --help)"
            )));
        };
        let names: Vec<String> = std::iter::once(key.clone())
            .chain(
                arg.get_all_aliases()
                    .into_iter()
                    .flatten()
                    .map(str::to_string),
            )
            .collect();
        let on_command_line = given.iter().any(|g| {
            let g = g.to_string_lossy();
            names
                .iter()
                .any(|n| g == format!("--{n}") || g.starts_with(&format!("--{n}=")))
        });
        let by_variable = arg.get_env().is_some_and(|v| std::env::var_os(v).is_some());
        if on_command_line || by_variable {
            continue;
        }
        let flag = format!("--{key}");
        let takes_value = arg.get_action().takes_values();
        let mut values = Vec::new();
        let scalar = |v: &toml::Value| -> Result<String, Failure> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(Failure::new(format!(
                    "{key} in {shown} is a {}, not a value",
                    other.type_str()
                ))),
            }
        };
        match (&value, takes_value) {
            (toml::Value::Boolean(on), false) => {
                if *on {
                    values.push(flag);
                }
            }
            (_, false) => {
                return Err(Failure::new(format!(
                    "{key} in {shown} is a switch: write {key} = true or false"
                )));
            }
            (toml::Value::Array(items), true) => {
                for item in items {
                    values.push(flag.clone());
                    values.push(scalar(item)?);
                }
            }
            (v, true) => {
                values.push(flag);
                values.push(scalar(v)?);
            }
        }
        out.push((key, values));
    }
    Ok(out)
}

/// Every serve setting's effective values and where they came from.
fn provenance(
    serve: &ArgMatches,
    from_file: &BTreeMap<String, PathBuf>,
) -> BTreeMap<String, (Vec<String>, Source)> {
    let command = command();
    let args = command
        .find_subcommand("serve")
        .expect("serve is a subcommand");
    let mut out = BTreeMap::new();
    for arg in args.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = serve
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match serve.value_source(id) {
            Some(ValueSource::CommandLine) => match from_file.get(long) {
                Some(path) => Source::File(path.clone()),
                None => Source::Flag,
            },
            Some(ValueSource::EnvVariable) => Source::Variable(
                arg.get_env()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => Source::Default,
        };
        out.insert(long.to_string(), (values, source));
    }
    out
}

/// The effective settings as a configuration file, each with where it came from.
pub(crate) fn print(sources: &BTreeMap<String, (Vec<String>, Source)>) {
    for (long, (values, source)) in sources {
        let from = match source {
            Source::Flag => "flag".to_string(),
            Source::Variable(v) => format!("variable {v}"),
            Source::File(p) => format!("file {}", p.display()),
            Source::Default => "default".to_string(),
        };
        let quote = |v: &str| toml::Value::String(v.to_string()).to_string();
        let value = match values.as_slice() {
            [] => "# not set".to_string(),
            [one] if matches!(one.as_str(), "true" | "false") => one.clone(),
            [one] => quote(one),
            many => format!(
                "[{}]",
                many.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
            ),
        };
        if values.is_empty() {
            println!("# {long}: not set ({from})");
        } else {
            println!("{long} = {value}  # {from}");
        }
    }
}
