//! A network namespace of the test's own, for cutting real links between real
//! processes with nftables. The namespace has only its loopback device; nodes listen
//! on addresses of 127.0.0.0/8 and rules drop packets between address groups.
//!
//! The thread that enters the namespace carries it to everything it starts: processes
//! it spawns, threads it starts, sockets it opens. The namespace, its rules and every
//! process started in it are gone when the guard drops, on every path.

use std::net::Ipv4Addr;
use std::process::Command;

/// Why the namespace tests cannot run here.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return Some("they need root (network namespaces and nftables)".into());
    }
    for tool in [["ip", "-V"], ["nft", "--version"]] {
        let ok = Command::new(tool[0])
            .arg(tool[1])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Some(format!("`{}` is not installed", tool[0]));
        }
    }
    None
}

/// A network namespace, removed when dropped.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// Creates a namespace with its loopback up and an empty nftables table.
    pub fn new(tag: &str) -> NetNs {
        let name = format!("vergent-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.nft("add table inet vergent_test");
        ns.nft(
            "add chain inet vergent_test cut { type filter hook output priority 0; policy accept; }",
        );
        ns
    }

    /// Runs a command inside the namespace; panics when it fails.
    pub fn exec(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
    }

    fn nft(&self, rule: &str) {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let mut args = vec!["nft"];
        args.extend(words);
        self.exec(&args);
    }

    /// Drops every packet from an address of `from` to an address of `to` (one way).
    pub fn cut_one_way(&self, from: &[Ipv4Addr], to: &[Ipv4Addr]) {
        for a in from {
            for b in to {
                self.nft(&format!(
                    "add rule inet vergent_test cut ip saddr {a} ip daddr {b} drop"
                ));
            }
        }
    }

    /// Drops every packet between the two groups, both ways.
    pub fn cut(&self, a: &[Ipv4Addr], b: &[Ipv4Addr]) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.nft("flush chain inet vergent_test cut");
    }

    /// Moves the calling thread into the namespace: from now on its sockets, and the
    /// processes and threads it starts, live there.
    pub fn enter(&self) {
        let path = format!("/var/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        use std::os::fd::AsRawFd;
        // SAFETY: setns(2) with a namespace file this test just created and keeps open
        // for the call; it changes only the calling thread's network namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Whatever still runs in it (a process the test lost track of) goes too.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    super::unsafe_kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("command starts");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
