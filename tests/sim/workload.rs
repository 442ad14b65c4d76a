//! The client workload: each operation's record, and issuing it on a live coordinator.

use rand::RngExt;
use vergent::core::Ask;
use vergent::hlc::Timestamp;
use vergent::protocol::Consistency;
use vergent::record::{Payload, Record, Version};

use super::Sim;

/// The client's record of one operation.
#[derive(Debug, Clone)]
pub(super) struct ClientOp {
    pub(super) key: Vec<u8>,
    pub(super) kind: OpKind,
    pub(super) consistency: Consistency,
    pub(super) issued_ms: u64,
    pub(super) version: Option<Version>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) outcome: Option<Result<Option<Version>, String>>,
    pub(super) completed_ms: Option<u64>,
    /// The client session it belongs to, and the highest version that session had
    /// seen when the operation was issued (sent along, as the client library does).
    pub(super) session: usize,
    pub(super) after: Option<Timestamp>,
    /// The replicas its coordinator wrote to.
    pub(super) targets: Vec<String>,
    /// The node that coordinated it.
    pub(super) coordinator: Option<usize>,
    /// What a script fixed of it; the rest is drawn when it is issued.
    pub(super) fixed: Option<Fixed>,
    /// What a read of a typed or TTL bucket returned.
    pub(super) read: Option<Record>,
    /// A siblings write's context: the read it came from.
    pub(super) context_from: Option<usize>,
    /// A write's TTL, and the coordinator's wall clock when a read was answered.
    pub(super) ttl_ms: u64,
    pub(super) completed_wall: u64,
    /// A compare-and-set's expected value (`None`: absent), and whether it swapped.
    pub(super) expect: Option<Option<Vec<u8>>>,
    pub(super) swapped: Option<bool>,
}

/// An operation a script fixed: what, on which key, and through which coordinator.
#[derive(Debug, Clone)]
pub(super) struct Fixed {
    pub(super) kind: OpKind,
    pub(super) key: Vec<u8>,
    pub(super) consistency: Consistency,
    pub(super) via: Via,
}

/// Which live nodes may coordinate a fixed operation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Via {
    Any,
    /// This one only.
    Only(usize),
    /// Any but this one.
    Not(usize),
}

impl ClientOp {
    /// An operation not yet issued, of `session`.
    pub(super) fn new(session: usize, fixed: Option<Fixed>) -> ClientOp {
        ClientOp {
            key: Vec::new(),
            kind: OpKind::Get,
            consistency: Consistency::One,
            issued_ms: 0,
            version: None,
            value: None,
            outcome: None,
            completed_ms: None,
            session,
            after: None,
            targets: Vec::new(),
            coordinator: None,
            fixed,
            read: None,
            context_from: None,
            ttl_ms: 0,
            completed_wall: 0,
            expect: None,
            swapped: None,
        }
    }

    /// Whether it is an operation on the default bucket, which the lww checks cover.
    pub(super) fn is_default(&self) -> bool {
        !matches!(self.kind, OpKind::Typed(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Put,
    Delete,
    Get,
    /// An operation on one of the typed workload's buckets.
    Typed(TypedOp),
}

/// The typed workload's operations (see `typed.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TypedOp {
    /// A counter's increment (negative: decrement).
    Incr(i64),
    /// A set's add and remove of one member.
    Add(u8),
    Remove(u8),
    /// A siblings write, with the context of the latest read of the key that ended.
    SibPut {
        context: bool,
    },
    /// A siblings read.
    SibGet,
    /// A write to the TTL bucket, with a TTL of its own or the bucket's.
    TtlPut {
        own: bool,
    },
    /// A read of it.
    TtlGet,
    /// A linearizable bucket's write of a fresh value, or its delete.
    LinPut {
        delete: bool,
    },
    /// Its linearizable read.
    LinGet,
    /// Its compare-and-set to a fresh value, from the value last seen on the key (or
    /// from absent).
    LinCas,
}

impl Sim {
    /// Issues client operation `index` on a live coordinator, as a client's request
    /// reaches a node: an ask of its core, answered when the core says.
    pub(super) fn client_op(&mut self, index: usize) {
        let fixed = self.client_ops[index].fixed.clone();
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .filter(|&i| match fixed.as_ref().map(|f| f.via) {
                None | Some(Via::Any) => true,
                Some(Via::Only(x)) => i == x,
                Some(Via::Not(x)) => i != x,
            })
            .collect();
        if live.is_empty() {
            self.client_ops[index].outcome = Some(Err("no live coordinator".into()));
            return;
        }
        let i = live[self.rng.random_range(0..live.len())];
        let (kind, consistency, key) = match fixed {
            Some(f) => (f.kind, f.consistency, f.key),
            None if self.config.typed && self.rng.random_bool(0.4) => self.draw_typed(),
            None => {
                let kind = match self.rng.random_range(0..10) {
                    0..=4 => OpKind::Put,
                    5..=6 => OpKind::Delete,
                    _ => OpKind::Get,
                };
                let consistency = [Consistency::One, Consistency::Quorum, Consistency::All]
                    [self.rng.random_range(0..3)];
                let key = format!("k{}", self.rng.random_range(0..self.config.keys)).into_bytes();
                (kind, consistency, key)
            }
        };
        let stored = self.stored_key(i, kind, &key);
        let replicas = self.nodes[i]
            .core
            .as_ref()
            .expect("a live node has a core")
            .view()
            .replica_set(&stored);
        let session = self.client_ops[index].session;
        let after = self.sessions[session];
        let ask = match kind {
            OpKind::Typed(op) => self.typed_ask(index, op, &key, consistency, after),
            OpKind::Get => {
                self.report.gets += 1;
                Ask::Get {
                    bucket: None,
                    key: key.clone(),
                    consistency: Some(consistency),
                    after: None,
                }
            }
            OpKind::Put | OpKind::Delete => {
                let payload = if kind == OpKind::Put {
                    self.report.puts += 1;
                    let value = format!("op{index}").into_bytes();
                    self.client_ops[index].value = Some(value.clone());
                    Payload::Value(value)
                } else {
                    self.report.deletes += 1;
                    Payload::Tombstone
                };
                Ask::Put {
                    bucket: None,
                    context: None,
                    ttl_ms: None,
                    key: key.clone(),
                    payload,
                    consistency: Some(consistency),
                    after,
                }
            }
        };
        let o = &mut self.client_ops[index];
        o.key = key;
        o.kind = kind;
        o.consistency = consistency;
        o.issued_ms = self.now;
        o.after = after;
        o.coordinator = Some(i);
        o.targets = replicas.targets.clone();
        let key = String::from_utf8_lossy(&self.client_ops[index].key).into_owned();
        self.log(format!(
            "op {index} {kind:?} of {key} on {} at {consistency:?}: targets {:?}, counted {:?}",
            self.names[i], replicas.targets, replicas.counted
        ));
        self.with_core(i, |core, now, store| {
            core.handle_ask(index as u64, ask, now, store)
        });
    }
}
