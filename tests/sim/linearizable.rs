//! The linearizable bucket's workload: puts, deletes, reads and compare-and-sets on a
//! few hot keys from every coordinator, and the check of each key's history by an
//! external linearizability checker (`todc-utils`' Wing & Gong checker, with Lowe's
//! memoization), against a register with compare-and-set as its specification.
//!
//! An operation is called when its ask reaches the coordinator and returns when the
//! answer comes back. One that failed or never got an answer may have taken effect or
//! not: a write of it returns at the end of the history with its result unknown (the
//! checker may place it anywhere after its call, the end being as good as never); a
//! read of it is left out (it changed nothing).

use rand::RngExt;
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History};
use todc_utils::specifications::Specification;
use vergent::core::Ask;
use vergent::hlc::Timestamp;
use vergent::paxos::Expect;
use vergent::record::Payload;

use super::Sim;
use super::workload::{OpKind, TypedOp};

/// Keys of the linearizable bucket: few, so that operations contend.
pub(super) const LIN_KEYS: usize = 2;

/// The sequential specification: one register that may hold a value.
struct Register;

/// An operation with what it returned (`None`: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(Option<Vec<u8>>),
    Get(Option<Vec<u8>>),
    Cas {
        expect: Option<Vec<u8>>,
        value: Vec<u8>,
        /// Swapped, or not and what it found; `None`: unknown.
        result: Option<Result<(), Option<Vec<u8>>>>,
    },
}

impl Specification for Register {
    type State = Option<Vec<u8>>;
    type Operation = Op;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &Op, state: &Self::State) -> (bool, Self::State) {
        match op {
            Op::Put(value) => (true, value.clone()),
            Op::Get(seen) => (seen == state, state.clone()),
            Op::Cas {
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

impl Sim {
    /// The ask of linearizable operation `index` on `key`.
    pub(super) fn lin_ask(
        &mut self,
        index: usize,
        op: TypedOp,
        key: &[u8],
        value: Vec<u8>,
        after: Option<Timestamp>,
    ) -> Ask {
        let bucket = "locks".to_string();
        match op {
            TypedOp::LinPut { delete } => {
                let payload = if delete {
                    Payload::Tombstone
                } else {
                    self.client_ops[index].value = Some(value.clone());
                    Payload::Value(value)
                };
                Ask::Put {
                    bucket: Some(bucket),
                    key: key.to_vec(),
                    payload,
                    context: None,
                    ttl_ms: None,
                    consistency: None,
                    after,
                }
            }
            TypedOp::LinCas => {
                // Mostly the value last seen on the key, so that swaps happen.
                let expect = if self.rng.random_bool(0.75) {
                    self.last_seen(key, index)
                } else {
                    None
                };
                let o = &mut self.client_ops[index];
                o.expect = Some(expect.clone());
                o.value = Some(value.clone());
                Ask::Cas {
                    bucket,
                    key: key.to_vec(),
                    expect: match expect {
                        Some(v) => Expect::Value(v),
                        None => Expect::Absent,
                    },
                    value: Some(value),
                    after,
                }
            }
            _ => Ask::Get {
                bucket: Some(bucket),
                key: key.to_vec(),
                consistency: None,
                after: None,
            },
        }
    }

    /// The value the latest answered operation on `key` saw or wrote.
    fn last_seen(&self, key: &[u8], before: usize) -> Option<Vec<u8>> {
        (0..self.client_ops.len())
            .filter(|&i| i != before)
            .filter(|&i| {
                let o = &self.client_ops[i];
                o.key == key
                    && is_lin(o.kind)
                    && matches!(o.outcome, Some(Ok(_)))
                    && o.completed_ms.is_some()
            })
            .max_by_key(|&i| self.client_ops[i].completed_ms)
            .and_then(|i| {
                let o = &self.client_ops[i];
                match o.kind {
                    OpKind::Typed(TypedOp::LinGet) => read_value(o),
                    OpKind::Typed(TypedOp::LinCas) if o.swapped == Some(false) => read_value(o),
                    _ => o.value.clone(),
                }
            })
    }

    /// Whether `key`'s history is linearizable; the violation if not.
    pub(super) fn check_linearizable(&mut self, key: &[u8]) -> Option<String> {
        // Calls and returns in time order; at equal times calls first, so operations in
        // the same millisecond count as concurrent (the weaker claim). Unknown writes
        // return after everything.
        let mut events: Vec<(u64, u8, usize)> = Vec::new();
        for (i, o) in self.client_ops.iter().enumerate() {
            if o.key != key || !is_lin(o.kind) || o.coordinator.is_none() {
                continue;
            }
            let known = matches!(o.outcome, Some(Ok(_))) && o.completed_ms.is_some();
            if !known && o.kind == OpKind::Typed(TypedOp::LinGet) {
                continue;
            }
            events.push((o.issued_ms, 0, i));
            let done = if known {
                o.completed_ms.unwrap_or(u64::MAX)
            } else {
                u64::MAX
            };
            events.push((done, 1, i));
        }
        if events.is_empty() {
            return None;
        }
        events.sort();
        let mut actions = Vec::with_capacity(events.len());
        let mut history = Vec::new();
        let mut process = std::collections::BTreeMap::new();
        for &(at, kind, i) in &events {
            let next = process.len();
            let p = *process.entry(i).or_insert(next);
            let op = spec_op(&self.client_ops[i]);
            let when = if at == u64::MAX {
                "end".to_string()
            } else {
                format!("{at} ms")
            };
            if kind == 0 {
                history.push(format!("{when}: op {i} calls {op:?}"));
                actions.push((p, Action::Call(op)));
            } else {
                history.push(format!("{when}: op {i} returns"));
                actions.push((p, Action::Response(op)));
            }
        }
        self.report.linearizable_checked += (events.len() / 2) as u64;
        if WGLChecker::<Register>::is_linearizable(History::from_actions(actions)) {
            return None;
        }
        Some(format!(
            "the history of linearizable key {} is not linearizable:\n  {}",
            String::from_utf8_lossy(key),
            history.join("\n  ")
        ))
    }
}

fn is_lin(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Typed(TypedOp::LinPut { .. } | TypedOp::LinGet | TypedOp::LinCas)
    )
}

fn read_value(o: &super::workload::ClientOp) -> Option<Vec<u8>> {
    o.read
        .as_ref()
        .and_then(|r| r.payload.value().map(<[u8]>::to_vec))
}

fn spec_op(o: &super::workload::ClientOp) -> Op {
    let known = matches!(o.outcome, Some(Ok(_)));
    match o.kind {
        OpKind::Typed(TypedOp::LinPut { delete: true }) => Op::Put(None),
        OpKind::Typed(TypedOp::LinPut { delete: false }) => Op::Put(o.value.clone()),
        OpKind::Typed(TypedOp::LinCas) => Op::Cas {
            expect: o.expect.clone().flatten(),
            value: o.value.clone().unwrap_or_default(),
            result: known.then(|| match o.swapped {
                Some(true) => Ok(()),
                _ => Err(read_value(o)),
            }),
        },
        _ => Op::Get(read_value(o)),
    }
}
