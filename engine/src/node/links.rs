//! Push replication on the wire: each peer has one bounded queue and one task that
//! drains it into `Replicate` batches on one long-lived stream, one batch in flight at
//! a time. While a batch is on the wire the next one accumulates, so batches grow with
//! load (the replica's group commit then pays one fsync per batch). Each request the
//! core made is answered with the batch's answer. A full queue fails the request at
//! once, for a reason of this node's: the core hints the write and the client is
//! answered by the replicas that can answer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Shared;
use super::peers::PeerError;
use crate::core::{PeerFailure, ReqId};
use crate::limits::{VALUE_BYTES_MAX_CEILING, frame_bytes_max};
use crate::membership::MemberId;
use crate::protocol::frame;
use crate::protocol::{Request, Response};
use crate::record::Entry;

/// Requests waiting per peer; past it requests to that peer fail at once.
pub(crate) const PEER_QUEUE_MAX: usize = 8192;
/// Most entries in one replication batch.
pub(crate) const BATCH_ENTRIES_MAX: usize = 512;
/// Most value bytes in one replication batch (the frame limit leaves room for one
/// maximal value on top).
pub(crate) const BATCH_BYTES_MAX: usize = 4 << 20;
/// Room per entry in a batch frame for its key, version and framing.
const BATCH_ENTRY_OVERHEAD_BYTES: usize = 512;

/// The frame limit a node accepts from another node: a full batch plus one maximal value.
pub(crate) fn batch_frame_bytes_max(value_bytes_max: usize) -> usize {
    frame_bytes_max(value_bytes_max)
        + BATCH_BYTES_MAX
        + BATCH_ENTRIES_MAX * BATCH_ENTRY_OVERHEAD_BYTES
}

/// One request of the core's, waiting for its batch.
struct Item {
    id: ReqId,
    to: MemberId,
    entries: Vec<Entry>,
}

/// Each peer's queue (its link task drains it).
#[derive(Default)]
pub(crate) struct Links {
    queues: HashMap<String, mpsc::Sender<Item>>,
}

impl Links {
    /// Queues a request for `to`; why it could not be queued otherwise.
    pub(crate) fn enqueue(
        &mut self,
        shared: &Arc<Shared>,
        id: ReqId,
        to: MemberId,
        entries: Vec<Entry>,
    ) -> Result<(), PeerFailure> {
        let peer = to.name.clone();
        let sender = self.queues.entry(peer.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            shared.tasks.spawn(link(shared.clone(), peer.clone(), rx));
            tx
        });
        sender
            .try_send(Item { id, to, entries })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => {
                    tracing::debug!(peer = %peer, "replication queue full ({PEER_QUEUE_MAX} requests); hinting");
                    PeerFailure::Local(format!(
                        "replication queue full ({PEER_QUEUE_MAX} requests)"
                    ))
                }
                mpsc::error::TrySendError::Closed(_) => {
                    PeerFailure::Local("replication stopped (shutting down)".into())
                }
            })
    }
}

/// The per-peer replication task.
async fn link(shared: Arc<Shared>, peer: String, mut queue: mpsc::Receiver<Item>) {
    let mut stream: Option<(quinn::SendStream, quinn::RecvStream)> = None;
    loop {
        let first = tokio::select! {
            _ = shared.shutdown.cancelled() => None,
            item = queue.recv() => item,
        };
        let Some(first) = first else { break };
        let to = first.to.clone();
        let bytes_of =
            |item: &Item| -> usize { item.entries.iter().map(|e| e.record.payload.len()).sum() };
        let mut bytes = bytes_of(&first);
        let mut count = first.entries.len();
        let mut batch = vec![first];
        while count < BATCH_ENTRIES_MAX && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(item) => {
                    bytes += bytes_of(&item);
                    count += item.entries.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let entries: Vec<Entry> = batch
            .iter()
            .flat_map(|item| item.entries.iter().cloned())
            .collect();
        let request = Request::Replicate { entries };
        let attempt = async {
            // The peer closes a stream that sat idle past its limit; the first batch
            // after a quiet spell then finds it gone. That says nothing about the peer,
            // so the batch goes again on a fresh stream (applying is idempotent).
            let reused = stream.is_some();
            match send_batch(&shared, &to, &mut stream, &request).await {
                Err(err) if reused => {
                    tracing::debug!(peer = %peer, "replication stream gone ({err}); reopening");
                    stream = None;
                    send_batch(&shared, &to, &mut stream, &request).await
                }
                result => result,
            }
        };
        let result = tokio::time::timeout(shared.config.replica_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(PeerError(format!(
                    "no answer within {} ms",
                    shared.config.replica_timeout.as_millis()
                )))
            });
        let result = result.map_err(|PeerError(why)| {
            tracing::debug!(peer = %peer, requests = batch.len(), "replication batch failed: {why}");
            stream = None;
            PeerFailure::Path(why)
        });
        for item in batch {
            shared.core.answer_response(item.id, result.clone());
        }
    }
}

/// Sends one batch on the link's stream (opened when there is none); the replica's
/// answer, its own errors included.
async fn send_batch(
    shared: &Arc<Shared>,
    to: &MemberId,
    stream: &mut Option<(quinn::SendStream, quinn::RecvStream)>,
    request: &Request,
) -> Result<Response, PeerError> {
    let limit = batch_frame_bytes_max(VALUE_BYTES_MAX_CEILING);
    let path = |e: &dyn std::fmt::Display| PeerError(e.to_string());
    if stream.is_none() {
        let connection = shared.peers.connection(to).await?;
        *stream = Some(connection.open_bi().await.map_err(|e| path(&e))?);
    }
    let (send, recv) = stream.as_mut().expect("stream just opened");
    frame::write_message(send, request, limit)
        .await
        .map_err(|e| path(&e))?;
    frame::read_message::<Response, _>(recv, limit)
        .await
        .map_err(|e| path(&e))
}
