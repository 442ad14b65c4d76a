//! Updates of typed values (a counter's increment, a set's adds and removes, a
//! siblings register's write): each is made by one *actor*, a replica that holds the
//! key's data, on its own stored state in one transaction (the event it stamps is its
//! own: see [`crate::types`]); the state it then holds is written to every replica like
//! any write, merged there, and acknowledged at the consistency asked for.
//!
//! The coordinator is the actor when it holds the data (it counts for the partition);
//! otherwise it asks the first replica that does. A replica still filling a partition
//! is never an actor: its state may lack its own earlier events.
//!
//! An actor is named by its node's name and the epoch of its data, so a node that
//! comes back with an empty disk is a new actor and never numbers an event its old
//! disk already used.

use super::io::{Pending, Purpose, StorePurpose};
use super::once::Seen;
use super::*;
use crate::placement::partition_of;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::{Entry, Record};
use crate::types::{Actor, Change};

/// A typed update as its actor makes it: the change, and the bucket's TTL.
#[derive(Debug, Clone)]
pub(crate) struct Update {
    /// The change.
    pub change: Change,
    /// The bucket's TTL: the key expires that long after the update.
    pub ttl_ms: Option<u64>,
}

/// Who waits for an update's state.
pub(crate) enum UpdateFor {
    /// This node coordinates it: the ask, and the write's consistency.
    Coordinator {
        ask: AskId,
        consistency: Option<Consistency>,
    },
    /// A coordinator asked this node to act: the update's id.
    Peer(u64),
}

impl NodeCore {
    /// This node as an actor of typed updates: its name and its data's epoch.
    pub(super) fn actor(&self) -> Actor {
        let me = self.membership.me();
        let mut hasher = blake3::Hasher::new();
        hasher.update(me.name.as_bytes());
        hasher.update(&me.data_epoch.to_be_bytes());
        u64::from_be_bytes(
            hasher.finalize().as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        )
    }

    /// Starts a typed update: checked as a write is, then made by the actor.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin_update(
        &mut self,
        ask: AskId,
        key: Vec<u8>,
        update: Update,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
        now: Now,
        store: &Store,
    ) -> Result<(), ErrorReply> {
        let _ = store;
        if let Change::Put {
            value: Some(value), ..
        } = &update.change
        {
            check_value_len(value.len(), self.config.value_bytes_max)?;
        }
        self.may_issue(now)?;
        self.observe_session(after, now)?;
        self.counters.writes += 1;
        let set = self.view.replica_set(&key);
        let me = self.me.name.clone();
        let actor = if set.counted.contains(&me) {
            Some(me.clone())
        } else {
            set.counted
                .iter()
                .find(|n| self.live_id(n).is_some() && !self.unreachable.contains_key(*n))
                .cloned()
        };
        let Some(actor) = actor else {
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "unavailable: no replica that holds the key's data can be reached to make the update (replicas {:?})",
                    set.targets
                ),
            ));
        };
        let waiting = UpdateFor::Coordinator { ask, consistency };
        if actor == me {
            self.act(key, update, waiting, now);
        } else {
            let id = self.live_id(&actor).expect("a reachable replica is live");
            let timeout = self.config.replica_timeout_ms;
            let request = Request::UpdateLocal {
                key: key.clone(),
                change: update.change,
                ttl_ms: update.ttl_ms,
                id: self.random(),
            };
            self.send(&id, request, Purpose::Update { waiting, key }, timeout, now);
        }
        Ok(())
    }

    /// Makes an update as its actor, on this node's stored state.
    fn act(&mut self, key: Vec<u8>, update: Update, waiting: UpdateFor, now: Now) {
        let at = self.clock.tick(now.wall_ms());
        let actor = self.actor();
        let landing = self.landing_key(&key, now.wall_ms());
        self.store(
            StoreWork::Update {
                key: key.clone(),
                change: update.change,
                actor,
                at,
                ttl_ms: update.ttl_ms,
            },
            StorePurpose::Update {
                key,
                waiting,
                landing,
            },
        );
    }

    /// A coordinator asks this node to make update `id` as its actor.
    pub(super) fn update_request(
        &mut self,
        reply: ReplyTo,
        id: u64,
        key: Vec<u8>,
        update: Update,
        now: Now,
    ) {
        match self.updates_made.first(id, reply) {
            Seen::New => {}
            Seen::Done(answer) => return self.respond(reply, *answer),
            Seen::Running => return,
        }
        let partition = partition_of(&key, self.settings.partitions);
        let refusal = if let Err(err) = crate::buckets::check_stored_key(&key) {
            Some(ErrorReply::new(ErrorCode::LimitExceeded, err.to_string()))
        } else if !self.fill.filled().contains(partition) {
            Some(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "{} does not hold partition {partition}'s data yet (it is filling it), so it cannot make an update of it",
                    self.me.name
                ),
            ))
        } else if let Some(refusal) = self.clock_refusal(now) {
            Some(refusal)
        } else if let Some(Err(why)) = update.ttl_ms.map(crate::buckets::check_ttl) {
            Some(ErrorReply::new(ErrorCode::BadRequest, why))
        } else {
            None
        };
        match refusal {
            Some(refusal) => self.updated(key, UpdateFor::Peer(id), Err(refusal), now),
            None => self.act(key, update, UpdateFor::Peer(id), now),
        }
    }

    /// The actor's state of the key, or why there is none: written to every replica
    /// (the coordinator's), or answered (a peer's).
    pub(super) fn updated(
        &mut self,
        key: Vec<u8>,
        waiting: UpdateFor,
        result: Result<Record, ErrorReply>,
        now: Now,
    ) {
        match waiting {
            UpdateFor::Peer(id) => {
                let response = match result {
                    Ok(record) => Response::Record {
                        record: Some(record),
                    },
                    Err(err) => Response::Error(err),
                };
                for reply in self.updates_made.done(id, &response) {
                    self.respond(reply, response.clone());
                }
            }
            UpdateFor::Coordinator { ask, consistency } => match result {
                Err(err) => self.answer(ask, Answer::Failed(err)),
                Ok(record) => {
                    let level = consistency.unwrap_or(self.config.default_consistency);
                    let set = self.view.replica_set(&key);
                    let entry = Entry { key, record };
                    let op = self.coordinator.begin_write(entry, set, level, now.mono());
                    self.ops
                        .insert(op, (ask, crate::buckets::BucketType::Counter));
                }
            },
        }
    }

    /// The actor's answer to an update asked of it.
    pub(super) fn update_answered(
        &mut self,
        pending: Pending,
        result: Result<Response, String>,
        now: Now,
    ) {
        let Purpose::Update { waiting, key } = pending.purpose else {
            return;
        };
        let result = match result {
            Ok(Response::Record {
                record: Some(record),
            }) => Ok(record),
            Ok(Response::Error(err)) => Err(err),
            Ok(other) => Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!("unexpected answer from {}: {other:?}", pending.to),
            )),
            Err(why) => Err(ErrorReply::new(
                ErrorCode::Unavailable,
                format!(
                    "unavailable: {} was asked to make the update and did not answer: {why}; it may still have been made",
                    pending.to
                ),
            )),
        };
        self.updated(key, waiting, result, now);
    }
}

fn check_value_len(len: usize, max: usize) -> Result<(), ErrorReply> {
    if len > max {
        return Err(ErrorReply::new(
            ErrorCode::LimitExceeded,
            format!("value too large: {len} bytes, the limit is {max} bytes"),
        ));
    }
    Ok(())
}
