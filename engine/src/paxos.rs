//! Single-decree Paxos per key, in the shape of CASPaxos: no leader, every node may
//! propose, and a proposal is a function of the key's current value.
//!
//! A proposer picks a ballot above any it has seen, asks the key's replicas to
//! *promise* it (each answers with what it has accepted), takes the value accepted at
//! the highest ballot among a quorum of promises as the key's current value, applies
//! its operation to it, and asks the replicas to *accept* the result at its ballot.
//! Once a quorum has accepted, the result is chosen. A read writes the current value
//! back at its own ballot, unless every promise of the quorum reports the same accepted
//! ballot and no proposal in flight (then that value is chosen already and no later
//! one can have completed).
//!
//! Ballots are versions (the proposer's HLC reading and its node id): the accepted
//! value of a key is simply its record, stored under the ballot as its version, so the
//! Merkle trees cover it, and anti-entropy and read repair order copies of it exactly
//! as the acceptors do. The promise is kept beside it ([`Acceptor::promised`]), and a
//! per-partition floor ([`Acceptor::floor`]) remembers the highest tombstone purged, so
//! a key whose delete was collected never accepts a ballot the delete's replicas would
//! have refused (which would let the purged tombstone, still held by a replica that
//! has not purged it yet, win over a write acknowledged since).
//!
//! This module is pure: what an acceptor answers given its state, what a proposal
//! makes of the current value, and when a phase has enough answers. The node core
//! sends the messages and the store keeps the state.

use serde::{Deserialize, Serialize};

use crate::record::{Payload, Record, Version};

/// A proposal's number: its proposer's HLC reading and node id.
pub type Ballot = Version;

/// An acceptor's state of one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Acceptor {
    /// The highest ballot promised and not accepted since.
    pub promised: Option<Ballot>,
    /// The value accepted at the highest ballot (the key's record).
    pub accepted: Option<Record>,
    /// The highest tombstone version purged from the key's partition.
    pub floor: Option<Ballot>,
}

/// An acceptor's answer to a prepare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PrepareReply {
    /// Promised: no ballot below this one will be accepted here.
    Promised {
        /// What the acceptor had accepted.
        accepted: Option<Record>,
        /// No other proposal was in flight here: no promise stood above what was
        /// accepted.
        quiet: bool,
    },
    /// Refused: the acceptor promised or accepted this ballot or a higher one.
    Rejected {
        /// The highest ballot it knows of.
        seen: Ballot,
    },
}

/// An acceptor's answer to an accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AcceptReply {
    /// Accepted (or accepted already).
    Accepted,
    /// Refused: the acceptor promised a higher ballot, or accepted one.
    Rejected {
        /// The highest ballot it knows of.
        seen: Ballot,
    },
}

/// What an acceptor does with a request: the answer, and whether its state changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<R> {
    /// The answer.
    pub reply: R,
    /// Store this promise.
    pub promise: Option<Ballot>,
    /// Store this record (and drop the promise it fulfils).
    pub accept: Option<Record>,
}

impl Acceptor {
    /// The highest ballot this acceptor knows of for its key.
    pub fn highest(&self) -> Option<Ballot> {
        let accepted = self.accepted.as_ref().map(|r| r.version);
        self.promised.max(accepted).max(self.floor)
    }

    /// A prepare at `ballot`.
    pub fn prepare(&self, ballot: Ballot) -> Decision<PrepareReply> {
        match self.highest() {
            Some(seen) if ballot <= seen => Decision {
                reply: PrepareReply::Rejected { seen },
                promise: None,
                accept: None,
            },
            _ => {
                let accepted_at = self.accepted.as_ref().map(|r| r.version);
                let quiet = self.promised.is_none_or(|p| Some(p) <= accepted_at);
                Decision {
                    reply: PrepareReply::Promised {
                        accepted: self.accepted.clone(),
                        quiet,
                    },
                    promise: Some(ballot),
                    accept: None,
                }
            }
        }
    }

    /// An accept of `record` at its version's ballot; with `next`, the acceptor also
    /// promises that ballot of the same proposer, so that its next proposal on the key
    /// needs no prepare (the prepare rides on this accept).
    pub fn accept(&self, record: Record, next: Option<Ballot>) -> Decision<AcceptReply> {
        let ballot = record.version;
        let accepted_at = self.accepted.as_ref().map(|r| r.version);
        if accepted_at == Some(ballot) {
            // A duplicate: the value at a ballot is the proposer's one value.
            return Decision {
                reply: AcceptReply::Accepted,
                promise: None,
                accept: None,
            };
        }
        let promised_ok = self.promised.is_none_or(|p| ballot >= p);
        let above = accepted_at.is_none_or(|a| ballot > a) && self.floor.is_none_or(|f| ballot > f);
        if promised_ok && above {
            Decision {
                reply: AcceptReply::Accepted,
                promise: next.filter(|n| *n > ballot),
                accept: Some(record),
            }
        } else {
            Decision {
                reply: AcceptReply::Rejected {
                    seen: self.highest().unwrap_or(ballot),
                },
                promise: None,
                accept: None,
            }
        }
    }
}

/// What a client expects a key to hold for a compare-and-set to swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No value (never written, or deleted).
    Absent,
    /// Exactly these bytes.
    Value(Vec<u8>),
}

/// An operation on a key of a linearizable bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinOp {
    /// Read the value.
    Get,
    /// Write a value (`None`: delete).
    Put(Option<Vec<u8>>),
    /// Write `value` (`None`: delete) if the key holds what `expect` says.
    Cas {
        /// What the key must hold.
        expect: Expect,
        /// What it then holds.
        value: Option<Vec<u8>>,
    },
}

impl LinOp {
    /// Whether the operation only reads when it succeeds without writing.
    pub fn reads(&self) -> bool {
        matches!(self, LinOp::Get)
    }
}

/// How an operation on a linearizable key ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinOutcome {
    /// Its value was chosen, at this version.
    Written(Version),
    /// A read: what the key holds (a tombstone, or nothing, when it holds no value).
    Read(Option<Record>),
    /// A compare-and-set that found something else: what the key holds.
    NotSwapped(Option<Record>),
}

/// What an operation makes of the key's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write this payload (a value or a tombstone).
    Write(Payload),
    /// Leave the value as it is and answer with it (a read; a compare-and-set that
    /// did not match).
    Keep,
}

/// The value of a record, if it holds one.
pub fn value_of(record: Option<&Record>) -> Option<&[u8]> {
    record.and_then(|r| r.payload.value())
}

impl LinOp {
    /// The step this operation takes on `current`.
    pub fn step(&self, current: Option<&Record>) -> Step {
        let payload = |value: &Option<Vec<u8>>| match value {
            Some(v) => Payload::Value(v.clone()),
            None => Payload::Tombstone,
        };
        match self {
            LinOp::Get => Step::Keep,
            LinOp::Put(value) => Step::Write(payload(value)),
            LinOp::Cas { expect, value } => {
                let holds = value_of(current);
                let matches = match expect {
                    Expect::Absent => holds.is_none(),
                    Expect::Value(want) => holds == Some(want.as_slice()),
                };
                if matches {
                    Step::Write(payload(value))
                } else {
                    Step::Keep
                }
            }
        }
    }
}

/// The current value among a quorum's promises: what was accepted at the highest
/// ballot. `settled`: every promise reported that same ballot and no proposal in
/// flight, so it is chosen and nothing newer completed.
pub fn current<'a>(
    promises: impl IntoIterator<Item = (&'a Option<Record>, bool)>,
) -> (Option<&'a Record>, bool) {
    let mut highest: Option<&Record> = None;
    let mut ballots = Vec::new();
    let mut all_quiet = true;
    for (accepted, quiet) in promises {
        all_quiet &= quiet;
        ballots.push(accepted.as_ref().map(|r| r.version));
        if let Some(record) = accepted
            && highest.is_none_or(|h| record.version > h.version)
        {
            highest = Some(record);
        }
    }
    let same = ballots.windows(2).all(|w| w[0] == w[1]);
    (highest, all_quiet && same)
}

/// Answers needed from a partition's `copies` replicas for a phase: a majority.
pub fn majority(copies: usize) -> usize {
    copies / 2 + 1
}

/// Whether a phase has enough positive answers, counted as the coordinator counts a
/// quorum write: a majority of the copies from the replicas that count now, and one
/// more per target beyond the copies from any target. So whichever of the targets
/// count once a partition's move ends, a majority of them answered: quorums taken
/// before, during and after the move intersect.
pub fn enough(ok: usize, counted_ok: usize, targets: usize, copies: usize) -> bool {
    let beyond = targets.saturating_sub(copies);
    counted_ok >= majority(copies) && ok >= majority(copies) + beyond
}

#[cfg(test)]
mod tests;
