//! Drives the [`Coordinator`]: one task owns it, starts operations, carries out its
//! actions, feeds back what replicas answered, and sleeps until its next deadline.
//!
//! Request tasks and replication links reach the coordinator through one channel of
//! [`Event`]s, so no lock is held around it and the order in which it saw its inputs is
//! the order they arrived. The channel is unbounded on purpose: what enters it is
//! bounded elsewhere (operations by the request limit, answers by the operations in
//! flight times their replicas), and the links must hand in an answer without waiting.
//!
//! Push replication: each peer has one bounded queue and one task that drains it into
//! `Replicate` batches on one long-lived stream, one batch in flight at a time. While a
//! batch is on the wire the next one accumulates, so batches grow with load (the
//! replica's group commit then pays one fsync per batch). A full queue, an unknown
//! peer or a dead one fails that replica at once: the coordinator hints the write and
//! the client is answered by the replicas that can answer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::peers::{PeerError, exchange};
use crate::coordinator::{Action, Coordinator, OpError, OpId, Outcome};
use crate::limits::{VALUE_BYTES_MAX_CEILING, frame_bytes_max};
use crate::protocol::frame;
use crate::protocol::{ErrorCode, Request, Response};
use crate::record::{Entry, Record};
use crate::storage::Hint;
use crate::wallclock::system_wall_ms;

/// Entries waiting per peer; past it writes to that peer become hints.
pub(crate) const PEER_QUEUE_MAX: usize = 8192;
/// Most entries in one replication batch.
pub(crate) const BATCH_ENTRIES_MAX: usize = 512;
/// Most value bytes in one replication batch (the frame limit leaves room for one
/// maximal value on top).
pub(crate) const BATCH_BYTES_MAX: usize = 4 << 20;
/// Room per entry in a batch frame for its key, version and framing.
const BATCH_ENTRY_OVERHEAD_BYTES: usize = 512;
/// Most events the coordinator's task takes in one turn before it carries out what
/// they asked for: answers that arrived together are settled together, and a burst
/// cannot hold the deadlines back.
const EVENTS_PER_TURN: usize = 256;

/// The frame limit a node accepts from another node: a full batch plus one maximal value.
pub(crate) fn batch_frame_bytes_max(value_bytes_max: usize) -> usize {
    frame_bytes_max(value_bytes_max)
        + BATCH_BYTES_MAX
        + BATCH_ENTRIES_MAX * BATCH_ENTRY_OVERHEAD_BYTES
}

struct Item {
    op: Option<OpId>,
    entry: Arc<Entry>,
}

/// Starts an operation in the coordinator and says which.
type Start = Box<dyn FnOnce(&mut Coordinator) -> OpId + Send>;

/// What the coordinator's task is told.
enum Event {
    /// A client's operation, and where its outcome goes.
    Begin {
        start: Start,
        reply: oneshot::Sender<Outcome>,
    },
    WriteAck {
        op: OpId,
        from: String,
        result: Result<(), String>,
    },
    WriteRefused {
        op: OpId,
        from: String,
        reason: String,
    },
    ReadReply {
        op: OpId,
        from: String,
        reply: Option<Option<Record>>,
    },
    /// This node's own store applied writes of these operations (or failed to).
    Applied {
        ops: Vec<OpId>,
        result: Result<(), String>,
    },
}

/// The way into the coordinator's task.
pub(crate) struct Replication {
    events: mpsc::UnboundedSender<Event>,
}

/// The coordinator and what only its task touches.
pub(crate) struct CoordinatorTask {
    coordinator: Coordinator,
    events: mpsc::UnboundedReceiver<Event>,
    waiters: HashMap<OpId, oneshot::Sender<Outcome>>,
    /// Writes to this node's own store gathered in one turn, applied as one request.
    local: Vec<(Option<OpId>, Arc<Entry>)>,
    /// Each peer's replication queue (its link task drains it).
    queues: HashMap<String, mpsc::Sender<Item>>,
}

impl Replication {
    /// The shared half, and the half [`run`] owns.
    pub(crate) fn new(coordinator: Coordinator) -> (Replication, CoordinatorTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let replication = Replication { events: tx };
        let task = CoordinatorTask {
            coordinator,
            events: rx,
            waiters: HashMap::new(),
            local: Vec::new(),
            queues: HashMap::new(),
        };
        (replication, task)
    }
}

/// Starts an operation with `start` and waits for its answer.
pub(crate) async fn coordinate(
    shared: &Arc<Shared>,
    start: impl FnOnce(&mut Coordinator) -> OpId + Send + 'static,
) -> Outcome {
    let (reply, rx) = oneshot::channel();
    let begin = Event::Begin {
        start: Box::new(start),
        reply,
    };
    if shared.replication.events.send(begin).is_err() {
        return shutting_down();
    }
    rx.await.unwrap_or_else(|_| shutting_down())
}

/// The outcome of an operation the coordinator stopped before it ended (the node is
/// shutting down).
fn shutting_down() -> Outcome {
    Outcome::Failed(OpError::ShuttingDown)
}

fn on_write_ack(shared: &Shared, op: OpId, from: &str, result: Result<(), String>) {
    let _ = shared.replication.events.send(Event::WriteAck {
        op,
        from: from.to_string(),
        result,
    });
}

fn on_write_refused(shared: &Shared, op: OpId, from: &str, reason: String) {
    let _ = shared.replication.events.send(Event::WriteRefused {
        op,
        from: from.to_string(),
        reason,
    });
}

/// The coordinator's task: takes events, expires operations at their deadlines, and
/// carries out what the coordinator asks. After shutdown it goes on until the
/// operations in flight have ended, so their clients are answered.
pub(crate) async fn run(shared: Arc<Shared>, mut task: CoordinatorTask) {
    // Both futures live across turns: making them anew each turn would register a
    // waiter and a timer for every batch of events.
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    let expire = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(expire);
    let mut armed: Option<crate::coordinator::Millis> = None;
    let mut stopping = false;
    loop {
        if stopping && task.coordinator.in_flight() == 0 {
            break;
        }
        let deadline = task.coordinator.poll_timeout();
        if deadline != armed {
            if let Some(at) = deadline {
                let at = tokio::time::Instant::from_std(shared.started) + at.duration();
                expire.as_mut().reset(at);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = &mut cancelled, if !stopping => {
                stopping = true;
                continue;
            }
            event = task.events.recv() => {
                let Some(event) = event else { break };
                task.handle(&shared, event);
                for _ in 1..EVENTS_PER_TURN {
                    match task.events.try_recv() {
                        Ok(event) => task.handle(&shared, event),
                        Err(_) => break,
                    }
                }
            }
            _ = &mut expire, if armed.is_some() => {
                armed = None;
                task.coordinator.handle_timeout(shared.now());
            }
        }
        task.settle(&shared);
    }
}

impl CoordinatorTask {
    fn handle(&mut self, shared: &Shared, event: Event) {
        match event {
            Event::Begin { start, reply } => {
                if shared.shutdown.is_cancelled() {
                    let _ = reply.send(shutting_down());
                    return;
                }
                let op = start(&mut self.coordinator);
                self.waiters.insert(op, reply);
            }
            Event::WriteAck { op, from, result } => {
                self.coordinator.handle_write_ack(op, &from, result)
            }
            Event::WriteRefused { op, from, reason } => {
                self.coordinator.handle_write_refused(op, &from, reason)
            }
            Event::ReadReply { op, from, reply } => {
                self.coordinator.handle_read_reply(op, &from, reply)
            }
            Event::Applied { ops, result } => {
                for op in ops {
                    self.coordinator
                        .handle_write_ack(op, &shared.me.name, result.clone());
                }
            }
        }
    }

    /// Carries out the coordinator's actions, and the ones they lead to. Never blocks:
    /// anything slow is spawned.
    fn settle(&mut self, shared: &Arc<Shared>) {
        while let Some(action) = self.coordinator.poll_action() {
            self.dispatch(shared, action);
        }
        if !self.local.is_empty() {
            apply_locally(shared, std::mem::take(&mut self.local));
        }
    }

    /// Queues `item` for `to`; gives it back with the reason when it cannot be queued.
    fn enqueue(
        &mut self,
        shared: &Arc<Shared>,
        to: &str,
        item: Item,
    ) -> Result<(), (Item, String)> {
        if let Err(PeerError(reason)) = reachable(shared, to) {
            return Err((item, reason));
        }
        let sender = self.queues.entry(to.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            shared.tasks.spawn(link(shared.clone(), to.to_string(), rx));
            tx
        });
        sender.try_send(item).map_err(|err| match err {
            mpsc::error::TrySendError::Full(item) => {
                tracing::debug!(peer = %to, "replication queue full ({PEER_QUEUE_MAX} entries); hinting");
                (
                    item,
                    format!("replication queue full ({PEER_QUEUE_MAX} entries)"),
                )
            }
            mpsc::error::TrySendError::Closed(item) => {
                (item, "replication stopped (shutting down)".into())
            }
        })
    }

    fn dispatch(&mut self, shared: &Arc<Shared>, action: Action) {
        let me = shared.me.name.as_str();
        match action {
            Action::Write { op, to, entry } if to == me => self.local.push((Some(op), entry)),
            Action::Write { op, to, entry } => {
                let item = Item {
                    op: Some(op),
                    entry,
                };
                if let Err((item, reason)) = self.enqueue(shared, &to, item)
                    && let Some(op) = item.op
                {
                    self.coordinator.handle_write_ack(op, &to, Err(reason));
                }
            }
            Action::Repair { entry, .. } if from_the_future(shared, &entry) => {}
            Action::Repair { to, entry } if to == me => self.local.push((None, entry)),
            Action::Repair { to, entry } => {
                // A repair nobody waits for: one that cannot be queued is simply not made.
                let _ = self.enqueue(shared, &to, Item { op: None, entry });
            }
            Action::Read { op, to, key } if to == me => {
                let reply = match shared.store.get(&key) {
                    Ok(record) => Some(record),
                    Err(err) => {
                        tracing::error!("local read failed: {err}");
                        None
                    }
                };
                self.coordinator.handle_read_reply(op, me, reply);
            }
            Action::Read { op, to, key } => {
                let shared2 = shared.clone();
                shared.tasks.spawn(async move {
                    let reply = read_remote(&shared2, &to, &key).await;
                    if let Err(err) = &reply {
                        tracing::debug!(replica = %to, "read failed: {err}");
                    }
                    let _ = shared2.replication.events.send(Event::ReadReply {
                        op,
                        from: to,
                        reply: reply.ok(),
                    });
                });
            }
            Action::Hint { to, entry } => {
                let hint = Hint {
                    target: to,
                    entry: (*entry).clone(),
                    created_ms: system_wall_ms(),
                };
                let shared2 = shared.clone();
                shared.tasks.spawn(async move {
                    if let Err(err) = shared2.store.put_hints(vec![hint]).await {
                        tracing::error!("hint not stored: {err}");
                    }
                });
            }
            Action::Reply { op, outcome } => {
                if let Some(waiter) = self.waiters.remove(&op) {
                    let _ = waiter.send(outcome);
                }
            }
        }
    }
}

/// Whether `entry`'s version is further ahead of the cluster's time than the bound: a
/// version some clock issued while it was wrong. Read repair does not spread it.
fn from_the_future(shared: &Shared, entry: &Entry) -> bool {
    let cluster_ms = shared.cluster_wall_ms();
    let clock = shared.clock.lock().expect("clock lock");
    match clock.check(entry.record.version.hlc, cluster_ms) {
        Ok(()) => false,
        Err(err) => {
            shared.clock_refused("read repair", &err);
            true
        }
    }
}

/// Applies writes to this node's own store in one request (the writer commits them
/// together) and tells the coordinator which operations it acknowledged.
fn apply_locally(shared: &Arc<Shared>, writes: Vec<(Option<OpId>, Arc<Entry>)>) {
    let (ops, entries): (Vec<Option<OpId>>, Vec<Entry>) = writes
        .into_iter()
        .map(|(op, entry)| (op, Arc::unwrap_or_clone(entry)))
        .unzip();
    let ops: Vec<OpId> = ops.into_iter().flatten().collect();
    let landing = shared.note_writes(&entries);
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let result = shared2.store.apply(entries).await;
        drop(landing);
        if let Err(err) = &result {
            tracing::error!("local apply failed: {err}");
        }
        if !ops.is_empty() {
            let result = result.map(|_| ()).map_err(|err| err.to_string());
            let _ = shared2
                .replication
                .events
                .send(Event::Applied { ops, result });
        }
    });
}

async fn read_remote(
    shared: &Arc<Shared>,
    to: &str,
    key: &[u8],
) -> Result<Option<Record>, PeerError> {
    let id = reachable(shared, to)?;
    let attempt = async {
        let connection = shared
            .peers
            .connection(&id)
            .await
            .map_err(BatchError::Path)?;
        match exchange(&connection, &Request::ReadLocal { key: key.to_vec() })
            .await
            .map_err(BatchError::Path)?
        {
            Response::Record { record } => Ok(record),
            Response::Error(reply) => Err(BatchError::Replica(reply.message)),
            other => Err(BatchError::Replica(format!("unexpected answer {other:?}"))),
        }
    };
    let result = tokio::time::timeout(shared.config.replica_timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(BatchError::Path(PeerError(timed_out(shared)))));
    result.map_err(|err| err.note(shared, to))
}

/// How a request to a replica failed.
enum BatchError {
    /// The replica answered with an error of its own.
    Replica(String),
    /// The replica refused the versions themselves (a clock too far ahead): they must
    /// not be hinted either.
    Refused(String),
    /// The request never got an answer: no connection, lost on the way, no answer in time.
    Path(PeerError),
}

impl BatchError {
    /// The reason, after marking the peer unreachable when the path failed.
    fn note(self, shared: &Shared, peer: &str) -> PeerError {
        match self {
            BatchError::Replica(reason) | BatchError::Refused(reason) => PeerError(reason),
            BatchError::Path(PeerError(reason)) => {
                super::reach::lost(shared, peer, &reason);
                PeerError(reason)
            }
        }
    }
}

fn timed_out(shared: &Shared) -> String {
    format!(
        "no answer within {} ms",
        shared.config.replica_timeout.as_millis()
    )
}

/// The current identity of `to`, unless it is unknown, dead, gone, or unreachable
/// from here on the data path.
fn reachable(shared: &Shared, to: &str) -> Result<crate::membership::MemberId, PeerError> {
    if let Some(why) = shared.peers.unreachable_reason(to) {
        return Err(PeerError(format!(
            "unreachable from {} ({why})",
            shared.me.name
        )));
    }
    let view = shared.view();
    match view.member(to) {
        Some(member) if member.state.is_live() => Ok(member.id.clone()),
        // Said of `to`, whose name goes before it where it is shown.
        Some(member) => Err(PeerError(member.state.as_str().to_string())),
        None => Err(PeerError("not a known member".into())),
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
        let mut bytes = first.entry.record.payload.len();
        let mut batch = vec![first];
        while batch.len() < BATCH_ENTRIES_MAX && bytes < BATCH_BYTES_MAX {
            match queue.try_recv() {
                Ok(item) => {
                    bytes += item.entry.record.payload.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let request = Request::Replicate {
            entries: batch.iter().map(|item| (*item.entry).clone()).collect(),
        };
        let attempt = async {
            // The peer closes a stream that sat idle past its limit; the first batch
            // after a quiet spell then finds it gone. That says nothing about the peer,
            // so the batch goes again on a fresh stream (applying is idempotent).
            let reused = stream.is_some();
            match send_batch(&shared, &peer, &mut stream, &request).await {
                Err(BatchError::Path(err)) if reused => {
                    tracing::debug!(peer = %peer, "replication stream gone ({err}); reopening");
                    stream = None;
                    send_batch(&shared, &peer, &mut stream, &request).await
                }
                result => result,
            }
        };
        let result = tokio::time::timeout(shared.config.replica_timeout, attempt)
            .await
            .unwrap_or_else(|_| Err(BatchError::Path(PeerError(timed_out(&shared)))));
        let refused = matches!(result, Err(BatchError::Refused(_)));
        let result = result.map_err(|err| err.note(&shared, &peer));
        if let Err(err) = &result {
            tracing::debug!(peer = %peer, entries = batch.len(), "replication batch failed: {err}");
            stream = None;
        }
        let result = result.map_err(|PeerError(reason)| reason);
        for item in batch {
            match (item.op, &result) {
                (Some(op), Err(reason)) if refused => {
                    on_write_refused(&shared, op, &peer, reason.clone())
                }
                (Some(op), result) => on_write_ack(&shared, op, &peer, result.clone()),
                (None, _) => {}
            }
        }
    }
}

async fn send_batch(
    shared: &Arc<Shared>,
    peer: &str,
    stream: &mut Option<(quinn::SendStream, quinn::RecvStream)>,
    request: &Request,
) -> Result<(), BatchError> {
    let limit = batch_frame_bytes_max(VALUE_BYTES_MAX_CEILING);
    let path = |e: &dyn std::fmt::Display| BatchError::Path(PeerError(e.to_string()));
    if stream.is_none() {
        let id = reachable(shared, peer).map_err(|PeerError(e)| BatchError::Replica(e))?;
        let connection = shared
            .peers
            .connection(&id)
            .await
            .map_err(BatchError::Path)?;
        *stream = Some(connection.open_bi().await.map_err(|e| path(&e))?);
    }
    let (send, recv) = stream.as_mut().expect("stream just opened");
    frame::write_message(send, request, limit)
        .await
        .map_err(|e| path(&e))?;
    match frame::read_message::<Response, _>(recv, limit)
        .await
        .map_err(|e| path(&e))?
    {
        Response::Replicated { .. } => Ok(()),
        Response::Error(reply) if reply.code == ErrorCode::ClockOffset => {
            Err(BatchError::Refused(reply.message))
        }
        Response::Error(reply) => Err(BatchError::Replica(reply.message)),
        other => Err(BatchError::Replica(format!("unexpected answer {other:?}"))),
    }
}
