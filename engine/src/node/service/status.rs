//! What a node says of itself and the cluster: `status`, and who made a version.

use std::sync::atomic::Ordering;

use crate::node::Shared;
use crate::protocol::{ClusterStatus, MemberStatus, RootInfo, VersionInfo};
use crate::record::{NodeId, Version};
use crate::wallclock::system_wall_ms;

impl Shared {
    pub(crate) fn status(&self) -> ClusterStatus {
        let view = self.view();
        let now_wall = system_wall_ms();
        let now = self.now();
        let backlog = self.store.hint_backlog().unwrap_or_default();
        let verdict = self.clock_verdict();
        // Before the status below: its clock readings hold the clock's lock to its end.
        let clock_refusal = verdict
            .refusal(self.config.max_clock_offset_ms)
            .or_else(|| self.future_refusal());
        let skew = self.skew.lock().expect("skew lock").clone();
        let reading = self.reading();
        let partition_states =
            crate::node::antientropy::confirmations::partition_states(self, &view);
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
                    state_age_ms: now.0.saturating_sub(m.since.0),
                    partitions_filling: view.filling_of(name) as u16,
                    reachable: self.peers.unreachable_reason(name).is_none(),
                    sync_lag_ms: None,
                    run: None,
                };
                if *name == self.me.name {
                    let oldest = backlog.iter().map(|b| b.oldest_ms).filter(|&t| t > 0).min();
                    status.hlc = Some(self.clock.lock().expect("clock lock").read(now_wall));
                    status.clock_skew_ms = Some(0);
                    status.clock_skew_us = Some(0);
                    status.report_age_ms = Some(0);
                    status.records = self.store.len().ok();
                    status.hints = backlog.iter().map(|b| b.count).sum();
                    status.hints_oldest_age_ms = oldest.map_or(0, |t| now_wall.saturating_sub(t));
                    status.writes = self.writes.load(Ordering::Relaxed);
                    status.reads = self.reads.load(Ordering::Relaxed);
                    status.placement_digest = Some(view.placement.digest());
                    status.run = self.anti_entropy.run();
                } else if let Some(report) = &m.status {
                    let age_ms = now.0.saturating_sub(m.status_at.0);
                    status.hlc = Some(report.hlc);
                    let offset = skew.offset(name, reading);
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
                    status.run = report.sync.run.clone();
                }
                if *name != self.me.name && m.state.is_live() {
                    let hint = backlog
                        .iter()
                        .find(|b| b.target == *name)
                        .map(|b| b.oldest_ms);
                    status.sync_lag_ms = Some(crate::node::antientropy::confirmations::sync_lag(
                        self,
                        &view,
                        &partition_states,
                        name,
                        hint,
                    ));
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
            hlc: self.clock.lock().expect("clock lock").read(now_wall),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            members,
            sync: self.anti_entropy.peer_syncs(),
            repair: self.anti_entropy.progress(),
            repairing: self.anti_entropy.repairing(),
            partition_states,
            placement: (0..self.settings.partitions)
                .map(|p| view.placement.replicas(p).map(str::to_string).collect())
                .collect(),
            roots: (0..self.settings.partitions)
                .map(|p| {
                    let root = self.store.tree_root(p).unwrap_or_default();
                    RootInfo {
                        digest: root.digest.short_hex(),
                        count: root.count,
                    }
                })
                .collect(),
            clock_refusals: self.clock_refusals.load(Ordering::Relaxed),
            clock_offset_ms: verdict.cluster_offset_ms(),
            clock_refusal,
        }
    }

    /// A version with its coordinator's name, when this node knows it.
    pub(crate) fn describe(&self, version: Version) -> VersionInfo {
        let origin = if version.node == self.store.node_id() {
            Some(self.me.name.clone())
        } else {
            self.view()
                .members
                .iter()
                .find(|m| NodeId::from_name(&m.id.name) == version.node)
                .map(|m| m.id.name.clone())
        };
        VersionInfo { version, origin }
    }
}
