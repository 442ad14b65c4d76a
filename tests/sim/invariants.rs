//! The invariants checked at the end of a run (convergence, hinted handoff, sessions,
//! acknowledged writes, quorum reads), and the bookkeeping of purged tombstones they
//! go by.

use std::collections::BTreeMap;

use vergent::placement::{Placement, partition_of};
use vergent::protocol::Consistency;
use vergent::record::{Entry, NodeId, Payload, Version};

use super::Sim;
use super::config::{EPOCH_MS, HINT_DRAIN_MS, MAX_OFFSET_MS, REPLICA_TIMEOUT_MS};
use super::workload::OpKind;

impl Sim {
    /// The partitions node `i` is still filling (none while it is down).
    fn filling(&self, i: usize) -> Vec<u16> {
        self.nodes[i]
            .core
            .as_ref()
            .map(|c| c.fill().filling().collect())
            .unwrap_or_default()
    }

    /// The horizon past which tombstones are purgeable on node `r` (by its wall clock
    /// while it is down).
    fn grace_horizon_of(&self, r: usize) -> u64 {
        match self.nodes[r].core.as_ref() {
            Some(core) => core.grace_horizon(self.now_of(r)),
            None => self.wall(r).saturating_sub(self.config.tombstone_grace_ms),
        }
    }

    /// The version node `r` holds of `key`, counting a tombstone it purged.
    pub(super) fn held_version(&self, r: usize, key: &[u8]) -> Option<Version> {
        let stored = self.nodes[r]
            .store
            .as_ref()
            .and_then(|s| s.get(key).ok().flatten())
            .map(|record| record.version);
        // A purge before the node last came up empty took nothing it holds now; it
        // still happened, for the checks that ask whether a key is gone.
        let since = self.nodes[r].empty_since;
        let purged = self.purged.get(&(r, key.to_vec())).and_then(|purges| {
            purges
                .iter()
                .filter(|&&(_, at)| at >= since)
                .map(|&(v, _)| v)
                .max()
        });
        stored.max(purged)
    }

    /// Whether some node purged a tombstone of `key` at `version` or newer before
    /// `by` (virtual ms): a read may then rightly find nothing.
    fn purged_before(&self, key: &[u8], version: Option<Version>, by: u64) -> bool {
        self.purged.iter().any(|((_, k), purges)| {
            k.as_slice() == key && purges.iter().any(|&(v, at)| Some(v) >= version && at <= by)
        })
    }

    /// Whether a read finishing at `by` may rightly find nothing for `key` where a
    /// write at `version` was acknowledged: a tombstone at that version or newer was
    /// purged by then, or was past the grace by then (a replica refilled since is not
    /// sent it: its key holds nothing there either).
    fn gone_by(&self, key: &[u8], version: Option<Version>, by: u64) -> bool {
        let past_grace =
            (EPOCH_MS + by + MAX_OFFSET_MS).saturating_sub(self.config.tombstone_grace_ms);
        self.purged_before(key, version, by)
            || self.client_ops.iter().any(|o| {
                o.kind == OpKind::Delete
                    && o.key == key
                    && o.version >= version
                    && o.version.is_some_and(|v| v.hlc.wall_ms() < past_grace)
            })
    }

    /// Placement over the members at the end, with their tokens.
    pub(super) fn final_placement(&self) -> Placement {
        Placement::compute_with_tokens(
            self.members().map(|i| {
                let name = self.names[i].clone();
                let token = self.nodes[i].token.clone().unwrap_or_else(|| name.clone());
                (name, token)
            }),
            self.settings.partitions,
            self.settings.replication_factor,
        )
    }

    /// Members that are up and place partitions differently, with each one's view of
    /// the roster; nothing when every one places them alike.
    pub(super) fn placement_divergence(&self) -> Option<String> {
        let up: Vec<usize> = self.members().filter(|&i| self.nodes[i].up).collect();
        let mut digests: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for &i in &up {
            digests
                .entry(self.placement(i).digest())
                .or_default()
                .push(self.names[i].as_str());
        }
        if digests.len() <= 1 {
            return None;
        }
        let views: Vec<String> = up
            .iter()
            .filter_map(|&i| {
                let m = self.nodes[i].core.as_ref()?.membership();
                let roster: Vec<String> = m
                    .roster()
                    .map(|v| format!("{}:{}", v.id.name, v.state.as_str()))
                    .collect();
                Some(format!(
                    "{} places {:?} (roster {})",
                    self.names[i],
                    m.placement_members(),
                    roster.join(" ")
                ))
            })
            .collect();
        Some(format!("{digests:?}; {}", views.join("; ")))
    }

    /// Every replica of every partition holds the same records with the same root, and
    /// every member holds the data of every partition it owns.
    pub(super) fn converged(&self) -> bool {
        self.divergence().is_none() && self.members().all(|i| self.filling(i).is_empty())
    }

    fn divergence(&self) -> Option<String> {
        let placement = self.final_placement();
        for p in 0..self.settings.partitions {
            let replicas: Vec<usize> = placement
                .replicas(p)
                .map(|n| self.index_of(n).unwrap())
                .collect();
            // Tombstones past the grace may be purged on one replica before another, and
            // a replica that lacks the key is rightly not sent one: a key may be missing
            // where every copy held elsewhere is such a tombstone. Where a replica holds
            // the key, it holds the same record as every other (an exchange sends the
            // newer one, old tombstones included). Each tree is checked against its own
            // data at the end.
            let horizon = replicas
                .iter()
                .map(|&r| self.grace_horizon_of(r))
                .min()
                .unwrap_or(0);
            let mut by_key: BTreeMap<Vec<u8>, Vec<(usize, Entry)>> = BTreeMap::new();
            for &r in &replicas {
                let store = self.nodes[r].store.as_ref()?;
                let (entries, _) = store.entries_in(p, 0..4096, None, usize::MAX).ok()?;
                for e in entries {
                    by_key.entry(e.key.clone()).or_default().push((r, e));
                }
            }
            for (key, held) in by_key {
                let (first, e) = &held[0];
                if let Some((other, _)) = held.iter().find(|(_, o)| o.record != e.record) {
                    return Some(format!(
                        "partition {p}: {} and {} hold different versions of {}",
                        self.names[*first],
                        self.names[*other],
                        String::from_utf8_lossy(&key)
                    ));
                }
                let purgeable = vergent::antientropy::exchange::purgeable(e, horizon);
                if held.len() < replicas.len() && !purgeable {
                    let lacking = replicas
                        .iter()
                        .find(|r| !held.iter().any(|(h, _)| h == *r))
                        .expect("a replica lacks it");
                    return Some(format!(
                        "partition {p}: {} lacks {} that {} holds",
                        self.names[*lacking],
                        String::from_utf8_lossy(&key),
                        self.names[*first]
                    ));
                }
            }
        }
        None
    }

    /// With anti-entropy paused, hinted handoff alone must have brought every replica
    /// every write it missed, except writes whose hints were past the window, and writes
    /// whose coordinator crashed before it knew who had missed them.
    pub(super) fn check_hinted_handoff(&mut self, healed_at: u64) {
        let placement = self.final_placement();
        // Writes from before the membership last changed went to other replicas than
        // the final ones; the new owners fill those from the others, not by hints.
        let cutoff = ((healed_at + HINT_DRAIN_MS).saturating_sub(self.config.hint_window_ms)
            + 2 * REPLICA_TIMEOUT_MS)
            .max(self.last_membership_change + 2 * REPLICA_TIMEOUT_MS);
        for (index, op) in self.client_ops.iter().enumerate() {
            let Some(version) = op.version else { continue };
            if op.issued_ms < cutoff || !matches!(op.outcome, Some(Ok(_))) || !op.is_default() {
                continue;
            }
            let coordinator = self
                .names
                .iter()
                .position(|n| NodeId::from_name(n) == version.node)
                .unwrap();
            let crashed_in_flight = self.crashes.iter().any(|&(node, at)| {
                node == coordinator
                    && at >= op.issued_ms
                    && at <= op.issued_ms + 2 * REPLICA_TIMEOUT_MS
            });
            // A coordinator that stepped aside for a second process under its name
            // keeps its hints until it takes the name back (its view is frozen
            // meanwhile): they are late, not lost, and convergence checks them.
            // A version from a clock beyond the bound (issued before its node found out)
            // is refused by replicas until the cluster's time reaches it: by design, its
            // hints land only then, after the drain; convergence checks where it ends.
            let beyond_bound = version.hlc.wall_ms() > EPOCH_MS + op.issued_ms + MAX_OFFSET_MS;
            if crashed_in_flight || self.nodes[coordinator].stepped_aside || beyond_bound {
                continue;
            }
            for replica in placement.replicas(partition_of(&op.key, self.settings.partitions)) {
                // Hints go to the replicas the coordinator wrote to. One it did not know
                // of yet (it learned of a new owner late, across a cut) gets the write
                // from the replicas that took it, by handoff and anti-entropy, which the
                // convergence check covers.
                if !op.targets.iter().any(|t| t == replica) {
                    continue;
                }
                let r = self.index_of(replica).unwrap();
                if self.nodes[r].empty_since >= op.issued_ms && self.nodes[r].empty_since > 0
                    || self.nodes[r].stepped_aside
                {
                    continue;
                }
                if self
                    .held_version(r, &op.key)
                    .is_none_or(|held| held < version)
                {
                    self.violations.push(format!(
                        "op {index} ({:?} of {} at {}) never reached {replica}: no hint delivered it",
                        op.kind,
                        String::from_utf8_lossy(&op.key),
                        op.issued_ms
                    ));
                }
            }
        }
    }

    /// A session's write issued after another of its writes was acknowledged has the
    /// higher version, whichever nodes coordinated them.
    fn check_sessions(&mut self) {
        let writes: Vec<(usize, u64, u64, Version)> = self
            .client_ops
            .iter()
            .filter(|o| o.kind != OpKind::Get && o.is_default())
            .filter_map(|o| {
                let Some(Ok(Some(version))) = &o.outcome else {
                    return None;
                };
                Some((o.session, o.issued_ms, o.completed_ms?, *version))
            })
            .collect();
        for a in &writes {
            for b in &writes {
                if a.0 == b.0 && a.2 < b.1 && b.3.hlc <= a.3.hlc {
                    self.violations.push(format!(
                        "session {}: a write issued at {} ms has version {:?}, not above {:?} of one acknowledged at {} ms",
                        a.0, b.1, b.3, a.3, a.2
                    ));
                }
            }
        }
    }

    pub(super) fn check(&mut self) {
        self.check_sessions();
        if self.config.typed {
            self.check_typed();
        }
        if self.config.shape == super::config::Shape::SiblingsAcrossACut {
            self.check_siblings_shape();
        }
        if let Some(d) = self.divergence() {
            self.violations
                .push(format!("replicas did not converge: {d}"));
        }
        if let Some(d) = self.placement_divergence() {
            self.violations
                .push(format!("members' placements did not converge: {d}"));
        }
        for (i, &renewals) in self.renewals.iter().enumerate() {
            // At most 10 free a minute and then a growing wait: over a run of about two
            // minutes, a few dozen at the very most; a storm would be thousands.
            if renewals > 40 {
                self.violations.push(format!(
                    "{} renewed its identity {renewals} times",
                    self.names[i]
                ));
            }
        }
        for i in self.members().collect::<Vec<_>>() {
            let filling = self.filling(i);
            if !filling.is_empty() {
                self.violations.push(format!(
                    "{} never filled partitions {filling:?}",
                    self.names[i]
                ));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(store) = &node.store {
                for p in 0..self.settings.partitions {
                    if !store.verify_tree(p).unwrap_or(false) {
                        self.violations.push(format!(
                            "{}: partition {p}'s tree differs from its data",
                            self.names[i]
                        ));
                    }
                }
            }
        }
        // Every write acknowledged at quorum or all is present, or superseded by a newer
        // version; a deleted key is back only if a newer put was issued.
        let store = self.nodes[0].store.as_ref();
        let placement = self.final_placement();
        for (index, op) in self.client_ops.iter().enumerate() {
            let Some(version) = op.version else { continue };
            let acked = matches!(op.outcome, Some(Ok(_)))
                && op.consistency != Consistency::One
                && op.is_default();
            if !acked {
                continue;
            }
            let owner = placement
                .replicas(partition_of(&op.key, self.settings.partitions))
                .next()
                .unwrap();
            let owner = self.index_of(owner).unwrap();
            let record = self.nodes[owner]
                .store
                .as_ref()
                .and_then(|s| s.get(&op.key).ok().flatten());
            // Nothing is what purged tombstones leave: right where some replica purged
            // a tombstone of this version or a newer one, or another replica holds a
            // tombstone past the grace that a refilled owner was rightly not sent (a
            // value there would be a divergence, checked apart).
            let superseded = self.purged_before(&op.key, Some(version), u64::MAX)
                || placement
                    .replicas(partition_of(&op.key, self.settings.partitions))
                    .filter_map(|r| self.held_version(self.index_of(r)?, &op.key))
                    .max()
                    >= Some(version)
                // A node that no longer owns the partition may still hold the tombstone
                // the owners were rightly not sent: the key is deleted all the same.
                || self.nodes.iter().any(|n| {
                    n.store
                        .as_ref()
                        .and_then(|s| s.get(&op.key).ok().flatten())
                        .is_some_and(|r| r.payload == Payload::Tombstone && r.version >= version)
                });
            match record {
                None if superseded => {}
                None => self.violations.push(format!(
                    "op {index} ({:?} of {}) was acknowledged at {:?} and is lost",
                    op.kind,
                    String::from_utf8_lossy(&op.key),
                    op.consistency
                )),
                Some(r) if r.version < version => self.violations.push(format!(
                    "op {index} ({:?} of {}) was acknowledged at {:?}; an older version {:?} won",
                    op.kind,
                    String::from_utf8_lossy(&op.key),
                    op.consistency,
                    r.version
                )),
                Some(r) => {
                    // Whatever is there was written by some client operation.
                    let issued = self.client_ops.iter().any(|o| {
                        o.version == Some(r.version)
                            && o.key == op.key
                            && o.value.as_deref() == r.payload.value()
                    });
                    if !issued {
                        self.violations.push(format!(
                            "{} holds version {:?} that no client wrote",
                            String::from_utf8_lossy(&op.key),
                            r.version
                        ));
                    }
                }
            }
        }
        let _ = store;
        // A quorum read that began after a quorum write was acknowledged sees it.
        for read in self
            .client_ops
            .iter()
            .filter(|o| o.kind == OpKind::Get && o.consistency != Consistency::One)
        {
            let Some(Ok(seen)) = &read.outcome else {
                continue;
            };
            for write in self.client_ops.iter().filter(|w| {
                w.kind != OpKind::Get
                    && w.is_default()
                    && w.key == read.key
                    && w.consistency != Consistency::One
                    && matches!(w.outcome, Some(Ok(_)))
                    && w.completed_ms.is_some_and(|done| done < read.issued_ms)
            }) {
                if seen.is_none_or(|v| Some(v) < write.version)
                    && !(seen.is_none()
                        && self.gone_by(
                            &read.key,
                            write.version,
                            read.completed_ms.unwrap_or(u64::MAX),
                        ))
                {
                    self.violations.push(format!(
                        "a {:?} read of {} at {} saw {:?}, older than the {:?} write acknowledged at {}",
                        read.consistency,
                        String::from_utf8_lossy(&read.key),
                        read.issued_ms,
                        seen,
                        write.consistency,
                        write.completed_ms.unwrap()
                    ));
                }
            }
        }
    }
}
