//! What the cluster says about its own sync: a partition counts as confirmed in sync only
//! after its replicas compared equal since they last changed it; sync lag is how old a
//! write a replica may miss is; a repair is held to its node's byte limit both ways.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{TestCerts, entries, eventually_async, load, repair, start_cluster};
use vergent::antientropy::confirm::PartitionSyncState;
use vergent::placement::partition_of;
use vergent::protocol::ClusterStatus;
use vergent::wallclock::system_wall_ms;

const NAMES: [&str; 3] = ["n1", "n2", "n3"];

async fn status_of(certs: &TestCerts, node: SocketAddr) -> ClusterStatus {
    let client = certs.client(node).await;
    let status = client.status().await.unwrap();
    client.close().await;
    status
}

fn count(status: &ClusterStatus, state: PartitionSyncState) -> usize {
    status
        .partition_states
        .iter()
        .filter(|s| s.state == state)
        .count()
}

/// Measured before: with anti-entropy off, a replica that missed writes showed every
/// partition "in sync" (nothing had differed at a compare, since none had run), and
/// sync lag grew on an idle cluster that was in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_in_sync_only_once_compared_since_its_last_change() {
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&certs, &NAMES, data.path(), |c| {
        c.anti_entropy_interval = None;
    })
    .await;
    let (n1, n2, n3) = (
        nodes[0].local_addr(),
        nodes[1].local_addr(),
        nodes[2].local_addr(),
    );
    let partitions = nodes[0].view().settings.partitions;

    // Written on every replica after the compares that joining made, with no compare
    // since: not one written partition is confirmed.
    let base = system_wall_ms() - 60_000;
    let data_set = entries("key", 0..300, base, "v");
    for node in [n1, n2, n3] {
        load(&certs, node, &data_set).await;
    }
    let written: std::collections::BTreeSet<u16> = data_set
        .iter()
        .map(|e| partition_of(&e.key, partitions))
        .collect();
    let unconfirmed = || async {
        let s = status_of(&certs, n1).await;
        s.partition_states.len() == usize::from(partitions)
            && written.iter().all(|&p| {
                s.partition_states[usize::from(p)].state == PartitionSyncState::Unconfirmed
            })
    };
    assert!(
        eventually_async(Duration::from_secs(10), unconfirmed).await,
        "{:?}",
        status_of(&certs, n1).await.partition_states
    );

    // One repair on n3 makes it the hub of every partition: after it, n1's view says
    // every partition is in sync, with the time of the confirmation.
    let report = repair(&certs, n3, false).await;
    assert!(report.in_sync, "{report:?}");
    let all_in_sync = || async {
        count(&status_of(&certs, n1).await, PartitionSyncState::InSync) == usize::from(partitions)
    };
    assert!(
        eventually_async(Duration::from_secs(10), all_in_sync).await,
        "{:?}",
        status_of(&certs, n1).await.partition_states
    );
    let status = status_of(&certs, n1).await;
    assert!(
        status
            .partition_states
            .iter()
            .all(|s| s.confirmed_ms.is_some_and(|t| t <= system_wall_ms()))
    );
    // Idle and in sync: no sync lag, whatever the time since the last exchange.
    for peer in ["n2", "n3"] {
        let m = status.members.iter().find(|m| m.name == peer).unwrap();
        assert_eq!(m.sync_lag_ms, Some(0), "{peer}");
    }

    // A write that reached only n2 (replication bypassed): its partition is not in sync
    // any more in n1's view (n2 says so in its status), the others still are.
    let stray = entries("stray", 0..1, system_wall_ms(), "only-on-n2");
    load(&certs, n2, &stray).await;
    let p = partition_of(&stray[0].key, partitions);
    let stray_seen = || async {
        let s = status_of(&certs, n1).await;
        s.partition_states[usize::from(p)].state == PartitionSyncState::Unconfirmed
            && count(&s, PartitionSyncState::InSync) == usize::from(partitions) - 1
    };
    assert!(
        eventually_async(Duration::from_secs(10), stray_seen).await,
        "{:?}",
        status_of(&certs, n1).await.partition_states[usize::from(p)]
    );
    // A write n1 itself took: n1's sync lag for the others counts from it.
    let own = entries("own", 0..1, system_wall_ms(), "on-n1");
    load(&certs, n1, &own).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = status_of(&certs, n1).await;
    let lag = status
        .members
        .iter()
        .find(|m| m.name == "n2")
        .and_then(|m| m.sync_lag_ms)
        .unwrap();
    assert!(lag >= 250, "sync lag {lag} ms after a write n2 may miss");

    // A repair on n3 compares it with n1, then with n2: the write only n2 had reaches
    // n3 after n3's compare with n1, so n1 still lacks it, and its partition must not
    // show in sync until a second pass brings it over.
    let report = repair(&certs, n3, false).await;
    assert!(report.in_sync, "{report:?}");
    if support::replica_record(&certs, n1, &stray[0].key)
        .await
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = status_of(&certs, n1).await;
        assert_ne!(
            s.partition_states[usize::from(p)].state,
            PartitionSyncState::InSync,
            "n1 lacks a record of this partition"
        );
    }
    let report = repair(&certs, n3, false).await;
    assert!(report.in_sync, "{report:?}");
    assert!(
        eventually_async(Duration::from_secs(10), all_in_sync).await,
        "{:?}",
        status_of(&certs, n1).await.partition_states
    );
    assert!(
        support::replica_record(&certs, n1, &stray[0].key)
            .await
            .is_some()
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// Measured before: with a limit of 300,000 B/s on the node running the repair, it
/// pulled 2.6 MiB in 0.26 s; only the peers' limit held what they sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_keeps_to_its_nodes_byte_limit_in_both_directions() {
    const LIMIT: u64 = 100_000;
    let certs = TestCerts::new(&NAMES).with_probe();
    let data = tempfile::tempdir().unwrap();
    let nodes = start_cluster(&certs, &NAMES[..2], data.path(), |c| {
        c.anti_entropy_interval = None;
        if c.name == "n1" {
            c.repair_bytes_per_sec = LIMIT;
        }
    })
    .await;
    let (n1, n2) = (nodes[0].local_addr(), nodes[1].local_addr());
    let value = "x".repeat(100);
    let base = system_wall_ms() - 60_000;

    // n1 pulls what only n2 has, then pushes what only n1 has.
    for (direction, holder, prefix) in [("received", n2, "pull"), ("sent", n1, "push")] {
        load(&certs, holder, &entries(prefix, 0..3_000, base, &value)).await;
        let started = Instant::now();
        let report = repair(&certs, n1, false).await;
        let took = started.elapsed().as_secs_f64();
        assert!(report.in_sync, "{report:?}");
        let bytes = if direction == "received" {
            report.counts.entry_bytes_received
        } else {
            report.counts.entry_bytes_sent
        };
        assert!(bytes > 3 * LIMIT, "{direction} {bytes} B");
        // The bucket starts full (one second of the limit).
        let floor = (bytes - LIMIT) as f64 / LIMIT as f64;
        eprintln!("{direction} {bytes} B in {took:.2} s at a limit of {LIMIT} B/s");
        assert!(
            took >= floor,
            "{direction} {bytes} B in {took:.2} s, under the {floor:.2} s the limit allows"
        );
    }
    for node in nodes {
        node.shutdown().await;
    }
}
