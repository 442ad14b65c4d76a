//! The scripted shapes ([`Shape`]): each builds, on every seed, one of the moments a
//! rule of the node exists for, where random faults reach it on few seeds. The seed
//! still picks the nodes, the timings within each step and the order of messages.

use rand::RngExt;
use vergent::protocol::Consistency;

use super::config::Shape;
use super::workload::{ClientOp, Fixed, OpKind, TypedOp, Via};
use super::{Event, Sim};

/// A step of a script.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    /// Cut every link to and from this node.
    Cut(usize),
    /// Restore them.
    Uncut(usize),
    /// Cut every link out of `from` but the one to `keep` (links into it stay).
    CutOut { from: usize, keep: usize },
    /// A new node joins.
    Join,
    /// Anti-entropy stops on every node (`true`), or starts again.
    Stall(bool),
    /// Every message is lost with this probability.
    Loss(f64),
    /// Every message takes up to this long (ms).
    Latency(u64),
}

impl Sim {
    /// Schedules the script of this run's shape, from `start` (virtual ms).
    pub(super) fn script(&mut self, start: u64) {
        let grace = self.config.tombstone_grace_ms;
        let keys = self.config.keys;
        let victim = self.rng.random_range(0..self.config.nodes);
        self.log(format!(
            "shape {}: {} is the node it turns on",
            self.config.shape.name(),
            self.names[victim]
        ));
        match self.config.shape {
            Shape::Random => unreachable!("a random run has no script"),
            Shape::DeletesWhileCut => {
                for k in 0..keys {
                    let at = start + self.rng.random_range(200..1_500);
                    self.fixed_op(at, OpKind::Put, k, Consistency::All, Via::Not(victim));
                }
                self.step(start + 2_000, Step::Cut(victim));
                for k in 0..keys {
                    let at = start + self.rng.random_range(3_000..5_000);
                    self.fixed_op(at, OpKind::Delete, k, Consistency::Quorum, Via::Not(victim));
                }
                let back = start + 5_000 + 5 * grace;
                self.step(back, Step::Uncut(victim));
                for k in 0..keys {
                    let at = back + self.rng.random_range(1_000..6_000);
                    self.fixed_op(at, OpKind::Get, k, Consistency::Quorum, Via::Any);
                }
            }
            Shape::HandoffUnderLoad => {
                // A lossy network: replicas miss writes now and then, and have them back
                // only by hints or anti-entropy some seconds later. Two nodes join, one
                // after the other, so old owners let partitions go twice.
                self.step(start + 500, Step::Loss(0.2));
                for k in 0..keys {
                    for _ in 0..16 {
                        let at = start + self.rng.random_range(1_000..24_000);
                        self.fixed_op(at, OpKind::Put, k, Consistency::Quorum, Via::Any);
                    }
                }
                self.step(start + 2_000, Step::Join);
                self.step(start + 12_000, Step::Join);
                self.step(start + 24_000, Step::Loss(0.0));
                for k in 0..keys {
                    let at = start + self.rng.random_range(25_000..29_000);
                    self.fixed_op(at, OpKind::Get, k, Consistency::Quorum, Via::Any);
                }
            }
            Shape::SiblingsAcrossACut => {
                // The cut-off node must be a replica of the key, to take a write there.
                let key = b"x0";
                let counted = self.counted_of(OpKind::Typed(TypedOp::SibGet), key);
                let pick = self.rng.random_range(0..counted.len());
                let victim = self.index_of(&counted[pick]).expect("a replica is a node");
                // The other side's write through another replica, which makes it
                // itself: a coordinator that asked the cut-off one would not learn
                // whether it was made (it does not try another: it may have been).
                let other = counted[(pick + 1) % counted.len()].clone();
                let other = self.index_of(&other).expect("a replica is a node");
                self.log(format!(
                    "shape: {} is cut off and takes one sibling, {} the other",
                    self.names[victim], self.names[other]
                ));
                let put = TypedOp::SibPut { context: false };
                self.step(start + 500, Step::Cut(victim));
                let at = start + self.rng.random_range(1_500..2_500);
                self.fixed_typed(at, put, key, Consistency::One, Via::Only(victim));
                let at = start + self.rng.random_range(1_500..2_500);
                self.fixed_typed(at, put, key, Consistency::Quorum, Via::Only(other));
                self.step(start + 4_000, Step::Uncut(victim));
                let read = TypedOp::SibGet;
                self.fixed_typed(start + 14_000, read, key, Consistency::Quorum, Via::Any);
                let resolve = TypedOp::SibPut { context: true };
                self.fixed_typed(start + 16_000, resolve, key, Consistency::All, Via::Any);
            }
            Shape::CasContention => {
                self.step(start + 200, Step::Latency(120));
                self.step(start + 200, Step::Loss(0.05));
                let key = b"l0";
                let mut at = start + 500;
                // A replica cut off for a while: accepts that reach some acceptors and
                // not a quorum, and proposals that must recover them.
                self.step(start + 4_000, Step::Cut(victim));
                self.step(start + 5_500, Step::Uncut(victim));
                self.step(start + 13_000, Step::Cut(victim));
                self.step(start + 14_500, Step::Uncut(victim));
                // Bursts of three from different coordinators, about a hundred operations:
                // enough to meet head on, few enough for the checker (its search grows
                // fast with the operations in flight at once).
                while at < start + 20_000 {
                    for _ in 0..3 {
                        let op = match self.rng.random_range(0..6) {
                            0 => TypedOp::LinPut {
                                delete: self.rng.random_bool(0.1),
                            },
                            1 | 2 => TypedOp::LinGet,
                            _ => TypedOp::LinCas,
                        };
                        let when = at + self.rng.random_range(0..20);
                        self.fixed_typed(when, op, key, Consistency::Quorum, Via::Any);
                    }
                    at += self.rng.random_range(500..900);
                }
                self.step(start + 20_500, Step::Loss(0.0));
                self.step(start + 20_500, Step::Latency(5));
                let last = TypedOp::LinGet;
                self.fixed_typed(start + 22_000, last, key, Consistency::Quorum, Via::Any);
            }
            Shape::AbandonedAccept => self.abandoned_accept(start),
            Shape::ReadsWhileJoining => {
                // Twice the keys, so that some partition has the replica that missed
                // its writes and the new node among its owners after the join.
                let keys = 2 * keys;
                self.step(start + 500, Step::Stall(true));
                self.step(start + 500, Step::Cut(victim));
                for k in 0..keys {
                    let at = start + self.rng.random_range(1_000..3_000);
                    self.fixed_op(at, OpKind::Put, k, Consistency::Quorum, Via::Not(victim));
                }
                self.step(start + 6_000, Step::Uncut(victim));
                // Slow messages from just before the join, so the new node's fill (which
                // runs whether anti-entropy is stalled or not) takes about a second.
                self.step(start + 6_900, Step::Latency(120));
                self.step(start + 7_000, Step::Join);
                self.step(start + 9_000, Step::Latency(5));
                // Six reads of each key at once, through coordinators drawn apart (the
                // first to end repairs the replicas it found stale), in the second after
                // the join, while the new owner fills.
                for k in 0..keys {
                    let at = start + self.rng.random_range(7_050..7_800);
                    for _ in 0..6 {
                        self.fixed_op(at, OpKind::Get, k, Consistency::Quorum, Via::Any);
                    }
                }
                self.step(start + 10_000, Step::Stall(false));
            }
        }
    }

    fn step(&mut self, at: u64, step: Step) {
        self.schedule(at, Event::Script(step));
    }

    fn fixed_op(&mut self, at: u64, kind: OpKind, key: usize, consistency: Consistency, via: Via) {
        let op = self.client_ops.len();
        let session = self.rng.random_range(0..super::config::SESSIONS);
        self.client_ops.push(ClientOp::new(
            session,
            Some(Fixed {
                kind,
                key: format!("k{key}").into_bytes(),
                consistency,
                via,
            }),
        ));
        self.schedule(at, Event::Client { op });
    }

    fn fixed_typed(
        &mut self,
        at: u64,
        op: TypedOp,
        key: &[u8],
        consistency: Consistency,
        via: Via,
    ) {
        let index = self.client_ops.len();
        let session = self.rng.random_range(0..super::config::SESSIONS);
        self.client_ops.push(ClientOp::new(
            session,
            Some(Fixed {
                kind: OpKind::Typed(op),
                key: key.to_vec(),
                consistency,
                via,
            }),
        ));
        self.schedule(at, Event::Client { op: index });
    }

    /// The replicas that count for `key` (of the bucket `kind` writes to), as the first
    /// node sees them.
    fn counted_of(&self, kind: OpKind, key: &[u8]) -> Vec<String> {
        let stored = self.stored_key(0, kind, key);
        self.nodes[0]
            .core
            .as_ref()
            .expect("the first node is up")
            .view()
            .replica_set(&stored)
            .counted
    }

    /// The script of [`Shape::AbandonedAccept`].
    fn abandoned_accept(&mut self, start: u64) {
        let key = b"l0";
        let counted = self.counted_of(OpKind::Typed(TypedOp::LinGet), key);
        let outside: Vec<usize> = (0..self.config.nodes)
            .filter(|&i| !counted.contains(&self.names[i]))
            .collect();
        let coordinator = outside[self.rng.random_range(0..outside.len())];
        self.step(start + 200, Step::Latency(30));
        let mut at = start + 500;
        for _ in 0..6 {
            let keep = &counted[self.rng.random_range(0..counted.len())];
            let keep = self.index_of(keep).expect("a replica is a node");
            self.log(format!(
                "shape: {} writes l0, then reaches only {}",
                self.names[coordinator], self.names[keep]
            ));
            let put = TypedOp::LinPut { delete: false };
            self.fixed_typed(at, put, key, Consistency::Quorum, Via::Only(coordinator));
            let from = coordinator;
            self.step(at + 400, Step::CutOut { from, keep });
            let second = if self.rng.random_bool(0.5) {
                TypedOp::LinCas
            } else {
                TypedOp::LinPut { delete: false }
            };
            self.fixed_typed(at + 450, second, key, Consistency::Quorum, Via::Only(from));
            for _ in 0..3 {
                let when = at + 600 + self.rng.random_range(0..400);
                let via = Via::Not(coordinator);
                self.fixed_typed(when, TypedOp::LinGet, key, Consistency::Quorum, via);
            }
            let when = at + 700 + self.rng.random_range(0..400);
            let via = Via::Not(coordinator);
            self.fixed_typed(when, TypedOp::LinCas, key, Consistency::Quorum, via);
            self.step(at + 1_800, Step::Uncut(coordinator));
            at += 2_500;
        }
        self.step(at, Step::Latency(5));
        let last = TypedOp::LinGet;
        self.fixed_typed(at + 1_500, last, key, Consistency::Quorum, Via::Any);
    }

    /// Carries out a step.
    pub(super) fn run_step(&mut self, step: Step) {
        let n = self.nodes.len();
        let name = match step {
            Step::Cut(x) => {
                for y in (0..n).filter(|&y| y != x) {
                    self.cut.insert((x, y));
                    self.cut.insert((y, x));
                }
                "cut off"
            }
            Step::CutOut { from, keep } => {
                for y in (0..n).filter(|&y| y != from && y != keep) {
                    self.cut.insert((from, y));
                }
                "cut off one way"
            }
            Step::Uncut(x) => {
                self.cut.retain(|&(a, b)| a != x && b != x);
                "cut healed"
            }
            Step::Join => self.join_spare(),
            Step::Loss(p) => {
                self.loss = p;
                "loss"
            }
            Step::Latency(ms) => {
                self.set_jitter(ms);
                "latency"
            }
            Step::Stall(on) => {
                self.set_ae_paused(on);
                if on {
                    "anti-entropy stalled"
                } else {
                    "anti-entropy resumed"
                }
            }
        };
        if name != "none" {
            *self.report.faults.entry(name).or_default() += 1;
            self.log(format!("fault {name} ({step:?})"));
        }
    }
}
