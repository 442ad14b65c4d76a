//! Reachability on the data path, per observer. Membership can call a member alive
//! that this node cannot reach itself: a bridge (another member relays its probes), a
//! one-way cut. Waiting out the answer timeout on every write to it would stall writes
//! again and again, so a peer whose requests fail on the path (no answer, connection
//! lost) is marked unreachable: writes to it become hints at once and reads skip it,
//! until a ping on the data path answers again.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// Time between pings of unreachable peers.
const PING_PERIOD: Duration = Duration::from_secs(1);

/// A request to `peer` failed on the path (not by the peer's own answer).
pub(crate) fn lost(shared: &Shared, peer: &str, why: &str) {
    let live = shared
        .view()
        .member(peer)
        .is_some_and(|m| m.state.is_live());
    if live && shared.peers.mark_unreachable(peer, why) {
        tracing::warn!(
            peer,
            "{peer} is unreachable from {}: {why}; writes to it are hinted until it answers again",
            shared.me.name
        );
        super::metrics::unreachable(peer, true);
    }
}

/// Pings every unreachable peer until it answers.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PING_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        for peer in shared.peers.unreachable() {
            let view = shared.view();
            let Some(member) = view.member(&peer).filter(|m| m.state.is_live()) else {
                // Dead or gone: membership says so, and a return starts afresh.
                shared.peers.mark_reachable(&peer);
                super::metrics::unreachable(&peer, false);
                continue;
            };
            let id = member.id.clone();
            if !super::clocks::probe(&shared, &id).await {
                shared.peers.forget(&peer);
            } else if shared.peers.mark_reachable(&peer) {
                tracing::info!(peer = %peer, "{peer} is reachable again from {}", shared.me.name);
                super::metrics::unreachable(&peer, false);
                shared.hints_wake.notify_one();
            }
        }
    }
}
