//! Keeps this node's [`Fill`](crate::placement::Fill) books in step with the view and
//! its exchanges: records newly filled and released partitions durably, tells the
//! cluster, and wakes anti-entropy to fill what is still missing.

use std::sync::Arc;

use super::Shared;

/// Brings the fill books up to date with the current view and exchange times.
pub(crate) fn update(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let (change, filled, newly_filling) = {
        let mut fill = shared.fill.lock().expect("fill lock");
        let before: Vec<_> = fill.filling().collect();
        let change = fill.update(
            me,
            &view.placement,
            |n, p| view.is_filled(n, p),
            |n, p| view.is_settling(n, p),
            |p| view.holders_by_word(p),
            // Monotonic, as the agreements the fills wait for.
            |p, peer| shared.anti_entropy.agreed_at(p, peer).map(|at| at.0),
            view.statuses_known(),
            shared.now().0,
        );
        let newly_filling = fill.filling().any(|p| !before.contains(&p));
        (change, fill.filled().clone(), newly_filling)
    };
    let filling = shared.fill.lock().expect("fill lock").filling().count();
    super::metrics::filling(filling);
    // Only news wakes a fill: partitions still filling are retried on the schedule, and
    // waking for them after every run would run fills back to back while a source is
    // away.
    if newly_filling {
        shared.anti_entropy.fill_wake.notify_one();
    }
    if change.is_empty() {
        return;
    }
    if !change.filled.is_empty() {
        tracing::info!(
            partitions = change.filled.len(),
            still_filling = filling,
            "filled partitions from their replicas; they count in quorums now"
        );
    }
    if !change.released.is_empty() {
        tracing::info!(
            partitions = change.released.len(),
            "partitions released: their owners hold them now; this node hands them off"
        );
    }
    // Visible to this node's own operations at once; to the others with its status.
    shared.update_view(|next| {
        next.filled.insert(me.to_string(), filled.clone());
    });
    if let Err(err) = shared.store.save_filled(&filled) {
        tracing::error!("filled partitions not saved: {err}");
    }
    shared.membership.refresh();
}
