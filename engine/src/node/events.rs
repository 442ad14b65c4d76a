//! What the core did, logged and counted: the node's log lines and metrics.

use std::sync::Arc;

use super::Shared;
use crate::antientropy::report::RunKind;
use crate::core::CoreEvent;
use crate::membership::MembershipEvent;
use crate::policy::HintsDeleted;

/// The log's memory: what is said once per change of state, not per round.
#[derive(Default)]
pub(crate) struct EventLog {
    /// Whether writes are refused for the clock, and if so whether for an outlier.
    refusing: Option<bool>,
}

impl EventLog {
    pub(crate) fn log(&mut self, shared: &Arc<Shared>, event: CoreEvent) {
        match event {
            CoreEvent::Membership(event) => membership(shared, &event),
            CoreEvent::PlacementChanged {
                members,
                digest,
                held,
            } => tracing::info!(?members, %digest, held, "placement changed"),
            CoreEvent::Filled {
                partitions,
                still_filling,
            } => tracing::info!(
                partitions,
                still_filling,
                "filled partitions from their replicas; they count in quorums now"
            ),
            CoreEvent::Released { partitions } => tracing::info!(
                partitions,
                "partitions released: their owners hold them now; this node hands them off"
            ),
            CoreEvent::Filling(partitions) => super::metrics::filling(partitions),
            CoreEvent::HandedOff {
                partition,
                removed,
                owners,
            } => tracing::info!(
                partition,
                removed,
                ?owners,
                "partition handed off to its owners; dropped here"
            ),
            CoreEvent::Purged { partition, count } => {
                tracing::info!(partition, purged = count, "tombstones purged")
            }
            CoreEvent::HintsDropped { target, why, count } => match why {
                HintsDeleted::Delivered => {}
                HintsDeleted::Expired => tracing::warn!(
                    target = %target,
                    count,
                    window = %humantime::format_duration(shared.config.hint_window),
                    "dropped hints older than the hint window; anti-entropy repairs those keys"
                ),
                HintsDeleted::TargetLeft => tracing::warn!(
                    target = %target,
                    count,
                    "dropped hints: the member left the cluster"
                ),
            },
            CoreEvent::HintsDelivered { target, count } => {
                tracing::debug!(target = %target, count, "hints delivered")
            }
            CoreEvent::HintsRefused { target, count, why } => tracing::warn!(
                target = %target,
                count,
                "{target} refused a batch of {count} hints ({why}); they go one at a time, and one it refuses alone waits {} s before it is tried again",
                crate::policy::HINT_SET_ASIDE_MS / 1000
            ),
            CoreEvent::Unreachable { peer, why } => {
                tracing::warn!(
                    peer = %peer,
                    "{peer} is unreachable from {}: {why}; writes to it are hinted until it answers again",
                    shared.me.name
                );
                super::metrics::unreachable(&peer, true);
            }
            CoreEvent::Reachable { peer } => {
                tracing::info!(peer = %peer, "{peer} is reachable again from {}", shared.me.name);
                super::metrics::unreachable(&peer, false);
            }
            CoreEvent::ClockRefused { what, why } => tracing::warn!("{what} refused: {why}"),
            CoreEvent::ClockState {
                refusal,
                offset_ms,
                outlier,
            } => {
                super::metrics::cluster_clock(offset_ms, outlier);
                let state = refusal.as_ref().map(|_| outlier);
                match (&refusal, self.refusing) {
                    (Some(why), before) if before != state => tracing::error!("{why}"),
                    (None, Some(_)) => tracing::info!(
                        "this node's clock is within {} ms of the cluster's; it coordinates writes again",
                        shared.config.max_clock_offset_ms
                    ),
                    _ => {}
                }
                self.refusing = state;
            }
            CoreEvent::RunEnded { kind, report } => match kind {
                RunKind::Fill => tracing::info!(
                    compared = report.counts.partitions_compared,
                    keys_received = report.counts.keys_received,
                    problems = ?report.problems,
                    "fill run"
                ),
                _ if report.counts.partitions_differing > 0 || !report.problems.is_empty() => {
                    tracing::info!(
                        compared = report.counts.partitions_compared,
                        differing = report.counts.partitions_differing,
                        keys_sent = report.counts.keys_sent,
                        keys_received = report.counts.keys_received,
                        problems = ?report.problems,
                        "anti-entropy run"
                    )
                }
                _ => {}
            },
            CoreEvent::JoinRefused { member, why } => {
                tracing::warn!(member = %member, "join refused: {why}")
            }
            CoreEvent::JoinAdmitted { member, replaces } => {
                tracing::info!(member = %member, replaces = ?replaces, "join request")
            }
            CoreEvent::BucketsDropped { ids, records } => {
                tracing::info!(?ids, records, "deleted buckets' records dropped")
            }
            CoreEvent::Buckets { live, digest } => {
                tracing::info!(live, digest = %format!("{digest:016x}"), "bucket catalog changed")
            }
            CoreEvent::Removed(id) => tracing::warn!(
                member = %id.name,
                addr = %id.addr,
                "member removed from the cluster; its partitions move to the others"
            ),
            CoreEvent::ExchangeFailed {
                peer,
                partition,
                why,
            } => tracing::warn!(peer, partition, "exchange failed: {why}"),
            CoreEvent::Exchanged { counts, ok } => super::metrics::exchange(&counts, ok),
            CoreEvent::StoreFailed { what, why } => tracing::error!("{what} failed: {why}"),
            CoreEvent::Left => {
                tracing::info!("left the cluster");
                shared.left.notify_one();
            }
            CoreEvent::Issued { .. } => {}
            CoreEvent::Debug(line) => tracing::debug!("{line}"),
        }
    }
}

fn membership(shared: &Arc<Shared>, event: &MembershipEvent) {
    let _ = shared;
    match event {
        MembershipEvent::Joined(id) => {
            tracing::info!(member = %id.name, addr = %id.addr, "member joined")
        }
        MembershipEvent::Recovered(id) => {
            tracing::info!(member = %id.name, incarnation = id.incarnation, "member alive again")
        }
        MembershipEvent::Suspected(id) => tracing::warn!(member = %id.name, "member suspected"),
        MembershipEvent::Died(id) => tracing::warn!(member = %id.name, "member declared dead"),
        MembershipEvent::Left(id) => tracing::info!(member = %id.name, "member left"),
        MembershipEvent::RejoinedAs(id) => tracing::warn!(
            incarnation = id.incarnation,
            "this node was declared dead; rejoined with a new incarnation"
        ),
        MembershipEvent::RejoinDelayed(ms) => tracing::warn!(
            wait_ms = ms,
            "this node keeps being declared dead; it waits before rejoining again (is another process running under its name?)"
        ),
        MembershipEvent::SteppedAside(later) => tracing::error!(
            other = %later.addr,
            "another process started later under this node's name at {}; this one steps aside and no longer takes part in the cluster: stop one of them",
            later.addr
        ),
        MembershipEvent::RemovedWhileAway => tracing::warn!(
            "the cluster removed this node while it was away; it rejoins as a new member and refills its partitions before it counts in quorums"
        ),
        MembershipEvent::ConsultSeed => tracing::debug!(
            "declared dead again soon after rejoining; asking a member for its view"
        ),
        MembershipEvent::NameTakenBack(other) => tracing::warn!(
            other = %other.addr,
            "the other process under this node's name is gone; this one takes the name back and refills its partitions before it counts in quorums"
        ),
        MembershipEvent::Refused(report) => tracing::warn!(
            peer = %report.from,
            refused = report.count,
            "membership messages from {} refused: {} ({} since the last report; reported at most once a minute per peer)",
            report.from,
            report.refusal,
            report.count
        ),
    }
}
