//! What a node knows of the cluster, read from its core's view: its identity, its live
//! peers, its placement.

use vergent::membership::MemberId;
use vergent::placement::Placement;

use super::Sim;

impl Sim {
    /// Node `i`'s live peers in its own view.
    pub(super) fn live_peers(&self, i: usize) -> Vec<String> {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return Vec::new();
        };
        core.view()
            .members
            .iter()
            .filter(|m| m.id.name != self.names[i] && m.state.is_live())
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// Node `i`'s identity in its current life.
    pub(super) fn member_id(&self, i: usize) -> MemberId {
        match self.nodes[i].core.as_ref() {
            Some(core) => core.me().clone(),
            None => MemberId {
                name: self.names[i].clone(),
                addr: format!("10.0.0.{}:7000", i + 1).parse().unwrap(),
                incarnation: self.nodes[i].life,
                epoch_ms: self.nodes[i].epoch_ms,
                token: self.nodes[i].token.clone(),
                data_epoch: self.nodes[i].data_epoch,
            },
        }
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Node `i`'s placement.
    pub(super) fn placement(&self, i: usize) -> Placement {
        match self.nodes[i].core.as_ref() {
            Some(core) => (*core.view().placement).clone(),
            None => Placement::compute_with_tokens(
                Vec::<(String, String)>::new(),
                self.settings.partitions,
                self.settings.replication_factor,
            ),
        }
    }
}
