//! The typed workload: a counter, a set, a siblings register and a bucket with a TTL,
//! operated on beside the default bucket's keys, and what must hold of them at the end.
//!
//! An operation whose outcome the client never learned (an error, no answer) may or
//! may not have been made; an acknowledged one was made. A `one` acknowledgement
//! counts as made unless a disk was wiped in the run (the actor's disk may have been
//! the only one that held it).

use std::collections::{BTreeMap, BTreeSet};

use rand::RngExt;
use vergent::buckets::BucketType;
use vergent::core::Ask;
use vergent::hlc::Timestamp;
use vergent::placement::partition_of;
use vergent::protocol::Consistency;
use vergent::record::{Payload, Record};
use vergent::types::{Change, State};

use super::Sim;
use super::workload::{OpKind, TypedOp};

/// Keys per typed bucket.
const TYPED_KEYS: usize = 3;
/// Members a set key's operations choose among.
const MEMBERS: u8 = 4;
/// The TTL bucket's TTL, and the TTL of writes that give their own.
pub(super) const BUCKET_TTL_MS: u64 = 6_000;
const WRITE_TTL_MS: u64 = 1_500;

/// The buckets of the typed workload: name, type, TTL.
const BUCKETS: [(&str, BucketType, Option<u64>); 5] = [
    ("hits", BucketType::Counter, None),
    ("tags", BucketType::Set, None),
    ("carts", BucketType::Siblings, None),
    ("ttl", BucketType::Lww, Some(BUCKET_TTL_MS)),
    ("locks", BucketType::Linearizable, None),
];

/// The bucket an operation goes to, and the letter its keys start with.
fn bucket_of(op: TypedOp) -> (&'static str, char) {
    match op {
        TypedOp::Incr(_) => ("hits", 'c'),
        TypedOp::Add(_) | TypedOp::Remove(_) => ("tags", 's'),
        TypedOp::SibPut { .. } | TypedOp::SibGet => ("carts", 'x'),
        TypedOp::TtlPut { .. } | TypedOp::TtlGet => ("ttl", 't'),
        TypedOp::LinPut { .. } | TypedOp::LinGet | TypedOp::LinCas => ("locks", 'l'),
    }
}

impl Sim {
    /// Creates the typed workload's buckets through the first node (an admin's ask).
    pub(super) fn create_buckets(&mut self) {
        for (name, kind, ttl_ms) in BUCKETS {
            let ask = Ask::CreateBucket {
                name: name.to_string(),
                kind,
                ttl_ms,
                consistency: None,
            };
            let answer = self.admin(0, ask);
            self.log(format!("bucket {name} created: {answer:?}"));
        }
    }

    /// A typed operation drawn at random: what, at which consistency, on which key.
    pub(super) fn draw_typed(&mut self) -> (OpKind, Consistency, Vec<u8>) {
        // Half the typed operations go to the linearizable keys, so that their
        // histories hold enough concurrency for the checker to judge.
        let op = match self.rng.random_range(0..18) {
            9..=11 => TypedOp::LinPut {
                delete: self.rng.random_bool(0.2),
            },
            12..=14 => TypedOp::LinGet,
            15..=17 => TypedOp::LinCas,
            0 | 1 => TypedOp::Incr([-2, -1, 1, 2, 3][self.rng.random_range(0..5)]),
            2 => TypedOp::Add(self.rng.random_range(0..MEMBERS)),
            3 => TypedOp::Remove(self.rng.random_range(0..MEMBERS)),
            4 => TypedOp::SibPut {
                context: self.rng.random_bool(0.5),
            },
            5 => TypedOp::SibGet,
            6 => TypedOp::TtlPut {
                own: self.rng.random_bool(0.5),
            },
            _ => TypedOp::TtlGet,
        };
        let consistency =
            [Consistency::One, Consistency::Quorum, Consistency::All][self.rng.random_range(0..3)];
        let (_, letter) = bucket_of(op);
        let keys = if letter == 'l' {
            super::linearizable::LIN_KEYS
        } else {
            TYPED_KEYS
        };
        let key = format!("{letter}{}", self.rng.random_range(0..keys)).into_bytes();
        (OpKind::Typed(op), consistency, key)
    }

    /// The key as node `i` stores it.
    pub(super) fn stored_key(&self, i: usize, kind: OpKind, key: &[u8]) -> Vec<u8> {
        let OpKind::Typed(op) = kind else {
            return key.to_vec();
        };
        let (bucket, _) = bucket_of(op);
        self.nodes[i]
            .core
            .as_ref()
            .and_then(|c| c.catalog().get(bucket))
            .map_or_else(|| key.to_vec(), |b| b.internal_key(key))
    }

    /// The ask of typed operation `index`.
    pub(super) fn typed_ask(
        &mut self,
        index: usize,
        op: TypedOp,
        key: &[u8],
        consistency: Consistency,
        after: Option<Timestamp>,
    ) -> Ask {
        self.report.typed += 1;
        let (bucket, _) = bucket_of(op);
        let update = |change| Ask::Update {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            change,
            consistency: Some(consistency),
            after,
        };
        let get = || Ask::Get {
            bucket: Some(bucket.to_string()),
            key: key.to_vec(),
            consistency: Some(consistency),
            after: None,
        };
        let value = format!("op{index}").into_bytes();
        match op {
            TypedOp::LinPut { .. } | TypedOp::LinGet | TypedOp::LinCas => {
                self.lin_ask(index, op, key, value, after)
            }
            TypedOp::Incr(by) => update(Change::Incr(by)),
            TypedOp::Add(m) => update(Change::Add(vec![vec![m]])),
            TypedOp::Remove(m) => update(Change::Remove(vec![vec![m]])),
            TypedOp::SibGet | TypedOp::TtlGet => get(),
            TypedOp::SibPut { context } => {
                let from = context.then(|| self.latest_read(key, index)).flatten();
                let context = from.and_then(|r| match &self.client_ops[r].read {
                    Some(Record {
                        payload: Payload::Typed(State::Siblings(s)),
                        ..
                    }) => Some(s.context()),
                    _ => None,
                });
                let o = &mut self.client_ops[index];
                o.context_from = from.filter(|_| context.is_some());
                o.value = Some(value.clone());
                Ask::Put {
                    bucket: Some(bucket.to_string()),
                    key: key.to_vec(),
                    payload: Payload::Value(value),
                    context,
                    ttl_ms: None,
                    consistency: Some(consistency),
                    after,
                }
            }
            TypedOp::TtlPut { own } => {
                let o = &mut self.client_ops[index];
                o.ttl_ms = if own { WRITE_TTL_MS } else { BUCKET_TTL_MS };
                o.value = Some(value.clone());
                Ask::Put {
                    bucket: Some(bucket.to_string()),
                    key: key.to_vec(),
                    payload: Payload::Value(value),
                    context: None,
                    ttl_ms: own.then_some(WRITE_TTL_MS),
                    consistency: Some(consistency),
                    after,
                }
            }
        }
    }

    /// The latest siblings read of `key` that had ended, before operation `before`.
    fn latest_read(&self, key: &[u8], before: usize) -> Option<usize> {
        (0..self.client_ops.len())
            .filter(|&r| r != before)
            .filter(|&r| {
                let o = &self.client_ops[r];
                o.kind == OpKind::Typed(TypedOp::SibGet)
                    && o.key == key
                    && matches!(o.outcome, Some(Ok(_)))
                    && o.completed_ms.is_some_and(|done| done <= self.now)
            })
            .max_by_key(|&r| self.client_ops[r].completed_ms)
    }

    /// Whether an acknowledgement at `consistency` means the operation was made for
    /// good (see the module's note).
    fn durable(&self, consistency: Consistency) -> bool {
        consistency != Consistency::One || !self.destructive
    }

    /// What every replica of `bucket`'s `key` holds at the end (they converged), by
    /// the first live member's catalog.
    fn final_state(&self, bucket: &str, key: &[u8]) -> Option<Record> {
        let i = self.members().find(|&i| self.nodes[i].up)?;
        let internal = self.nodes[i]
            .core
            .as_ref()?
            .catalog()
            .get(bucket)?
            .internal_key(key);
        let placement = self.final_placement();
        let owner = placement
            .replicas(partition_of(&internal, self.settings.partitions))
            .next()?;
        let owner = self.index_of(owner)?;
        self.nodes[owner].store.as_ref()?.get(&internal).ok()?
    }

    /// The typed workload's invariants.
    pub(super) fn check_typed(&mut self) {
        let mut found = Vec::new();
        for k in 0..TYPED_KEYS {
            found.extend(self.check_counter(format!("c{k}").as_bytes()));
            found.extend(self.check_set(format!("s{k}").as_bytes()));
            found.extend(self.check_siblings(format!("x{k}").as_bytes()));
        }
        found.extend(self.check_expiry());
        for k in 0..super::linearizable::LIN_KEYS {
            found.extend(self.check_linearizable(format!("l{k}").as_bytes()));
        }
        self.violations.extend(found);
    }

    /// The counter's value is the sum of the acknowledged increments plus some of
    /// those whose outcome is unknown.
    fn check_counter(&self, key: &[u8]) -> Option<String> {
        let mut certain: i128 = 0;
        let mut maybe: Vec<i64> = Vec::new();
        for o in self.ops_on(key) {
            let OpKind::Typed(TypedOp::Incr(by)) = o.kind else {
                continue;
            };
            match &o.outcome {
                Some(Ok(_)) if self.durable(o.consistency) => certain += i128::from(by),
                _ => maybe.push(by),
            }
        }
        let value = match self.final_state("hits", key) {
            None => 0,
            Some(Record {
                payload: Payload::Typed(State::Counter(c)),
                ..
            }) => c.value(),
            Some(other) => return Some(format!("counter {key:?} holds {other:?}")),
        };
        // Every sum some of the uncertain increments make.
        let mut sums: BTreeSet<i128> = BTreeSet::from([0]);
        for by in &maybe {
            let more: Vec<i128> = sums.iter().map(|s| s + i128::from(*by)).collect();
            sums.extend(more);
        }
        (!sums.contains(&(value - certain))).then(|| {
            format!(
                "counter {} is {value}: the acknowledged increments sum to {certain}, and no choice among the {} of unknown outcome {maybe:?} makes up the difference",
                String::from_utf8_lossy(key),
                maybe.len()
            )
        })
    }

    /// The operations on `key` (a typed key's letter names its bucket).
    fn ops_on<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a super::workload::ClientOp> {
        self.client_ops
            .iter()
            .filter(move |o| !o.is_default() && o.key == key && o.coordinator.is_some())
    }

    /// The set holds what add-wins says: a member acknowledged as added that no remove
    /// could have seen is there; a member removed by a remove that saw every add of it
    /// is not; and nothing is there that nobody added.
    fn check_set(&self, key: &[u8]) -> Vec<String> {
        let members: BTreeSet<u8> = match self.final_state("tags", key) {
            None => BTreeSet::new(),
            Some(Record {
                payload: Payload::Typed(State::Set(s)),
                ..
            }) => s.members().filter_map(|m| m.first().copied()).collect(),
            Some(other) => return vec![format!("set {key:?} holds {other:?}")],
        };
        let name = String::from_utf8_lossy(key);
        let mut found = Vec::new();
        for m in 0..MEMBERS {
            let adds: Vec<_> = self
                .ops_on(key)
                .filter(|o| o.kind == OpKind::Typed(TypedOp::Add(m)))
                .collect();
            let removes: Vec<_> = self
                .ops_on(key)
                .filter(|o| o.kind == OpKind::Typed(TypedOp::Remove(m)))
                .collect();
            // A remove observes an add only if it was made after the add was issued:
            // one that ended before cannot have.
            let must_be_there = adds.iter().any(|a| {
                matches!(a.outcome, Some(Ok(_)))
                    && self.durable(a.consistency)
                    && removes
                        .iter()
                        .all(|r| r.completed_ms.is_some_and(|done| done < a.issued_ms))
            });
            // A remove made after every add reached every replica (each acknowledged
            // at all before the remove was issued, and membership settled before the
            // first) saw them all, whichever replica made it.
            let must_be_gone = removes.iter().any(|r| {
                matches!(r.outcome, Some(Ok(_)))
                    && self.durable(r.consistency)
                    && adds.iter().all(|a| {
                        matches!(a.outcome, Some(Ok(_)))
                            && a.consistency == Consistency::All
                            && a.issued_ms > self.last_membership_change
                            && a.completed_ms.is_some_and(|done| done < r.issued_ms)
                    })
            });
            let there = members.contains(&m);
            if must_be_there && !there {
                found.push(format!(
                    "set {name} lacks member {m}: an add of it was acknowledged and no remove could have seen it"
                ));
            }
            if must_be_gone && there {
                found.push(format!(
                    "set {name} holds member {m}: a remove acknowledged after every add of it reached every replica did not take it"
                ));
            }
            if there && adds.is_empty() {
                found.push(format!("set {name} holds member {m}, which nobody added"));
            }
        }
        found
    }

    /// A siblings key holds only values written to it, and every acknowledged value
    /// not replaced by a write whose context could have seen it.
    fn check_siblings(&self, key: &[u8]) -> Vec<String> {
        let values: BTreeSet<Vec<u8>> = match self.final_state("carts", key) {
            None => BTreeSet::new(),
            Some(Record {
                payload: Payload::Typed(State::Siblings(s)),
                ..
            }) => s.values().map(<[u8]>::to_vec).collect(),
            Some(other) => return vec![format!("siblings {key:?} holds {other:?}")],
        };
        let name = String::from_utf8_lossy(key);
        let mut found = Vec::new();
        let puts: Vec<_> = self
            .ops_on(key)
            .filter(|o| matches!(o.kind, OpKind::Typed(TypedOp::SibPut { .. })))
            .collect();
        let written: BTreeSet<&[u8]> = puts.iter().filter_map(|o| o.value.as_deref()).collect();
        for v in &values {
            if !written.contains(v.as_slice()) {
                found.push(format!(
                    "siblings {name} hold {:?}, which nobody wrote",
                    String::from_utf8_lossy(v)
                ));
            }
        }
        for p in &puts {
            let (Some(Ok(_)), Some(value)) = (&p.outcome, &p.value) else {
                continue;
            };
            if !self.durable(p.consistency) || values.contains(value) {
                continue;
            }
            // A write replaces what its context saw: the read it came from may have
            // seen `p` only if it ended after `p` was issued.
            let replaced = puts.iter().any(|q| {
                q.context_from.is_some_and(|r| {
                    self.client_ops[r]
                        .completed_ms
                        .is_some_and(|done| done >= p.issued_ms)
                })
            });
            if !replaced {
                found.push(format!(
                    "siblings {name} lost {:?}: acknowledged, and no write's context could have seen it",
                    String::from_utf8_lossy(value)
                ));
            }
        }
        found
    }

    /// A read never returns a value past its expiry by the reading coordinator's clock.
    fn check_expiry(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut expiries: BTreeMap<vergent::record::Version, u64> = BTreeMap::new();
        for o in &self.client_ops {
            if let (OpKind::Typed(TypedOp::TtlPut { .. }), Some(v)) = (o.kind, o.version) {
                expiries.insert(v, v.hlc.wall_ms() + o.ttl_ms);
            }
        }
        for o in &self.client_ops {
            if o.kind != OpKind::Typed(TypedOp::TtlGet) {
                continue;
            }
            let Some(Ok(Some(seen))) = o.outcome else {
                continue;
            };
            match expiries.get(&seen) {
                Some(&expires) if expires <= o.completed_wall => found.push(format!(
                    "a read of {} answered at wall {} returned a value that expired at {expires}",
                    String::from_utf8_lossy(&o.key),
                    o.completed_wall
                )),
                Some(_) => {}
                None => found.push(format!(
                    "a read of {} returned version {seen:?}, which no TTL write made",
                    String::from_utf8_lossy(&o.key)
                )),
            }
        }
        found
    }

    /// For the siblings-across-a-cut shape: the read after the heal saw both sides'
    /// values, and the write with its context left only its own value everywhere.
    pub(super) fn check_siblings_shape(&mut self) {
        let key = b"x0".as_slice();
        let puts: Vec<usize> = (0..self.client_ops.len())
            .filter(|&i| {
                let o = &self.client_ops[i];
                o.key == key && matches!(o.kind, OpKind::Typed(TypedOp::SibPut { .. }))
            })
            .collect();
        let read = (0..self.client_ops.len())
            .find(|&i| self.client_ops[i].kind == OpKind::Typed(TypedOp::SibGet));
        let (Some(read), [a, b, resolve]) = (read, puts.as_slice()) else {
            self.violations.push(format!(
                "the shape's operations are missing: puts {puts:?}, read {read:?}"
            ));
            return;
        };
        let acked = |i: usize| matches!(self.client_ops[i].outcome, Some(Ok(_)));
        if !(acked(*a) && acked(*b) && acked(read) && acked(*resolve)) {
            let outcomes: Vec<_> = [*a, *b, read, *resolve]
                .iter()
                .map(|&i| self.client_ops[i].outcome.clone())
                .collect();
            self.violations.push(format!(
                "an operation of the shape failed with every node up and no loss: {outcomes:?}"
            ));
            return;
        }
        let seen: BTreeSet<Vec<u8>> = match &self.client_ops[read].read {
            Some(Record {
                payload: Payload::Typed(State::Siblings(s)),
                ..
            }) => s.values().map(<[u8]>::to_vec).collect(),
            other => {
                self.violations
                    .push(format!("the read after the heal found {other:?}"));
                return;
            }
        };
        let both: BTreeSet<Vec<u8>> = [*a, *b]
            .iter()
            .filter_map(|&i| self.client_ops[i].value.clone())
            .collect();
        if seen != both {
            self.violations.push(format!(
                "the read after the heal saw {seen:?}, not both sides' values {both:?}"
            ));
        }
        if self.client_ops[*resolve].context_from != Some(read) {
            self.violations
                .push("the resolving write did not carry the read's context".into());
        }
        let want = self.client_ops[*resolve].value.clone().unwrap();
        let placement = self.final_placement();
        let Some(internal) = self
            .members()
            .find(|&i| self.nodes[i].up)
            .and_then(|i| self.nodes[i].core.as_ref()?.catalog().get("carts"))
            .map(|b| b.internal_key(key))
        else {
            self.violations
                .push("no member knows the bucket carts".into());
            return;
        };
        for replica in placement.replicas(partition_of(&internal, self.settings.partitions)) {
            let r = self.index_of(replica).unwrap();
            let held = self.nodes[r]
                .store
                .as_ref()
                .and_then(|s| s.get(&internal).ok().flatten());
            let values: Vec<Vec<u8>> = match held {
                Some(Record {
                    payload: Payload::Typed(State::Siblings(s)),
                    ..
                }) => s.values().map(<[u8]>::to_vec).collect(),
                _ => Vec::new(),
            };
            if values != vec![want.clone()] {
                self.violations.push(format!(
                    "{replica} holds {values:?} after the resolving write, not only its value"
                ));
            }
        }
    }
}
