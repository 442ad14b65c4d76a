//! Linearizable buckets: each operation on a key is a proposal of single-decree Paxos
//! over the key's replicas (see [`crate::paxos`]), made by the node the client asked.
//!
//! A proposal's attempt prepares at a fresh ballot, then accepts what its operation
//! makes of the current value. An attempt whose prepare cannot gather a quorum (a
//! higher ballot met, replicas away) is retried after a random pause, up to
//! [`ATTEMPTS_MAX`] attempts, and then fails with `contention` or `unavailable`: no
//! acceptor took anything of it, so the failure is definite. An accept that cannot
//! gather a quorum is retried only for a read (writing back a value changes nothing);
//! a write's outcome is then unknown, and the client is told so, because an acceptor
//! that accepted it may carry it into the next proposal.

use super::acceptor::AcceptorFor;
use super::io::{Pending, Purpose, StorePurpose};
use super::*;
use crate::paxos::{
    AcceptReply, Ballot, Expect, LinOp, LinOutcome, PrepareReply, Step, current as current_value,
    enough,
};
use crate::placement::ReplicaSet;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::{Payload, Record, Version};

mod decide;

/// Attempts of one proposal before it gives up.
pub const ATTEMPTS_MAX: u32 = 8;
/// The first retry's pause is drawn below this; each retry doubles it.
const BACKOFF_BASE_MS: u64 = 4;
/// The longest pause drawn before a retry.
const BACKOFF_MAX_MS: u64 = 250;
/// How long a ballot lives: an acceptor refuses a prepare or an accept of a ballot
/// older than this (by its clock), and drops promises once they are this old, so a
/// proposal that never finished does not hold its key's repairs back for good (a
/// promise refuses records below it, from any path). Far above any proposal's life,
/// and the clock bound.
pub const BALLOT_LIFE_MS: u64 = 20_000;
/// How often old promises are dropped while there may be some.
const PROMISE_SWEEP_MS: u64 = 2_000;

/// Which proposal, attempt and acceptor a request or store change was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Asked {
    proposal: u64,
    /// The phase: the proposal's round trip it was sent in.
    phase: u32,
    target: usize,
}

/// An acceptor's answer, as a proposal counts it.
#[derive(Debug, Clone)]
pub(super) enum Heard {
    Waiting,
    /// A replica's record, read without a promise.
    Peeked(Option<Record>),
    Promised {
        accepted: Option<Record>,
        quiet: bool,
    },
    Accepted,
    Rejected(Ballot),
    Failed(String),
}

enum Phase {
    /// A read of the replicas' records, no promise asked: enough of them at one
    /// ballot is a value chosen, and answers a read or a compare-and-set that does
    /// not match without disturbing any proposal.
    Peek,
    Prepare,
    /// The value proposed, and what the client is told once it is chosen.
    Accept {
        record: Record,
        outcome: LinOutcome,
    },
}

/// Who waits for a proposal's outcome.
pub(crate) enum Waiter {
    /// A client of this node's.
    Ask(AskId),
    /// A node that handed its client's operation to this one, the key's home: the
    /// operation's id.
    Peer(u64),
}

struct Proposal {
    waiter: Waiter,
    key: Vec<u8>,
    op: LinOp,
    attempt: u32,
    ballot: Ballot,
    /// The highest ballot an acceptor told of.
    seen: Option<Ballot>,
    set: ReplicaSet,
    phase: Phase,
    heard: Vec<Heard>,
    round_trips: u32,
    /// The ballots of earlier attempts whose write some acceptor may hold: the next
    /// prepare tells whether one was chosen. Every one counts: an attempt that
    /// decided afresh may reach some acceptors too, and an older attempt's value may
    /// still be the one a quorum reports.
    recover: Vec<Ballot>,
    /// The next ballot promised along with this proposal's accepts.
    next: Option<Ballot>,
}

/// What a completed proposal left this node knowing of a key: a quorum accepted
/// `current` and promised `next`, so no other value can be chosen below `next`; the
/// key's next write here goes straight to its accept at `next` (one round trip). If
/// another proposal came between, the accept is refused and the write takes the
/// usual way.
struct Lease {
    next: Ballot,
    current: Option<Record>,
    /// The replica set it was made with: a lease is for that set only.
    targets: Vec<String>,
}

/// The proposals this node makes.
#[derive(Default)]
pub(crate) struct Proposals {
    by_id: BTreeMap<u64, Proposal>,
    next: u64,
    /// Attempts waiting out their pause, by when.
    retries: BTreeSet<(Millis, u64)>,
    /// The keys with a proposal running, and the proposals waiting their turn: one
    /// at a time per key, so this node's proposals never compete with each other.
    busy: BTreeMap<Vec<u8>, VecDeque<u64>>,
    /// Keys whose next write may skip its prepare.
    leases: BTreeMap<Vec<u8>, Lease>,
    /// When this node's acceptor last made a promise (or started: promises may be
    /// left from before), while old ones may still be held.
    promised_at: Option<Millis>,
    sweep_due: Millis,
}

impl Proposals {
    /// Proposals in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.by_id.len()
    }

    /// When the next retry, or the next drop of old promises, is due.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let sweep = self.promised_at.map(|_| self.sweep_due);
        self.retries
            .first()
            .map(|&(at, _)| at)
            .into_iter()
            .chain(sweep)
            .min()
    }

    /// A promise was made at `at` (or the node started then: promises may be left
    /// from before): sweeps run until none is held.
    pub(crate) fn promised(&mut self, at: Millis) {
        if self.promised_at.is_none() {
            self.sweep_due = Millis(at.0 + PROMISE_SWEEP_MS);
        }
        self.promised_at = Some(at);
    }
}

impl NodeCore {
    /// Starts a client's operation on a key of a linearizable bucket.
    pub(super) fn begin_linearizable(
        &mut self,
        ask: AskId,
        key: Vec<u8>,
        op: LinOp,
        after: Option<Timestamp>,
        now: Now,
        store: &Store,
    ) -> Result<(), ErrorReply> {
        let value = match &op {
            LinOp::Put(value) | LinOp::Cas { value, .. } => value.as_deref(),
            LinOp::Get => None,
        };
        if let Some(value) = value {
            crate::limits::check_value(value, self.config.value_bytes_max)
                .map_err(|e| ErrorReply::new(ErrorCode::LimitExceeded, e.to_string()))?;
        }
        if let LinOp::Cas {
            expect: Expect::Value(want),
            ..
        } = &op
        {
            crate::limits::check_value(want, self.config.value_bytes_max)
                .map_err(|e| ErrorReply::new(ErrorCode::LimitExceeded, e.to_string()))?;
        }
        // Every proposal issues a ballot, a version a read may write back.
        self.may_issue(now)?;
        self.observe_session(after, now)?;
        if op.reads() {
            self.counters.reads += 1;
        } else {
            self.counters.writes += 1;
        }
        if let Some(home) = self.home_of(&key).filter(|_| self.config.route_to_home) {
            self.forward(ask, home, key, op, now);
            return Ok(());
        }
        self.propose_here(Waiter::Ask(ask), key, op, now, store);
        Ok(())
    }

    /// Runs an operation as a proposal of this node's, for `waiter`.
    pub(super) fn propose_here(
        &mut self,
        waiter: Waiter,
        key: Vec<u8>,
        op: LinOp,
        now: Now,
        store: &Store,
    ) {
        let id = self.proposals.next;
        self.proposals.next += 1;
        let proposal = Proposal {
            waiter,
            key,
            op,
            attempt: 0,
            ballot: Ballot::default(),
            seen: None,
            set: ReplicaSet::settled(Vec::new()),
            phase: Phase::Prepare,
            heard: Vec::new(),
            round_trips: 0,
            recover: Vec::new(),
            next: None,
        };
        if let Some(queue) = self.proposals.busy.get_mut(&proposal.key) {
            queue.push_back(id);
            self.proposals.by_id.insert(id, proposal);
            return;
        }
        self.proposals
            .busy
            .insert(proposal.key.clone(), VecDeque::new());
        self.proposals.by_id.insert(id, proposal);
        self.start(id, now, store);
    }

    /// Runs proposal `id`: a peek first when a value chosen already may answer it.
    fn start(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        if !proposal.op.reads()
            && let Some(lease) = self.proposals.leases.remove(&proposal.key)
        {
            let set = self.view.replica_set(&proposal.key);
            let fresh = lease.next.hlc.wall_ms() + BALLOT_LIFE_MS / 2 > now.wall_ms();
            if let (true, true, Step::Write(payload)) = (
                fresh,
                set.targets == lease.targets,
                proposal.op.step(lease.current.as_ref()),
            ) {
                // This node's clock issues the lease's ballot as a version: it must
                // never issue it, or one below it, again.
                let _ = self.clock.observe(lease.next.hlc, now.wall_ms());
                let proposal = self.proposals.by_id.get_mut(&id).expect("looked up");
                proposal.attempt += 1;
                proposal.ballot = lease.next;
                proposal.set = set;
                self.counters.lin_fast += 1;
                return self.propose(id, payload, LinOutcome::Written(lease.next), now, store);
            }
        }
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        match proposal.op {
            LinOp::Get | LinOp::Cas { .. } => self.peek(id, now, store),
            LinOp::Put(_) => self.attempt(id, now, store),
        }
    }

    /// Reads the records of the key's replicas, promising nothing.
    fn peek(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get_mut(&id) else {
            return;
        };
        let key = proposal.key.clone();
        let set = self.view.replica_set(&key);
        proposal.heard = vec![Heard::Waiting; set.targets.len()];
        proposal.set = set;
        proposal.phase = Phase::Peek;
        proposal.round_trips += 1;
        let phase = proposal.round_trips;
        let targets = proposal.set.targets.clone();
        let timeout = self.config.replica_timeout_ms;
        let mut heard = Vec::new();
        for (target, name) in targets.iter().enumerate() {
            let asked = Asked {
                proposal: id,
                phase,
                target,
            };
            if *name == self.me.name {
                let local = match store.get(&key) {
                    Ok(record) => Heard::Peeked(record),
                    Err(err) => Heard::Failed(format!("{}: {err}", self.me.name)),
                };
                heard.push((asked, local));
            } else if let Some(peer) = self.live_id(name) {
                let request = Request::ReadLocal { key: key.clone() };
                self.send(&peer, request, Purpose::Paxos(asked), timeout, now);
            } else {
                heard.push((asked, Heard::Failed(format!("{name} is not alive"))));
            }
        }
        for (asked, h) in heard {
            self.heard(asked, h, now, store);
        }
    }

    /// A quorum of replicas was read: answer from a value chosen, or propose.
    fn peeked(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let peeks: Vec<(&Option<Record>, bool)> = proposal
            .heard
            .iter()
            .filter_map(|h| match h {
                Heard::Peeked(record) => Some((record, true)),
                _ => None,
            })
            .collect();
        let (current, agreed) = current_value(peeks);
        if agreed && proposal.op.step(current) == Step::Keep {
            let current = current.cloned();
            let outcome = match proposal.op {
                LinOp::Get => LinOutcome::Read(current),
                _ => LinOutcome::NotSwapped(current),
            };
            self.counters.lin_fast += 1;
            return self.finish(id, Ok(outcome), now, store);
        }
        self.attempt(id, now, store);
    }

    /// A ballot above every one this node has issued or been told of.
    fn ballot_above(&mut self, seen: Option<Ballot>, now: Now) -> Result<Ballot, ErrorReply> {
        let mut hlc = self.clock.tick(now.wall_ms());
        if let Some(seen) = seen
            && (Version {
                hlc,
                node: self.node_id,
            }) <= seen
        {
            let cluster_ms = self.cluster_wall_ms(now);
            hlc = self
                .clock
                .observe_against(seen.hlc, now.wall_ms(), cluster_ms)
                .map_err(|err| {
                    ErrorReply::new(
                        ErrorCode::ClockOffset,
                        format!("a replica holds a ballot this node's clock refuses: {err}"),
                    )
                })?;
        }
        Ok(Version {
            hlc,
            node: self.node_id,
        })
    }

    /// Starts the next attempt of proposal `id`: a prepare at a fresh ballot.
    fn attempt(&mut self, id: u64, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let (seen, key) = (proposal.seen, proposal.key.clone());
        self.proposals.leases.remove(&key);
        let ballot = match self.ballot_above(seen, now) {
            Ok(ballot) => ballot,
            Err(err) => return self.finish(id, Err(err), now, store),
        };
        let set = self.view.replica_set(&key);
        let proposal = self.proposals.by_id.get_mut(&id).expect("looked up");
        proposal.attempt += 1;
        proposal.ballot = ballot;
        proposal.heard = vec![Heard::Waiting; set.targets.len()];
        proposal.set = set;
        proposal.phase = Phase::Prepare;
        proposal.round_trips += 1;
        self.ask_acceptors(
            id,
            |_| Request::Prepare {
                key: key.clone(),
                ballot,
            },
            now,
            store,
        );
    }

    /// Sends a phase's request to every target of proposal `id` (this node's own
    /// acceptor through the store).
    pub(super) fn ask_acceptors(
        &mut self,
        id: u64,
        request: impl Fn(usize) -> Request,
        now: Now,
        store: &Store,
    ) {
        let Some(proposal) = self.proposals.by_id.get(&id) else {
            return;
        };
        let phase = proposal.round_trips;
        let targets = proposal.set.targets.clone();
        let me = self.me.name.clone();
        let timeout = self.config.replica_timeout_ms;
        let mut away = Vec::new();
        for (target, name) in targets.iter().enumerate() {
            let asked = Asked {
                proposal: id,
                phase,
                target,
            };
            let request = request(target);
            if *name == me {
                self.acceptor_work(request, AcceptorFor::Local(asked), now, store);
            } else if let Some(peer) = self.live_id(name) {
                self.send(&peer, request, Purpose::Paxos(asked), timeout, now);
            } else {
                away.push((asked, format!("{name} is not alive")));
            }
        }
        for (asked, why) in away {
            self.heard(asked, Heard::Failed(why), now, store);
        }
    }

    /// A peer answered a phase (or could not).
    pub(super) fn paxos_answered(
        &mut self,
        pending: Pending,
        response: Result<Response, String>,
        now: Now,
        store: &Store,
    ) {
        let Purpose::Paxos(asked) = pending.purpose else {
            return;
        };
        let heard = match response {
            Ok(Response::Record { record }) => Heard::Peeked(record),
            Ok(Response::Promise(p)) => heard_of_promise(p),
            Ok(Response::Accept(a)) => heard_of_accept(a),
            Ok(Response::Error(err)) => Heard::Failed(format!("{}: {}", pending.to, err.message)),
            Ok(other) => Heard::Failed(format!("unexpected answer from {}: {other:?}", pending.to)),
            Err(why) => Heard::Failed(format!("{}: {why}", pending.to)),
        };
        self.heard(asked, heard, now, store);
    }

    /// Counts an acceptor's answer, and moves the proposal on if it can.
    pub(super) fn heard(&mut self, asked: Asked, heard: Heard, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.get_mut(&asked.proposal) else {
            return;
        };
        if proposal.round_trips != asked.phase {
            return;
        }
        let Some(slot) = proposal.heard.get_mut(asked.target) else {
            return;
        };
        if !matches!(slot, Heard::Waiting) {
            return;
        }
        match &heard {
            Heard::Rejected(seen) => proposal.seen = proposal.seen.max(Some(*seen)),
            Heard::Promised {
                accepted: Some(record),
                ..
            } => proposal.seen = proposal.seen.max(Some(record.version)),
            _ => {}
        }
        *slot = heard;
        self.progress(asked.proposal, now, store);
    }

    /// Proposal `id` ends: the client is answered.
    fn finish(&mut self, id: u64, result: Result<LinOutcome, ErrorReply>, now: Now, store: &Store) {
        let Some(proposal) = self.proposals.by_id.remove(&id) else {
            return;
        };
        if result.is_err() {
            self.proposals.leases.remove(&proposal.key);
        }
        if result.is_ok() {
            self.counters.lin_ops += 1;
            self.counters.lin_round_trips += u64::from(proposal.round_trips);
        }
        match proposal.waiter {
            Waiter::Ask(ask) => self.answer(ask, lin_answer(result)),
            Waiter::Peer(id) => {
                let response = match result {
                    Ok(outcome) => Response::Proposed(outcome),
                    Err(err) => Response::Error(err),
                };
                self.proposed_for_peer(id, response);
            }
        }
        let next = match self.proposals.busy.get_mut(&proposal.key) {
            Some(queue) => queue.pop_front(),
            None => None,
        };
        match next {
            Some(next) => self.start(next, now, store),
            None => {
                self.proposals.busy.remove(&proposal.key);
            }
        }
    }

    /// Starts the attempts whose pause is over; drops old promises.
    pub(super) fn paxos_timeout(&mut self, now: Now, store: &Store) {
        if let Some(at) = self.proposals.promised_at
            && self.proposals.sweep_due <= now.mono()
        {
            self.proposals.sweep_due = Millis(now.mono().0 + PROMISE_SWEEP_MS);
            // Sweeps go on while promises are held: one from a clock ahead of this
            // node's (or made before a restart that set this clock back) outlives
            // any fixed number of sweeps. A read error counts as promises held.
            let held = store.holds_promises().unwrap_or(true);
            if !held && now.mono().0 > at.0 + 2 * PROMISE_SWEEP_MS {
                // None left, and any promise made since the last look has landed.
                self.proposals.promised_at = None;
            } else {
                // Judged by the earlier of this node's clock and the cluster's, so a
                // clock ahead does not cut a live proposal's promises short.
                let wall = self.rules_wall_ms(now);
                let before = Timestamp::new(wall.saturating_sub(BALLOT_LIFE_MS), 0);
                self.store(
                    StoreWork::DropPromises(before),
                    StorePurpose::Meta("dropping old promises"),
                );
            }
        }
        while let Some(&(at, id)) = self.proposals.retries.first() {
            if at > now.mono() {
                break;
            }
            self.proposals.retries.pop_first();
            self.attempt(id, now, store);
        }
    }
}

/// A client's answer for how its operation ended.
pub(super) fn lin_answer(result: Result<LinOutcome, ErrorReply>) -> Answer {
    match result {
        Ok(LinOutcome::Written(version)) => Answer::Written(version),
        Ok(LinOutcome::Read(record)) => Answer::Read {
            record,
            kind: crate::buckets::BucketType::Linearizable,
        },
        Ok(LinOutcome::NotSwapped(record)) => Answer::NotSwapped(record),
        Err(err) => Answer::Failed(err),
    }
}

pub(super) fn heard_of_promise(reply: PrepareReply) -> Heard {
    match reply {
        PrepareReply::Promised { accepted, quiet } => Heard::Promised { accepted, quiet },
        PrepareReply::Rejected { seen } => Heard::Rejected(seen),
    }
}

pub(super) fn heard_of_accept(reply: AcceptReply) -> Heard {
    match reply {
        AcceptReply::Accepted => Heard::Accepted,
        AcceptReply::Rejected { seen } => Heard::Rejected(seen),
    }
}

/// A write whose outcome nobody can tell.
fn unknown(ballot: Ballot, targets: usize, why: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Unavailable,
        format!(
            "outcome unknown: the write (ballot {}) reached some of the key's {targets} replicas and no quorum confirmed it ({why}); it may have taken effect: read the key to see",
            ballot.hlc
        ),
    )
}

fn describe(rejected: bool, failures: &[String]) -> String {
    let mut parts = Vec::new();
    if rejected {
        parts.push("a replica had promised a higher ballot to another proposal".to_string());
    }
    parts.extend(failures.iter().take(3).cloned());
    if parts.is_empty() {
        "no answers".to_string()
    } else {
        parts.join("; ")
    }
}
