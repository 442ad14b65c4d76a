//! Rounds of anti-entropy: when one is due (the schedule, a repair asked for), which
//! peers and partitions it takes (the node's rule, `plan_runs`), what it cannot
//! compare, its runs one after the other, and its end: the report, the books, the fill
//! books, the upkeep the agreements allow, the schedule or the asker told.

use super::*;

impl NodeCore {
    /// Starts the round the schedule says is due, when none is going.
    pub(in crate::core) fn poll_schedule(&mut self, now: Now, store: &Store) {
        if self.round.is_some() {
            return;
        }
        let filling: Vec<PartitionId> = self.fill.filling().collect();
        let mono = now.mono().0;
        match self.schedule.poll(mono, !filling.is_empty()) {
            Some(RunDue::Fill) => {
                self.start_round(
                    RunKind::Fill,
                    Some(RunDue::Fill),
                    RunScope::Fill(&filling),
                    None,
                    false,
                    None,
                    now,
                    store,
                );
            }
            Some(RunDue::Full) if self.background_paused => {
                // Stalled: background runs skip their turn; fills go on.
                let still = !filling.is_empty();
                let jitter = self.random();
                self.schedule.done(RunDue::Full, mono, still, jitter);
            }
            Some(RunDue::Full) => {
                self.start_round(
                    RunKind::Background,
                    Some(RunDue::Full),
                    RunScope::All(None),
                    None,
                    false,
                    None,
                    now,
                    store,
                );
            }
            None => {}
        }
    }

    /// `vergent repair`: a round now, or after the one going.
    pub(in crate::core) fn ask_repair(
        &mut self,
        ask: AskId,
        partition: Option<PartitionId>,
        peer: Option<String>,
        dry_run: bool,
        now: Now,
        store: &Store,
    ) {
        if let Some(p) = partition
            && p >= self.settings.partitions
        {
            let reply = ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "partition {p} does not exist: the cluster has partitions 0 to {}",
                    self.settings.partitions - 1
                ),
            );
            self.answer(ask, Answer::Failed(reply));
            return;
        }
        let repair = RepairAsk {
            ask,
            partition,
            peer,
            dry_run,
            asked_wall: now.wall_ms(),
        };
        self.repairs.push_back(repair);
        self.next_repair(now, store);
    }

    pub(in crate::core) fn next_repair(&mut self, now: Now, store: &Store) {
        if self.round.is_some() {
            return;
        }
        let Some(repair) = self.repairs.pop_front() else {
            return;
        };
        self.start_round(
            RunKind::Repair,
            None,
            RunScope::All(repair.partition),
            repair.peer.as_deref(),
            repair.dry_run,
            Some((repair.ask, repair.asked_wall)),
            now,
            store,
        );
    }

    /// Starts a round: which peers, which partitions (the node's rule, [`plan_runs`]),
    /// what cannot be compared, the books told.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::core) fn start_round(
        &mut self,
        kind: RunKind,
        due: Option<RunDue>,
        scope: RunScope<'_>,
        only_peer: Option<&str>,
        dry_run: bool,
        ask: Option<(AskId, u64)>,
        now: Now,
        store: &Store,
    ) {
        // Handoff waits for exchanges after the placement changed.
        let digest = self.view.placement.digest();
        self.books.agreements.note_placement(&digest, now.mono().0);
        let partition = match scope {
            RunScope::All(partition) => partition,
            RunScope::Fill(_) => None,
        };
        let view = self.view.clone();
        let me = self.me.name.clone();
        let with_data = store.partitions_with_data();
        let plans = {
            let replica_set = |p: PartitionId| view.replica_set_of(p);
            let peer = |name: &str| {
                only_peer.is_none_or(|only| only == name)
                    && view.member(name).is_some_and(|m| m.state.is_live())
            };
            let inputs = RunInputs {
                me: &me,
                partitions: self.settings.partitions,
                replica_set: &replica_set,
                with_data: &with_data,
                statuses_known: view.statuses_known(),
                holders: &|p| view.holders_by_word(p),
                peer: &peer,
            };
            plan_runs(&inputs, scope)
        };
        let mut report = RepairReport {
            node: me.clone(),
            dry_run,
            peers: plans.keys().cloned().collect(),
            in_sync: true,
            ..RepairReport::default()
        };
        if let Some(peer) = only_peer
            && plans.is_empty()
        {
            report.problems.push(format!(
                "{peer} is not a live member sharing a partition with {me}"
            ));
            report.in_sync = false;
        }
        // A node that knows nobody else (it has just joined and not heard from anyone,
        // or every other member left) has compared nothing: that is not "in sync".
        if plans.is_empty()
            && !view
                .members
                .iter()
                .any(|m| m.id.name != me && m.state != MemberState::Left)
        {
            report.problems.push(format!(
                "{me} knows no other member of the cluster: nothing was compared"
            ));
            report.in_sync = false;
        }
        // A co-replica that is down cannot be compared: the round is not complete.
        for member in view
            .members
            .iter()
            .filter(|m| m.id.name != me && !m.state.is_live())
        {
            let name = member.id.name.as_str();
            if member.state == MemberState::Left || only_peer.is_some_and(|only| only != name) {
                continue;
            }
            let shares = view
                .placement
                .partitions_of(name)
                .any(|p| view.placement.holds(&me, p) && partition.is_none_or(|only| only == p));
            if shares {
                report.problems.push(format!(
                    "{name} is {}: its partitions were not compared",
                    member.state.as_str()
                ));
                report.in_sync = false;
            }
        }
        let total: u64 = plans.values().map(|p| p.len() as u64).sum();
        self.books.run = Some(RunSummary {
            kind,
            peers: plans
                .iter()
                .take(RUN_PEERS_GOSSIPED_MAX)
                .map(|(p, _)| p.clone())
                .collect(),
            peers_total: plans.len().min(usize::from(u16::MAX)) as u16,
            total,
            started_ms: now.wall_ms(),
            ..RunSummary::default()
        });
        let horizon_ms = self.grace_horizon(now);
        let mut round = Round {
            kind,
            due,
            dry_run,
            ask: ask.map(|(a, _)| a),
            asked_wall: ask.map_or(0, |(_, w)| w),
            started_mono: now.mono(),
            runs: BTreeMap::new(),
            waiting: VecDeque::new(),
            order: plans.keys().cloned().collect(),
            ended: BTreeMap::new(),
            report,
            progress: RepairProgress {
                done: 0,
                total,
                keys_moved: 0,
            },
        };
        for (peer, partitions) in plans {
            let config = RunConfig {
                salt: self.random(),
                dry_run,
                horizon_ms,
                limits: self.sync_limits(),
                exchanges_max: self.config.exchanges_in_flight.max(1),
                roots_per_request: ROOTS_PER_REQUEST_MAX,
            };
            let count = partitions.len();
            round.waiting.push_back((
                peer.clone(),
                PeerRun {
                    run: Run::new(&peer, partitions, config),
                    partitions: count,
                    began: now.moment(),
                    counts: SyncCounts::default(),
                    compare_at: None,
                },
            ));
        }
        self.round = Some(round);
        self.progress_tick(0, 0);
        self.next_run(now, store);
        self.end_round_if_done(now, store);
    }

    /// Starts the round's next runs, one at a time, until one is going or none is left
    /// (a run with nothing to compare is done at once).
    pub(in crate::core) fn next_run(&mut self, now: Now, store: &Store) {
        loop {
            let Some(round) = self.round.as_mut() else {
                return;
            };
            if !round.runs.is_empty() {
                return;
            }
            let Some((peer, mut run)) = round.waiting.pop_front() else {
                return;
            };
            run.began = now.moment();
            round.runs.insert(peer.clone(), run);
            self.drive_run(&peer, now, store);
        }
    }

    /// Progress of the round: the books, and the asker of a repair.
    pub(in crate::core) fn progress_tick(&mut self, done: u64, moved: u64) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        round.progress.done += done;
        round.progress.keys_moved += moved;
        let snapshot = round.progress;
        let ask = round.ask;
        self.books.progress = Some(snapshot);
        if let Some(run) = self.books.run.as_mut() {
            run.done = snapshot.done;
            run.keys_moved = snapshot.keys_moved;
        }
        if let Some(ask) = ask {
            self.outputs.push_back(Output::Progress {
                ask,
                progress: snapshot,
            });
        }
    }

    /// The run with `peer` is done: its outcome goes into the round's report and the
    /// books.
    pub(in crate::core) fn run_done(&mut self, peer: &str, now: Now) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(run) = round.runs.remove(peer) else {
            return;
        };
        let dry_run = round.dry_run;
        let outcome = run
            .run
            .outcome()
            .cloned()
            .unwrap_or_else(|| Err("the run ended without an outcome".into()));
        let report = &mut round.report;
        let result = match outcome {
            Ok(outcome) => {
                let mut counts = run.counts.clone();
                counts.add(&outcome.counts);
                let differences = outcome.differences;
                let in_sync = outcome.in_sync;
                let all_in_sync = differences.iter().all(|d| !d.still_differing)
                    && (dry_run || in_sync.len() == run.partitions);
                if dry_run {
                    report.in_sync &= differences.is_empty();
                } else {
                    report.in_sync &= all_in_sync;
                    for d in differences.iter().filter(|d| d.still_differing) {
                        report.problems.push(format!(
                            "partition {} still differs from {} after repair",
                            d.partition, d.peer
                        ));
                    }
                }
                Ok((counts, differences, in_sync, run.began, run.partitions))
            }
            Err(why) => {
                report.in_sync = false;
                report.problems.push(format!("{peer}: {why}"));
                Err(why)
            }
        };
        round.ended.insert(peer.to_string(), result.clone());
        match result {
            Ok((counts, differences, in_sync, began, partitions)) => {
                self.event(CoreEvent::Exchanged {
                    counts: counts.clone(),
                    ok: true,
                });
                let all_in_sync = differences.iter().all(|d| !d.still_differing)
                    && (dry_run || in_sync.len() == partitions);
                if !dry_run {
                    self.agreed(peer, &in_sync, began);
                }
                let entry = self.books.peers.entry(peer.to_string()).or_default();
                entry.peer = peer.to_string();
                entry.last_exchange_ms = Some(now.wall_ms());
                // The last compare is the verification at the end of a repair, or the
                // comparison itself in a dry run.
                entry.differing_partitions = differences
                    .iter()
                    .filter(|d| {
                        if dry_run {
                            d.keys > 0
                        } else {
                            d.still_differing
                        }
                    })
                    .map(|d| d.partition)
                    .collect();
                entry.partitions_differing = entry.differing_partitions.len() as u64;
                let moved = counts.metadata_bytes_sent
                    + counts.metadata_bytes_received
                    + counts.entry_bytes_sent
                    + counts.entry_bytes_received;
                entry.bytes_moved += moved;
                entry.last_error = None;
                if all_in_sync && !dry_run {
                    entry.last_in_sync_ms = Some(began.wall);
                }
                if let Some(run) = self.books.run.as_mut() {
                    run.bytes_moved += moved;
                }
            }
            Err(why) => {
                self.event(CoreEvent::Exchanged {
                    counts: SyncCounts::default(),
                    ok: false,
                });
                let entry = self.books.peers.entry(peer.to_string()).or_default();
                entry.peer = peer.to_string();
                entry.last_error = Some(why);
            }
        }
    }

    /// Ends the round once every run is done: its report, the fill books, the upkeep
    /// the agreements allow (purges after a full round only), the schedule or the
    /// repair's asker told, and the next repair started.
    pub(in crate::core) fn end_round_if_done(&mut self, now: Now, store: &Store) {
        self.next_run(now, store);
        if !self
            .round
            .as_ref()
            .is_some_and(|r| r.runs.is_empty() && r.waiting.is_empty())
        {
            return;
        }
        let mut round = self.round.take().expect("checked");
        let report = &mut round.report;
        for peer in &round.order {
            if let Some(Ok((counts, differences, ..))) = round.ended.get(peer) {
                report.counts.add(counts);
                report.differences.extend(differences.iter().cloned());
            }
        }
        report.duration_ms = now.mono().0.saturating_sub(round.started_mono.0);
        self.books.progress = None;
        self.books.run = None;
        let last_run = self
            .books
            .last_run
            .replace((now.wall_ms(), report.counts.clone()));
        let mut report = round.report;
        match round.kind {
            RunKind::Repair => {
                // A round that was going when the repair was asked for did the work the
                // repair waited for: the report says what happened to the data from the
                // asking on.
                let waited = last_run
                    .filter(|(ended, _)| *ended >= round.asked_wall)
                    .map(|(_, counts)| counts)
                    .filter(|c| c.keys_sent + c.keys_received > 0);
                if let Some(counts) = waited {
                    report.counts.keys_sent += counts.keys_sent;
                    report.counts.keys_received += counts.keys_received;
                    report.counts.entry_bytes_sent += counts.entry_bytes_sent;
                    report.counts.entry_bytes_received += counts.entry_bytes_received;
                    report.waited_for = Some(counts);
                }
                if !round.dry_run {
                    self.update_fill(now, store);
                }
            }
            RunKind::Fill | RunKind::Background => {
                self.update_fill(now, store);
                self.upkeep(round.kind == RunKind::Background, now, store);
            }
        }
        self.event(CoreEvent::RunEnded {
            kind: round.kind,
            report: Box::new(report.clone()),
        });
        if let Some(due) = round.due {
            let still = self.fill.filling().next().is_some();
            let jitter = if due == RunDue::Full {
                self.random()
            } else {
                0
            };
            self.schedule.done(due, now.mono().0, still, jitter);
        }
        if let Some(ask) = round.ask {
            self.answer(ask, Answer::Repaired(Box::new(report)));
        }
        self.next_repair(now, store);
        self.poll_schedule(now, store);
    }
}
