//! This node's clock against the others': NTP-style probes of every live peer on the
//! data path ([`crate::hlc::skew`]), the verdict on whether this clock is the wrong one,
//! the cluster's time as measured, and reachability on the data path (a peer whose
//! requests fail on the path is unreachable until a probe answers again).

use super::io::{Pending, Purpose};
use super::*;
use crate::hlc::skew::{Verdict, describe_us};
use crate::protocol::{ErrorCode, ErrorReply};

impl NodeCore {
    /// Whether this node's clock agrees with the live members' clocks.
    pub fn clock_verdict(&self, now: Now) -> Verdict {
        let live = self
            .view
            .members
            .iter()
            .filter(|m| m.id.name != self.me.name && m.state.is_live())
            .map(|m| m.id.name.as_str());
        self.skew
            .verdict(live, now.reading(), self.config.max_clock_offset_ms)
    }

    /// The cluster's time as this node measures it: its wall clock corrected by the
    /// median offset of the live members' clocks (its own when nothing is measured).
    pub fn cluster_wall_ms(&self, now: Now) -> u64 {
        let wall = now.wall_ms();
        match self.clock_verdict(now).cluster_offset_ms() {
            Some(offset) => wall.saturating_add_signed(offset),
            None => wall,
        }
    }

    /// The wall time the rules go by: this node's clock, or the cluster's when that is
    /// behind it. A clock far ahead would purge tombstones before their grace is out.
    pub(super) fn rules_wall_ms(&self, now: Now) -> u64 {
        now.wall_ms().min(self.cluster_wall_ms(now))
    }

    /// Tombstones older than this (wall ms) may be purged.
    pub fn grace_horizon(&self, now: Now) -> u64 {
        self.rules_wall_ms(now)
            .saturating_sub(self.config.tombstone_grace_ms)
    }

    pub(super) fn clock_unmeasured(&self, now: Now) -> bool {
        matches!(self.clock_verdict(now), Verdict::Unmeasured { .. })
    }

    /// Why this node may not coordinate a write now, if it may not: its clock is off
    /// the cluster's by more than the bound, or it cannot tell. Not having compared is
    /// `unavailable` (the peers to compare with did not answer, as during a cut), not
    /// `clock offset`: nothing says this node's clock is wrong.
    pub(super) fn clock_refusal(&self, now: Now) -> Option<ErrorReply> {
        let verdict = self.clock_verdict(now);
        let code = match verdict {
            Verdict::Unmeasured { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::ClockOffset,
        };
        verdict
            .refusal(self.config.max_clock_offset_ms)
            .map(|why| ErrorReply::new(code, why))
    }

    /// The latest version wall time the cluster accepts now: its time plus the bound.
    pub fn future_limit_ms(&self, now: Now) -> u64 {
        self.cluster_wall_ms(now)
            .saturating_add(self.config.max_clock_offset_ms)
    }

    /// Why this node may not issue a version now because its clock reads beyond the
    /// cluster's time plus the bound (it issued or stored versions from the future),
    /// if it may not.
    pub fn future_refusal(&self, now: Now) -> Option<String> {
        let limit = self.future_limit_ms(now);
        let last = self.clock.read(now.wall_ms());
        if last.wall_ms() <= limit {
            return None;
        }
        let ahead_ms = last.wall_ms() - limit + self.config.max_clock_offset_ms;
        Some(format!(
            "this node's clock has issued or stored versions {} ahead of the cluster's time (the limit is {} ms): its clock ran ahead earlier; it coordinates no writes until the cluster's time catches up or an admin runs `vergent rewrite-future` on it, and still serves reads and replication",
            describe_us(ahead_ms * 1000),
            self.config.max_clock_offset_ms
        ))
    }

    /// Probes every live peer, and every unreachable one, once.
    pub(super) fn probe_round(&mut self, now: Now) {
        // The last round's probes have had their time: what they measured is judged
        // now, before the next round (at the very first, nothing was measured yet).
        if self.probe_rounds > 0 {
            let live = self.live_peers();
            self.skew.confirm(
                live.iter().map(String::as_str),
                now.reading(),
                self.config.max_clock_offset_ms,
            );
            let verdict = self.clock_verdict(now);
            let refusal = verdict.refusal(self.config.max_clock_offset_ms);
            let outlier = matches!(verdict, Verdict::Outlier { .. });
            self.event(CoreEvent::ClockState {
                refusal,
                offset_ms: verdict.cluster_offset_ms(),
                outlier,
            });
        }
        self.probe_rounds += 1;
        // A new life of a peer may run on another clock: its old samples go.
        let members: Vec<MemberId> = self.view.members.iter().map(|m| m.id.clone()).collect();
        for id in members {
            if self.lives.get(&id.name).is_some_and(|known| *known != id) {
                self.skew.forget(&id.name);
            }
            self.lives.insert(id.name.clone(), id);
        }
        self.probe_all(now);
        // Unreachable members membership no longer calls alive start afresh.
        let gone: Vec<String> = self
            .unreachable
            .keys()
            .filter(|name| self.live_id(name).is_none())
            .cloned()
            .collect();
        for peer in gone {
            self.unreachable.remove(&peer);
            self.event(CoreEvent::Reachable { peer });
        }
    }

    /// Probes every live peer that has no probe in flight.
    pub(super) fn probe_all(&mut self, now: Now) {
        let probing: Vec<String> = self
            .pending
            .values()
            .filter(|p| matches!(p.purpose, Purpose::Probe { .. }))
            .map(|p| p.to.clone())
            .collect();
        for name in self.live_peers() {
            if probing.contains(&name) {
                continue;
            }
            let Some(id) = self.live_id(&name) else {
                continue;
            };
            self.skew.probe_sent(&name, now.mono_us);
            let sent_us = now.wall_us;
            self.send(
                &id,
                Request::Ping { sent_us },
                Purpose::Probe { sent_us },
                PROBE_TIMEOUT_MS,
                now,
            );
        }
    }

    /// A probe's answer: a clock sample, and the path open again.
    pub(super) fn probe_answered(&mut self, pending: Pending, response: Response, now: Now) {
        let Purpose::Probe { sent_us } = pending.purpose else {
            return;
        };
        let peer = pending.to;
        if let Response::Pong {
            received_us,
            replied_us,
        } = response
        {
            let sample = crate::hlc::skew::Probe {
                sent_us,
                received_us,
                replied_us,
                answered_us: now.wall_us,
            };
            self.skew.record(&peer, sample, now.mono_us);
            if self.unreachable.remove(&peer).is_some() {
                self.event(CoreEvent::Reachable { peer });
                // Its hints can go now.
                self.hints_due = now.mono();
            }
        }
    }

    /// A probe got no answer: a peer already unreachable is dialled afresh next time.
    pub(super) fn probe_failed(&mut self, pending: Pending) {
        if self.unreachable.contains_key(&pending.to) {
            self.outputs.push_back(Output::Forget { peer: pending.to });
        }
    }

    /// A request to `peer` failed on the path (not by the peer's own answer): it is
    /// unreachable until a probe answers.
    pub(super) fn lost(&mut self, peer: &str, why: &str) {
        if self.live_id(peer).is_some() && !self.unreachable.contains_key(peer) {
            self.unreachable.insert(peer.to_string(), why.to_string());
            self.event(CoreEvent::Unreachable {
                peer: peer.to_string(),
                why: why.to_string(),
            });
        }
    }

    /// Members this node cannot reach on the data path, and why.
    pub fn unreachable(&self) -> &BTreeMap<String, String> {
        &self.unreachable
    }
}
