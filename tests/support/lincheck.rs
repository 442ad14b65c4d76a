//! Judging a history of operations on one linearizable key with an external checker
//! (`todc-utils`' Wing & Gong checker, with Lowe's memoization), against a register
//! with compare-and-set as the sequential specification. Shared by the simulator and
//! the process tests.
//!
//! An operation whose outcome is unknown (an error, no answer) may have taken effect
//! or not: a write of it returns after everything with its result unknown (the checker
//! may place it anywhere after its call, the end being as good as never); a read of
//! it is left out (it changed nothing).
//!
//! Unknown writes are what makes the search grow, so one whose value (every value
//! written is unique) nobody ever saw (no read or failed compare-and-set found it, no
//! compare-and-set expected it) is left out too. That keeps the verdict: if the rest
//! has a linearization, that one appended last is one of the whole; and any
//! linearization of the whole stays one without it, once the unknown operations
//! placed while the key held its unseen value are moved to the end (no known
//! operation can have depended on a value it did not see).

use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;

/// The sequential specification: one register that may hold a value.
pub struct Register;

/// An operation with what it returned (`None`: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinOp {
    /// A write (`None`: a delete).
    Put(Option<Vec<u8>>),
    /// A read and what it found.
    Get(Option<Vec<u8>>),
    /// A compare-and-set.
    Cas {
        expect: Option<Vec<u8>>,
        value: Vec<u8>,
        /// Swapped, or not and what it found; `None`: unknown.
        result: Option<Result<(), Option<Vec<u8>>>>,
    },
}

impl Specification for Register {
    type State = Option<Vec<u8>>;
    type Operation = LinOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &LinOp, state: &Self::State) -> (bool, Self::State) {
        match op {
            LinOp::Put(value) => (true, value.clone()),
            LinOp::Get(seen) => (seen == state, state.clone()),
            LinOp::Cas {
                expect,
                value,
                result,
            } => {
                let matches = state == expect;
                let next = if matches {
                    Some(value.clone())
                } else {
                    state.clone()
                };
                let valid = match result {
                    None => true,
                    Some(Ok(())) => matches,
                    Some(Err(found)) => !matches && found == state,
                };
                (valid, next)
            }
        }
    }
}

/// One operation on the key: when it was called and returned (`None`: its outcome is
/// unknown), in any unit of time shared by the whole history.
#[derive(Debug, Clone)]
pub struct Timed {
    pub called: u64,
    pub returned: Option<u64>,
    pub op: LinOp,
}

/// Whether the history is linearizable; the history, in time order, if not.
pub fn linearizable(ops: &[Timed]) -> Result<(), String> {
    // Calls and returns in time order; at equal times calls first, so operations at
    // the same instant count as concurrent (the weaker claim).
    let mut seen: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for t in ops {
        match &t.op {
            LinOp::Get(Some(v)) => {
                seen.insert(v);
            }
            LinOp::Cas { expect, result, .. } => {
                if let Some(v) = expect {
                    seen.insert(v);
                }
                if let Some(Err(Some(v))) = result {
                    seen.insert(v);
                }
            }
            _ => {}
        }
    }
    let unseen = |t: &Timed| {
        t.returned.is_none()
            && match &t.op {
                LinOp::Get(_) => true,
                LinOp::Put(Some(v)) | LinOp::Cas { value: v, .. } => !seen.contains(v.as_slice()),
                LinOp::Put(None) => false,
            }
    };
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, t) in ops.iter().enumerate() {
        if unseen(t) {
            continue;
        }
        events.push((t.called, 0, i));
        events.push((t.returned.unwrap_or(u64::MAX), 1, i));
    }
    if events.is_empty() {
        return Ok(());
    }
    events.sort();
    let mut actions = Vec::with_capacity(events.len());
    let mut lines = Vec::new();
    let mut process = std::collections::BTreeMap::new();
    for &(at, kind, i) in &events {
        let next = process.len();
        let p = *process.entry(i).or_insert(next);
        let op = ops[i].op.clone();
        let when = if at == u64::MAX {
            "end".to_string()
        } else {
            at.to_string()
        };
        if kind == 0 {
            lines.push(format!("{when}: #{i} calls {op:?}"));
            actions.push((p, Action::Call(op)));
        } else {
            lines.push(format!("{when}: #{i} returns"));
            actions.push((p, Action::Response(op)));
        }
    }
    if WGLChecker::<Register>::is_linearizable(History::from_actions(actions)) {
        Ok(())
    } else {
        Err(lines.join("\n  "))
    }
}
