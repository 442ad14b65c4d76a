//! Keeps this node's [`Fill`](crate::placement::Fill) books in step with the view and
//! its exchanges: records newly filled and released partitions durably, tells the
//! cluster, and wakes anti-entropy to fill what is still missing.

use std::sync::Arc;

use super::Shared;

/// Brings the fill books up to date with the current view and exchange times.
pub(crate) fn update(shared: &Arc<Shared>) {
    let view = shared.view();
    let me = shared.me.name.as_str();
    let (change, filled) = {
        let mut fill = shared.fill.lock().expect("fill lock");
        let change = fill.update(
            me,
            &view.placement,
            |n, p| view.is_filled(n, p),
            |n, p| view.is_settling(n, p),
            |n, p| view.may_hold(n, p),
            // Monotonic, as the agreements the fills wait for.
            |p, peer| shared.anti_entropy.agreed_at(p, peer).map(|at| at.0),
            view.statuses_known(),
            shared.now().0,
        );
        (change, fill.filled().clone())
    };
    let filling = shared.fill.lock().expect("fill lock").filling().count();
    super::metrics::filling(filling);
    if filling > 0 {
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
