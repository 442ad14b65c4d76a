//! What a node says of itself and the cluster: `status`.

use super::*;
use crate::protocol::{ClusterStatus, MemberStatus, RootInfo};

impl NodeCore {
    /// This node's view of the cluster, as `status` answers it.
    pub fn status(&self, now: Now, store: &Store) -> ClusterStatus {
        let view = &self.view;
        let now_wall = now.wall_ms();
        let mono = now.mono();
        let backlog = store.hint_backlog().unwrap_or_default();
        let verdict = self.clock_verdict(now);
        let clock_refusal = verdict
            .refusal(self.config.max_clock_offset_ms)
            .or_else(|| self.future_refusal(now));
        let reading = now.reading();
        let partition_states = self.partition_states(now);
        let members = view
            .members
            .iter()
            .map(|m| {
                let name = &m.id.name;
                let held = view.placement.partitions_of(name).count() as u16;
                let mut status = MemberStatus {
                    name: name.clone(),
                    address: m.id.addr.to_string(),
                    state: m.state.as_str().to_string(),
                    incarnation: m.id.incarnation,
                    swim_incarnation: m.swim_incarnation,
                    hlc: None,
                    clock_skew_ms: None,
                    clock_skew_us: None,
                    report_age_ms: None,
                    partitions_held: held,
                    records: None,
                    hints: 0,
                    hints_oldest_age_ms: 0,
                    writes: 0,
                    reads: 0,
                    placement_digest: None,
                    buckets_digest: None,
                    state_age_ms: mono.0.saturating_sub(m.since.0),
                    partitions_filling: view.filling_of(name) as u16,
                    reachable: !self.unreachable.contains_key(name),
                    sync_lag_ms: None,
                    run: None,
                };
                if *name == self.me.name {
                    let oldest = backlog.iter().map(|b| b.oldest_ms).filter(|&t| t > 0).min();
                    status.hlc = Some(self.clock.read(now_wall));
                    status.clock_skew_ms = Some(0);
                    status.clock_skew_us = Some(0);
                    status.report_age_ms = Some(0);
                    status.records = store.len().ok();
                    status.hints = backlog.iter().map(|b| b.count).sum();
                    status.hints_oldest_age_ms = oldest.map_or(0, |t| now_wall.saturating_sub(t));
                    status.writes = self.counters.writes;
                    status.reads = self.counters.reads;
                    status.placement_digest = Some(view.placement.digest());
                    status.buckets_digest = Some(format!("{:016x}", self.catalog.digest()));
                    status.run = self.books.run.clone();
                } else if let Some(report) = &m.status {
                    let age_ms = mono.0.saturating_sub(m.status_at.0);
                    status.hlc = Some(report.hlc);
                    let offset = self.skew.offset(name, reading);
                    status.clock_skew_us = offset.map(|o| o.offset_us);
                    status.clock_skew_ms = offset.map(|o| o.offset_us / 1000);
                    status.report_age_ms = Some(age_ms);
                    status.records = Some(report.records);
                    status.hints = report.hints;
                    status.hints_oldest_age_ms = if report.hints_oldest_ms == 0 {
                        0
                    } else {
                        report.wall_ms.saturating_sub(report.hints_oldest_ms)
                    };
                    status.writes = report.writes;
                    status.reads = report.reads;
                    status.placement_digest = Some(report.placement_digest.clone());
                    status.buckets_digest = Some(format!("{:016x}", report.catalog));
                    status.run = report.sync.run.clone();
                }
                if *name != self.me.name && m.state.is_live() {
                    let hint = backlog
                        .iter()
                        .find(|b| b.target == *name)
                        .map(|b| b.oldest_ms);
                    status.sync_lag_ms = Some(self.sync_lag(&partition_states, name, hint, now));
                }
                status
            })
            .collect();
        ClusterStatus {
            node: self.me.name.clone(),
            cluster_id: self.settings.id_hex(),
            partitions: self.settings.partitions,
            replication_factor: self.settings.replication_factor,
            placement_digest: view.placement.digest(),
            buckets_digest: format!("{:016x}", self.catalog.digest()),
            buckets: self.catalog.list().len() as u32,
            hlc: self.clock.read(now_wall),
            uptime_ms: mono.0,
            members,
            sync: self.books.peers.values().cloned().collect(),
            repair: self.books.progress,
            repairing: self.books.in_flight.iter().copied().collect(),
            partition_states,
            placement: (0..self.settings.partitions)
                .map(|p| view.placement.replicas(p).map(str::to_string).collect())
                .collect(),
            roots: (0..self.settings.partitions)
                .map(|p| {
                    let root = store.tree_root(p).unwrap_or_default();
                    RootInfo {
                        digest: root.digest.short_hex(),
                        count: root.count,
                    }
                })
                .collect(),
            clock_refusals: self.counters.clock_refusals,
            clock_offset_ms: verdict.cluster_offset_ms(),
            clock_refusal,
            bucket_stats: self.conflicts.status(&self.catalog),
            linearizable: crate::protocol::LinearizableStatus {
                ops: self.counters.lin_ops,
                round_trips: self.counters.lin_round_trips,
                fast: self.counters.lin_fast,
                retries: self.counters.lin_retries,
                in_flight: self.proposals.in_flight() as u64,
            },
        }
    }
}
