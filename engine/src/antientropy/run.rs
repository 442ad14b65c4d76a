//! One anti-entropy run with one peer, as a deterministic state machine: roots compared
//! in batches, the differing partitions' [`Exchange`]s driven (a bounded number at
//! once), and, unless it is a dry run, two more compares of what differed: the first
//! gives partitions written to during the exchange one more pass, the second says what
//! still differs. The runtime and the simulator drive the same machine.
//!
//! Like an exchange, a run does no I/O and reads no clock. It reads the local tree
//! through [`LocalTree`] (synchronous reads of the store, as an exchange's), and asks
//! its driver for everything else with [`RunStep`]s: a time to compare at (taken after
//! every change made to the partitions so far: an agreement must come after what it
//! covers), requests to send, entries to apply. `M` is the driver's notion of that
//! time; the run only hands it back in [`RunStep::Agreed`].

use std::collections::{BTreeMap, VecDeque};

use super::exchange::{Exchange, root_summary};
use super::local_tree::LocalTree;
use super::messages::{DifferingRoot, SyncLimits, SyncRequest, SyncResponse};
use super::report::{PartitionDifference, SyncCounts};
use super::respond::check_roots_answer;
use crate::placement::PartitionId;
use crate::record::Entry;

/// Names one request or apply the run is waiting for.
pub type Tag = u64;

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Salts the root fingerprints of this run.
    pub salt: u64,
    /// Compare and count only; change nothing on either side.
    pub dry_run: bool,
    /// Tombstones older than this (wall ms) are not sent where the other side has
    /// nothing (see [`Exchange`]).
    pub horizon_ms: u64,
    /// What entries received are held to.
    pub limits: SyncLimits,
    /// Exchanges in flight at once.
    pub exchanges_max: usize,
    /// Partitions in one roots request.
    pub roots_per_request: usize,
}

/// What a run asks of its driver, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStep<M> {
    /// Take a time for comparing these partitions that comes after every change made to
    /// them so far, and hand it to [`Run::compare`].
    Compare(Vec<PartitionId>),
    /// Send this request to the peer; its answer (or why none came) goes to
    /// [`Run::handle_response`] with the tag.
    Send {
        /// Names the request.
        tag: Tag,
        /// The request.
        request: SyncRequest,
    },
    /// Apply these entries received from the peer (after the checks a replication
    /// passes), then report with [`Run::applied`].
    Apply {
        /// Names the apply.
        tag: Tag,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// These partitions compared equal with the peer at this time.
    Agreed {
        /// The partitions.
        partitions: Vec<PartitionId>,
        /// The time the compare was taken at.
        at: M,
    },
    /// An exchange of this partition began.
    Began(PartitionId),
    /// An exchange of this partition ended, with why it failed if it did.
    Ended {
        /// The partition.
        partition: PartitionId,
        /// Why it failed.
        error: Option<String>,
    },
    /// Progress of the first pass: partitions done, keys moved.
    Progress {
        /// Partitions done since the last progress step.
        partitions: u64,
        /// Keys moved since the last progress step.
        keys: u64,
    },
    /// The run is over; [`Run::outcome`] says how it went.
    Done,
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    /// Partitions and keys compared and moved (byte counts and round trips are the
    /// driver's: it sees the messages).
    pub counts: SyncCounts,
    /// The partitions that differed, by the first compare.
    pub differences: Vec<PartitionDifference>,
    /// The partitions in sync with the peer at the end.
    pub in_sync: Vec<PartitionId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The first compare and its exchanges (dry or not).
    First,
    /// The partitions that differed, compared again, and exchanged again.
    Again,
    /// What differed the second time, compared a last time.
    Last,
}

/// An exchange in flight, and what it waits for.
struct Running {
    exchange: Exchange,
    /// Batches received, to apply one after the other before the next request.
    to_apply: VecDeque<Vec<Entry>>,
}

/// One run with one peer; see the module documentation.
pub struct Run<M> {
    config: RunConfig,
    peer: String,
    partitions: Vec<PartitionId>,
    pass: Pass,
    /// Partitions still to compare in this pass, in requests' worth.
    chunks: VecDeque<Vec<PartitionId>>,
    /// A compare asked for and not yet given its time.
    to_compare: Option<Vec<PartitionId>>,
    /// The roots request in flight: its tag, partitions and time.
    comparing: Option<(Tag, Vec<PartitionId>, M)>,
    /// What this pass's compares found differing.
    differing: Vec<DifferingRoot>,
    /// Exchanges of this pass not yet started.
    to_start: VecDeque<DifferingRoot>,
    /// The partitions this pass exchanges (the next pass compares them again).
    exchanged: Vec<PartitionId>,
    /// This pass's compares are done and its exchanges are going.
    exchanging: bool,
    /// Exchanges in flight, by the tag they wait on.
    running: BTreeMap<Tag, Running>,
    next_tag: Tag,
    steps: VecDeque<RunStep<M>>,
    counts: SyncCounts,
    differences: BTreeMap<PartitionId, PartitionDifference>,
    outcome: Option<Result<RunOutcome, String>>,
}

impl<M: Clone> Run<M> {
    /// A run comparing `partitions` with `peer`.
    pub fn new(peer: &str, partitions: Vec<PartitionId>, config: RunConfig) -> Run<M> {
        let mut run = Run {
            peer: peer.to_string(),
            pass: Pass::First,
            chunks: VecDeque::new(),
            to_compare: None,
            comparing: None,
            differing: Vec::new(),
            to_start: VecDeque::new(),
            exchanged: Vec::new(),
            exchanging: false,
            running: BTreeMap::new(),
            next_tag: 0,
            steps: VecDeque::new(),
            counts: SyncCounts::default(),
            differences: BTreeMap::new(),
            outcome: None,
            partitions,
            config,
        };
        let partitions = run.partitions.clone();
        run.chunk(&partitions);
        match run.chunks.pop_front() {
            Some(chunk) => {
                run.to_compare = Some(chunk.clone());
                run.steps.push_back(RunStep::Compare(chunk));
            }
            None => run.finish(Vec::new()),
        }
        run
    }

    /// The next thing to do, if any. After [`RunStep::Done`], nothing.
    pub fn poll(&mut self) -> Option<RunStep<M>> {
        self.steps.pop_front()
    }

    /// The partitions of the compare asked for and not yet given its time.
    pub fn to_compare(&self) -> &[PartitionId] {
        self.to_compare.as_deref().unwrap_or(&[])
    }

    /// How the run went, once it is done: an error when a compare failed (nothing is
    /// known of the peer's partitions then); a failed exchange is a partition that
    /// still differs.
    pub fn outcome(&self) -> Option<&Result<RunOutcome, String>> {
        self.outcome.as_ref()
    }

    /// The time for the compare asked for last: computes its roots and asks for them
    /// to be sent.
    pub fn compare(&mut self, local: &impl LocalTree, at: M) {
        let Some(chunk) = self.to_compare.take() else {
            return;
        };
        let salt = self.salt();
        let roots = chunk
            .iter()
            .map(|&p| root_summary(local, p, salt))
            .collect::<Result<Vec<_>, _>>();
        match roots {
            Ok(roots) => {
                let tag = self.tag();
                self.comparing = Some((tag, chunk, at));
                self.steps.push_back(RunStep::Send {
                    tag,
                    request: SyncRequest::Roots { salt, roots },
                });
            }
            Err(err) => self.fail(err.to_string()),
        }
    }

    /// The peer's answer to the request `tag`, or why none came.
    pub fn handle_response(
        &mut self,
        local: &impl LocalTree,
        tag: Tag,
        response: Result<SyncResponse, String>,
    ) {
        if self.comparing.as_ref().is_some_and(|(t, _, _)| *t == tag) {
            let (_, chunk, at) = self.comparing.take().expect("a compare in flight");
            self.compared(chunk, at, response);
            return self.advance(local);
        }
        let Some(mut running) = self.running.remove(&tag) else {
            return;
        };
        match response {
            Ok(response) => {
                running.exchange.handle_response(local, response);
                while let Some(entries) = running.exchange.poll_apply() {
                    running.to_apply.push_back(entries);
                }
                self.drive(local, running);
            }
            Err(err) => self.exchange_ended(running.exchange.partition(), Err(err)),
        }
        self.advance(local);
    }

    /// The apply `tag` asked for is done (or failed).
    pub fn applied(&mut self, local: &impl LocalTree, tag: Tag, result: Result<(), String>) {
        let Some(running) = self.running.remove(&tag) else {
            return;
        };
        match result {
            Ok(()) => self.drive(local, running),
            Err(err) => self.exchange_ended(running.exchange.partition(), Err(err)),
        }
        self.advance(local);
    }

    fn salt(&self) -> u64 {
        // Each pass compares with fingerprints of its own.
        match self.pass {
            Pass::First => self.config.salt,
            Pass::Again => self.config.salt.wrapping_add(1),
            Pass::Last => self.config.salt.wrapping_add(2),
        }
    }

    fn tag(&mut self) -> Tag {
        self.next_tag += 1;
        self.next_tag
    }

    fn chunk(&mut self, partitions: &[PartitionId]) {
        self.differing.clear();
        self.chunks = partitions
            .chunks(self.config.roots_per_request.max(1))
            .map(<[PartitionId]>::to_vec)
            .collect();
    }

    fn next_compare(&mut self) {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.to_compare = Some(chunk.clone());
                self.steps.push_back(RunStep::Compare(chunk));
            }
            None => self.compares_done(),
        }
    }

    fn compared(&mut self, chunk: Vec<PartitionId>, at: M, response: Result<SyncResponse, String>) {
        let differing = match response {
            Ok(SyncResponse::Roots { differing }) => differing,
            Ok(other) => return self.fail(format!("unexpected answer {other:?}")),
            Err(err) => return self.fail(err),
        };
        if let Err(err) = check_roots_answer(&chunk, &differing) {
            return self.fail(err.to_string());
        }
        let agreed: Vec<PartitionId> = chunk
            .iter()
            .copied()
            .filter(|p| !differing.iter().any(|d| d.partition == *p))
            .collect();
        if !agreed.is_empty() {
            self.steps.push_back(RunStep::Agreed {
                partitions: agreed,
                at,
            });
        }
        self.differing.extend(differing);
        self.next_compare();
    }

    fn compares_done(&mut self) {
        let differing = std::mem::take(&mut self.differing);
        match self.pass {
            Pass::First => {
                self.counts.partitions_compared += self.partitions.len() as u64;
                self.counts.partitions_differing += differing.len() as u64;
                self.steps.push_back(RunStep::Progress {
                    partitions: self.partitions.len().saturating_sub(differing.len()) as u64,
                    keys: 0,
                });
            }
            Pass::Again => {}
            Pass::Last => {
                let still: Vec<PartitionId> = differing
                    .iter()
                    .map(|d| d.partition)
                    // Differences that are only pending purges are not divergence; an
                    // exchange that failed is (it too moved no key).
                    .filter(|p| {
                        self.differences
                            .get(p)
                            .is_none_or(|d| d.keys > 0 || d.still_differing)
                    })
                    .collect();
                for p in &still {
                    if let Some(d) = self.differences.get_mut(p) {
                        d.still_differing = true;
                    }
                }
                return self.finish(still);
            }
        }
        self.exchanged = differing.iter().map(|d| d.partition).collect();
        self.to_start = differing.into();
        self.exchanging = true;
    }

    /// Starts exchanges up to the limit and, once a pass's exchanges are all done,
    /// moves to the next pass. Exchanges that end at once (nothing to ask) make room
    /// for the next ones in the same call.
    fn advance(&mut self, local: &impl LocalTree) {
        while self.exchanging && self.outcome.is_none() {
            let dry_run = self.config.dry_run && self.pass == Pass::First;
            while self.running.len() < self.config.exchanges_max.max(1) {
                let Some(root) = self.to_start.pop_front() else {
                    break;
                };
                let partition = root.partition;
                self.steps.push_back(RunStep::Began(partition));
                match Exchange::new(
                    local,
                    &root,
                    self.salt(),
                    self.config.horizon_ms,
                    dry_run,
                    self.config.limits,
                ) {
                    Ok(exchange) => {
                        let running = Running {
                            exchange,
                            to_apply: VecDeque::new(),
                        };
                        self.drive(local, running);
                    }
                    Err(err) => self.exchange_ended(partition, Err(err.to_string())),
                }
            }
            if !self.running.is_empty() || !self.to_start.is_empty() {
                return;
            }
            self.exchanging = false;
            self.exchanges_done();
        }
    }

    /// Moves one exchange on: its next apply, its next request, or its end.
    fn drive(&mut self, local: &impl LocalTree, mut running: Running) {
        if let Some(entries) = running.to_apply.pop_front() {
            let tag = self.tag();
            self.steps.push_back(RunStep::Apply { tag, entries });
            self.running.insert(tag, running);
            return;
        }
        if let Some(request) = running.exchange.poll_request(local) {
            let tag = self.tag();
            self.steps.push_back(RunStep::Send { tag, request });
            self.running.insert(tag, running);
            return;
        }
        let partition = running.exchange.partition();
        let result = match running.exchange.failure() {
            Some(err) => Err(err.to_string()),
            None => Ok(running.exchange.stats()),
        };
        self.exchange_ended(partition, result);
    }

    fn exchange_ended(
        &mut self,
        partition: PartitionId,
        result: Result<super::exchange::ExchangeStats, String>,
    ) {
        let first = self.pass == Pass::First;
        if let Ok(stats) = &result {
            self.counts.keys_differing += stats.differing_keys;
            self.counts.keys_sent += stats.keys_sent;
            self.counts.keys_received += stats.keys_received;
            self.counts.pending_purge += stats.pending_purge();
        }
        if first {
            let (keys, moved, still) = match &result {
                Ok(stats) => (
                    stats.differing_keys,
                    stats.keys_sent + stats.keys_received,
                    false,
                ),
                Err(_) => (0, 0, true),
            };
            self.differences.insert(
                partition,
                PartitionDifference {
                    partition,
                    peer: self.peer.clone(),
                    keys,
                    still_differing: still,
                },
            );
            self.steps.push_back(RunStep::Progress {
                partitions: 1,
                keys: moved,
            });
        }
        self.steps.push_back(RunStep::Ended {
            partition,
            error: result.err(),
        });
    }

    fn exchanges_done(&mut self) {
        let exchanged = std::mem::take(&mut self.exchanged);
        match self.pass {
            Pass::First if self.config.dry_run || exchanged.is_empty() => self.finish(Vec::new()),
            // Verify, and give partitions written to during the exchange one more pass.
            Pass::First => {
                self.pass = Pass::Again;
                self.chunk(&exchanged);
                self.next_compare();
            }
            Pass::Again => {
                self.pass = Pass::Last;
                self.chunk(&exchanged);
                self.next_compare();
            }
            Pass::Last => unreachable!("the last pass exchanges nothing"),
        }
    }

    fn fail(&mut self, err: String) {
        self.outcome = Some(Err(err));
        self.steps.push_back(RunStep::Done);
    }

    fn finish(&mut self, still: Vec<PartitionId>) {
        let dry_run = self.config.dry_run;
        let in_sync = self
            .partitions
            .iter()
            .copied()
            .filter(|p| !still.contains(p) && (!dry_run || !self.differences.contains_key(p)))
            .collect();
        self.outcome = Some(Ok(RunOutcome {
            counts: self.counts.clone(),
            differences: self.differences.values().cloned().collect(),
            in_sync,
        }));
        self.steps.push_back(RunStep::Done);
    }
}

#[cfg(test)]
mod tests;
