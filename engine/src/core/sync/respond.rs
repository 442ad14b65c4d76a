//! The responder's side of anti-entropy: a peer's exchange steps, checked, answered.
//! A roots compare is taken after every change made to its partitions so far (put off
//! by a millisecond, a few times, for a change made in the same one), and roots found
//! equal are an agreement on this side too. Entries moved count against the repair
//! rate limit: the answer waits until they fit.

use super::*;
use crate::antientropy::error::SyncError;
use crate::antientropy::respond::{check_push, pushed_to_apply, respond};

/// A roots request put off for a change made in the same millisecond.
pub(in crate::core) struct HeldSync {
    pub(in crate::core) at: Millis,
    tries: u32,
    from: String,
    reply: ReplyTo,
    request: SyncRequest,
}

/// The answer to a peer whose step failed: whose fault it was, and why.
fn sync_error(err: SyncError) -> ErrorReply {
    match err {
        SyncError::Storage(err) => crate::core::io::storage_error(&err),
        SyncError::LimitExceeded { .. } | SyncError::BadEntry(_) => {
            ErrorReply::new(ErrorCode::LimitExceeded, format!("sync: {err}"))
        }
        SyncError::NoSuchPartition { .. }
        | SyncError::NoSuchNode { .. }
        | SyncError::BadRequest(_)
        | SyncError::Protocol(_) => ErrorReply::new(ErrorCode::BadRequest, format!("sync: {err}")),
    }
}

impl NodeCore {
    /// One step of a peer's exchange. The request is checked before anything is read
    /// or applied; a failure of this node's own storage is reported as such, not as
    /// the peer's fault.
    pub(in crate::core) fn sync_request(
        &mut self,
        from: &str,
        reply: ReplyTo,
        request: SyncRequest,
        now: Now,
        store: &Store,
    ) {
        self.answer_sync(from, reply, request, COMPARE_TRIES, now, store);
    }

    fn answer_sync(
        &mut self,
        from: &str,
        reply: ReplyTo,
        request: SyncRequest,
        tries: u32,
        now: Now,
        store: &Store,
    ) {
        let limits = self.sync_limits();
        match request {
            SyncRequest::Push { partition, entries } => {
                if let Err(err) = check_push(partition, &entries, self.settings.partitions, &limits)
                {
                    self.respond(reply, Response::Error(sync_error(err)));
                    return;
                }
                let at = self.pacer.take(
                    entry_bytes(&entries),
                    self.config.repair_bytes_per_sec,
                    now.mono(),
                );
                let keep = match pushed_to_apply(store, entries, self.grace_horizon(now)) {
                    Ok(keep) => keep,
                    Err(err) => {
                        self.respond(reply, Response::Error(sync_error(err)));
                        return;
                    }
                };
                match self.received(keep, now) {
                    Err(why) => {
                        let reply_err =
                            ErrorReply::new(ErrorCode::LimitExceeded, format!("sync: {why}"));
                        self.respond(reply, Response::Error(reply_err));
                    }
                    Ok(keep) if keep.is_empty() => {
                        let response = Response::Sync(SyncResponse::Pushed { applied: 0 });
                        self.at(at, Output::Respond { reply, response });
                    }
                    Ok(keep) => {
                        let landing = self.landing(&keep, now.wall_ms());
                        self.store(
                            StoreWork::Apply(keep),
                            StorePurpose::SyncPushed { reply, landing, at },
                        );
                    }
                }
            }
            other => {
                let roots: Option<Vec<PartitionId>> = match &other {
                    SyncRequest::Roots { roots, .. } => {
                        Some(roots.iter().map(|r| r.partition).collect())
                    }
                    _ => None,
                };
                if let Some(partitions) = &roots
                    && tries > 0
                    && self.changed_since(partitions, now.wall_ms())
                {
                    self.held_syncs.push(HeldSync {
                        at: Millis(now.mono().0 + 1),
                        tries: tries - 1,
                        from: from.to_string(),
                        reply,
                        request: other,
                    });
                    return;
                }
                let began = now.moment();
                let response = match respond(store, &other, &limits) {
                    Ok(response) => response,
                    Err(err) => {
                        self.respond(reply, Response::Error(sync_error(err)));
                        return;
                    }
                };
                // Roots that compared equal here are an agreement for this side's books
                // too: a partition is confirmed in sync on each replica, whichever asked.
                if let (SyncRequest::Roots { roots, .. }, SyncResponse::Roots { differing }) =
                    (&other, &response)
                {
                    let agreed: Vec<PartitionId> = roots
                        .iter()
                        .map(|r| r.partition)
                        .filter(|p| !differing.iter().any(|d| d.partition == *p))
                        .collect();
                    self.agreed(from, &agreed, began);
                }
                let bytes = match &response {
                    SyncResponse::Compared { send, .. }
                    | SyncResponse::Entries { entries: send, .. } => entry_bytes(send),
                    _ => 0,
                };
                // An answer of no entries waits for nothing (the peer's own steps keep to
                // its limit); one that carries entries waits until they fit this node's.
                let at = if bytes == 0 {
                    now.mono()
                } else {
                    self.pacer
                        .take(bytes, self.config.repair_bytes_per_sec, now.mono())
                };
                let response = Response::Sync(response);
                if at <= now.mono() {
                    self.respond(reply, response);
                } else {
                    self.at(at, Output::Respond { reply, response });
                }
            }
        }
    }

    /// Roots requests put off, due now.
    pub(in crate::core) fn held_syncs_due(&mut self, now: Now, store: &Store) {
        if self.held_syncs.iter().all(|h| h.at > now.mono()) {
            return;
        }
        let (due, later): (Vec<HeldSync>, Vec<HeldSync>) = std::mem::take(&mut self.held_syncs)
            .into_iter()
            .partition(|h| h.at <= now.mono());
        self.held_syncs = later;
        for held in due {
            self.answer_sync(&held.from, held.reply, held.request, held.tries, now, store);
        }
    }

    /// Entries a peer pushed are applied (or not): its answer.
    pub(in crate::core) fn sync_pushed(
        &mut self,
        reply: ReplyTo,
        at: Millis,
        result: Result<u32, ErrorReply>,
        now: Now,
    ) {
        let response = match result {
            Ok(applied) => Response::Sync(SyncResponse::Pushed { applied }),
            Err(err) => Response::Error(err),
        };
        if at <= now.mono() {
            self.respond(reply, response);
        } else {
            self.at(at, Output::Respond { reply, response });
        }
    }
}
