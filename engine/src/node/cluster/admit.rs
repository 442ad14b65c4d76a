//! Join requests, decided against this node's membership.

use super::Admission;
use crate::membership::{MemberId, MemberState, Membership};
use crate::node::Shared;
use crate::protocol::{ErrorCode, ErrorReply};

/// A join request, decided against this node's membership: a second process under a
/// live member's name is refused; a replacement takes a dead member's place.
pub(super) fn admit(
    shared: &Shared,
    m: &mut Membership,
    id: MemberId,
    replace: Option<String>,
) -> Admission {
    let refuse = |code, message: String| {
        tracing::warn!(member = %id.name, addr = %id.addr, "join refused: {message}");
        Err(ErrorReply::new(code, message))
    };
    if m.is_leaving() {
        return refuse(
            ErrorCode::NotReady,
            format!(
                "{} is leaving the cluster; join through another member",
                shared.me.name
            ),
        );
    }
    if id.name == shared.me.name {
        return refuse(
            ErrorCode::NameInUse,
            format!(
                "{} is the name of the node at {} that answered; a second process under the same name is refused",
                id.name, shared.me.addr
            ),
        );
    }
    let mut token = None;
    if let Some(old) = &replace {
        if *old == id.name {
            return refuse(
                ErrorCode::Refused,
                format!(
                    "{old} cannot replace itself; a node that comes back under its own name needs no --replace"
                ),
            );
        }
        match m.member(old).map(|v| (v.state, v.id.token().to_string())) {
            None => {
                return refuse(
                    ErrorCode::Refused,
                    format!(
                        "{old} is not a member of this cluster, so {} cannot replace it",
                        id.name
                    ),
                );
            }
            Some((MemberState::Left, old_token)) => {
                if m.placement_members().iter().any(|(_, t)| *t == old_token) {
                    return refuse(
                        ErrorCode::Refused,
                        format!("{old} has left and its place is already taken"),
                    );
                }
                token = Some(old_token);
            }
            Some((state @ (MemberState::Alive | MemberState::Suspect), _)) => {
                return refuse(
                    ErrorCode::Refused,
                    format!(
                        "{old} is {}: only a dead member can be replaced; stop it first",
                        state.as_str()
                    ),
                );
            }
            Some((MemberState::Dead, old_token)) => {
                if let Err(reason) = m.depart(old, shared.now(), shared.cluster_wall_ms()) {
                    return refuse(ErrorCode::Refused, reason);
                }
                tracing::warn!(member = %old, by = %id.name, "member replaced; its partitions move to the new node");
                token = Some(old_token);
            }
        }
    }
    // The joining node announces itself once it has installed this answer; adding it
    // here would leave a dead member behind whenever the joiner then refuses to start
    // (other settings, a full disk).
    tracing::info!(member = %id.name, addr = %id.addr, replaces = ?replace, "join request");
    Ok((m.seed_members(), token))
}
