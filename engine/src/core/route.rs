//! Where a linearizable operation is proposed: at the key's *home*, the first of its
//! replicas that count (alive and reachable, this node included), so that one node
//! proposes for each key and its proposals wait their turn instead of competing (two
//! proposers raising each other's ballots is what makes Paxos retry). Any node stays
//! correct: when the home cannot be reached, the node the client asked proposes itself.
//!
//! A forwarded read whose home does not answer is proposed here instead (a read
//! changes nothing); a forwarded write's outcome is then unknown, and the client is
//! told so, since the home may have made it.

use super::io::{Pending, Purpose};
use super::once::Seen;
use super::paxos::{Waiter, lin_answer};
use super::*;
use crate::paxos::{LinOp, LinOutcome};
use crate::protocol::{ErrorCode, ErrorReply};

/// How long a node waits for the home it handed an operation to: a proposal's
/// attempts, with their pauses, fit well inside.
const FORWARD_TIMEOUT_FACTOR: u64 = 3;

impl NodeCore {
    /// The key's home, when it is another node this one can reach.
    pub(super) fn home_of(&self, key: &[u8]) -> Option<MemberId> {
        let set = self.view.replica_set(key);
        let home = set.counted.iter().find(|name| {
            **name == self.me.name
                || (self.live_id(name).is_some() && !self.unreachable.contains_key(*name))
        })?;
        if *home == self.me.name {
            return None;
        }
        self.live_id(home)
    }

    /// Hands a client's operation to the key's home.
    pub(super) fn forward(
        &mut self,
        ask: AskId,
        home: MemberId,
        key: Vec<u8>,
        op: LinOp,
        now: Now,
    ) {
        let timeout = self.config.replica_timeout_ms * FORWARD_TIMEOUT_FACTOR;
        let request = Request::Propose {
            key: key.clone(),
            op: op.clone(),
            id: self.random(),
        };
        self.send(
            &home,
            request,
            Purpose::Forward { ask, key, op },
            timeout,
            now,
        );
    }

    /// A node hands this one, the key's home, its client's operation.
    pub(super) fn propose_request(
        &mut self,
        reply: ReplyTo,
        id: u64,
        key: Vec<u8>,
        op: LinOp,
        now: Now,
        store: &Store,
    ) {
        match self.proposes_made.first(id, reply) {
            Seen::New => {}
            Seen::Done(response) => return self.respond(reply, *response),
            Seen::Running => return,
        }
        let refusal = crate::buckets::check_stored_key(&key)
            .map_err(|e| ErrorReply::new(ErrorCode::LimitExceeded, e.to_string()))
            .and_then(|()| self.serving())
            .and_then(|()| self.may_issue(now));
        match refusal {
            // Proposed here whatever this node thinks the home is: an operation is
            // handed on once at most.
            Ok(()) => self.propose_here(Waiter::Peer(id), key, op, now, store),
            Err(err) => self.proposed_for_peer(id, Response::Error(err)),
        }
    }

    /// An operation proposed for another node ended: every request for it is
    /// answered.
    pub(super) fn proposed_for_peer(&mut self, id: u64, response: Response) {
        for reply in self.proposes_made.done(id, &response) {
            self.respond(reply, response.clone());
        }
    }

    /// The home answered (or could not).
    pub(super) fn forward_answered(
        &mut self,
        pending: Pending,
        response: Result<Response, String>,
        now: Now,
        store: &Store,
    ) {
        let Purpose::Forward { ask, key, op } = pending.purpose else {
            return;
        };
        let result = match response {
            Ok(Response::Proposed(outcome)) => Ok(outcome),
            Ok(Response::Error(err)) => Err(err),
            Ok(other) => Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!("unexpected answer from {}: {other:?}", pending.to),
            )),
            Err(why) if op.reads() => {
                // A read changes nothing: this node finds the value itself.
                let _ = why;
                return self.propose_here(Waiter::Ask(ask), key, op, now, store);
            }
            Err(why) => Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "outcome unknown: the operation went to {}, the key's home, which did not answer ({why}); it may have taken effect: read the key to see",
                    pending.to
                ),
            )),
        };
        let result: Result<LinOutcome, ErrorReply> = result;
        self.answer(ask, lin_answer(result));
    }
}
