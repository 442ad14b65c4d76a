//! The acceptor's side of linearizable keys: a prepare or an accept, from a peer's
//! proposal or one of this node's own, is checked here (the key's limits, the ballot's
//! age and its clock) and decided by the store inside the write transaction that keeps
//! its outcome (see [`crate::paxos`] for the rules, `storage/paxos.rs` for the state).

use super::io::{Landing, StorePurpose};
use super::paxos::{Asked, BALLOT_LIFE_MS, Heard, heard_of_accept, heard_of_promise};
use super::*;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::Payload;

/// Who waits for an acceptor's answer.
pub(crate) enum AcceptorFor {
    /// A proposal of this node's.
    Local(Asked),
    /// A peer's proposal.
    Peer(ReplyTo),
}

impl NodeCore {
    /// An acceptor's request, from a peer or this node's proposals: checked, then
    /// decided in the store.
    pub(super) fn acceptor_work(
        &mut self,
        request: Request,
        acceptor_for: AcceptorFor,
        now: Now,
        store: &Store,
    ) {
        let (key, work, ballot) = match request {
            Request::Prepare { key, ballot } => {
                (key.clone(), StoreWork::Prepare { key, ballot }, ballot)
            }
            Request::Accept { key, record, next } => {
                let ballot = record.version;
                let record = *record;
                (key.clone(), StoreWork::Accept { key, record, next }, ballot)
            }
            _ => return,
        };
        let refusal = if let Err(err) = crate::buckets::check_stored_key(&key) {
            Some(ErrorReply::new(ErrorCode::LimitExceeded, err.to_string()))
        } else if matches!(work, StoreWork::Prepare { .. }) && !self.answers_for_key(&key) {
            Some(self.let_go(&key))
        } else if let StoreWork::Accept { record, .. } = &work
            && let Err(err) = match &record.payload {
                Payload::Value(v) => crate::limits::check_value(v, self.config.value_bytes_max),
                Payload::Tombstone => Ok(()),
                Payload::Typed(_) => Err(crate::limits::LimitError::EmptyKey),
            }
        {
            Some(match err {
                crate::limits::LimitError::EmptyKey => ErrorReply::new(
                    ErrorCode::BadRequest,
                    "a linearizable key holds bytes, not a typed value",
                ),
                other => ErrorReply::new(ErrorCode::LimitExceeded, other.to_string()),
            })
        } else if ballot.hlc.wall_ms().saturating_add(BALLOT_LIFE_MS) < now.wall_ms() {
            Some(ErrorReply::new(
                ErrorCode::Refused,
                format!(
                    "ballot {} is over {} s old: its proposal is over",
                    ballot.hlc,
                    BALLOT_LIFE_MS / 1000
                ),
            ))
        } else {
            let cluster_ms = self.cluster_wall_ms(now);
            match self
                .clock
                .observe_against(ballot.hlc, now.wall_ms(), cluster_ms)
            {
                Ok(_) => None,
                Err(err) => {
                    self.clock_refused("ballot", err.to_string());
                    Some(ErrorReply::new(ErrorCode::ClockOffset, err.to_string()))
                }
            }
        };
        if let Some(refusal) = refusal {
            return match acceptor_for {
                AcceptorFor::Peer(reply) => self.respond(reply, Response::Error(refusal)),
                AcceptorFor::Local(asked) => {
                    self.heard(asked, Heard::Failed(refusal.message), now, store)
                }
            };
        }
        if matches!(
            work,
            StoreWork::Prepare { .. } | StoreWork::Accept { next: Some(_), .. }
        ) {
            self.proposals.promised(now.mono());
        }
        let landing = match &work {
            StoreWork::Accept { record, .. } if record.payload.is_tombstone() => self.landing(
                std::slice::from_ref(&crate::record::Entry {
                    key: key.clone(),
                    record: record.clone(),
                }),
                now.wall_ms(),
            ),
            StoreWork::Accept { .. } => self.landing_key(&key, now.wall_ms()),
            _ => Landing::default(),
        };
        self.store(
            work,
            StorePurpose::Paxos {
                acceptor_for,
                landing,
            },
        );
    }

    /// A peer's prepare or accept.
    pub(super) fn acceptor_request(
        &mut self,
        reply: ReplyTo,
        request: Request,
        now: Now,
        store: &Store,
    ) {
        self.acceptor_work(request, AcceptorFor::Peer(reply), now, store);
    }

    /// The store decided an acceptor's request.
    pub(super) fn acceptor_stored(
        &mut self,
        acceptor_for: AcceptorFor,
        landing: Landing,
        done: StoreDone,
        now: Now,
        store: &Store,
    ) {
        self.landed(landing, now);
        match acceptor_for {
            AcceptorFor::Peer(reply) => {
                let response = match done {
                    StoreDone::Promise(p) => Response::Promise(p),
                    StoreDone::Accept(a) => Response::Accept(a),
                    StoreDone::Failed(err) => Response::Error(err),
                    other => Response::Error(ErrorReply::new(
                        ErrorCode::Storage,
                        format!("unexpected store answer {other:?}"),
                    )),
                };
                self.respond(reply, response);
            }
            AcceptorFor::Local(asked) => {
                let heard = match done {
                    StoreDone::Promise(p) => heard_of_promise(p),
                    StoreDone::Accept(a) => heard_of_accept(a),
                    StoreDone::Failed(err) => Heard::Failed(err.message),
                    other => Heard::Failed(format!("unexpected store answer {other:?}")),
                };
                self.heard(asked, heard, now, store);
            }
        }
    }
}
