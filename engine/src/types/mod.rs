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

    /// The next event of `actor`, now counted: at `at` (the actor's clock), or just
    /// above its last event when that is later.
    pub fn next(&mut self, actor: Actor, at: u64) -> Dot {
        let counter = self.0.entry(actor).or_default();
        *counter = counter.saturating_add(1).max(at);
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
    /// The change does not apply to the value's type.
    #[error("{change} does not apply to a {kind}")]
    WrongType {
        /// The value's type.
        kind: &'static str,
        /// The change.
        change: &'static str,
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

/// Which type a typed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A set.
    Set,
    /// A register that keeps concurrent writes.
    Siblings,
}

impl Kind {
    /// The type's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Set => "set",
            Kind::Siblings => "siblings",
        }
    }
}

/// An update to a typed value, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add to a counter (negative: take away).
    Incr(i64),
    /// Add members to a set.
    Add(Vec<Vec<u8>>),
    /// Remove members from a set (those this replica has seen added).
    Remove(Vec<Vec<u8>>),
    /// Empty the value, as the actor sees it: a counter back to zero (the actor takes
    /// away what it sees), a set without the members it sees, a register without the
    /// values it holds. Updates the actor has not seen survive, as for a remove.
    Clear(Kind),
    /// Write a register's value (`None`: delete), replacing what `context` saw.
    Put {
        /// The value.
        value: Option<Vec<u8>>,
        /// What the write saw.
        context: Context,
    },
}

impl Change {
    /// The type the change applies to.
    pub fn kind(&self) -> Kind {
        match self {
            Change::Incr(_) => Kind::Counter,
            Change::Add(_) | Change::Remove(_) => Kind::Set,
            Change::Put { .. } => Kind::Siblings,
            Change::Clear(kind) => *kind,
        }
    }

    /// A short name for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Incr(_) => "incr",
            Change::Add(_) => "sadd",
            Change::Remove(_) => "srem",
            Change::Clear(_) => "delete",
            Change::Put { .. } => "put",
        }
    }
}

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
    /// An empty value of `kind`.
    pub fn empty(kind: Kind) -> State {
        match kind {
            Kind::Counter => State::Counter(Counter::default()),
            Kind::Set => State::Set(Set::default()),
            Kind::Siblings => State::Siblings(Siblings::default()),
        }
    }

    /// Which type it is.
    pub fn kind(&self) -> Kind {
        match self {
            State::Counter(_) => Kind::Counter,
            State::Set(_) => Kind::Set,
            State::Siblings(_) => Kind::Siblings,
        }
    }

    /// `actor` makes `change` at event `at` (its clock: events of one actor on a key
    /// are numbered above every earlier one, so a replica that lost its state never
    /// reuses one). A change of another type is refused.
    pub fn apply(&mut self, change: &Change, actor: Actor, at: u64) -> Result<(), TypeError> {
        match (self, change) {
            (State::Counter(c), Change::Incr(n)) => c.add(actor, *n),
            (State::Set(s), Change::Add(members)) => {
                for m in members {
                    s.add(actor, m, at)?;
                }
                Ok(())
            }
            (State::Set(s), Change::Remove(members)) => {
                for m in members {
                    s.remove(m);
                }
                Ok(())
            }
            (State::Siblings(r), Change::Put { value, context }) => {
                r.put(actor, value.clone(), context, at)
            }
            (State::Counter(c), Change::Clear(_)) => {
                let value = i64::try_from(c.value()).map_err(|_| TypeError::CounterOverflow {
                    value: c.value(),
                    sign: '-',
                    amount: 0,
                })?;
                c.add(actor, value.checked_neg().unwrap_or(i64::MAX))
            }
            (State::Set(s), Change::Clear(_)) => {
                let members: Vec<Vec<u8>> = s.members().map(<[u8]>::to_vec).collect();
                for m in members {
                    s.remove(&m);
                }
                Ok(())
            }
            (State::Siblings(r), Change::Clear(_)) => {
                let context = r.context();
                r.put(actor, None, &context, at)
            }
            (state, change) => Err(TypeError::WrongType {
                kind: state.kind().as_str(),
                change: change.name(),
            }),
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
