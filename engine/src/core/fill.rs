//! Keeps this node's [`Fill`] books in step with the view and its exchanges: records
//! newly filled and released partitions durably, tells the cluster, and wakes
//! anti-entropy to fill what is still missing.

use super::io::StorePurpose;
use super::*;

impl NodeCore {
    /// Brings the fill books up to date with the current view and agreements.
    pub(super) fn update_fill(&mut self, now: Now, store: &Store) {
        let view = self.view.clone();
        let me = self.me.name.clone();
        let before: Vec<PartitionId> = self.fill.filling().collect();
        let agreements = &self.books.agreements;
        let change = self.fill.update(
            &me,
            &view.placement,
            |n, p| view.is_filled(n, p),
            |n, p| view.is_settling(n, p),
            |p| view.holders_by_word(p),
            // Monotonic, as the agreements the fills wait for.
            |p, peer| agreements.get(p, peer).map(|at| at.mono),
            view.statuses_known(),
            now.mono().0,
        );
        let filling = self.fill.filling().count();
        self.event(CoreEvent::Filling(filling));
        // Only news wakes a fill: partitions still filling are retried on the schedule,
        // and waking for them after every run would run fills back to back while a
        // source is away.
        if self.fill.filling().any(|p| !before.contains(&p)) {
            self.schedule.fill_wake(now.mono().0);
        }
        if change.is_empty() {
            return;
        }
        if !change.filled.is_empty() {
            self.event(CoreEvent::Filled {
                partitions: change.filled.len(),
                still_filling: filling,
            });
        }
        if !change.released.is_empty() {
            self.event(CoreEvent::Released {
                partitions: change.released.len(),
            });
        }
        self.fills_changed(now, store);
    }

    /// Stores the fill books, and shows them to this node's own operations at once and
    /// to the others with its status.
    fn fills_changed(&mut self, now: Now, store: &Store) {
        let filled = self.fill.filled().clone();
        self.store(
            StoreWork::SaveFilled(filled),
            StorePurpose::Meta("filled partitions"),
        );
        self.rebuild_view(now);
        self.refresh_status(now, store);
    }
}

impl NodeCore {
    /// At start: forgets holding the data of every partition this node does not own.
    /// It took such a partition's writes only as a stand-in or a former owner, and
    /// none while it was down, so its books cannot vouch for it now; counted again as a
    /// stand-in (an owner lost its disk meanwhile), it would answer from data that
    /// lacks writes chosen while it was away. It still holds the data (handoff and
    /// fills treat it as a holder), it just no longer counts for it.
    pub(super) fn forget_unowned_fills(&mut self, now: Now, store: &Store) {
        let placement = self.view.placement.clone();
        let me = self.me.name.clone();
        let forgotten = self
            .fill
            .forget_unowned(|p| placement.holds(&me, p), now.mono().0);
        if forgotten == 0 {
            return;
        }
        self.event(CoreEvent::Released {
            partitions: forgotten,
        });
        self.fills_changed(now, store);
    }
}
