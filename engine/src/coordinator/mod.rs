//! The write/read coordinator: a deterministic state machine.
//!
//! Any node coordinates any operation. A write goes to every replica of its partition
//! and is answered after `W` durable acknowledgements; a read asks every replica, is
//! answered after `R` replies with the highest version seen, and once every replica has
//! answered (or timed out) the stale ones are repaired. Replicas that miss a write get a
//! durable hint.
//!
//! While a new owner of the partition is still filling it (a joined node, a replaced
//! disk), the member standing in for it is a target too, and a write needs one
//! acknowledgement more per target beyond the partition's copies, from any target:
//! `W + P` of the `copies + P` targets, as Cassandra counts pending endpoints (and `W`
//! of them from the replicas that count now). Whichever `copies` of the targets count
//! later (the filling owner in, the stand-in out), `W` of them hold the write, so a
//! quorum read still meets it: the new owner's fill only covers writes acknowledged
//! before it began.
//!
//! Reads past `one` count the same way: `R` replies from the replicas that count now and
//! `R + P` from all the targets, the filling owners asked too. A coordinator whose view
//! is stale (cut off while the new owner filled, and the others stopped writing to the
//! stand-in once the news had settled) still counts the stand-in; `R + P` replies of the
//! `copies + P` targets hold `R` of the replicas the others count, so the read meets what
//! they wrote whichever view is current. A filling owner's reply alone never counts.
//!
//! The coordinator does no I/O and reads no clock: the runtime feeds it inputs
//! (`begin_*`, `handle_*`, the current time) and drains what it wants done with
//! [`Coordinator::poll_action`] and when it wants waking with
//! [`Coordinator::poll_timeout`]. A write to this node itself is an [`Action::Write`]
//! like any other; the runtime applies it to local storage.
//!
//! A later linearizable mode (single-decree Paxos per key, as in CASPaxos) fits beside
//! these: another operation kind with its own phases, the same actions and inputs.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::base::Consistency;
pub use crate::base::Millis;
use crate::placement::ReplicaSet;
use crate::record::{Entry, Merged, Record};

mod answers;

pub use self::answers::{Action, FILLING_REASON, OpError, Outcome};

/// Identifies one coordinated operation.
pub type OpId = u64;

/// Bounds and timeouts.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Time a write waits for replica acknowledgements.
    pub write_timeout_ms: u64,
    /// Time a read waits for replica replies.
    pub read_timeout_ms: u64,
    /// Most operations in flight; past it new ones are refused as overloaded.
    pub ops_max: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            write_timeout_ms: 5_000,
            read_timeout_ms: 5_000,
            ops_max: 65_536,
        }
    }
}

/// Longest reason kept for a replica's failure (reasons can come from the network).
const FAILURE_REASON_CHARS_MAX: usize = 200;

/// Replies required out of `replicas` for `consistency`.
pub fn required(consistency: Consistency, replicas: usize) -> usize {
    match consistency {
        Consistency::One => replicas.min(1),
        Consistency::Quorum => replicas / 2 + 1,
        Consistency::All => replicas,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer<T> {
    Pending,
    Ok(T),
    Failed,
}

struct WriteState {
    entry: Arc<Entry>,
    replicas: Vec<(String, Answer<()>)>,
    /// Which of `replicas` count towards `required` (the others are filling).
    counts: Vec<bool>,
    /// Copies of the partition.
    copies: usize,
    required: usize,
    replied: bool,
    deadline: Millis,
    /// Replicas that failed and why.
    failures: Vec<(String, String)>,
}

struct ReadState {
    key: Arc<[u8]>,
    /// Every target asked, in the replica set's order.
    replicas: Vec<(String, Answer<Option<Record>>)>,
    /// Whether each of `replicas` counts now (a filling owner does not).
    counts: Vec<bool>,
    /// Copies of the partition.
    copies: usize,
    /// Replies needed from the replicas that count.
    required: usize,
    /// Replies needed from all the targets: `required`, and one more per target beyond
    /// the copies (none at `one`, which promises no meeting with a write).
    needed: usize,
    replied: bool,
    deadline: Millis,
}

enum Op {
    Write(WriteState),
    Read(ReadState),
}

/// Coordinates writes and reads; see the module documentation.
pub struct Coordinator {
    config: CoordinatorConfig,
    next_op: OpId,
    ops: HashMap<OpId, Op>,
    deadlines: BTreeSet<(Millis, OpId)>,
    actions: VecDeque<Action>,
}

impl Coordinator {
    /// A coordinator with nothing in flight.
    pub fn new(config: CoordinatorConfig) -> Coordinator {
        Coordinator {
            config,
            next_op: 1,
            ops: HashMap::new(),
            deadlines: BTreeSet::new(),
            actions: VecDeque::new(),
        }
    }

    /// Operations in flight.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Starts a write of `entry` (already versioned) to every target of `set`; only the
    /// counted replicas' acknowledgements count towards `consistency`.
    pub fn begin_write(
        &mut self,
        entry: Entry,
        set: ReplicaSet,
        consistency: Consistency,
        now: Millis,
    ) -> OpId {
        let op = self.allocate();
        if let Some(refusal) = self.refuse(set.targets.len()) {
            self.actions.push_back(Action::Reply {
                op,
                outcome: Outcome::Failed(refusal),
            });
            return op;
        }
        let entry = Arc::new(entry);
        let deadline = now.plus(self.config.write_timeout_ms);
        for to in &set.targets {
            self.actions.push_back(Action::Write {
                op,
                to: to.clone(),
                entry: entry.clone(),
            });
        }
        let mut state = WriteState {
            entry,
            required: required(consistency, set.copies),
            copies: set.copies,
            counts: set
                .targets
                .iter()
                .map(|t| set.counted.contains(t))
                .collect(),
            replicas: set
                .targets
                .into_iter()
                .map(|r| (r, Answer::Pending))
                .collect(),
            replied: false,
            deadline,
            failures: Vec::new(),
        };
        // Too few counted replicas: the answer is known now, the writes still go out.
        Self::settle_write(op, &mut state, &mut self.actions, false);
        self.ops.insert(op, Op::Write(state));
        self.deadlines.insert((deadline, op));
        op
    }

    /// Starts a read of `key` from the counted replicas of `set`.
    pub fn begin_read(
        &mut self,
        key: Vec<u8>,
        set: ReplicaSet,
        consistency: Consistency,
        now: Millis,
    ) -> OpId {
        let op = self.allocate();
        if let Some(refusal) = self.refuse(set.targets.len()) {
            self.actions.push_back(Action::Reply {
                op,
                outcome: Outcome::Failed(refusal),
            });
            return op;
        }
        let key: Arc<[u8]> = key.into();
        let deadline = now.plus(self.config.read_timeout_ms);
        let required = required(consistency, set.copies);
        let beyond = set.targets.len().saturating_sub(set.copies);
        let needed = match consistency {
            Consistency::One => required,
            _ => required + beyond,
        };
        // Nobody holding the data: refused at once, nothing asked.
        let asked = if set.counted.is_empty() {
            Vec::new()
        } else {
            set.targets.clone()
        };
        for to in &asked {
            self.actions.push_back(Action::Read {
                op,
                to: to.clone(),
                key: key.clone(),
            });
        }
        let mut state = ReadState {
            key,
            counts: set
                .targets
                .iter()
                .map(|t| set.counted.contains(t))
                .collect(),
            replicas: set
                .targets
                .into_iter()
                .map(|r| (r, Answer::Pending))
                .collect(),
            copies: set.copies,
            required,
            needed,
            replied: false,
            deadline,
        };
        if asked.is_empty() {
            Self::settle_read(op, &mut state, &mut self.actions, true);
            return op;
        }
        Self::settle_read(op, &mut state, &mut self.actions, false);
        self.ops.insert(op, Op::Read(state));
        self.deadlines.insert((deadline, op));
        op
    }

    /// Replica `from` applied the write `op`, or failed to and says why. Late, duplicate
    /// and unknown reports are ignored.
    pub fn handle_write_ack(&mut self, op: OpId, from: &str, result: Result<(), String>) {
        self.write_answered(op, from, result);
    }

    /// Replica `from` refused the write `op` as a version too far ahead of the cluster's
    /// time as it measures it. This node issued the version only with its own clock
    /// within the bound, so one of the two measures is off; the write failed there like
    /// any other and is hinted: the hint lands once the replica's measure of the
    /// cluster's time reaches the version (the copy this node holds would reach it by
    /// anti-entropy at that point anyway).
    pub fn handle_write_refused(&mut self, op: OpId, from: &str, reason: String) {
        self.write_answered(op, from, Err(reason));
    }

    fn write_answered(&mut self, op: OpId, from: &str, result: Result<(), String>) {
        let Some(Op::Write(state)) = self.ops.get_mut(&op) else {
            return;
        };
        let Some(slot) = state
            .replicas
            .iter_mut()
            .find(|(r, a)| r == from && *a == Answer::Pending)
        else {
            return;
        };
        slot.1 = match &result {
            Ok(()) => Answer::Ok(()),
            Err(_) => Answer::Failed,
        };
        if let Err(reason) = result {
            let reason: String = reason.chars().take(FAILURE_REASON_CHARS_MAX).collect();
            state.failures.push((from.to_string(), reason));
            self.actions.push_back(Action::Hint {
                to: from.to_string(),
                entry: state.entry.clone(),
            });
        }
        Self::settle_write(op, state, &mut self.actions, false);
        if state.replicas.iter().all(|(_, a)| *a != Answer::Pending) {
            self.finish(op);
        }
    }

    /// Replica `from` answered the read `op` with its record (`Some`), or failed (`None`).
    pub fn handle_read_reply(&mut self, op: OpId, from: &str, reply: Option<Option<Record>>) {
        let Some(Op::Read(state)) = self.ops.get_mut(&op) else {
            return;
        };
        let Some(slot) = state
            .replicas
            .iter_mut()
            .find(|(r, a)| r == from && *a == Answer::Pending)
        else {
            return;
        };
        slot.1 = match reply {
            Some(record) => Answer::Ok(record),
            None => Answer::Failed,
        };
        Self::settle_read(op, state, &mut self.actions, false);
        if state.replicas.iter().all(|(_, a)| *a != Answer::Pending) {
            Self::repair(state, &mut self.actions);
            self.finish(op);
        }
    }

    /// Expires every operation whose deadline is at or before `now`: replicas that never
    /// answered a write get hints; an unanswered operation fails.
    pub fn handle_timeout(&mut self, now: Millis) {
        let write_timeout_ms = self.config.write_timeout_ms;
        while let Some(&(deadline, op)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(state) = self.ops.remove(&op) else {
                continue;
            };
            match state {
                Op::Write(mut state) => {
                    for (to, answer) in &mut state.replicas {
                        if *answer == Answer::Pending {
                            *answer = Answer::Failed;
                            state.failures.push((
                                to.clone(),
                                format!("no answer within {write_timeout_ms} ms"),
                            ));
                            self.actions.push_back(Action::Hint {
                                to: to.clone(),
                                entry: state.entry.clone(),
                            });
                        }
                    }
                    Self::settle_write(op, &mut state, &mut self.actions, true);
                }
                Op::Read(mut state) => {
                    for (_, answer) in &mut state.replicas {
                        if *answer == Answer::Pending {
                            *answer = Answer::Failed;
                        }
                    }
                    Self::settle_read(op, &mut state, &mut self.actions, true);
                    Self::repair(&state, &mut self.actions);
                }
            }
        }
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Coordinator::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    fn allocate(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn refuse(&self, replicas: usize) -> Option<OpError> {
        if replicas == 0 {
            Some(OpError::NoReplicas)
        } else if self.ops.len() >= self.config.ops_max {
            Some(OpError::Overloaded {
                limit: self.config.ops_max,
            })
        } else {
            None
        }
    }

    fn finish(&mut self, op: OpId) {
        if let Some(state) = self.ops.remove(&op) {
            let deadline = match state {
                Op::Write(s) => s.deadline,
                Op::Read(s) => s.deadline,
            };
            self.deadlines.remove(&(deadline, op));
        }
    }

    fn settle_write(
        op: OpId,
        state: &mut WriteState,
        actions: &mut VecDeque<Action>,
        final_: bool,
    ) {
        if state.replied {
            return;
        }
        let count = |want: &Answer<()>| state.replicas.iter().filter(|(_, a)| a == want).count();
        let acked = count(&Answer::Ok(()));
        let pending = count(&Answer::Pending);
        // Targets beyond the copies (stand-ins beside filling owners) may stop counting
        // later, so each needs an acknowledgement more.
        let beyond = state.replicas.len().saturating_sub(state.copies);
        let counted_acked = state
            .replicas
            .iter()
            .zip(&state.counts)
            .filter(|((_, a), counts)| **counts && *a == Answer::Ok(()))
            .count();
        let needed = state.required + beyond;
        // A write that can no longer succeed still waits for the replicas that may
        // answer, so the error says how many really have the write.
        let outcome = if acked >= needed && counted_acked >= state.required {
            Outcome::Written {
                version: state.entry.record.version,
            }
        } else if final_ || pending == 0 {
            let mut failures = state.failures.clone();
            for ((name, _), counts) in state.replicas.iter().zip(&state.counts) {
                // One reason per replica: that it failed says more than that it is
                // filling.
                if !counts && !failures.iter().any(|(f, _)| f == name) {
                    failures.push((name.clone(), FILLING_REASON.to_string()));
                }
            }
            // The shortfall the error names: among the replicas that count, or among
            // all the targets.
            let (acked, replicas, required) = if counted_acked < state.required {
                (counted_acked, state.copies, state.required)
            } else {
                (acked, state.replicas.len(), needed)
            };
            Outcome::Failed(OpError::WriteUnavailable {
                acked,
                replicas,
                required,
                failures,
            })
        } else {
            return;
        };
        state.replied = true;
        actions.push_back(Action::Reply { op, outcome });
    }

    fn settle_read(op: OpId, state: &mut ReadState, actions: &mut VecDeque<Action>, final_: bool) {
        if state.replied {
            return;
        }
        let tally = |counted_only: bool, want: fn(&Answer<Option<Record>>) -> bool| {
            state
                .replicas
                .iter()
                .zip(&state.counts)
                .filter(|((_, a), counts)| (**counts || !counted_only) && want(a))
                .count()
        };
        let ok = |a: &Answer<Option<Record>>| matches!(a, Answer::Ok(_));
        let pending = |a: &Answer<Option<Record>>| *a == Answer::Pending;
        let (answered, counted_answered) = (tally(false, ok), tally(true, ok));
        let reachable = answered + tally(false, pending);
        let counted_reachable = counted_answered + tally(true, pending);
        let outcome = if counted_answered >= state.required && answered >= state.needed {
            Outcome::Read {
                record: newest(&state.replicas),
            }
        } else if final_ || counted_reachable < state.required || reachable < state.needed {
            // One reason per replica: that it failed says more than that it is filling.
            let failures = state
                .replicas
                .iter()
                .zip(&state.counts)
                .filter_map(|((name, a), counts)| match a {
                    Answer::Failed => Some((name.clone(), "no answer".to_string())),
                    _ if !counts => Some((name.clone(), FILLING_REASON.to_string())),
                    _ => None,
                })
                .collect();
            // The shortfall the error names: among the replicas that count, or among
            // all the targets.
            let (answered, replicas, required) = if counted_answered < state.required {
                (counted_answered, state.copies, state.required)
            } else {
                (answered, state.replicas.len(), state.needed)
            };
            Outcome::Failed(OpError::ReadUnavailable {
                answered,
                replicas,
                required,
                failures,
            })
        } else {
            return;
        };
        state.replied = true;
        actions.push_back(Action::Reply { op, outcome });
    }

    /// Read repair: every replica that answered with an older version (or nothing) gets
    /// the newest one seen.
    fn repair(state: &ReadState, actions: &mut VecDeque<Action>) {
        let Some(best) = newest(&state.replicas) else {
            return;
        };
        let entry = Arc::new(Entry {
            key: state.key.to_vec(),
            record: best.clone(),
        });
        for (to, answer) in &state.replicas {
            // Older, or (typed) a state the merge went beyond.
            if let Answer::Ok(record) = answer
                && record.as_ref().map(|r| r.version) != Some(best.version)
            {
                actions.push_back(Action::Repair {
                    to: to.clone(),
                    entry: entry.clone(),
                });
            }
        }
    }
}

/// What the replies say the key holds: the newest version, or for a typed value every
/// reply's state merged (each replica may hold updates the others lack).
fn newest(replicas: &[(String, Answer<Option<Record>>)]) -> Option<Record> {
    replicas
        .iter()
        .filter_map(|(_, a)| match a {
            Answer::Ok(Some(record)) => Some(record),
            _ => None,
        })
        .fold(None, |best: Option<Record>, record| match best {
            None => Some(record.clone()),
            Some(best) => match best.merge(record) {
                Merged::Kept => Some(best),
                Merged::Changed(merged) => Some(merged),
            },
        })
}

#[cfg(test)]
mod tests;
