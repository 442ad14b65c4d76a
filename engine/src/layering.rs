//! The layer map of `lib.rs`, checked: every `crate::module` path in the crate's
//! sources must point at a module below the one it is written in (or at itself).
//! Test code (`tests.rs`, `tests/` directories) may reach any layer: it builds frames
//! and stores to drive what it tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module's height in the map: a module may name modules of a smaller
/// height only. Equal heights share a layer and must not know each other.
const LAYERS: &[(&str, u32)] = &[
    ("base", 0),
    ("hlc", 0),
    ("limits", 0),
    ("placement", 0),
    ("types", 0),
    ("record", 1),
    ("buckets", 2),
    ("tree", 2),
    ("paxos", 2),
    ("storage", 3),
    ("coordinator", 4),
    ("antientropy", 4),
    ("membership", 5),
    ("protocol", 6),
    ("certs", 6),
    ("policy", 6),
    ("net", 7),
    ("core", 7),
    ("wallclock", 8),
    ("client", 9),
    ("node", 10),
    ("cli", 11),
];

fn height(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, h)| h)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names that follow `crate::` on a line of code, `crate::{a, b}` included.
fn named_modules(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        } else {
            names.push(
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    names
}

#[test]
fn every_edge_runs_down_the_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut wrong = BTreeSet::new();
    let mut unmapped = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
        let from = parts[0].trim_end_matches(".rs").to_string();
        if matches!(from.as_str(), "lib" | "main" | "layering")
            || parts.iter().any(|p| p == "tests" || p == "tests.rs")
        {
            continue;
        }
        let Some(from_height) = height(&from) else {
            unmapped.insert(from);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for to in named_modules(code) {
                if to == from || to == "self" || to.is_empty() {
                    continue;
                }
                match height(&to) {
                    Some(h) if h < from_height => {}
                    Some(_) => {
                        wrong.insert(format!(
                            "{}:{}: {from} names {to}",
                            relative.display(),
                            number + 1
                        ));
                    }
                    None => {
                        unmapped.insert(to);
                    }
                }
            }
        }
    }
    assert!(
        unmapped.is_empty(),
        "modules missing from the layer map: {unmapped:?}"
    );
    assert!(
        wrong.is_empty(),
        "edges the layer map does not allow:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn paths_are_read_from_groups_too() {
    assert_eq!(
        named_modules("use crate::{base::Millis, tree};"),
        vec!["base", "tree"]
    );
    assert_eq!(
        named_modules("let x = crate::placement::partition_of(k, p);"),
        vec!["placement"]
    );
}
