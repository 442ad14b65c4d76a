//! One run with one peer, step by step: compares taken after every change made to
//! their partitions, requests within the repair rate limit (bytes counted), entries
//! received checked and applied, answers and failures handed back to the run.

use super::*;

impl NodeCore {
    /// Carries out what the run with `peer` asks, until it waits.
    pub(in crate::core) fn drive_run(&mut self, peer: &str, now: Now, store: &Store) {
        loop {
            let Some(round) = self.round.as_mut() else {
                return;
            };
            let Some(run) = round.runs.get_mut(peer) else {
                return;
            };
            if run.compare_at.is_some() {
                return;
            }
            let Some(step) = run.run.poll() else {
                return;
            };
            match step {
                RunStep::Compare(chunk) => {
                    // Taken after every change made to the partitions so far: a change
                    // and a compare in one millisecond cannot be told apart.
                    if self.changed_since(&chunk, now.wall_ms()) {
                        let run = self.round_run(peer).expect("the run polled");
                        run.compare_at = Some((Millis(now.mono().0 + 1), COMPARE_TRIES - 1));
                        return;
                    }
                    let run = self.round_run(peer).expect("the run polled");
                    run.run.compare(store, now.moment());
                }
                RunStep::Send { tag, request } => self.sync_send(peer, tag, request, now, store),
                RunStep::Apply { tag, entries } => self.sync_apply(peer, tag, entries, now, store),
                RunStep::Agreed { partitions, at } => self.agreed(peer, &partitions, at),
                RunStep::Began(partition) => {
                    self.books.in_flight.insert(partition);
                }
                RunStep::Ended { partition, error } => {
                    self.books.in_flight.remove(&partition);
                    if let Some(why) = error {
                        self.event(CoreEvent::ExchangeFailed {
                            peer: peer.to_string(),
                            partition,
                            why,
                        });
                    }
                }
                RunStep::Progress { partitions, keys } => self.progress_tick(partitions, keys),
                RunStep::Done => {
                    self.run_done(peer, now);
                    return;
                }
            }
        }
    }

    pub(super) fn round_run(&mut self, peer: &str) -> Option<&mut PeerRun> {
        self.round.as_mut()?.runs.get_mut(peer)
    }

    /// Compares put off, due now.
    pub(in crate::core) fn round_timeout(&mut self, now: Now, store: &Store) {
        let due: Vec<String> = match &self.round {
            Some(round) => round
                .runs
                .iter()
                .filter(|(_, r)| r.compare_at.is_some_and(|(at, _)| at <= now.mono()))
                .map(|(p, _)| p.clone())
                .collect(),
            None => return,
        };
        for peer in due {
            let tries = self
                .round_run(&peer)
                .and_then(|r| r.compare_at.take())
                .map_or(0, |(_, tries)| tries);
            let chunk = self.pending_compare(&peer);
            if tries > 0 && self.changed_since(&chunk, now.wall_ms()) {
                if let Some(run) = self.round_run(&peer) {
                    run.compare_at = Some((Millis(now.mono().0 + 1), tries - 1));
                }
                continue;
            }
            // Under writes every millisecond this gives up after a few: the compare
            // then goes on, and only its agreement on the busiest partitions does not
            // count.
            if let Some(run) = self.round_run(&peer) {
                run.run.compare(store, now.moment());
            }
            self.drive_run(&peer, now, store);
        }
        self.end_round_if_done(now, store);
    }

    /// The partitions of the compare `peer`'s run waits to make.
    pub(in crate::core) fn pending_compare(&self, peer: &str) -> Vec<PartitionId> {
        self.round
            .as_ref()
            .and_then(|r| r.runs.get(peer))
            .map(|r| r.run.to_compare().to_vec())
            .unwrap_or_default()
    }

    /// A step of a run to its peer, within the repair rate limit.
    pub(in crate::core) fn sync_send(
        &mut self,
        peer: &str,
        tag: Tag,
        request: SyncRequest,
        now: Now,
        store: &Store,
    ) {
        let pushed = match &request {
            SyncRequest::Push { entries, .. } => entry_bytes(entries),
            _ => 0,
        };
        let request = Request::Sync(request);
        let sent = postcard::experimental::serialized_size(&request).unwrap_or(0) as u64 + 4;
        let Some(id) = self.live_id(peer) else {
            if let Some(run) = self.round_run(peer) {
                run.run
                    .handle_response(store, tag, Err(format!("{peer} is not a live member")));
            }
            return;
        };
        let at = self
            .pacer
            .take(pushed, self.config.repair_bytes_per_sec, now.mono());
        let timeout = self.config.sync_step_timeout_ms;
        let purpose = Purpose::Sync { tag, pushed, sent };
        if at <= now.mono() {
            self.send(&id, request, purpose, timeout, now);
        } else {
            self.send_at(at, &id, request, purpose, timeout, None);
        }
    }

    /// Entries a run received, after the checks a replication passes: key and value
    /// limits (a batch with one bad entry is refused whole), and entries from a clock
    /// too far ahead are left out.
    pub(in crate::core) fn sync_apply(
        &mut self,
        peer: &str,
        tag: Tag,
        entries: Vec<Entry>,
        now: Now,
        store: &Store,
    ) {
        match self.received(entries, now) {
            Err(why) => {
                if let Some(run) = self.round_run(peer) {
                    run.run.applied(store, tag, Err(why));
                }
            }
            Ok(entries) if entries.is_empty() => {
                if let Some(run) = self.round_run(peer) {
                    run.run.applied(store, tag, Ok(()));
                }
            }
            Ok(entries) => {
                let landing = self.landing(&entries, now.wall_ms());
                self.store(
                    StoreWork::Apply(entries),
                    StorePurpose::SyncApply {
                        peer: peer.to_string(),
                        tag,
                        landing,
                    },
                );
            }
        }
    }

    /// Entries a run received are applied (or not).
    pub(in crate::core) fn sync_applied(
        &mut self,
        peer: &str,
        tag: Tag,
        landing: Landing,
        result: Result<(), String>,
        now: Now,
        store: &Store,
    ) {
        self.landed(landing, now);
        if let Some(run) = self.round_run(peer) {
            run.run.applied(store, tag, result);
        }
        self.drive_run(peer, now, store);
        self.end_round_if_done(now, store);
    }

    /// A step's answer, with its bytes counted.
    pub(in crate::core) fn sync_answered(
        &mut self,
        pending: Pending,
        response: Response,
        now: Now,
        store: &Store,
    ) {
        let Purpose::Sync { tag, pushed, sent } = pending.purpose else {
            return;
        };
        let peer = pending.to;
        let received = postcard::experimental::serialized_size(&response).unwrap_or(0) as u64 + 4;
        let response = match response {
            Response::Sync(response) => Ok(response),
            Response::Error(reply) => Err(reply.message),
            other => Err(format!("unexpected answer {other:?}")),
        };
        let entries_in = match &response {
            Ok(SyncResponse::Compared { send, .. }) => entry_bytes(send),
            Ok(SyncResponse::Entries { entries, .. }) => entry_bytes(entries),
            _ => 0,
        };
        // What this node pulls counts against its own limit too: the next step waits
        // until the bytes received fit.
        let _ = self
            .pacer
            .take(entries_in, self.config.repair_bytes_per_sec, now.mono());
        if let Some(run) = self.round_run(&peer) {
            if response.is_ok() {
                let c = &mut run.counts;
                c.round_trips += 1;
                c.entry_bytes_sent += pushed;
                c.metadata_bytes_sent += sent.saturating_sub(pushed);
                c.entry_bytes_received += entries_in;
                c.metadata_bytes_received += received.saturating_sub(entries_in);
            }
            run.run.handle_response(store, tag, response);
        }
        self.drive_run(&peer, now, store);
        self.end_round_if_done(now, store);
    }

    /// A step got no answer.
    pub(in crate::core) fn sync_failed(
        &mut self,
        pending: Pending,
        why: String,
        now: Now,
        store: &Store,
    ) {
        let Purpose::Sync { tag, .. } = pending.purpose else {
            return;
        };
        let peer = pending.to;
        if let Some(run) = self.round_run(&peer) {
            run.run.handle_response(store, tag, Err(why));
        }
        self.drive_run(&peer, now, store);
        self.end_round_if_done(now, store);
    }
}
