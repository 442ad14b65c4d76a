//! A set where an add wins over a concurrent remove (an observed-remove set without
//! tombstones, ORSWOT): each member carries the events that added it; a remove drops
//! the member and the events it observed, and the set's clock remembers having seen
//! them, so a merge with a replica that still holds them knows they were removed. A
//! removed member leaves nothing behind but the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Actor, Clock, Dot, SET_MEMBER_BYTES_MAX, SET_MEMBERS_MAX, TypeError, surviving};

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Set {
    clock: Clock,
    members: BTreeMap<Vec<u8>, Vec<Dot>>,
}

impl Set {
    /// The members, in order.
    pub fn members(&self) -> impl Iterator<Item = &[u8]> {
        self.members.keys().map(Vec::as_slice)
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// `actor` adds `member` at its event `at` (again: its earlier adds are superseded
    /// by this one).
    pub fn add(&mut self, actor: Actor, member: &[u8], at: u64) -> Result<(), TypeError> {
        if member.len() > SET_MEMBER_BYTES_MAX {
            return Err(TypeError::MemberTooLong {
                bytes: member.len(),
                limit: SET_MEMBER_BYTES_MAX,
            });
        }
        if !self.members.contains_key(member) && self.members.len() >= SET_MEMBERS_MAX {
            return Err(TypeError::SetFull {
                members: self.members.len() + 1,
                limit: SET_MEMBERS_MAX,
            });
        }
        let dot = self.clock.next(actor, at);
        self.members.insert(member.to_vec(), vec![dot]);
        Ok(())
    }

    /// Removes `member`, as this replica sees it (the adds it observed); whether it was
    /// there.
    pub fn remove(&mut self, member: &[u8]) -> bool {
        self.members.remove(member).is_some()
    }

    /// Everything both hold, and what only one holds that the other has not seen
    /// removed.
    pub fn merge(&mut self, other: &Set) {
        let mut merged = BTreeMap::new();
        let keys: std::collections::BTreeSet<&Vec<u8>> =
            self.members.keys().chain(other.members.keys()).collect();
        for key in keys {
            let mine = self.members.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let theirs = other.members.get(key).map(Vec::as_slice).unwrap_or(&[]);
            let mut dots = surviving(mine, theirs, &other.clock);
            for dot in surviving(theirs, mine, &self.clock) {
                if !dots.contains(&dot) {
                    dots.push(dot);
                }
            }
            if !dots.is_empty() {
                dots.sort();
                merged.insert(key.clone(), dots);
            }
        }
        self.members = merged;
        self.clock.merge(&other.clock);
    }
}
