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
use vergent::core::Ask;
use vergent::hlc::Timestamp;
use vergent::paxos::Expect;
use vergent::record::Payload;

#[path = "../support/lincheck.rs"]
mod lincheck;

use self::lincheck::{LinOp, Timed, linearizable};
use super::Sim;
use super::workload::{OpKind, TypedOp};

/// Keys of the linearizable bucket: few, so that operations contend.
pub(super) const LIN_KEYS: usize = 2;

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
        let ops: Vec<Timed> = self
            .client_ops
            .iter()
            .filter(|o| o.key == key && is_lin(o.kind) && o.coordinator.is_some())
            .map(|o| Timed {
                called: o.issued_ms,
                returned: o.completed_ms.filter(|_| matches!(o.outcome, Some(Ok(_)))),
                op: spec_op(o),
            })
            .collect();
        self.report.linearizable_checked += ops.len() as u64;
        if let Ok(path) = std::env::var("VERGENT_LIN_DUMP") {
            let text: Vec<String> = ops.iter().map(|t| format!("{t:?}")).collect();
            let _ = std::fs::write(path, text.join("\n"));
        }
        linearizable(&ops).err().map(|history| {
            format!(
                "the history of linearizable key {} is not linearizable (times in virtual ms):\n  {history}",
                String::from_utf8_lossy(key)
            )
        })
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

fn spec_op(o: &super::workload::ClientOp) -> LinOp {
    let known = matches!(o.outcome, Some(Ok(_)));
    match o.kind {
        OpKind::Typed(TypedOp::LinPut { delete: true }) => LinOp::Put(None),
        OpKind::Typed(TypedOp::LinPut { delete: false }) => LinOp::Put(o.value.clone()),
        OpKind::Typed(TypedOp::LinCas) => LinOp::Cas {
            expect: o.expect.clone().flatten(),
            value: o.value.clone().unwrap_or_default(),
            result: known.then(|| match o.swapped {
                Some(true) => Ok(()),
                _ => Err(read_value(o)),
            }),
        },
        _ => LinOp::Get(read_value(o)),
    }
}
