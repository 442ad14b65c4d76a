//! Hint delivery as one state machine, driven by the runtime and by the simulator alike:
//! which hints go to whom, in what batches, which are dropped, and when a batch whose
//! answer never came is sent again.
//!
//! The pump reads the store (the backlog and the oldest hints of each target) and emits
//! work: batches to send and hints to delete. It deletes nothing itself, so the runtime
//! can delete through its group-commit writer and the simulator at once; the driver
//! finishes a plan's deletions before it asks for the next plan. A batch's hints are
//! deleted only once its target acknowledged them: a crash at any point delivers a hint
//! at most once more, and applying is idempotent.

use std::collections::{BTreeMap, BTreeSet};

use super::{HINT_BATCH_BYTES_MAX, HINT_BATCH_MAX, HintTarget, hint_target, split_expired};
use crate::base::Millis;
use crate::membership::MemberState;
use crate::record::Entry;
use crate::storage::{Store, StoreError};

/// Why hints are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HintsDeleted {
    /// Their target acknowledged them.
    Delivered,
    /// Older than the hint window: anti-entropy repairs those keys.
    Expired,
    /// Their target left the cluster (or is unknown): its partitions have new owners.
    TargetLeft,
}

/// Work the pump asks of its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum HintWork {
    /// Deliver `entries` to `target` (apply them here when it is this node), then
    /// report [`HintPump::delivered`] or [`HintPump::failed`].
    Send {
        /// The batch, to report on.
        batch: u64,
        /// Its target.
        target: String,
        /// The writes it carries.
        entries: Vec<Entry>,
    },
    /// Delete these hints.
    Delete {
        /// Their target.
        target: String,
        /// Their keys.
        keys: Vec<Vec<u8>>,
        /// Why.
        why: HintsDeleted,
    },
}

/// What the pump needs to know of the node at a plan.
pub struct HintContext<'a> {
    /// This node's name.
    pub me: &'a str,
    /// A member's state in this node's view (`None`: unknown).
    pub state: &'a dyn Fn(&str) -> Option<MemberState>,
    /// Whether the data path to a member is open.
    pub reachable: &'a dyn Fn(&str) -> bool,
    /// This node's wall clock, ms.
    pub wall_ms: u64,
    /// How long hints are kept, ms.
    pub window_ms: u64,
    /// Monotonic time.
    pub now: Millis,
}

struct InFlight {
    target: String,
    keys: Vec<Vec<u8>>,
    sent: Millis,
}

/// One batch in flight per target; see the module documentation.
pub struct HintPump {
    in_flight: BTreeMap<u64, InFlight>,
    next_batch: u64,
    /// A batch unanswered this long is sent again, ms.
    answer_timeout_ms: u64,
    /// Targets that refused a batch: their hints go one at a time, so the one refused
    /// is found and set aside instead of holding back every hint behind it.
    one_at_a_time: BTreeSet<String>,
    /// Hints a target refused alone (a version from a clock too far ahead for it,
    /// say), by target and key: left out of its batches until then.
    set_aside: BTreeMap<(String, Vec<u8>), Millis>,
}

/// How long a hint a target refused is left out of its batches before it is tried
/// again (until it expires with the others).
pub const HINT_SET_ASIDE_MS: u64 = 10_000;

impl HintPump {
    /// A pump that sends a batch again when no answer came within `answer_timeout_ms`.
    pub fn new(answer_timeout_ms: u64) -> HintPump {
        HintPump {
            in_flight: BTreeMap::new(),
            next_batch: 1,
            answer_timeout_ms,
            one_at_a_time: BTreeSet::new(),
            set_aside: BTreeMap::new(),
        }
    }

    /// The next work: for each target with hints, by [`hint_target`]'s rule, its
    /// oldest batch to send (none while one is in flight), the expired hints of that
    /// batch to delete, or, for a member that left, a batch to delete.
    pub fn plan(
        &mut self,
        store: &Store,
        cx: &HintContext<'_>,
    ) -> Result<Vec<HintWork>, StoreError> {
        let timeout = self.answer_timeout_ms;
        self.in_flight
            .retain(|_, batch| cx.now.0 < batch.sent.0.saturating_add(timeout));
        self.set_aside.retain(|_, until| cx.now < *until);
        let mut work = Vec::new();
        for backlog in store.hint_backlog()? {
            let target = backlog.target;
            let rule = hint_target(cx.me, &target, (cx.state)(&target), (cx.reachable)(&target));
            if rule == HintTarget::Wait || self.in_flight.values().any(|b| b.target == target) {
                continue;
            }
            let mut batch = store.hints_for(&target, HINT_BATCH_MAX, HINT_BATCH_BYTES_MAX)?;
            if rule != HintTarget::Drop {
                batch.retain(|h| {
                    !self
                        .set_aside
                        .contains_key(&(target.clone(), h.key.clone()))
                });
                if self.one_at_a_time.contains(&target) {
                    batch.truncate(1);
                }
            }
            if batch.is_empty() {
                continue;
            }
            if rule == HintTarget::Drop {
                let keys = batch.into_iter().map(|h| h.key).collect();
                work.push(HintWork::Delete {
                    target,
                    keys,
                    why: HintsDeleted::TargetLeft,
                });
                continue;
            }
            let (expired, live) = split_expired(batch, cx.wall_ms, cx.window_ms);
            if !expired.is_empty() {
                work.push(HintWork::Delete {
                    target: target.clone(),
                    keys: expired.into_iter().map(|h| h.key).collect(),
                    why: HintsDeleted::Expired,
                });
            }
            if live.is_empty() {
                continue;
            }
            let batch = self.next_batch;
            self.next_batch += 1;
            let (keys, entries) = live.into_iter().map(|h| (h.key, h.hint.entry)).unzip();
            self.in_flight.insert(
                batch,
                InFlight {
                    target: target.clone(),
                    keys,
                    sent: cx.now,
                },
            );
            work.push(HintWork::Send {
                batch,
                target,
                entries,
            });
        }
        Ok(work)
    }

    /// `batch` was acknowledged: its hints to delete (none when the batch was given up
    /// already, after its timeout; its hints are then sent again, which is harmless).
    pub fn delivered(&mut self, batch: u64) -> Option<HintWork> {
        let done = self.in_flight.remove(&batch)?;
        if done.keys.len() == 1 && !self.set_aside.keys().any(|(t, _)| *t == done.target) {
            // Nothing of this target's is set aside: full batches again.
            self.one_at_a_time.remove(&done.target);
        }
        Some(HintWork::Delete {
            target: done.target,
            keys: done.keys,
            why: HintsDeleted::Delivered,
        })
    }

    /// `batch` was not delivered: its hints wait for the next plan.
    pub fn failed(&mut self, batch: u64) {
        self.in_flight.remove(&batch);
    }

    /// The target answered `batch` with a refusal: its hints go one at a time from
    /// now on, and a hint refused alone is set aside for [`HINT_SET_ASIDE_MS`].
    pub fn refused(&mut self, batch: u64, now: Millis) {
        let Some(refused) = self.in_flight.remove(&batch) else {
            return;
        };
        if let [key] = refused.keys.as_slice() {
            let until = Millis(now.0.saturating_add(HINT_SET_ASIDE_MS));
            self.set_aside
                .insert((refused.target.clone(), key.clone()), until);
        }
        self.one_at_a_time.insert(refused.target);
    }

    /// Batches sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::record::{NodeId, Payload, Record, Version};
    use crate::storage::{Hint, StoreOptions};

    fn hint(target: &str, i: u32, created_ms: u64) -> Hint {
        Hint {
            target: target.into(),
            entry: Entry {
                key: format!("k{i}").into_bytes(),
                record: Record {
                    version: Version {
                        hlc: Timestamp::new(created_ms, 0),
                        node: NodeId(1),
                    },
                    payload: Payload::Value(vec![1]),
                    expires_ms: None,
                },
            },
            created_ms,
        }
    }

    fn cx<'a>(
        state: &'a dyn Fn(&str) -> Option<MemberState>,
        reachable: &'a dyn Fn(&str) -> bool,
        now: u64,
    ) -> HintContext<'a> {
        HintContext {
            me: "n1",
            state,
            reachable,
            wall_ms: 100_000,
            window_ms: 10_000,
            now: Millis(now),
        }
    }

    fn kinds(work: &[HintWork]) -> Vec<(String, &'static str, usize)> {
        work.iter()
            .map(|w| match w {
                HintWork::Send {
                    target, entries, ..
                } => (target.clone(), "send", entries.len()),
                HintWork::Delete { target, keys, why } => (
                    target.clone(),
                    match why {
                        HintsDeleted::Delivered => "delivered",
                        HintsDeleted::Expired => "expired",
                        HintsDeleted::TargetLeft => "left",
                    },
                    keys.len(),
                ),
            })
            .collect()
    }

    #[test]
    fn one_batch_per_target_in_flight_the_expired_and_the_left_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
        let mut hints: Vec<Hint> = (0..300).map(|i| hint("n2", i, 95_000)).collect();
        hints.extend((0..3).map(|i| hint("n3", i, 50_000)));
        hints.extend((0..2).map(|i| hint("n3", 10 + i, 99_000)));
        hints.extend((0..5).map(|i| hint("n4", i, 99_000)));
        hints.extend((0..4).map(|i| hint("n5", i, 99_000)));
        store.put_hints_now(hints).unwrap();
        let state = |name: &str| match name {
            "n2" | "n3" | "n5" => Some(MemberState::Alive),
            "n4" => Some(MemberState::Left),
            _ => None,
        };
        let reachable = |name: &str| name != "n5";
        let mut pump = HintPump::new(1_000);
        let work = pump.plan(&store, &cx(&state, &reachable, 0)).unwrap();
        assert_eq!(
            kinds(&work),
            vec![
                ("n2".into(), "send", HINT_BATCH_MAX),
                ("n3".into(), "expired", 3),
                ("n3".into(), "send", 2),
                ("n4".into(), "left", 5),
            ],
            "n5 cannot be reached: its hints wait"
        );
        for w in &work {
            if let HintWork::Delete { keys, .. } = w {
                store.delete_hints_now(keys.clone()).unwrap();
            }
        }
        // Batches in flight are not sent twice.
        assert!(
            pump.plan(&store, &cx(&state, &reachable, 10))
                .unwrap()
                .is_empty()
        );
        let sent: Vec<u64> = work
            .iter()
            .filter_map(|w| match w {
                HintWork::Send { batch, .. } => Some(*batch),
                _ => None,
            })
            .collect();
        let Some(HintWork::Delete { keys, why, .. }) = pump.delivered(sent[0]) else {
            panic!("a delivered batch is deleted");
        };
        assert_eq!((keys.len(), why), (HINT_BATCH_MAX, HintsDeleted::Delivered));
        store.delete_hints_now(keys).unwrap();
        pump.failed(sent[1]);
        // The rest of n2's hints go next, and n3's failed batch again.
        let work = pump.plan(&store, &cx(&state, &reachable, 20)).unwrap();
        assert_eq!(
            kinds(&work),
            vec![
                ("n2".into(), "send", 300 - HINT_BATCH_MAX),
                ("n3".into(), "send", 2)
            ]
        );
        // Unanswered past the timeout: sent again.
        let again = pump.plan(&store, &cx(&state, &reachable, 1_020)).unwrap();
        assert_eq!(kinds(&again), kinds(&work));
        assert_eq!(pump.in_flight(), 2);
    }

    /// A target that refuses a batch (one version in it from a clock too far ahead
    /// for it) gets its hints one at a time; the one it refuses alone is set aside,
    /// so the hints behind it are delivered; it is tried again later.
    #[test]
    fn a_hint_the_target_refuses_does_not_hold_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::new("n1")).unwrap();
        store
            .put_hints_now((0..3).map(|i| hint("n2", i, 99_000)).collect())
            .unwrap();
        let state = |_: &str| Some(MemberState::Alive);
        let reachable = |_: &str| true;
        let mut pump = HintPump::new(1_000);
        let sent = |work: &[HintWork]| -> Vec<(u64, Vec<Vec<u8>>)> {
            work.iter()
                .filter_map(|w| match w {
                    HintWork::Send { batch, entries, .. } => {
                        Some((*batch, entries.iter().map(|e| e.key.clone()).collect()))
                    }
                    HintWork::Delete { .. } => None,
                })
                .collect()
        };
        let work = pump.plan(&store, &cx(&state, &reachable, 0)).unwrap();
        let [(batch, keys)] = sent(&work).try_into().unwrap();
        assert_eq!(keys.len(), 3);
        pump.refused(batch, Millis(0));
        // One at a time now: the first (oldest) alone, refused again, set aside.
        let work = pump.plan(&store, &cx(&state, &reachable, 10)).unwrap();
        let [(batch, keys)] = sent(&work).try_into().unwrap();
        assert_eq!(keys.len(), 1);
        let refused_key = keys[0].clone();
        pump.refused(batch, Millis(10));
        // The next one goes, and is delivered.
        let work = pump.plan(&store, &cx(&state, &reachable, 20)).unwrap();
        let [(batch, keys)] = sent(&work).try_into().unwrap();
        assert_eq!(keys.len(), 1);
        assert_ne!(keys[0], refused_key);
        let Some(HintWork::Delete { keys: gone, .. }) = pump.delivered(batch) else {
            panic!("a delivered batch's hints are deleted");
        };
        store.delete_hints_now(gone).unwrap();
        // Once its time is out, the refused one is tried again.
        let later = 10 + HINT_SET_ASIDE_MS;
        let work = pump.plan(&store, &cx(&state, &reachable, later)).unwrap();
        let tried: Vec<Vec<u8>> = sent(&work).into_iter().flat_map(|(_, k)| k).collect();
        assert_eq!(tried, vec![refused_key]);
    }
}
