//! What a node knows of the cluster, as the node's `ClusterView`: its identity and
//! live peers, placement, the replica set of a partition, and the books of who holds
//! which partitions' data.

use std::collections::HashMap;

use vergent::membership::MemberId;
use vergent::placement::{PartitionSet, Placement, ReplicaSet};
use vergent::policy::{filled_word, holding_of, may_hold_by_word};

use super::Sim;

impl Sim {
    /// Node `i`'s live peers in its own view.
    pub(super) fn live_peers(&self, i: usize) -> Vec<String> {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return Vec::new();
        };
        m.placement_members()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| *name != self.names[i] && self.live_in_view(i, name))
            .collect()
    }

    pub(super) fn member_id(&self, node: usize) -> MemberId {
        MemberId {
            name: self.names[node].clone(),
            addr: format!("10.0.0.{}:7000", node + 1).parse().unwrap(),
            incarnation: self.nodes[node].life,
            epoch_ms: self.nodes[node].epoch_ms,
            token: self.nodes[node].token.clone(),
            data_epoch: self.nodes[node].data_epoch,
        }
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Whether node `i` believes `name` holds the data of `partition`: its own books, or
    /// the member's last status of its current life.
    fn filled_in_view(&self, i: usize, name: &str, partition: u16) -> bool {
        if name == self.names[i] {
            return self.nodes[i].fill.filled().contains(partition);
        }
        self.nodes[i]
            .membership
            .as_ref()
            .and_then(|m| m.member(name))
            .and_then(|v| filled_word(v, self.settings.partitions))
            .is_some_and(|filled| filled.contains(partition))
    }

    /// The other members that may hold data of `partition` as node `i` knows them,
    /// by the node's rule.
    pub(super) fn holders_of(&self, i: usize, partition: u16) -> Vec<String> {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return Vec::new();
        };
        m.roster()
            .filter(|v| v.id.name != self.names[i])
            .filter(|v| {
                holding_of(v, self.settings.partitions).is_some_and(|h| h.may_hold(partition))
            })
            .map(|v| v.id.name.clone())
            .collect()
    }

    /// The other members that may hold data of `partition` by their word in node `i`'s
    /// view, as the node's `ClusterView::holders_by_word`.
    pub(super) fn holders_by_word(&self, i: usize, partition: u16) -> Vec<String> {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return Vec::new();
        };
        m.roster()
            .filter(|v| v.id.name != self.names[i])
            .filter(|v| may_hold_by_word(v, self.settings.partitions, partition))
            .map(|v| v.id.name.clone())
            .collect()
    }

    /// Whether node `i` knows the status of every member in `placement`, as the node's
    /// `ClusterView::statuses_known`.
    pub(super) fn statuses_known(&self, i: usize, placement: &Placement) -> bool {
        placement.members().iter().all(|n| {
            *n == self.names[i]
                || self.nodes[i]
                    .membership
                    .as_ref()
                    .and_then(|m| m.member(n))
                    .is_some_and(|v| filled_word(v, self.settings.partitions).is_some())
        })
    }

    /// Who takes part in operations on `partition` in node `i`'s view (`placement` is
    /// that view's placement).
    pub(super) fn replica_set(
        &self,
        i: usize,
        placement: &Placement,
        partition: u16,
    ) -> ReplicaSet {
        placement.replica_set_settling(
            partition,
            |n| self.filled_in_view(i, n, partition),
            |n| self.nodes[i].news.settling(n, partition, self.now),
        )
    }

    /// Takes what node `i` believes every member holds into its news of fills, as the
    /// node does whenever its view changes.
    pub(super) fn observe_fills(&mut self, i: usize) {
        let Some(m) = self.nodes[i].membership.as_ref() else {
            return;
        };
        let mut filled: HashMap<String, PartitionSet> = m
            .roster()
            .filter_map(|v| {
                let filled = filled_word(v, self.settings.partitions)?;
                Some((v.id.name.clone(), filled.clone()))
            })
            .collect();
        filled.insert(self.names[i].clone(), self.nodes[i].fill.filled().clone());
        let now = self.now;
        self.nodes[i].news.observe(&filled, now);
    }

    /// Brings node `i`'s fill books up to date, as the node does after each exchange
    /// and view change.
    pub(super) fn update_fill(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        let placement = self.placement(i);
        let me = self.names[i].clone();
        let mut fill = self.nodes[i].fill.clone();
        let before: Vec<u16> = fill.filling().collect();
        let now = self.now;
        let change = fill.update(
            &me,
            &placement,
            |n, p| self.filled_in_view(i, n, p),
            |n, p| self.nodes[i].news.settling(n, p, now),
            |p| self.holders_by_word(i, p),
            |p, peer| self.nodes[i].agreements.get(p, peer).map(|at| at.mono),
            self.statuses_known(i, &placement),
            self.now,
        );
        // As the node: only partitions newly filling wake a fill.
        if fill.filling().any(|p| !before.contains(&p)) {
            self.nodes[i].schedule.fill_wake(now);
        }
        self.nodes[i].fill = fill;
        self.observe_fills(i);
        if !change.is_empty() {
            self.log(format!(
                "{} filled {:?} released {:?}",
                me, change.filled, change.released
            ));
            let filled = self.nodes[i].fill.filled().clone();
            if let Some(store) = &self.nodes[i].store {
                let _ = store.save_filled(&filled);
            }
        }
    }

    pub(super) fn placement(&self, i: usize) -> Placement {
        let members = self.nodes[i]
            .membership
            .as_ref()
            .map(|m| m.placement_members())
            .unwrap_or_default();
        Placement::compute_with_tokens(
            members,
            self.settings.partitions,
            self.settings.replication_factor,
        )
    }

    pub(super) fn live_in_view(&self, i: usize, name: &str) -> bool {
        self.nodes[i]
            .membership
            .as_ref()
            .and_then(|m| m.member(name))
            .is_some_and(|v| v.state.is_live())
    }
}
