//! Hint delivery by the node's pump, and anti-entropy by the node's rules
//! (`vergent::policy`) and its run state machine (`vergent::antientropy::run`): when a
//! run is due, which partitions it compares with which peer, the run's steps carried
//! out as messages, the books of agreement, and the upkeep after a run (handoff,
//! tombstone purges). Nothing here decides; it carries out.

use rand::RngExt;
use vergent::antientropy::messages::{ROOTS_PER_REQUEST_MAX, SyncLimits, SyncResponse};
use vergent::antientropy::run::{Run, RunConfig, RunStep};
use vergent::base::Millis;
use vergent::placement::ReplicaSet;
use vergent::policy::{
    Agreed, HintContext, HintWork, HintsDeleted, PURGE_BATCH_MAX, RunDue, RunInputs, RunScope,
    TombstoneArrivals, UpkeepInputs, plan_runs, plan_upkeep,
};

use super::Sim;
use super::config::{EXCHANGES_IN_FLIGHT, REPLICA_TIMEOUT_MS};
use super::network::Msg;
use super::node::Applied;

/// An anti-entropy run of one node with one peer: the node's own run state machine,
/// and when it began (the partitions in sync at its end are so as of then).
pub(super) struct SyncRun {
    pub(super) peer: usize,
    pub(super) run: Run<Agreed>,
    pub(super) started: Agreed,
    pub(super) deadline_ms: u64,
}

impl Sim {
    /// Hint delivery by the node's own pump ([`vergent::policy::HintPump`]): this
    /// carries out its work (sends and deletions) and nothing else.
    pub(super) fn drain_hints(&mut self, i: usize) {
        let (wall_ms, now) = (self.wall(i), Millis(self.now));
        let window_ms = self.config.hint_window_ms;
        let node = &mut self.nodes[i];
        let (Some(store), Some(membership)) = (&node.store, &node.membership) else {
            return;
        };
        let state = |name: &str| membership.member(name).map(|v| v.state);
        let reachable = |_: &str| true;
        let cx = HintContext {
            me: &node.name,
            state: &state,
            reachable: &reachable,
            wall_ms,
            window_ms,
            now,
        };
        let work = node.hints.plan(store, &cx).expect("hint plan");
        for step in work {
            match step {
                HintWork::Delete { keys, why, .. } => {
                    if why == HintsDeleted::TargetLeft {
                        *self.report.faults.entry("hints-dropped").or_default() +=
                            keys.len() as u64;
                    }
                    let store = self.nodes[i].store.as_ref().unwrap();
                    store.delete_hints_now(keys).expect("delete hints");
                }
                HintWork::Send {
                    batch,
                    target,
                    entries,
                } => match self.index_of(&target) {
                    Some(j) => self.send(i, j, Msg::Hints { batch, entries }),
                    None => self.nodes[i].hints.failed(batch),
                },
            }
        }
    }

    /// The horizon past which tombstones are purgeable on node `i`.
    pub(super) fn grace_horizon(&self, i: usize) -> u64 {
        self.rules_wall(i)
            .saturating_sub(self.config.tombstone_grace_ms)
    }

    /// The wall time node `i`'s rules go by: its clock, or the cluster's when that is
    /// behind it, as the node's.
    fn rules_wall(&self, i: usize) -> u64 {
        self.wall(i).min(self.cluster_wall(i))
    }

    /// Remembers when node `i` first saw the placement it has now (handoff waits for
    /// exchanges after it), as the node does before each run.
    fn note_placement(&mut self, i: usize) {
        let digest = self.placement(i).digest();
        let now = self.now;
        self.nodes[i].agreements.note_placement(&digest, now);
    }

    /// The moment now on node `i`, in its two clocks, as its books keep moments.
    pub(super) fn moment(&self, i: usize) -> Agreed {
        Agreed {
            mono: self.now,
            wall: self.wall(i),
        }
    }

    /// Every exchange of the run that was due has ended: as the node, the fill books
    /// brought up to date, the upkeep the agreements allow (purges after a full run
    /// only), and the schedule told.
    pub(super) fn runs_ended(&mut self, i: usize) {
        let Some(due) = self.nodes[i].schedule.running() else {
            return;
        };
        self.update_fill(i);
        self.upkeep(i, due == RunDue::Full);
        let still = self.nodes[i].fill.filling().next().is_some();
        let jitter = self.rng.random::<u64>();
        let now = self.now;
        self.nodes[i].schedule.done(due, now, still, jitter);
    }

    /// After a run, as the node does: partitions handed off where every counting owner
    /// agreed since their release, tombstones purged below the horizon of agreement
    /// with every other replica.
    fn upkeep(&mut self, i: usize, purge: bool) {
        // Out of the node for the purges below, and put back after them.
        let mut arrivals =
            std::mem::replace(&mut self.nodes[i].arrivals, TombstoneArrivals::new(0));
        self.upkeep_with(i, &mut arrivals, purge);
        self.nodes[i].arrivals = arrivals;
    }

    fn upkeep_with(&mut self, i: usize, arrivals: &mut TombstoneArrivals, purge: bool) {
        let Some(store) = self.nodes[i].store.as_ref() else {
            return;
        };
        let me = self.names[i].clone();
        let placement = self.placement(i);
        let agreements = &self.nodes[i].agreements;
        let (rules_wall, now) = (self.rules_wall(i), self.now);
        let agreed = |p: u16, peer: &str| agreements.as_of(p, peer, now, rules_wall);
        let with_data = store.partitions_with_data();
        let replica_set = |p: u16| self.replica_set(i, &placement, p);
        let holders = |p: u16| self.holders_of(i, p);
        let fill = &self.nodes[i].fill;
        let released_at = |p: u16| fill.released_at(p);
        let inputs = UpkeepInputs {
            me: &me,
            partitions: self.settings.partitions,
            with_data: &with_data,
            replica_set: &replica_set,
            holders: &holders,
            released_at: &released_at,
            placement_since: self.nodes[i].agreements.placement_since(),
            grace_horizon: self.grace_horizon(i),
            agreed: &agreed,
            purge,
        };
        let plan = plan_upkeep(&inputs, arrivals);
        // What the node's store does with the plan; the tombstones dropped or purged
        // are recorded for the invariants.
        for &p in &plan.hand_off {
            self.check_handoff(i, p, &placement);
        }
        let store = self.nodes[i].store.as_ref().unwrap();
        let mut gone = Vec::new();
        for &p in &plan.hand_off {
            // Its tombstones go with it: for the checks, as good as purged (the owners
            // are not sent those past the grace where they hold nothing).
            gone.extend(
                store
                    .tombstones_before(p, u64::MAX, usize::MAX)
                    .expect("tombstones"),
            );
            store.drop_partition_now(p).expect("drop partition");
        }
        let mut purged = 0;
        for &(p, horizon) in &plan.purge_below {
            let tombstones = store
                .tombstones_before(p, horizon, PURGE_BATCH_MAX)
                .expect("tombstones");
            if !tombstones.is_empty() {
                purged += store.purge_now(tombstones.clone()).expect("purge");
                gone.extend(tombstones);
            }
        }
        for (key, version) in gone {
            self.purged
                .entry((i, key))
                .or_default()
                .push((version, self.now));
        }
        let handed_off = plan.hand_off;
        for &p in &handed_off {
            self.nodes[i].fill.handed_off(p);
        }
        if !handed_off.is_empty() {
            self.log(format!("{me} handed off {handed_off:?}"));
            *self.report.faults.entry("handoff").or_default() += handed_off.len() as u64;
        }
        if purged > 0 {
            self.log(format!("{me} purged {purged} tombstones"));
            *self.report.faults.entry("purge").or_default() += purged;
        }
    }

    /// A partition is dropped by an old owner only once every replica that counts for
    /// it holds what the old owner holds, or newer: node `i` is about to hand off `p`.
    /// A replica that is down is not looked at (its store is closed), nor one that in
    /// its own view no longer takes the partition's writes, nor one wiped since this
    /// node last heard of it; a tombstone past the grace
    /// may rightly be missing (the owners purge it, or were never sent it).
    fn check_handoff(&mut self, i: usize, p: u16, placement: &vergent::placement::Placement) {
        let set = self.replica_set(i, placement, p);
        let horizon = self.grace_horizon(i);
        let store = self.nodes[i].store.as_ref().unwrap();
        let leaves = 0..vergent::tree::LEAVES as u16;
        let (entries, _) = store
            .entries_in(p, leaves, None, usize::MAX)
            .expect("entries");
        let mut missing = Vec::new();
        for owner in set.counted.iter().filter(|o| **o != self.names[i]) {
            let Some(r) = self
                .index_of(owner)
                .filter(|&r| self.nodes[r].store.is_some())
            else {
                continue;
            };
            // An owner whose disk was replaced since this node last heard of it is not
            // the replica this node agreed with: what only the old disk held went with
            // it (the one destructive fault a run has), and the owner refills.
            let known_epoch = self.nodes[i]
                .membership
                .as_ref()
                .and_then(|m| m.member(owner))
                .map(|v| v.id.data_epoch);
            if known_epoch.is_some_and(|epoch| epoch != self.nodes[r].data_epoch) {
                continue;
            }
            // An owner that in its own view no longer takes the partition's writes may
            // have handed it off itself (views differ for a moment after a change); its
            // own handoff was checked against the owners it counted.
            if self.nodes[r].membership.is_none()
                || !self
                    .replica_set(r, &self.placement(r), p)
                    .targets
                    .contains(owner)
            {
                continue;
            }
            for entry in &entries {
                let tombstone_past_grace = entry.record.payload.value().is_none()
                    && entry.record.version.hlc.wall_ms() < horizon;
                if !tombstone_past_grace
                    && self.held_version(r, &entry.key) < Some(entry.record.version)
                {
                    missing.push(format!(
                        "{owner} lacks {} at {:?}",
                        String::from_utf8_lossy(&entry.key),
                        entry.record.version
                    ));
                }
            }
        }
        if !missing.is_empty() {
            self.violations.push(format!(
                "{} handed off partition {p} before every owner synced: {}",
                self.names[i],
                missing.join("; ")
            ));
        }
    }

    /// Exchanges with every live peer the partitions both take writes for, and hands
    /// off partitions this node holds data of without taking their writes, to the
    /// replicas that count for them (the node's plan).
    pub(super) fn start_syncs(&mut self, i: usize, only: Option<&[u16]>) {
        self.note_placement(i);
        let me = self.names[i].clone();
        let with_data = self.nodes[i]
            .store
            .as_ref()
            .map(|s| s.partitions_with_data())
            .unwrap_or_default();
        let placement = self.placement(i);
        let sets: Vec<ReplicaSet> = (0..self.settings.partitions)
            .map(|p| self.replica_set(i, &placement, p))
            .collect();
        let statuses_known = self.statuses_known(i, &placement);
        let replica_set = |p: u16| sets[usize::from(p)].clone();
        let busy: Vec<usize> = self.nodes[i].sync_runs.values().map(|r| r.peer).collect();
        let peer = |name: &str| {
            self.live_in_view(i, name)
                && self
                    .index_of(name)
                    .is_some_and(|j| j != i && !busy.contains(&j))
        };
        let inputs = RunInputs {
            me: &me,
            partitions: self.settings.partitions,
            replica_set: &replica_set,
            with_data: &with_data,
            statuses_known,
            holders: &|p| self.holders_by_word(i, p),
            peer: &peer,
        };
        let scope = match only {
            Some(only) => RunScope::Fill(only),
            None => RunScope::All(None),
        };
        let plan = plan_runs(&inputs, scope);
        for (peer, partitions) in plan {
            let j = self.index_of(&peer).expect("a planned peer is a node");
            let config = RunConfig {
                salt: self.rng.random::<u64>(),
                dry_run: false,
                horizon_ms: self.grace_horizon(i),
                limits: SyncLimits::default(),
                exchanges_max: EXCHANGES_IN_FLIGHT,
                roots_per_request: ROOTS_PER_REQUEST_MAX,
            };
            let id = self.next_id;
            self.next_id += 1;
            let run = SyncRun {
                peer: j,
                run: Run::new(&peer, partitions, config),
                started: self.moment(i),
                deadline_ms: self.now + REPLICA_TIMEOUT_MS,
            };
            self.nodes[i].sync_runs.insert(id, run);
            self.drive_run(i, id);
        }
    }

    pub(super) fn sync_reply(
        &mut self,
        i: usize,
        id: u64,
        tag: u64,
        response: Result<SyncResponse, String>,
    ) {
        let Some(mut sync) = self.nodes[i].sync_runs.remove(&id) else {
            return;
        };
        let Some(store) = self.nodes[i].store.as_ref() else {
            return;
        };
        sync.run.handle_response(store, tag, response);
        self.nodes[i].sync_runs.insert(id, sync);
        self.drive_run(i, id);
    }

    /// Carries out what run `id` of node `i` asks, as the node's driver does: compares
    /// at the time now, requests as messages, entries applied as the node applies
    /// them; agreements into the books; at its end, the partitions in sync as of its
    /// start, the fill, and the upkeep.
    fn drive_run(&mut self, i: usize, id: u64) {
        let Some(mut sync) = self.nodes[i].sync_runs.remove(&id) else {
            return;
        };
        let peer = sync.peer;
        while let Some(step) = sync.run.poll() {
            match step {
                RunStep::Compare(_) => {
                    let at = self.moment(i);
                    let store = self.nodes[i].store.as_ref().unwrap();
                    sync.run.compare(store, at);
                }
                RunStep::Send { tag, request } => {
                    sync.deadline_ms = self.now + REPLICA_TIMEOUT_MS;
                    self.send(
                        i,
                        peer,
                        Msg::Sync {
                            run: id,
                            tag,
                            request,
                        },
                    );
                }
                RunStep::Apply { tag, entries } => {
                    let result = match self.apply(i, &entries) {
                        Applied::Yes => Ok(()),
                        Applied::Refused => Err("a version from beyond the offset bound".into()),
                        Applied::No => Err("not applied".into()),
                    };
                    let store = self.nodes[i].store.as_ref().unwrap();
                    sync.run.applied(store, tag, result);
                }
                RunStep::Agreed { partitions, at } => {
                    let name = self.names[peer].clone();
                    self.nodes[i].agreements.agreed(&name, &partitions, at);
                }
                RunStep::Began(_) | RunStep::Progress { .. } => {}
                RunStep::Ended { partition, error } => {
                    if let Some(err) = error {
                        self.log(format!(
                            "{} exchange of {partition} with {} failed: {err}",
                            self.names[i], self.names[peer]
                        ));
                    }
                }
                RunStep::Done => {
                    if let Some(Ok(outcome)) = sync.run.outcome() {
                        let name = self.names[peer].clone();
                        self.nodes[i]
                            .agreements
                            .agreed(&name, &outcome.in_sync, sync.started);
                    }
                    if self.nodes[i].sync_runs.is_empty() {
                        self.runs_ended(i);
                    }
                    return;
                }
            }
        }
        self.nodes[i].sync_runs.insert(id, sync);
    }
}
