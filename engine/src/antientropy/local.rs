//! Two local stores reconciled in one process, through the same exchange and
//! responder as over the network, with the bytes each message would take on the wire.
//! For tests and benchmarks: it measures the protocol, not the transport.

use super::error::SyncError;
use super::exchange::Exchange;
use super::local_tree::{LocalTree, root_summary};
use super::messages::{SyncLimits, SyncRequest, SyncResponse};
use super::report::SyncCounts;
use super::respond::{check_entries, check_roots_answer, respond};
use crate::storage::Store;

/// What a local reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRun {
    /// Counts, bytes and round trips, as a repair reports them.
    pub counts: SyncCounts,
    /// Round trips when every differing partition runs at once: one for the roots,
    /// plus the most any one partition needed.
    pub sequential_rounds: u64,
}

/// A message's bytes on the wire: its encoding and the 4-byte frame prefix.
fn size<T: serde::Serialize>(value: &T) -> u64 {
    postcard::experimental::serialized_size(value).unwrap_or(0) as u64 + 4
}

/// The bytes of the entries inside a message (0 for none).
pub fn entry_bytes(entries: &[crate::record::Entry]) -> u64 {
    if entries.is_empty() {
        0
    } else {
        postcard::experimental::serialized_size(entries).unwrap_or(0) as u64
    }
}

/// Brings `a` (the requester) and `b` (the responder) into agreement over every
/// partition, or only counts the differences when `dry_run`.
pub fn reconcile(
    a: &Store,
    b: &Store,
    salt: u64,
    purge_horizon_ms: u64,
    dry_run: bool,
) -> Result<LocalRun, SyncError> {
    reconcile_within(a, b, salt, purge_horizon_ms, dry_run, SyncLimits::default())
}

/// Like [`reconcile`], with both nodes held to `limits`.
pub fn reconcile_within(
    a: &Store,
    b: &Store,
    salt: u64,
    purge_horizon_ms: u64,
    dry_run: bool,
    limits: SyncLimits,
) -> Result<LocalRun, SyncError> {
    let partitions = a.partitions();
    let mut run = LocalRun::default();
    run.counts.partitions_compared = u64::from(partitions);
    let mut differing = Vec::new();
    let all: Vec<u16> = (0..partitions).collect();
    for chunk in all.chunks(super::messages::ROOTS_PER_REQUEST_MAX) {
        let roots = chunk
            .iter()
            .map(|&p| root_summary(a, p, salt))
            .collect::<Result<Vec<_>, _>>()?;
        let request = SyncRequest::Roots { salt, roots };
        let response = respond(b, &request, &limits)?;
        run.counts.metadata_bytes_sent += size(&request);
        run.counts.metadata_bytes_received += size(&response);
        run.counts.round_trips += 1;
        let SyncResponse::Roots { differing: d } = response else {
            return Err(SyncError::Protocol("unexpected answer to roots".into()));
        };
        check_roots_answer(chunk, &d)?;
        differing.extend(d);
    }
    run.counts.partitions_differing = differing.len() as u64;
    let mut deepest = 0;
    for root in &differing {
        let mut exchange = Exchange::new(a, root, salt, purge_horizon_ms, dry_run, limits)?;
        let mut rounds = 0;
        while let Some(request) = exchange.poll_request(a) {
            rounds += 1;
            let (response, pushed) = match &request {
                SyncRequest::Push { entries, .. } => {
                    check_entries(entries, &limits)?;
                    let outcomes = b.apply_now(entries)?;
                    let applied = outcomes.iter().filter(|o| o.applied()).count() as u32;
                    (SyncResponse::Pushed { applied }, entry_bytes(entries))
                }
                other => (respond(b, other, &limits)?, 0),
            };
            let pulled = match &response {
                SyncResponse::Compared { send, .. } => entry_bytes(send),
                SyncResponse::Entries { entries, .. } => entry_bytes(entries),
                _ => 0,
            };
            run.counts.entry_bytes_sent += pushed;
            run.counts.metadata_bytes_sent += size(&request) - pushed;
            run.counts.entry_bytes_received += pulled;
            run.counts.metadata_bytes_received += size(&response) - pulled;
            exchange.handle_response(a, response);
            while let Some(entries) = exchange.poll_apply() {
                a.apply_now(&entries)?;
            }
        }
        if let Some(err) = exchange.failure() {
            return Err(err.clone());
        }
        let stats = exchange.stats();
        run.counts.round_trips += stats.round_trips;
        run.counts.keys_differing += stats.differing_keys;
        run.counts.keys_sent += stats.keys_sent;
        run.counts.keys_received += stats.keys_received;
        run.counts.pending_purge += stats.pending_purge();
        deepest = deepest.max(rounds);
    }
    run.sequential_rounds = 1 + deepest;
    Ok(run)
}
