//! A counter that goes up and down (a PN-counter): per actor, the total it added and
//! the total it took away. Each actor only ever raises its own totals, so merging
//! keeps the larger of each, and the value is the sum of the additions less the sum of
//! the subtractions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Actor, TypeError};

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counter {
    /// Per actor: (added, taken away).
    totals: BTreeMap<Actor, (u64, u64)>,
}

impl Counter {
    /// The counter's value.
    pub fn value(&self) -> i128 {
        self.totals
            .values()
            .map(|&(up, down)| i128::from(up) - i128::from(down))
            .sum()
    }

    /// `actor` adds `amount` (negative: takes it away). Refused when the value would
    /// leave the range of an `i64`, or an actor's total would overflow.
    pub fn add(&mut self, actor: Actor, amount: i64) -> Result<(), TypeError> {
        let value = self.value();
        let next = value + i128::from(amount);
        let overflow = || TypeError::CounterOverflow {
            value,
            sign: if amount < 0 { '-' } else { '+' },
            amount: amount.unsigned_abs(),
        };
        if next < i128::from(i64::MIN) || next > i128::from(i64::MAX) {
            return Err(overflow());
        }
        let (up, down) = self.totals.entry(actor).or_default();
        let total = if amount >= 0 { up } else { down };
        *total = total
            .checked_add(amount.unsigned_abs())
            .ok_or_else(overflow)?;
        Ok(())
    }

    /// Keeps the larger of each actor's totals.
    pub fn merge(&mut self, other: &Counter) {
        for (&actor, &(up, down)) in &other.totals {
            let mine = self.totals.entry(actor).or_default();
            mine.0 = mine.0.max(up);
            mine.1 = mine.1.max(down);
        }
    }
}
