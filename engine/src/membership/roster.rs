//! The roster kept in step with SWIM: each member's newest identity, its state (with the
//! events a change of state raises) and its last gossiped status.

use foca::{OwnedNotification, State};

use super::{
    DEPARTURES_GOSSIPED_MAX, Departure, GossipStatus, MemberId, MemberState, MemberView,
    Membership, MembershipEvent,
};
use crate::base::Millis;

impl Membership {
    /// Brings the roster up to date with SWIM's view and the gossiped statuses.
    pub(super) fn sync(&mut self, now: Millis) {
        let mut defunct = false;
        while let Some(notification) = self.runtime.to_notify() {
            if let OwnedNotification::Defunct = notification {
                defunct = true;
            }
        }
        if defunct {
            self.schedule_renewal(now);
        }
        // Read in place: this runs for every datagram, and statuses carry bitmaps.
        let book = self.book.clone();
        let book = book.lock().expect("status book lock");
        let statuses = book.latest();
        // Departures travel in every status, so a member that missed one (it was down
        // or cut off) learns it from anyone's next status.
        let mut heard: Vec<Departure> = statuses
            .values()
            .flat_map(|s| s.departed.iter().take(DEPARTURES_GOSSIPED_MAX).cloned())
            .collect();
        heard.sort_by_key(|d| std::cmp::Reverse((d.epoch_ms, d.incarnation)));
        for departure in heard {
            self.learn_departure(departure);
        }
        if !self.leaving && !self.going_down && self.departed(&self.me.clone()) {
            // Removed while it was away (cut off, or paused past the others' patience):
            // it comes back as a new member, which fills before it counts, under a life
            // after the departed one (a departure covers every incarnation of a life).
            let departed_life = self
                .departed
                .iter()
                .filter(|d| d.name == self.me.name)
                .map(|d| d.epoch_ms)
                .max()
                .unwrap_or(self.me.epoch_ms);
            self.me.epoch_ms = self.me.epoch_ms.max(departed_life.saturating_add(1));
            self.events.push_back(MembershipEvent::RemovedWhileAway);
            self.renew(now);
        }
        let mut seen: Vec<(MemberId, MemberState, u16)> = self
            .swim
            .iter_membership_state()
            .map(|member| {
                let state = match member.state() {
                    State::Alive => MemberState::Alive,
                    State::Suspect => MemberState::Suspect,
                    State::Down => MemberState::Dead,
                };
                (member.id().clone(), state, member.incarnation())
            })
            .collect();
        let me = self.me.clone();
        let my_state = if self
            .roster
            .get(&me.name)
            .is_some_and(|v| v.state == MemberState::Left)
        {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        let mut rivals = Vec::new();
        // Other identities of this node's name are its own earlier lives, or another
        // process under its name: the roster's entry for this node is this process.
        for (id, _, _) in seen.iter().filter(|(id, _, _)| id.name == me.name) {
            if !me.same_process(id) {
                rivals.push(id.clone());
            }
        }
        seen.retain(|(id, _, _)| id.name != me.name);
        for rival in rivals {
            // Foca keeps another process's identity of this name only as declared
            // down (it declares such identities down itself); whether it is live is
            // the cluster's word, from a seed's view.
            self.learn_rival(rival, None);
        }
        seen.push((me, my_state, 0));
        for (id, mut state, swim_incarnation) in seen {
            let status = statuses.get(&id.name);
            if let Some(status) = status
                && status.leaving
                && (status.epoch_ms, status.incarnation) >= (id.epoch_ms, id.incarnation)
            {
                state = MemberState::Left;
            }
            if id.name != self.me.name && self.departed(&id) {
                state = MemberState::Left;
            }
            self.update(id, state, swim_incarnation, status, now);
        }
    }

    fn update(
        &mut self,
        id: MemberId,
        state: MemberState,
        swim_incarnation: u16,
        status: Option<&GossipStatus>,
        now: Millis,
    ) {
        match self.roster.get_mut(&id.name) {
            None => {
                self.roster_changed = true;
                if state.is_live() {
                    self.events.push_back(MembershipEvent::Joined(id.clone()));
                }
                self.roster.insert(
                    id.name.clone(),
                    MemberView {
                        id,
                        state,
                        swim_incarnation,
                        status: status.cloned(),
                        status_at: now,
                        since: now,
                    },
                );
            }
            Some(view) => {
                // An older identity of the same name can linger in SWIM's table; only
                // the newest one speaks for the member.
                if id.supersedes(&view.id) {
                    if id.addr != view.id.addr {
                        self.roster_changed = true;
                    }
                    view.id = id.clone();
                } else if id != view.id {
                    return;
                }
                if let Some(status) = status
                    && view.status.as_ref() != Some(status)
                {
                    view.status = Some(status.clone());
                    view.status_at = now;
                }
                view.swim_incarnation = swim_incarnation;
                if view.state == state {
                    return;
                }
                let event = match (view.state, state) {
                    (_, MemberState::Left) => MembershipEvent::Left(id),
                    (_, MemberState::Dead) => MembershipEvent::Died(id),
                    (MemberState::Alive, MemberState::Suspect) => MembershipEvent::Suspected(id),
                    (
                        MemberState::Dead | MemberState::Left,
                        MemberState::Alive | MemberState::Suspect,
                    ) => MembershipEvent::Recovered(id),
                    (_, _) => {
                        view.state = state;
                        view.since = now;
                        return;
                    }
                };
                if matches!(view.state, MemberState::Left) || matches!(state, MemberState::Left) {
                    self.roster_changed = true;
                }
                view.state = state;
                view.since = now;
                self.events.push_back(event);
            }
        }
    }
}
