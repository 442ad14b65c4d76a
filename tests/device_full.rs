//! A node whose data directory's device fills up: every write is refused with
//! `storage is full` and the device's own error, reads go on, and after a restart with
//! more room nothing acknowledged is lost.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{ServeProcess, TestCerts};

/// A tmpfs mounted for one test, unmounted when dropped (a failing test included).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "20m") on `dir`. `Ok(None)` when this process may
    /// not mount, with the system's reason printed.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("the mount command runs");
        if output.status.success() {
            return Some(Tmpfs {
                dir: dir.to_path_buf(),
            });
        }
        let reason = String::from_utf8_lossy(&output.stderr).to_lowercase();
        let not_permitted = [
            "permission denied",
            "not permitted",
            "must be superuser",
            "only root",
        ];
        assert!(
            not_permitted.iter().any(|words| reason.contains(words)),
            "mount failed for a reason other than permission: {reason}"
        );
        eprintln!(
            "skipped: this process may not mount a tmpfs ({})",
            reason.trim()
        );
        None
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount to {size} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it open: detach it now, it goes when released.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    let mut value = vec![(i % 251) as u8; 64 << 10];
    value[..8].copy_from_slice(&(i as u64).to_be_bytes());
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_refuses_every_write_with_its_cause_keeps_serving_reads_and_loses_nothing() {
    let certs = TestCerts::new(&["n1"]);
    let outer = tempfile::tempdir().unwrap();
    // The data directory is the mount itself; the process's log sits beside it, off
    // the full device.
    let data_dir = outer.path().join("n1");
    let Some(tmpfs) = Tmpfs::mount(&data_dir, "20m") else {
        return;
    };
    let mut node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let client = certs.client(node.addr).await;

    let mut acknowledged = 0;
    let mut refusals = Vec::new();
    for i in 0..2000 {
        match client
            .put(format!("k{i}").as_bytes(), &value(i), None)
            .await
        {
            Ok(_) if refusals.is_empty() => acknowledged += 1,
            Ok(_) => panic!(
                "write {i} was acknowledged after {} refusals",
                refusals.len()
            ),
            Err(err) => refusals.push(err.to_string()),
        }
        if refusals.len() >= 50 {
            break;
        }
    }
    eprintln!(
        "{acknowledged} writes of 64 KiB acknowledged; first refusal: {}",
        refusals.first().map_or("none", String::as_str)
    );
    assert!(
        acknowledged > 10,
        "only {acknowledged} writes fitted in 20 MiB"
    );
    assert_eq!(
        refusals.len(),
        50,
        "a 20 MiB device took 2000 values of 64 KiB"
    );
    let kinds: std::collections::BTreeSet<&str> = refusals
        .iter()
        .map(|r| r.split(" (n1: ").nth(1).unwrap_or(r))
        .collect();
    eprintln!("refusals as the replica gave them: {kinds:#?}");
    for refusal in &refusals {
        assert!(
            refusal
                .contains("storage is full: the device has no space left (No space left on device"),
            "{refusal}"
        );
        assert!(!refusal.contains("Input/output error"), "{refusal}");
    }

    // Reads go on; so does the node.
    for i in [0, acknowledged - 1] {
        let (found, _) = client
            .get(format!("k{i}").as_bytes(), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, value(i));
    }
    assert!(client.status().await.is_ok());
    client.close().await;
    assert!(node.terminate().success(), "{}", node.log_text());

    // Restarted with more room, it takes writes again and has lost nothing.
    tmpfs.resize("64m");
    let node = ServeProcess::start("n1", certs.path(), &data_dir, &[]);
    let client = certs.client(node.addr).await;
    client.put(b"after", &value(7), None).await.unwrap();
    for i in 0..acknowledged {
        let found = client.get(format!("k{i}").as_bytes(), None).await.unwrap();
        assert_eq!(found.map(|(v, _)| v), Some(value(i)), "k{i} lost");
    }
    client.close().await;
    drop(node);
    drop(tmpfs);
}
