//! Three `vergent serve` processes and the `vergent` command run against them.

use std::time::Duration;

use super::{ServeProcess, TestCerts, cli, eventually_async, settled, status, stderr, stdout};

pub const NAMES: [&str; 3] = ["n1", "n2", "n3"];

pub fn start(
    certs: &TestCerts,
    dir: &std::path::Path,
    name: &str,
    seed: Option<&ServeProcess>,
) -> ServeProcess {
    let seed = seed.map(|s| s.addr.to_string());
    let extra: Vec<&str> = match &seed {
        Some(seed) => vec!["--join", seed],
        None => vec![],
    };
    ServeProcess::start(name, certs.path(), &dir.join(name), &extra)
}

pub async fn three(certs: &TestCerts, dir: &std::path::Path) -> Vec<ServeProcess> {
    let first = start(certs, dir, NAMES[0], None);
    let second = start(certs, dir, NAMES[1], Some(&first));
    let third = start(certs, dir, NAMES[2], Some(&first));
    let nodes = vec![first, second, third];
    let refs: Vec<&ServeProcess> = nodes.iter().collect();
    let agreed = eventually_async(Duration::from_secs(40), || async {
        settled(certs, &refs, &NAMES)
    })
    .await;
    assert!(agreed, "the three processes did not settle");
    nodes
}

/// Runs a command that must succeed; its standard output.
pub fn ok(certs: &TestCerts, node: &ServeProcess, args: &[&str]) -> String {
    let out = cli(certs.path(), node.addr, args);
    assert!(
        out.status.success(),
        "`vergent {}` via {} failed: {}",
        args.join(" "),
        node.name,
        stderr(&out)
    );
    stdout(&out)
}

/// Runs a command that must be refused as bad input: exit 2 and one line naming why.
pub fn refused(certs: &TestCerts, node: &ServeProcess, args: &[&str], says: &str) {
    let out = cli(certs.path(), node.addr, args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "`vergent {}`: {err}",
        args.join(" ")
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(says),
        "`vergent {}` says {err:?}",
        args.join(" ")
    );
}

pub fn buckets_digest(certs: &TestCerts, node: &ServeProcess) -> Option<String> {
    status(certs, node.addr).map(|s| s["buckets_digest"].to_string())
}

pub async fn catalogs_agree(certs: &TestCerts, nodes: &[&ServeProcess]) -> bool {
    eventually_async(Duration::from_secs(20), || async {
        let digests: std::collections::BTreeSet<Option<String>> =
            nodes.iter().map(|n| buckets_digest(certs, n)).collect();
        digests.len() == 1 && !digests.contains(&None)
    })
    .await
}
