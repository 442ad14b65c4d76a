//! The data types a bucket can hold beside last-writer-wins: a counter, a set and a
//! register that keeps concurrent writes as siblings. Each is a state-based CRDT: a
//! replica's state merges with any other's into one that holds what both held, and
//! merging is commutative, associative and idempotent (property-tested), so replicas
//! that saw the same updates in any order, any number of times, hold the same state
//! and the same bytes.
//!
//! An update is made by one *actor* (a replica that applies it to its own state and
//! stamps it with the next event of its own counter), then spread by merging. Actors
//! are node ids; the events of one actor are numbered 1, 2, 3…
//!
//! States encode deterministically (ordered maps, postcard), so equal states are equal
//! bytes and the Merkle tree covers them as any record.

mod counter;
mod set;
mod siblings;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::counter::Counter;
pub use self::set::Set;
pub use self::siblings::{Context, Siblings};

/// Who made an update: a node id.
pub type Actor = u64;

/// An event of one actor: the actor, and the number of its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The actor.
    pub actor: Actor,
    /// Its event's number, from 1.
    pub counter: u64,
}

/// What a replica has seen of each actor: every event up to this number (a version
/// vector).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Clock(pub BTreeMap<Actor, u64>);

impl Clock {
    /// Whether the event `dot` is covered.
    pub fn covers(&self, dot: Dot) -> bool {
        self.0
            .get(&dot.actor)
            .is_some_and(|&seen| seen >= dot.counter)
    }

    /// The next event of `actor`, now counted.
    pub fn next(&mut self, actor: Actor) -> Dot {
        let counter = self.0.entry(actor).or_default();
        *counter = counter.saturating_add(1);
        Dot {
            actor,
            counter: *counter,
        }
    }

    /// Everything either clock covers.
    pub fn merge(&mut self, other: &Clock) {
        for (&actor, &seen) in &other.0 {
            let mine = self.0.entry(actor).or_default();
            *mine = (*mine).max(seen);
        }
    }
}

/// Keeps the dots of one side that the other side holds too or has not seen: a dot the
/// other side has seen and no longer holds was removed there.
fn surviving(mine: &[Dot], theirs: &[Dot], their_clock: &Clock) -> Vec<Dot> {
    mine.iter()
        .copied()
        .filter(|d| theirs.contains(d) || !their_clock.covers(*d))
        .collect()
}

/// Why an update cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// A counter would leave the range of a signed 64-bit integer.
    #[error(
        "counter overflow: {value} {sign} {amount} is outside -9223372036854775808..=9223372036854775807"
    )]
    CounterOverflow {
        /// The value now.
        value: i128,
        /// `+` or `-`.
        sign: char,
        /// The amount.
        amount: u64,
    },
    /// A set would hold more members than allowed.
    #[error("set full: {members} members, the limit is {limit}")]
    SetFull {
        /// Members it would hold.
        members: usize,
        /// The limit.
        limit: usize,
    },
    /// A set member is longer than allowed.
    #[error("set member is {bytes} bytes, the limit is {limit}")]
    MemberTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A key would hold more siblings than allowed.
    #[error(
        "too many siblings: the write would make {siblings} concurrent values, the limit is {limit}; read the key with its context and write the resolved value with it"
    )]
    TooManySiblings {
        /// Siblings it would hold.
        siblings: usize,
        /// The limit.
        limit: usize,
    },
    /// A typed state's bytes could not be read.
    #[error("stored {kind} state is corrupt: {why}")]
    Corrupt {
        /// Which type.
        kind: &'static str,
        /// Why.
        why: String,
    },
}

/// Most members a set holds.
pub const SET_MEMBERS_MAX: usize = 10_000;
/// Longest set member, bytes.
pub const SET_MEMBER_BYTES_MAX: usize = 1024;
/// Most siblings a key holds.
pub const SIBLINGS_MAX: usize = 64;

/// A typed value as stored and replicated: which type, and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// A counter.
    Counter(Counter),
    /// A set.
    Set(Set),
    /// A register that keeps concurrent writes.
    Siblings(Siblings),
}

impl State {
    /// The type's name, as buckets and errors say it.
    pub fn kind(&self) -> &'static str {
        match self {
            State::Counter(_) => "counter",
            State::Set(_) => "set",
            State::Siblings(_) => "siblings",
        }
    }

    /// Merges `other` into `self`; two states of different types keep `self` (a key
    /// holds one type: the bucket's, fixed at its creation). Whether `self` changed.
    pub fn merge(&mut self, other: &State) -> bool {
        let before = self.clone();
        match (&mut *self, other) {
            (State::Counter(a), State::Counter(b)) => a.merge(b),
            (State::Set(a), State::Set(b)) => a.merge(b),
            (State::Siblings(a), State::Siblings(b)) => a.merge(b),
            _ => return false,
        }
        *self != before
    }

    /// The deterministic encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a typed state always encodes")
    }

    /// Reads an encoding made by [`State::encode`].
    pub fn decode(bytes: &[u8]) -> Result<State, TypeError> {
        postcard::from_bytes(bytes).map_err(|e| TypeError::Corrupt {
            kind: "typed",
            why: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
