//! The model at a time: the header's figures, a row per member, a cell per partition
//! and a line per run, from the last status and what the builder kept of those before.

use std::collections::BTreeMap;

use vergent_tui::model::{
    BucketRow, Connection, Dashboard, MemberRow, MemberState, PartitionCell, PartitionState,
    RepairRow,
};

use super::{Builder, Meter, Now, utc_time};
use crate::antientropy::confirm::PartitionSyncState;
use crate::hlc::Timestamp;

impl Builder {
    /// The dashboard's model at `now`.
    pub(in crate::cli::top) fn model(&self, now: Now) -> Dashboard {
        let mut model = Dashboard::empty(&self.watched);
        model.time = utc_time(now.wall);
        model.events = self.events.iter().cloned().collect();
        model.throughput = self.throughput.iter().copied().collect();
        model.detail = self.detail.clone();
        model.connection = match &self.connection {
            Connection::Live => Connection::Live,
            Connection::Lost { reason, .. } => Connection::Lost {
                reason: reason.clone(),
                stale_s: self.stale_s(now),
            },
        };
        let Some(status) = &self.status else {
            return model;
        };
        let now_wall = now.wall_ms();
        model.cluster_id = status.cluster_id.clone();
        model.partitions = status.partitions;
        model.replication_factor = status.replication_factor;
        model.write_rate = self
            .writes
            .values()
            .filter_map(Meter::rate)
            .sum::<f64>()
            .max(0.0);
        model.read_rate = self
            .reads
            .values()
            .filter_map(Meter::rate)
            .sum::<f64>()
            .max(0.0);
        let sync: BTreeMap<&str, &crate::antientropy::report::PeerSync> =
            status.sync.iter().map(|s| (s.peer.as_str(), s)).collect();
        model.members = status
            .members
            .iter()
            .map(|m| {
                let peer = sync.get(m.name.as_str());
                let drain = self
                    .hints
                    .get(&m.name)
                    .and_then(Meter::rate)
                    .filter(|r| *r < -0.1);
                MemberRow {
                    name: m.name.clone(),
                    address: m.address.clone(),
                    state: MemberState::parse(&m.state).unwrap_or(MemberState::Dead),
                    incarnation: m.incarnation,
                    hlc: m.hlc.map(hlc_time),
                    skew_ms: m.clock_skew_ms,
                    writes_per_s: self
                        .writes
                        .get(&m.name)
                        .and_then(Meter::rate)
                        .map(|r| r.max(0.0)),
                    hints: m.hints,
                    hints_oldest_age_ms: m.hints_oldest_age_ms,
                    hints_clear_s: drain.map(|r| m.hints as f64 / -r),
                    partitions_held: m.partitions_held,
                    filling: m.partitions_filling,
                    unreachable: m.state == "alive" && !m.reachable,
                    last_exchange_age_ms: peer
                        .and_then(|p| p.last_exchange_ms)
                        .map(|t| now_wall.saturating_sub(t)),
                    partitions_differing: peer.map(|p| p.partitions_differing),
                    sync_lag_ms: m.sync_lag_ms,
                    stale_age_ms: (m.state == "dead" || m.state == "left")
                        .then_some(m.report_age_ms)
                        .flatten(),
                }
            })
            .collect();
        model.cells = status
            .placement
            .iter()
            .enumerate()
            .map(|(p, replicas)| {
                let known = status.partition_states.get(p);
                let state = match known.map(|k| k.state) {
                    Some(PartitionSyncState::ReplicaDown) => PartitionState::UnderReplicated,
                    Some(PartitionSyncState::Repairing) => PartitionState::Repairing,
                    Some(PartitionSyncState::Differing) => PartitionState::Diverged,
                    Some(PartitionSyncState::InSync) => PartitionState::InSync,
                    Some(PartitionSyncState::Unconfirmed) | None => PartitionState::Unconfirmed,
                };
                PartitionCell {
                    state,
                    replicas: replicas.clone(),
                    confirmed_age_ms: known
                        .and_then(|k| k.confirmed_ms)
                        .map(|t| now_wall.saturating_sub(t)),
                }
            })
            .collect();
        model.repairs = self
            .runs
            .iter()
            .map(|(node, run)| {
                let elapsed_s = now_wall.saturating_sub(run.started_ms) as f64 / 1000.0;
                let keys_per_s = (elapsed_s > 0.5).then(|| run.keys_moved as f64 / elapsed_s);
                let eta_s = (run.done > 0 && elapsed_s > 0.5).then(|| {
                    elapsed_s / run.done as f64 * run.total.saturating_sub(run.done) as f64
                });
                RepairRow {
                    node: node.clone(),
                    peers: run.peers.clone(),
                    done: run.done,
                    total: run.total,
                    keys_moved: run.keys_moved,
                    bytes_moved: run.bytes_moved,
                    keys_per_s,
                    eta_s,
                }
            })
            .collect();
        model.buckets = status
            .bucket_stats
            .iter()
            .map(|b| {
                let hot = match b.kind {
                    crate::buckets::BucketType::Siblings => &b.sibling_keys,
                    _ => &b.lost_keys,
                };
                BucketRow {
                    name: b.name.clone(),
                    kind: b.kind.as_str().to_string(),
                    ttl: b.ttl_ms.map(|ms| {
                        humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
                    }),
                    keys: b.keys,
                    lost_per_s: self
                        .lost
                        .get(&(status.node.clone(), b.name.clone()))
                        .and_then(Meter::rate)
                        .map(|r| r.max(0.0)),
                    lost: b.lost_writes,
                    siblings_max: b.siblings_max,
                    hot: hot.iter().map(|k| (k.key.clone(), k.count)).collect(),
                }
            })
            .collect();
        model.linearizable = self.linearizable_line(status);
        model.notice = self.notice.clone();
        model
    }

    /// The watched node's linearizable operations lately, once it has made any.
    fn linearizable_line(&self, status: &crate::protocol::ClusterStatus) -> Option<String> {
        let lin = &status.linearizable;
        if lin.ops == 0 && lin.in_flight == 0 {
            return None;
        }
        let [ops, trips, fast, retries] = self.lin.each_ref().map(|m| m.rate().unwrap_or(0.0));
        let (per_op, fast_share) = if ops > 0.0 {
            (trips / ops, 100.0 * fast / ops)
        } else {
            (
                lin.round_trips as f64 / lin.ops.max(1) as f64,
                100.0 * lin.fast as f64 / lin.ops.max(1) as f64,
            )
        };
        Some(format!(
            "linearizable on {}: {ops:.0} ops/s, {per_op:.2} round trips per op ({fast_share:.0}% in one), {retries:.1} retries/s, {} in flight",
            status.node, lin.in_flight
        ))
    }
}

/// `HH:MM:SS.mmm+logical` of a timestamp (UTC).
fn hlc_time(ts: Timestamp) -> String {
    let text = ts.to_string();
    let time = text.get(11..).unwrap_or(&text);
    time.replacen('Z', "", 1)
}
