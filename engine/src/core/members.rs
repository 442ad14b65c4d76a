//! Membership in the core: SWIM's datagrams, timers and events carried out; the roster
//! turned into placement and the view everything reads; this node's status published;
//! joins admitted, members removed, leaving.

use std::collections::HashMap;

use super::io::{Pending, Purpose, StorePurpose};
use super::*;
use crate::membership::{GossipStatus, MemberState, MembershipEvent};
use crate::policy::{Holding, also_holding, filled_word, holding_of};
use crate::protocol::{ErrorCode, ErrorReply};

impl NodeCore {
    /// Carries out what membership asks (datagrams, timers), takes in what it saw, and
    /// rebuilds the view when the roster or the fills changed.
    pub(super) fn flush_membership(&mut self, now: Now, store: &Store) {
        while let Some((to, data)) = self.membership.poll_send() {
            self.outputs.push_back(Output::Datagram { to, data });
        }
        while let Some((after, timer)) = self.membership.poll_timer() {
            self.swim_seq += 1;
            let at = Millis(now.mono().0 + after.as_millis() as u64);
            self.swim_timers
                .push(Reverse(SwimDue(at, self.swim_seq, timer)));
        }
        let mut consult = false;
        while let Some(event) = self.membership.poll_event() {
            match &event {
                MembershipEvent::RemovedWhileAway | MembershipEvent::NameTakenBack(_) => {
                    self.fill.clear();
                    let filled = self.fill.filled().clone();
                    self.store(StoreWork::SaveFilled(filled), StorePurpose::Meta("filled"));
                }
                _ => {}
            }
            match &event {
                MembershipEvent::SteppedAside(other) => {
                    self.stepped_aside = Some(other.addr.to_string())
                }
                MembershipEvent::NameTakenBack(_) => self.stepped_aside = None,
                MembershipEvent::ConsultSeed => consult = true,
                // Whatever comes back (the same process after a pause, or a new one) is
                // reached on a fresh connection, not one that may be dead without knowing.
                MembershipEvent::Died(id) => self.outputs.push_back(Output::Forget {
                    peer: id.name.clone(),
                }),
                // A member that joins or returns has to catch up; so may this node.
                MembershipEvent::Joined(_) | MembershipEvent::Recovered(_) => {
                    self.hints_due = now.mono();
                    self.schedule.wake(now.mono().0);
                }
                _ => {}
            }
            self.event(CoreEvent::Membership(event));
        }
        if consult {
            self.consult_seed(now);
        }
        if self.membership.take_roster_changed() {
            let mut members = self.membership.placement_members();
            members.sort_by(|a, b| a.1.cmp(&b.1));
            let current: Vec<(String, String)> = self
                .placement
                .tokens()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect();
            if members != current {
                let next = Placement::compute_with_tokens(
                    members,
                    self.settings.partitions,
                    self.settings.replication_factor,
                );
                self.event(CoreEvent::PlacementChanged {
                    members: next.members().to_vec(),
                    digest: next.digest(),
                    held: next.partitions_of(&self.me.name).count(),
                });
                self.placement = Arc::new(next);
                // New owners fill from the old ones: handoff is repair.
                self.schedule.wake(now.mono().0);
            }
            let records = self.membership.records();
            self.store(
                StoreWork::SaveMembers(records),
                StorePurpose::Meta("members"),
            );
        }
        // Statuses arrive without a roster change: the view takes in what changed.
        let fingerprint = self.roster_fingerprint();
        if fingerprint != self.view_fingerprint {
            self.view_fingerprint = fingerprint;
            if self.rebuild_view(now) {
                self.update_fill(now, store);
            }
        }
    }

    /// What of the roster the view shows, as one number: each member's identity, state
    /// and last status, and whether the data path reaches it and anyone has spoken. The
    /// view is rebuilt when it changes, and every second anyway (statuses age, and news
    /// of fills settles, with time alone).
    fn roster_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for v in self.membership.roster() {
            v.id.hash(&mut hasher);
            (v.state, v.swim_incarnation, v.since.0).hash(&mut hasher);
            v.status
                .as_ref()
                .map(|s| (s.epoch_ms, s.incarnation, s.seq))
                .hash(&mut hasher);
        }
        self.unreachable.keys().for_each(|k| k.hash(&mut hasher));
        self.membership.heard_from_others().hash(&mut hasher);
        hasher.finish()
    }

    /// Builds the view from the roster, the placement and this node's fill books.
    /// Whether placement, fills or settling news changed.
    pub(super) fn rebuild_view(&mut self, now: Now) -> bool {
        let partitions = self.settings.partitions;
        let mut filled: HashMap<String, PartitionSet> = self
            .membership
            .roster()
            .filter_map(|v| Some((v.id.name.clone(), filled_word(v, partitions)?.clone())))
            .collect();
        let holding: HashMap<String, Holding> = self
            .membership
            .roster()
            .filter(|v| v.id.name != self.me.name)
            .filter_map(|v| Some((v.id.name.clone(), holding_of(v, partitions)?)))
            .collect();
        filled.insert(self.me.name.clone(), self.fill.filled().clone());
        let mono = now.mono().0;
        self.news.observe(&filled, mono);
        let settling = self.news.settling_sets(mono);
        let next = ClusterView {
            me: self.me.name.clone(),
            settings: self.settings,
            members: self.membership.roster().cloned().collect(),
            placement: self.placement.clone(),
            filled,
            holding,
            settling,
            unreachable: self.unreachable.keys().cloned().collect(),
            heard: self.membership.heard_from_others(),
        };
        let current = &self.view;
        let changed = current.placement != next.placement
            || current.filled != next.filled
            || current.settling != next.settling;
        self.view = Arc::new(next);
        self.view_changed = true;
        changed
    }

    /// Publishes this node's status to the cluster.
    pub(super) fn publish_status(&mut self, now: Now, store: &Store) {
        let status = self.gossip_status(now, store);
        self.membership.publish(status, now.mono());
    }

    /// What this node tells the cluster about itself.
    fn gossip_status(&self, now: Now, store: &Store) -> GossipStatus {
        let filled = self.fill.filled().clone();
        let backlog = store.hint_backlog().unwrap_or_default();
        GossipStatus {
            hlc: self.clock.read(now.wall_ms()),
            wall_ms: now.wall_ms(),
            hints: backlog.iter().map(|b| b.count).sum(),
            hints_oldest_ms: backlog
                .iter()
                .map(|b| b.oldest_ms)
                .filter(|&t| t > 0)
                .min()
                .unwrap_or(0),
            writes: self.counters.writes,
            reads: self.counters.reads,
            partitions_held: self.placement.partitions_of(&self.me.name).count() as u16,
            records: store.len().unwrap_or(0),
            placement_digest: self.placement.digest(),
            also_holding: also_holding(store.partitions_with_data(), &filled),
            filled,
            sync: self.sync_summary(now),
            catalog: self.catalog.digest(),
            ..GossipStatus::default()
        }
    }

    /// Asks a live member for its view of the cluster: a node that keeps being declared
    /// dead learns whether another process holds its name.
    fn consult_seed(&mut self, now: Now) {
        // The member that said this node is down first: it may be the only one holding
        // the later life of this name that keeps this one out.
        let told = self
            .membership
            .consult_whom()
            .and_then(|name| self.view.member(name))
            .map(|m| m.id.clone());
        let seed = told.or_else(|| {
            self.view
                .members
                .iter()
                .find(|m| m.id.name != self.me.name && m.state.is_live())
                .map(|m| m.id.clone())
        });
        if let Some(seed) = seed {
            self.send(
                &seed,
                Request::Members,
                Purpose::Consult,
                CONSULT_TIMEOUT_MS,
                now,
            );
        }
    }

    /// The consulted member's view.
    pub(super) fn consulted(&mut self, pending: Pending, response: Response, now: Now) {
        match response {
            Response::Members(members) => self.membership.install(members, now.mono()),
            other => self.event(CoreEvent::Debug(format!(
                "no view from {}: {other:?}",
                pending.to
            ))),
        }
    }

    /// A join request, decided against this node's membership: a second process under
    /// a live member's name is refused; a replacement takes a dead member's place.
    pub(super) fn admit(&mut self, id: MemberId, replace: Option<String>, now: Now) -> Answer {
        let refused = |core: &mut NodeCore, code, why: String| {
            core.event(CoreEvent::JoinRefused {
                member: id.name.clone(),
                why: why.clone(),
            });
            Answer::Failed(ErrorReply::new(code, why))
        };
        if self.membership.is_leaving() {
            let why = format!(
                "{} is leaving the cluster; join through another member",
                self.me.name
            );
            return refused(self, ErrorCode::NotReady, why);
        }
        if id.name == self.me.name {
            let why = format!(
                "{} is the name of the node at {} that answered; a second process under the same name is refused",
                id.name, self.me.addr
            );
            return refused(self, ErrorCode::NameInUse, why);
        }
        let mut token = None;
        if let Some(old) = &replace {
            if *old == id.name {
                let why = format!(
                    "{old} cannot replace itself; a node that comes back under its own name needs no --replace"
                );
                return refused(self, ErrorCode::Refused, why);
            }
            let known = self
                .membership
                .member(old)
                .map(|v| (v.state, v.id.token().to_string()));
            match known {
                None => {
                    let why = format!(
                        "{old} is not a member of this cluster, so {} cannot replace it",
                        id.name
                    );
                    return refused(self, ErrorCode::Refused, why);
                }
                Some((MemberState::Left, old_token)) => {
                    if self
                        .membership
                        .placement_members()
                        .iter()
                        .any(|(_, t)| *t == old_token)
                    {
                        let why = format!("{old} has left and its place is already taken");
                        return refused(self, ErrorCode::Refused, why);
                    }
                    token = Some(old_token);
                }
                Some((state @ (MemberState::Alive | MemberState::Suspect), _)) => {
                    let why = format!(
                        "{old} is {}: only a dead member can be replaced; stop it first",
                        state.as_str()
                    );
                    return refused(self, ErrorCode::Refused, why);
                }
                Some((MemberState::Dead, old_token)) => {
                    let cluster_ms = self.cluster_wall_ms(now);
                    match self.membership.depart(old, now.mono(), cluster_ms) {
                        Ok(gone) => self.event(CoreEvent::Removed(gone)),
                        Err(why) => return refused(self, ErrorCode::Refused, why),
                    }
                    // Durable before the answer: a crash right after must not bring
                    // the replaced member back.
                    let records = self.membership.records();
                    self.store(
                        StoreWork::SaveMembers(records),
                        StorePurpose::Meta("members"),
                    );
                    token = Some(old_token);
                }
            }
        }
        // The joining node announces itself once it has installed this answer; adding it
        // here would leave a dead member behind whenever the joiner then refuses to start
        // (other settings, a full disk).
        self.event(CoreEvent::JoinAdmitted {
            member: id.name.clone(),
            replaces: replace,
        });
        Answer::Admitted {
            members: self.membership.seed_members(),
            token,
        }
    }

    /// Removes a dead member for good.
    fn remove_member(&mut self, name: &str, now: Now) -> Result<MemberId, String> {
        let cluster_ms = self.cluster_wall_ms(now);
        let id = self.membership.depart(name, now.mono(), cluster_ms)?;
        // The removal is durable before it is acknowledged: a crash of this node right
        // after must not bring the member back.
        let records = self.membership.records();
        self.store(
            StoreWork::SaveMembers(records),
            StorePurpose::Meta("members"),
        );
        self.event(CoreEvent::Removed(id.clone()));
        Ok(id)
    }

    pub(super) fn remove(&mut self, ask: AskId, name: String, now: Now) {
        let answer = match self.remove_member(&name, now) {
            Ok(id) => Answer::Removed(id),
            Err(why) => Answer::Failed(ErrorReply::new(ErrorCode::Refused, why)),
        };
        self.answer(ask, answer);
    }

    pub(super) fn leave(&mut self, ask: AskId, now: Now, store: &Store) {
        if !self.membership.is_leaving() {
            let status = self.gossip_status(now, store);
            self.membership.leave(status, now.mono());
            self.leave_at = Some(Millis(now.mono().0 + LEAVE_GRACE_MS));
        }
        self.answer(ask, Answer::Leaving);
    }

    /// Tells the cluster now of a change to this node's own state (its fills).
    pub(super) fn refresh_status(&mut self, now: Now, store: &Store) {
        if !self.membership.is_leaving() {
            self.publish_status(now, store);
        }
    }

    /// Installs a view of the cluster (a seed's answer, for the simulator's restarts
    /// and the runtime's consultations).
    pub fn install(&mut self, members: Vec<SeedMember>, now: Now, store: &Store) {
        self.membership.install(members, now.mono());
        self.flush_membership(now, store);
    }
}
