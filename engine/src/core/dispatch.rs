//! Where answers go: a peer's answer (or why none came) to what the request was for,
//! and a store effect's result to what the change was for.

use super::io::{Pending, Purpose, StorePurpose};
use super::*;

impl NodeCore {
    /// A peer answered `pending`.
    pub(super) fn answered(
        &mut self,
        pending: Pending,
        response: Response,
        now: Now,
        store: &Store,
    ) {
        match pending.purpose {
            Purpose::Write(_) | Purpose::Read(_) | Purpose::ReadRepair => {
                self.data_answered(pending, response)
            }
            Purpose::Hints { .. } => self.hints_answered(pending, response, now),
            Purpose::Sync { .. } => self.sync_answered(pending, response, now, store),
            Purpose::Probe { .. } => {
                self.probe_answered(pending, response, now);
                self.recheck_awaiting_clock(now, store);
            }
            Purpose::Consult => {
                self.consulted(pending, response, now);
                self.flush_membership(now, store);
            }
            Purpose::Catalog => self.catalog_answered(pending, response),
            Purpose::Update { .. } => self.update_answered(pending, Ok(response), now),
            Purpose::Paxos(_) => self.paxos_answered(pending, Ok(response), now, store),
            Purpose::Forward { .. } => self.forward_answered(pending, Ok(response), now, store),
        }
    }

    /// `pending` got no answer.
    pub(super) fn failed(
        &mut self,
        pending: Pending,
        failure: PeerFailure,
        now: Now,
        store: &Store,
    ) {
        let why = match failure {
            PeerFailure::Path(why) => {
                // The data path's requests tell whether a peer is reachable. A probe's
                // own failure says nothing new (the peer is already known unreachable,
                // or its next request will tell), and an exchange step waits long enough
                // for a slow peer to take it for a lost one.
                if matches!(
                    pending.purpose,
                    Purpose::Write(_)
                        | Purpose::Read(_)
                        | Purpose::ReadRepair
                        | Purpose::Hints { .. }
                        | Purpose::Paxos(_)
                        | Purpose::Forward { .. }
                ) {
                    self.lost(&pending.to, &why);
                }
                why
            }
            PeerFailure::Local(why) => why,
        };
        match pending.purpose {
            Purpose::Write(_) | Purpose::Read(_) | Purpose::ReadRepair => {
                self.data_failed(pending, why)
            }
            Purpose::Hints { batch, count } => {
                let target = pending.to.clone();
                self.hints_delivered(&target, batch, count, false, now);
            }
            Purpose::Sync { .. } => self.sync_failed(pending, why, now, store),
            Purpose::Probe { .. } => {
                self.probe_failed(pending);
                self.recheck_awaiting_clock(now, store);
            }
            Purpose::Update { .. } => self.update_answered(pending, Err(why), now),
            Purpose::Paxos(_) => self.paxos_answered(pending, Err(why), now, store),
            Purpose::Forward { .. } => self.forward_answered(pending, Err(why), now, store),
            Purpose::Consult | Purpose::Catalog => self.event(CoreEvent::Debug(format!(
                "no answer from {}: {why}",
                pending.to
            ))),
        }
    }

    /// A store effect made for `purpose` is done.
    pub(super) fn on_stored(
        &mut self,
        purpose: StorePurpose,
        done: StoreDone,
        now: Now,
        store: &Store,
    ) {
        let applied = |done: &StoreDone| match done {
            StoreDone::Applied(outcomes) => {
                Ok(outcomes.iter().filter(|o| o.applied()).count() as u32)
            }
            StoreDone::Failed(err) => Err(err.clone()),
            other => Ok(match other {
                StoreDone::Count(n) => *n as u32,
                _ => 0,
            }),
        };
        match purpose {
            StorePurpose::Local { ops, landing, keys } => {
                self.landed(landing, now);
                if let StoreDone::Applied(outcomes) = &done {
                    self.conflicts.applied(&self.catalog, &keys, outcomes);
                }
                let result = applied(&done).map(|_| ()).map_err(|e| e.message);
                if let Err(why) = &result {
                    self.event(CoreEvent::StoreFailed {
                        what: "local apply",
                        why: why.clone(),
                    });
                }
                let me = self.me.name.clone();
                for op in ops {
                    self.coordinator.handle_write_ack(op, &me, result.clone());
                }
            }
            StorePurpose::Replica {
                reply,
                landing,
                keys,
            } => {
                self.landed(landing, now);
                if let StoreDone::Applied(outcomes) = &done {
                    self.conflicts.applied(&self.catalog, &keys, outcomes);
                }
                let response = match applied(&done) {
                    Ok(applied) => Response::Replicated { applied },
                    Err(err) => Response::Error(err),
                };
                self.respond(reply, response);
            }
            StorePurpose::Hinted {
                batch,
                count,
                landing,
                keys,
            } => {
                self.landed(landing, now);
                if let StoreDone::Applied(outcomes) = &done {
                    self.conflicts.applied(&self.catalog, &keys, outcomes);
                }
                let me = self.me.name.clone();
                let delivered = applied(&done).is_ok();
                self.hints_delivered(&me, batch, count, delivered, now);
            }
            StorePurpose::SyncApply { peer, tag, landing } => {
                let result = applied(&done).map(|_| ()).map_err(|e| e.message);
                self.sync_applied(&peer, tag, landing, result, now, store);
            }
            StorePurpose::SyncPushed { reply, landing, at } => {
                self.landed(landing, now);
                let result = applied(&done);
                self.sync_pushed(reply, at, result, now);
            }
            StorePurpose::PutHints => {
                if let StoreDone::Failed(err) = done {
                    self.event(CoreEvent::StoreFailed {
                        what: "hint",
                        why: err.message,
                    });
                }
            }
            StorePurpose::HintsDeleted { target, why, count } => {
                let ok = !matches!(done, StoreDone::Failed(_));
                if let StoreDone::Failed(err) = &done {
                    self.event(CoreEvent::StoreFailed {
                        what: "hint deletion",
                        why: err.message.clone(),
                    });
                }
                self.hints_deleted(target, why, count, ok, now);
            }
            purpose @ (StorePurpose::Purged { .. } | StorePurpose::Dropped { .. }) => {
                self.upkeep_done(purpose, done)
            }
            StorePurpose::Update {
                key,
                waiting,
                landing,
            } => {
                self.landed(landing, now);
                let result = match done {
                    StoreDone::Record(record) => {
                        if let Some(crate::types::State::Siblings(s)) = record.payload.typed() {
                            self.conflicts.siblings(&key, s.len());
                        }
                        Ok(record)
                    }
                    StoreDone::Failed(err) => Err(err),
                    other => Err(crate::protocol::ErrorReply::new(
                        crate::protocol::ErrorCode::Storage,
                        format!("unexpected store answer {other:?}"),
                    )),
                };
                self.updated(key, waiting, result, now);
            }
            StorePurpose::Paxos {
                acceptor_for,
                landing,
            } => self.acceptor_stored(acceptor_for, landing, done, now, store),
            StorePurpose::DroppedBuckets(ids) => match done {
                StoreDone::Count(records) => self.event(CoreEvent::BucketsDropped { ids, records }),
                other => self.event(CoreEvent::StoreFailed {
                    what: "dropping deleted buckets",
                    why: format!("{other:?}"),
                }),
            },
            StorePurpose::Meta(what) => {
                if let StoreDone::Failed(err) = done {
                    self.event(CoreEvent::StoreFailed {
                        what,
                        why: err.message,
                    });
                }
            }
        }
    }
}
