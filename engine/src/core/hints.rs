//! Hinted handoff: delivers the writes a replica missed once it is alive again.
//!
//! What to send, to whom, in what batches and what to drop is [`HintPump`]'s; this
//! carries its plans out: batches go as `Replicate` requests (applied here when the
//! target is this node), deletions through the store, and the next plan waits until a
//! plan's deletions are done. Delivery runs every [`HINTS_PERIOD_MS`], when a member
//! joins or returns, when a path opens again, and at once after a plan that got
//! somewhere.

use super::io::{Pending, Purpose, StorePurpose};
use super::*;
use crate::policy::{HintContext, HintWork, HintsDeleted};

impl NodeCore {
    /// One plan of the pump's, carried out.
    pub(super) fn deliver_hints(&mut self, now: Now, store: &Store) {
        if self.hint_deletes > 0 {
            return;
        }
        let planned = {
            let view = &self.view;
            let state = |name: &str| view.member(name).map(|m| m.state);
            // Waiting out a timeout per batch would hold every other target's hints
            // back; the probes say when a target answers again.
            let unreachable = &self.unreachable;
            let reachable = |name: &str| !unreachable.contains_key(name);
            let cx = HintContext {
                me: &self.me.name,
                state: &state,
                reachable: &reachable,
                wall_ms: now.wall_ms(),
                window_ms: self.config.hint_window_ms,
                now: now.mono(),
            };
            self.hints.plan(store, &cx)
        };
        let work = match planned {
            Ok(work) => work,
            Err(err) => {
                self.event(CoreEvent::StoreFailed {
                    what: "hint backlog read",
                    why: err.to_string(),
                });
                return;
            }
        };
        for step in work {
            self.hint_work(step, now);
        }
    }

    fn hint_work(&mut self, step: HintWork, now: Now) {
        match step {
            HintWork::Delete { target, keys, why } => {
                self.hint_deletes += 1;
                let count = keys.len();
                self.store(
                    StoreWork::DeleteHints(keys),
                    StorePurpose::HintsDeleted { target, why, count },
                );
            }
            HintWork::Send {
                batch,
                target,
                entries,
            } => {
                let count = entries.len();
                if target == self.me.name {
                    let landing = self.landing(&entries, now.wall_ms());
                    let keys = entries.iter().map(|e| e.key.clone()).collect();
                    self.store(
                        StoreWork::Apply(entries),
                        StorePurpose::Hinted {
                            batch,
                            count,
                            landing,
                            keys,
                        },
                    );
                    return;
                }
                match self.live_id(&target) {
                    Some(id) => {
                        let timeout = self.config.replica_timeout_ms;
                        self.send(
                            &id,
                            Request::Replicate { entries },
                            Purpose::Hints { batch, count },
                            timeout,
                            now,
                        );
                    }
                    None => self.hints.failed(batch),
                }
            }
        }
    }

    /// A batch was delivered (`Ok`) or not: its hints are deleted, or wait.
    pub(super) fn hints_delivered(
        &mut self,
        target: &str,
        batch: u64,
        count: usize,
        delivered: bool,
        now: Now,
    ) {
        if !delivered {
            self.hints.failed(batch);
            return;
        }
        self.event(CoreEvent::HintsDelivered {
            target: target.to_string(),
            count,
        });
        if let Some(delete) = self.hints.delivered(batch) {
            self.hint_work(delete, now);
        }
    }

    /// A batch's answer.
    pub(super) fn hints_answered(&mut self, pending: Pending, response: Response, now: Now) {
        let Purpose::Hints { batch, count } = pending.purpose else {
            return;
        };
        if let Response::Error(err) = &response {
            // An answer that refuses the batch (one of its versions, from a clock too
            // far ahead for the target, say): sent again as it is, it would be refused
            // again, and every hint behind it with it.
            self.event(CoreEvent::HintsRefused {
                target: pending.to.clone(),
                count,
                why: err.message.clone(),
            });
            self.hints.refused(batch, now.mono());
            return;
        }
        let delivered = matches!(response, Response::Replicated { .. });
        self.hints_delivered(&pending.to, batch, count, delivered, now);
    }

    /// Hints were deleted: when a plan's deletions are all done, the next plan may go,
    /// at once when this one got somewhere.
    pub(super) fn hints_deleted(
        &mut self,
        target: String,
        why: HintsDeleted,
        count: usize,
        ok: bool,
        now: Now,
    ) {
        self.hint_deletes = self.hint_deletes.saturating_sub(1);
        if ok && why != HintsDeleted::Delivered {
            self.event(CoreEvent::HintsDropped { target, why, count });
        }
        if ok && self.hint_deletes == 0 {
            self.hints_due = now.mono();
        }
    }
}
