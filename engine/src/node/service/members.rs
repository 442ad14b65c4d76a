//! Requests that change who is in the cluster: join, remove, leave.

use super::unexpected;
use crate::core::{Answer, Ask};
use crate::net::PeerIdentity;
use crate::node::Shared;
use crate::protocol::{ErrorCode, ErrorReply, Response};

fn view_knows_older(view: &crate::node::ClusterView, id: &crate::membership::MemberId) -> bool {
    view.member(&id.name).is_some_and(|m| id.supersedes(&m.id))
}

/// Time given to a member's old address to answer before a join under its name from
/// another address is taken for a restart.
const NAME_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Shared {
    pub(super) async fn join(
        &self,
        peer: &PeerIdentity,
        id: crate::membership::MemberId,
        cluster: Option<crate::storage::ClusterSettings>,
        replace: Option<String>,
    ) -> Result<Response, ErrorReply> {
        if id.name != peer.name {
            return Err(ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "a join request for {:?} came with the certificate of {:?}; a node joins under its own name",
                    id.name, peer.name
                ),
            ));
        }
        if let Some(theirs) = cluster
            && theirs != self.settings
        {
            let message = if theirs.cluster_id != self.settings.cluster_id {
                format!(
                    "node {} holds data of cluster {}, but this is cluster {}; it cannot join",
                    id.name,
                    theirs.id_hex(),
                    self.settings.id_hex()
                )
            } else {
                format!(
                    "node {} has partitions {} and replication factor {}, the cluster {} and {}",
                    id.name,
                    theirs.partitions,
                    theirs.replication_factor,
                    self.settings.partitions,
                    self.settings.replication_factor
                )
            };
            tracing::warn!("join refused: {message}");
            return Err(ErrorReply::new(ErrorCode::ClusterMismatch, message));
        }
        self.refuse_second_process(&id).await?;
        if view_knows_older(&self.view(), &id) {
            // A restarted node: whatever connection this node kept to its old process
            // is dead without knowing it.
            self.peers.forget(&id.name);
        }
        let (members, token) = match self.core.ask(Ask::Join { id, replace }).await {
            Answer::Admitted { members, token } => (members, token),
            other => return Err(unexpected(other)),
        };
        let view = self.view();
        let me = view
            .member(&self.me.name)
            .map_or_else(|| self.me.clone(), |m| m.id.clone());
        Ok(Response::Joined {
            cluster: self.settings,
            seed: me,
            members,
            token,
        })
    }

    /// A join under the name of a member this node sees alive at another address is a
    /// second process under that name, unless the first is gone (killed and restarted
    /// elsewhere before the cluster noticed). Asking the old address tells which: if a
    /// node of that name answers there, the join is refused and the live one is never
    /// disturbed.
    async fn refuse_second_process(
        &self,
        id: &crate::membership::MemberId,
    ) -> Result<(), ErrorReply> {
        let view = self.view();
        let Some(live) = view.member(&id.name) else {
            return Ok(());
        };
        if !live.state.is_live() || live.id.addr == id.addr {
            return Ok(());
        }
        let probe = tokio::time::timeout(
            NAME_PROBE_TIMEOUT,
            self.peers.dial(live.id.addr, &id.name, Some(&id.name)),
        )
        .await;
        let Ok(Ok((connection, _))) = probe else {
            tracing::info!(member = %id.name, old = %live.id.addr, new = %id.addr, "a member restarted at a new address; the old one does not answer");
            return Ok(());
        };
        connection.close(0u32.into(), b"name probe");
        let message = format!(
            "{} is alive at {} (it answered just now); a second process under the same name is refused",
            id.name, live.id.addr
        );
        tracing::warn!(member = %id.name, addr = %id.addr, "join refused: {message}");
        Err(ErrorReply::new(ErrorCode::NameInUse, message))
    }

    pub(super) async fn remove(&self, name: String) -> Result<Response, ErrorReply> {
        let id = match self.core.ask(Ask::Remove { name }).await {
            Answer::Removed(id) => id,
            other => return Err(unexpected(other)),
        };
        let hints = self
            .store
            .hint_backlog()
            .unwrap_or_default()
            .iter()
            .filter(|b| b.target == id.name)
            .map(|b| b.count)
            .sum::<u64>();
        Ok(Response::Removed {
            message: format!(
                "{} removed from the cluster; its partitions move to the remaining members, which fill them by anti-entropy ({} hints kept for it here are dropped)",
                id.name, hints
            ),
        })
    }

    pub(super) async fn leave(&self) -> Result<Response, ErrorReply> {
        if let Answer::Failed(reply) = self.core.ask(Ask::Leave).await {
            return Err(reply);
        }
        Ok(Response::Leaving {
            message: format!(
                "{} is leaving the cluster; its partitions move to the remaining members, then it stops",
                self.me.name
            ),
        })
    }
}
