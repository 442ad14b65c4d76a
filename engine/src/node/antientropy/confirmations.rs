//! What this node has confirmed in sync, for its status, its gossip and the dashboard:
//! the books of [`crate::antientropy::confirm`] applied to this node's exchanges,
//! writes and view.

use super::*;
use crate::antientropy::confirm::{
    PartitionStatus, agreed_since, confirmed_at, partition_status, sync_lag_ms,
};
use crate::antientropy::report::SyncSummary;
use crate::coordinator::Millis;
use crate::core::ClusterView;

/// Slack beyond two background periods before a confirmation counts as old.
const CONFIRMATION_SLACK: Duration = Duration::from_secs(30);
/// A member's status older than this says nothing about its partitions any more.
const STATUS_FRESH_MS: u64 = 10_000;

/// How long a confirmation holds: with background anti-entropy on, about two of its
/// periods (the next run should have confirmed it again); with it off, until a write.
fn valid_for_ms(shared: &Shared) -> Option<u64> {
    shared
        .config
        .anti_entropy_interval
        .map(|i| (2 * i + CONFIRMATION_SLACK).as_millis() as u64)
}

/// This node's word about each partition it takes writes for (`None` for the others):
/// since when it is a hub for it, and since when it is confirmed (as a hub, or by an
/// agreement with a member whose status says it is one).
pub(crate) struct Own {
    pub(crate) hub: Vec<Option<Option<u64>>>,
    pub(crate) confirmed: Vec<Option<Option<u64>>>,
}

/// Whether `member`'s last status, fresh enough, says it is a hub for `partition`.
fn says_hub(view: &ClusterView, now: Millis, member: &str, partition: PartitionId) -> bool {
    word(view, now, member).is_some_and(|w| {
        w.not_checked_with_all
            .as_ref()
            .is_some_and(|list| !list.contains(&partition))
    })
}

/// `member`'s anti-entropy summary, if its status is fresh enough to go by.
fn word<'a>(
    view: &'a ClusterView,
    now: Millis,
    member: &str,
) -> Option<&'a crate::antientropy::report::SyncSummary> {
    let m = view.member(member)?;
    let status = m.status.as_ref()?;
    (now.0.saturating_sub(m.status_at.0) <= STATUS_FRESH_MS).then_some(&status.sync)
}

pub(crate) fn own(shared: &Shared, view: &ClusterView, now_ms: u64) -> Own {
    let me = shared.me.name.as_str();
    let now = shared.now();
    let valid = valid_for_ms(shared);
    let books = shared.anti_entropy.books.lock().expect("books lock");
    let mut own = Own {
        hub: Vec::new(),
        confirmed: Vec::new(),
    };
    for p in 0..shared.settings.partitions {
        let set = view.replica_set_of(p);
        if !set.targets.iter().any(|t| t == me) {
            own.hub.push(None);
            own.confirmed.push(None);
            continue;
        }
        let last_change = shared.write_marks.last(p);
        let others: Vec<&String> = set.targets.iter().filter(|t| *t != me).collect();
        let agreed = |t: &String| books.agreements.get(p, t).map(|at| at.wall);
        let hub = confirmed_at(others.iter().map(|t| agreed(t)), last_change, now_ms, valid);
        let confirmed = hub.or_else(|| {
            others
                .iter()
                .filter(|t| says_hub(view, now, t, p))
                .filter_map(|t| agreed_since(agreed(t), last_change, now_ms, valid))
                .max()
        });
        own.hub.push(Some(hub));
        own.confirmed.push(Some(confirmed));
    }
    own
}

/// What this node tells the cluster about its anti-entropy.
pub(crate) fn summary(shared: &Shared, view: &ClusterView) -> SyncSummary {
    let own = own(shared, view, system_wall_ms());
    let listed = |words: &[Option<Option<u64>>]| {
        words
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Some(None)))
            .map(|(p, _)| p as PartitionId)
            .collect()
    };
    SyncSummary {
        not_checked_with_all: Some(listed(&own.hub)),
        unconfirmed: Some(listed(&own.confirmed)),
        oldest_confirmed_ms: own.confirmed.iter().filter_map(|c| c.flatten()).min(),
        run: shared.anti_entropy.run(),
    }
}

/// Every partition's state as this node knows it: its own word for the partitions it
/// takes writes for, the others' statuses for theirs.
pub(crate) fn partition_states(shared: &Shared, view: &ClusterView) -> Vec<PartitionStatus> {
    let now_ms = system_wall_ms();
    let now = shared.now();
    let me = shared.me.name.as_str();
    let own = own(shared, view, now_ms);
    let (repairing, differing) = {
        let books = shared.anti_entropy.books.lock().expect("books lock");
        let differing: std::collections::BTreeSet<PartitionId> = books
            .peers
            .values()
            .flat_map(|p| p.differing_partitions.iter().copied())
            .collect();
        (books.in_flight.clone(), differing)
    };
    (0..shared.settings.partitions)
        .map(|p| {
            let i = usize::from(p);
            let set = view.replica_set_of(p);
            let down = set.targets.iter().any(|t| {
                view.member(t).is_none_or(|m| {
                    !m.state.is_live() || m.state == crate::membership::MemberState::Suspect
                })
            });
            let hub = set.targets.iter().any(|t| {
                if t == me {
                    own.hub[i].flatten().is_some()
                } else {
                    says_hub(view, now, t, p)
                }
            });
            let confirmations = set.targets.iter().map(|t| {
                if t == me {
                    return own.confirmed[i].flatten();
                }
                let w = word(view, now, t)?;
                if w.unconfirmed.as_ref()?.contains(&p) {
                    return None;
                }
                Some(w.oldest_confirmed_ms.unwrap_or(now_ms))
            });
            partition_status(
                down,
                repairing.contains(&p),
                differing.contains(&p),
                hub,
                confirmations,
            )
        })
        .collect()
}

/// How far behind `peer` may be, as this node sees it (see
/// [`crate::antientropy::confirm`]): `oldest_hint_ms` is when the oldest hint for it here
/// was kept. Partitions confirmed in sync (`states`) hold nothing it may miss.
pub(crate) fn sync_lag(
    shared: &Shared,
    view: &ClusterView,
    states: &[PartitionStatus],
    peer: &str,
    oldest_hint_ms: Option<u64>,
) -> u64 {
    let me = shared.me.name.as_str();
    let books = shared.anti_entropy.books.lock().expect("books lock");
    let shared_partitions = (0..shared.settings.partitions).filter_map(|p| {
        if states
            .get(usize::from(p))
            .is_some_and(|s| s.state == crate::antientropy::confirm::PartitionSyncState::InSync)
        {
            return None;
        }
        let set = view.replica_set_of(p);
        (set.targets.iter().any(|t| t == me) && set.targets.iter().any(|t| t == peer)).then(|| {
            (
                shared.write_marks.first_unconfirmed(p),
                shared.write_marks.last(p),
                books.agreements.get(p, peer).map(|at| at.wall),
            )
        })
    });
    sync_lag_ms(system_wall_ms(), oldest_hint_ms, shared_partitions)
}
