//! Members that left or were removed for good: recording a removal, and the departures
//! a node knows and passes on in its statuses.

use super::{DEPARTURES_GOSSIPED_MAX, Departure, MemberId, MemberState, Membership};
use crate::base::Millis;

impl Membership {
    /// Removes a dead member from the cluster for good: it leaves placement (its
    /// partitions go to the others, which fill them by anti-entropy) and the others
    /// learn it from this node's next status. Refused, with the reason, for a member
    /// that is alive, suspect, unknown, already gone, or this node.
    ///
    /// The departure covers every life of the member that started before `wall_ms`
    /// (this node's wall clock), not only the one this node knows: the member may have
    /// restarted and died again unseen by it, and that later life, dead in the others'
    /// views, would otherwise stay in their placement and hold fills back for good. A
    /// life started after the removal is a new member; one that started just before and
    /// is alive after all learns it was removed and comes back under a later life.
    pub fn depart(&mut self, name: &str, now: Millis, wall_ms: u64) -> Result<MemberId, String> {
        if name == self.me.name {
            return Err(format!(
                "{name} is this node; ask another member to remove it, or make it leave with `vergent leave`"
            ));
        }
        let Some(view) = self.roster.get(name) else {
            return Err(format!("{name} is not a member of this cluster"));
        };
        match view.state {
            MemberState::Alive | MemberState::Suspect => {
                return Err(format!(
                    "{name} is {} at {}: only a dead member can be removed; stop it first, or make it leave with `vergent leave --node {}`",
                    view.state.as_str(),
                    view.id.addr,
                    view.id.addr
                ));
            }
            MemberState::Left => return Err(format!("{name} has already left the cluster")),
            MemberState::Dead => {}
        }
        let id = view.id.clone();
        self.learn_departure(Departure {
            name: id.name.clone(),
            epoch_ms: id.epoch_ms.max(wall_ms),
            incarnation: id.incarnation,
        });
        self.sync(now);
        Ok(id)
    }

    /// Whether a departure this node knows covers `id`.
    pub fn departed(&self, id: &MemberId) -> bool {
        self.departed.iter().any(|d| d.covers(id))
    }

    pub(super) fn learn_departure(&mut self, departure: Departure) {
        let order = (departure.epoch_ms, departure.incarnation);
        if self
            .departed
            .iter()
            .any(|d| d.name == departure.name && (d.epoch_ms, d.incarnation) >= order)
        {
            return;
        }
        self.departed.retain(|d| d.name != departure.name);
        self.departed.push_front(departure);
        // Every name departs at most once per life; the list stays small, and only the
        // most recent are gossiped.
        self.departed.truncate(DEPARTURES_GOSSIPED_MAX * 4);
    }
}
