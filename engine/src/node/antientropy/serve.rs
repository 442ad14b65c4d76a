//! The responder's side of anti-entropy: a peer's exchange steps, checked, answered.

use super::*;
use crate::antientropy::respond::pushed_to_apply;

/// The responder's side: one step of a peer's exchange. The request is checked before
/// anything is read or applied; a failure of this node's own storage is reported as
/// such, not as the peer's fault.
pub(crate) async fn respond(
    shared: &Arc<Shared>,
    peer: &str,
    request: SyncRequest,
) -> Result<Response, ErrorReply> {
    let limits = sync_limits(shared);
    match request {
        SyncRequest::Push { partition, entries } => {
            check_push(partition, &entries, shared.settings.partitions, &limits)
                .map_err(sync_error)?;
            let bytes = entry_bytes(&entries);
            shared
                .anti_entropy
                .limiter
                .take(bytes, shared.config.repair_bytes_per_sec)
                .await;
            let keep = pushed_to_apply(&shared.store, entries, grace_horizon(shared))
                .map_err(sync_error)?;
            let applied = apply_received(shared, keep).await.map_err(sync_error)?;
            Ok(Response::Sync(SyncResponse::Pushed { applied }))
        }
        other => {
            let began = match &other {
                SyncRequest::Roots { roots, .. } => {
                    let partitions: Vec<PartitionId> = roots.iter().map(|r| r.partition).collect();
                    AntiEntropy::compare_time(shared, &partitions).await
                }
                _ => Moment::now(shared),
            };
            let response = crate::antientropy::respond::respond(&shared.store, &other, &limits)
                .map_err(sync_error)?;
            // Roots that compared equal here are an agreement for this side's books too:
            // a partition is confirmed in sync on each replica, whichever one asked.
            if let (SyncRequest::Roots { roots, .. }, SyncResponse::Roots { differing }) =
                (&other, &response)
            {
                let agreed: Vec<PartitionId> = roots
                    .iter()
                    .map(|r| r.partition)
                    .filter(|p| !differing.iter().any(|d| d.partition == *p))
                    .collect();
                shared.anti_entropy.agreed(shared, peer, &agreed, began);
            }
            if let SyncResponse::Compared { send, .. }
            | SyncResponse::Entries { entries: send, .. } = &response
            {
                let bytes = entry_bytes(send);
                shared
                    .anti_entropy
                    .limiter
                    .take(bytes, shared.config.repair_bytes_per_sec)
                    .await;
            }
            Ok(Response::Sync(response))
        }
    }
}

/// The answer to a peer whose step failed: whose fault it was, and why.
fn sync_error(err: SyncError) -> ErrorReply {
    match err {
        SyncError::Storage(err) => crate::node::service::storage_error(err),
        SyncError::LimitExceeded { .. } | SyncError::BadEntry(_) => {
            ErrorReply::new(ErrorCode::LimitExceeded, format!("sync: {err}"))
        }
        SyncError::NoSuchPartition { .. }
        | SyncError::NoSuchNode { .. }
        | SyncError::BadRequest(_)
        | SyncError::Protocol(_) => ErrorReply::new(ErrorCode::BadRequest, format!("sync: {err}")),
    }
}
