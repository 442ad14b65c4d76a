//! What a proposal does with the answers of a phase: move on to the next phase,
//! retry after a pause, recover an attempt some acceptor may hold, or end.

use super::*;

impl NodeCore {
    /// Decides what proposal `id` does with the answers it has.
    pub(super) fn progress(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let counts: Vec<bool> = proposal
            .set
            .targets
            .iter()
            .map(|t| proposal.set.counted.contains(t))
            .collect();
        let positive = |h: &Heard| {
            matches!(
                (&proposal.phase, h),
                (Phase::Peek, Heard::Peeked(_))
                    | (Phase::Prepare, Heard::Promised { .. })
                    | (Phase::Accept { .. }, Heard::Accepted)
            )
        };
        let ok = proposal.heard.iter().filter(|h| positive(h)).count();
        let counted_ok = proposal
            .heard
            .iter()
            .zip(&counts)
            .filter(|(h, c)| **c && positive(h))
            .count();
        let waiting = proposal
            .heard
            .iter()
            .zip(&counts)
            .filter(|(h, _)| matches!(h, Heard::Waiting))
            .map(|(_, c)| *c)
            .collect::<Vec<bool>>();
        let targets = proposal.set.targets.len();
        let copies = proposal.set.copies;
        if enough(ok, counted_ok, targets, copies) {
            match &proposal.phase {
                Phase::Peek => self.peeked(id, now, store),
                Phase::Prepare => self.promised(id, now, store),
                Phase::Accept { record, outcome } => {
                    let outcome = outcome.clone();
                    // The accepts promised this proposal's next ballot: the key's next
                    // write here may skip its prepare.
                    if let Some(next) = proposal.next {
                        let lease = Lease {
                            next,
                            current: Some(record.clone()),
                            targets: proposal.set.targets.clone(),
                        };
                        self.proposals.leases.insert(proposal.key.clone(), lease);
                    }
                    self.finish(id, Ok(outcome), now, store);
                }
            }
            return;
        }
        // Could the answers still waiting make it?
        let could_ok = ok + waiting.len();
        let could_counted = counted_ok + waiting.iter().filter(|c| **c).count();
        if enough(could_ok, could_counted, targets, copies) {
            return;
        }
        if matches!(proposal.phase, Phase::Peek) {
            // Too few replicas read: a proposal finds the value instead.
            return self.attempt(id, now, store);
        }
        let rejected = proposal
            .heard
            .iter()
            .any(|h| matches!(h, Heard::Rejected(_)));
        let failures: Vec<String> = proposal
            .heard
            .iter()
            .filter_map(|h| match h {
                Heard::Failed(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        let accepting_write = matches!(
            &proposal.phase,
            Phase::Accept {
                outcome: LinOutcome::Written(_),
                ..
            }
        );
        if accepting_write {
            // Whether any acceptor may hold the write decides what comes next, so
            // every answer is awaited (the replica timeout bounds the wait).
            if !waiting.is_empty() {
                return;
            }
            let accepted = proposal
                .heard
                .iter()
                .filter(|h| matches!(h, Heard::Accepted))
                .count();
            if accepted > 0 || !failures.is_empty() {
                // Some acceptor holds it, or may: the next attempt finds out whether it
                // was chosen before it decides anything else.
                let ballot = proposal.ballot;
                let proposal = self.proposals.by_id.get_mut(&id).expect("looked up");
                proposal.recover.push(ballot);
            }
        }
        let proposal = self.proposals.by_id.get(&id).expect("looked up");
        if proposal.attempt >= ATTEMPTS_MAX {
            if let Some(&ballot) = proposal.recover.first() {
                return self.finish(
                    id,
                    Err(unknown(ballot, targets, &describe(rejected, &failures))),
                    now,
                    store,
                );
            }
            let (code, what) = if rejected {
                (ErrorCode::Contention, "contention")
            } else {
                (ErrorCode::Unavailable, "unavailable")
            };
            let err = ErrorReply::new(
                code,
                format!(
                    "{what}: no quorum of the key's replicas agreed in {ATTEMPTS_MAX} attempts ({}); nothing was written",
                    describe(rejected, &failures)
                ),
            );
            return self.finish(id, Err(err), now, store);
        }
        // Nothing of this attempt can be chosen: pause, then try a higher ballot.
        let attempt = proposal.attempt;
        let window = (BACKOFF_BASE_MS << attempt.min(16)).min(BACKOFF_MAX_MS);
        let pause = self.random() % window.max(1);
        self.counters.lin_retries += 1;
        let at = Millis(now.mono().0 + pause);
        if let Some(proposal) = self.proposals.by_id.get_mut(&id) {
            // Answers of the attempt abandoned find no slot and are ignored.
            proposal.heard.clear();
        }
        self.proposals.retries.insert((at, id));
    }

    /// A quorum promised: the current value is known; accept what the operation makes
    /// of it, or answer at once when it only reads a value already chosen.
    pub(super) fn promised(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let promises: Vec<(&Option<Record>, bool)> = proposal
            .heard
            .iter()
            .filter_map(|h| match h {
                Heard::Promised { accepted, quiet } => Some((accepted, *quiet)),
                _ => None,
            })
            .collect();
        let (current, settled) = current_value(promises);
        let current = current.cloned();
        let ballot = proposal.ballot;
        let recovering = !proposal.recover.is_empty();
        if let Some(&earliest) = proposal.recover.iter().min() {
            let at = current.as_ref().map(|r| r.version);
            if at.is_some_and(|at| proposal.recover.contains(&at)) {
                // An earlier attempt's value is the current one: finish choosing it,
                // at this ballot. The operation takes effect once.
                let payload = current.map_or(Payload::Tombstone, |r| r.payload);
                return self.propose(id, payload, LinOutcome::Written(ballot), now, store);
            }
            if at > Some(earliest) {
                // Another proposal's value, above an earlier write of this one: that
                // write may have been chosen and then written over, or not; nothing
                // here tells which.
                let targets = proposal.set.targets.len();
                let why = "a later proposal's value is the key's current one";
                return self.finish(id, Err(unknown(earliest, targets, why)), now, store);
            }
            // Nothing at or above any earlier ballot in a quorum that promised above
            // them: none was chosen and none ever will be. Decide afresh. The ballots
            // stay: an acceptor outside this quorum may still hold one, and a later
            // quorum report it as current, which is then this operation's value.
        }
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let step = proposal.op.step(current.as_ref());
        let (payload, outcome) = match step {
            Step::Write(payload) => (payload, LinOutcome::Written(ballot)),
            Step::Keep => {
                let outcome = match proposal.op {
                    LinOp::Get => LinOutcome::Read(current.clone()),
                    _ => LinOutcome::NotSwapped(current.clone()),
                };
                // After a recovery, the value is written back even when settled: the
                // earlier attempt's value, held by an acceptor outside this quorum,
                // must never become current later (a repair could copy it once the
                // promises of this attempt are gone), and a chosen ballot above it
                // makes sure of that.
                if settled && !recovering {
                    self.counters.lin_fast += 1;
                    return self.finish(id, Ok(outcome), now, store);
                }
                let payload = current
                    .as_ref()
                    .map_or(Payload::Tombstone, |r| r.payload.clone());
                (payload, outcome)
            }
        };
        self.propose(id, payload, outcome, now, store);
    }

    /// The accept phase: `payload` at the proposal's ballot.
    pub(super) fn propose(
        &mut self,
        id: u64,
        payload: Payload,
        outcome: LinOutcome,
        now: Now,
        store: &Store,
    ) {
        let Some(proposal) = self.proposals.by_id.get_mut(&id) else {
            return;
        };
        let record = Record {
            version: proposal.ballot,
            payload,
            expires_ms: None,
        };
        // The write fast path: the accepts also promise this node's next ballot on
        // the key, the successor of this one's reading. Only other nodes' ballots of
        // the same reading lie between, and none of them can gather a quorum past
        // acceptors that promised the next: once a quorum accepts, the value is the
        // key's current one up to that next ballot.
        let next = self.config.write_fast_path.then(|| Version {
            hlc: Timestamp::from_u64(proposal.ballot.hlc.as_u64().saturating_add(1)),
            node: self.node_id,
        });
        proposal.next = next;
        proposal.phase = Phase::Accept {
            record: record.clone(),
            outcome,
        };
        proposal.heard = vec![Heard::Waiting; proposal.set.targets.len()];
        proposal.round_trips += 1;
        let key = proposal.key.clone();
        self.ask_acceptors(
            id,
            |_| Request::Accept {
                key: key.clone(),
                record: Box::new(record.clone()),
                next,
            },
            now,
            store,
        );
    }
}
