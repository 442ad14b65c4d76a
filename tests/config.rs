//! `vergent serve --config`: a node started from a TOML file equals one started with the
//! same flags; flags beat variables, which beat the file; an unknown key and a bad unit
//! are refused in one line.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use support::{TestCerts, cli, stderr, stdout, vergent};

/// A `vergent serve` started from a configuration file alone, killed when dropped.
struct FromFile {
    child: Child,
    addr: String,
}

impl Drop for FromFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_from(config: &Path) -> FromFile {
    let child = vergent()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned at once, so a node that never says it listens is still killed.
    let mut node = FromFile {
        child,
        addr: String::new(),
    };
    let stdout = node.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Ok(line) = rx.recv_timeout(support::READY_TIMEOUT) {
        if let Some((_, addr)) = line.split_once("listening on ") {
            node.addr = addr.trim().to_string();
            return node;
        }
    }
    panic!("the node started from its file did not say it is listening");
}

/// `serve --print-config` with `args` and `env`: its lines, as `key = value` without
/// the comment, and the comments by key.
fn effective(args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, Vec<(String, String)>) {
    let out = vergent()
        .args(["serve", "--print-config"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut values = Vec::new();
    let mut sources = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (setting, from) = line.split_once("  # ").unwrap();
        values.push(setting.to_string());
        sources.push((
            setting.split(" = ").next().unwrap().to_string(),
            from.to_string(),
        ));
    }
    (values, sources)
}

fn source_of(sources: &[(String, String)], key: &str) -> String {
    sources
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, s)| s.clone())
        .unwrap_or_default()
}

#[test]
fn a_node_started_from_a_file_equals_one_started_with_the_same_flags() {
    let certs = TestCerts::new(&["n1"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n1");
    let file = dir.path().join("n1.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"n1\"\nlisten = \"127.0.0.1:0\"\ndata-dir = {:?}\ncerts = {:?}\n\
             value-bytes-max = \"1KiB\"\nconsistency = \"one\"\nhint-window = \"90m\"\n\
             repair-bytes-per-sec = \"32MiB\"\nunsafe-no-fsync = false\n",
            data.display().to_string(),
            certs.path().display().to_string()
        ),
    )
    .unwrap();
    let flags = [
        "--name",
        "n1",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--certs",
        certs.path().to_str().unwrap(),
        "--value-bytes-max",
        "1KiB",
        "--consistency",
        "one",
        "--hint-window",
        "90m",
        "--repair-bytes-per-sec",
        "32MiB",
    ];
    let (from_file, sources) = effective(&["--config", file.to_str().unwrap()], &[]);
    let (from_flags, _) = effective(&flags, &[]);
    assert_eq!(from_file, from_flags, "the same settings either way");
    assert!(source_of(&sources, "value-bytes-max").starts_with("file "));
    assert_eq!(source_of(&sources, "write-batch-max"), "default");

    // And it behaves so: the value limit of the file is the one in force.
    let node = serve_from(&file);
    let addr: std::net::SocketAddr = node.addr.parse().unwrap();
    let out = cli(certs.path(), addr, &["put", "k", &"v".repeat(1024)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(certs.path(), addr, &["put", "k", &"v".repeat(1025)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the limit is 1024 bytes"),
        "{}",
        stderr(&out)
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&cli(certs.path(), addr, &["status", "--json"]))).unwrap();
    assert_eq!(status["node"], "n1");
    drop(node);
    assert!(data.is_dir(), "the node kept its data where the file said");
}

#[test]
fn a_flag_beats_a_variable_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n1.toml");
    std::fs::write(&file, "name = \"n1\"\nvalue-bytes-max = \"1KiB\"\n").unwrap();
    let config = ["--config", file.to_str().unwrap()];
    let (values, sources) = effective(&config, &[]);
    assert!(values.contains(&"value-bytes-max = \"1KiB\"".to_string()));
    assert!(source_of(&sources, "value-bytes-max").starts_with("file "));
    let variable = [("VERGENT_VALUE_BYTES_MAX", "2KiB")];
    let (values, sources) = effective(&config, &variable);
    assert!(values.contains(&"value-bytes-max = \"2KiB\"".to_string()));
    assert_eq!(
        source_of(&sources, "value-bytes-max"),
        "variable VERGENT_VALUE_BYTES_MAX"
    );
    let mut with_flag = config.to_vec();
    with_flag.extend(["--value-bytes-max", "3KiB"]);
    let (values, sources) = effective(&with_flag, &variable);
    assert!(values.contains(&"value-bytes-max = \"3KiB\"".to_string()));
    assert_eq!(source_of(&sources, "value-bytes-max"), "flag");
}

#[test]
fn an_unknown_key_and_a_bad_unit_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expected) in [
        (
            "name = \"n1\"\nvalue-byte-max = \"1KiB\"\n",
            "unknown key \"value-byte-max\"",
        ),
        (
            "name = \"n1\"\nvalue-bytes-max = \"1 parsec\"\n",
            "not a size unit",
        ),
        (
            "name = \"n1\"\nhint-window = \"3 fortnights\"\n",
            "unknown time unit",
        ),
        ("name = \"n1\"\nhttp-metrics = \"yes\"\n", "http-metrics"),
        ("name = \"n1\"\nlisten = \n", "is not TOML"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let out = vergent()
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expected), "{body}: {err}");
    }
}

#[test]
fn the_bash_completions_load_and_the_man_pages_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = vergent().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("vergent.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Loaded by bash, it completes `vergent se` to `serve`.
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(vergent se); COMP_CWORD=1; COMP_LINE='vergent se'; COMP_POINT=10; \
             _vergent vergent se vergent; printf '%s\\n' \"${{COMPREPLY[@]}}\"; complete -p vergent",
            script.display()
        ))
        .output()
        .unwrap();
    let text = stdout(&check);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(text.lines().any(|l| l == "serve"), "{text}");
    assert!(
        text.contains("-F _vergent") && text.trim_end().ends_with(" vergent"),
        "{text}"
    );

    let man = dir.path().join("man");
    let out = vergent().args(["man", "--out"]).arg(&man).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for page in ["vergent.1", "vergent-serve.1", "vergent-put.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let serve = std::fs::read_to_string(man.join("vergent-serve.1")).unwrap();
    assert!(
        serve.contains("http\\-listen"),
        "the serve page lists its flags"
    );
}
