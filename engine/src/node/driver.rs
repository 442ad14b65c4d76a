//! The core's task: one task owns the node's [`NodeCore`], takes its inputs from one
//! channel, sleeps until the core's next deadline, and carries out what the core asks:
//! requests to peers (replication through the peer's link, the rest on streams of
//! their own), answers to peers and to asks, datagrams, store effects, and the log.
//!
//! The channel is unbounded on purpose: what enters it is bounded elsewhere (client
//! and peer requests by the node's request limit, answers by the requests in flight,
//! store results by the effects in flight, datagrams by [`DATAGRAMS_QUEUED_MAX`]), and
//! the tasks that hand in an input must never wait for the core.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::links::Links;
use super::peers::{PeerError, exchange};
use crate::antientropy::report::RepairProgress;
use crate::base::Millis;
use crate::core::{
    Answer, Ask, AskId, NodeCore, Now, Output, PeerFailure, ReplyTo, ReqId, StoreDone, StoreId,
    StoreWork,
};
use crate::membership::MemberId;
use crate::protocol::{ErrorCode, ErrorReply, Request, Response};
use crate::storage::Store;

/// Inputs the core's task takes in one turn before it carries out what they asked:
/// answers that arrived together are settled together, and a burst cannot hold the
/// deadlines back.
const INPUTS_PER_TURN: usize = 256;
/// Membership datagrams waiting for the core; past it they are dropped (SWIM tolerates
/// loss).
pub(crate) const DATAGRAMS_QUEUED_MAX: usize = 4096;
/// Time between the metrics' looks at the node's status.
const METRICS_PERIOD: Duration = Duration::from_secs(1);
/// Time a clock probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(crate::core::PROBE_TIMEOUT_MS);
/// Time a member asked for its view may take.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);

/// A call on the core, made by the driver's task.
type Call = Box<dyn FnOnce(&mut NodeCore, Now, &Store) + Send>;

/// What the core's task is handed.
pub(crate) enum Input {
    /// An ask, where its answer goes, and where a repair's progress goes.
    Ask {
        ask: Ask,
        reply: oneshot::Sender<Answer>,
        progress: Option<mpsc::Sender<RepairProgress>>,
    },
    /// A peer's request, and where its answer goes.
    Request {
        from: String,
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A membership datagram, and the certificate name of the connection it came on.
    Datagram { from: String, data: Bytes },
    /// A peer's answer to a request of the core's.
    Response {
        id: ReqId,
        /// Boxed: a response (a status, say) is large beside every other input.
        result: Box<Result<Response, PeerFailure>>,
    },
    /// A store effect is done.
    Stored { id: StoreId, done: StoreDone },
    /// A call on the core (the admin operations the runtime carries out in steps).
    Call(Call),
}

/// The way into the core's task.
pub(crate) struct CoreHandle {
    inputs: mpsc::UnboundedSender<Input>,
    datagrams: Arc<AtomicUsize>,
}

fn shutting_down() -> ErrorReply {
    ErrorReply::new(ErrorCode::ShuttingDown, "the node is shutting down")
}

impl CoreHandle {
    pub(crate) fn new() -> (CoreHandle, mpsc::UnboundedReceiver<Input>) {
        let (inputs, rx) = mpsc::unbounded_channel();
        let handle = CoreHandle {
            inputs,
            datagrams: Arc::new(AtomicUsize::new(0)),
        };
        (handle, rx)
    }

    /// Asks the core and waits for its answer.
    pub(crate) async fn ask(&self, ask: Ask) -> Answer {
        self.ask_with(ask, None).await
    }

    /// Asks the core, with where a repair's progress goes.
    pub(crate) async fn ask_with(
        &self,
        ask: Ask,
        progress: Option<mpsc::Sender<RepairProgress>>,
    ) -> Answer {
        let (reply, answer) = oneshot::channel();
        let input = Input::Ask {
            ask,
            reply,
            progress,
        };
        if self.inputs.send(input).is_err() {
            return Answer::Failed(shutting_down());
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::Failed(shutting_down()))
    }

    /// A peer's request, answered by the core.
    pub(crate) async fn request(&self, from: &str, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        let input = Input::Request {
            from: from.to_string(),
            request,
            reply,
        };
        if self.inputs.send(input).is_err() {
            return Response::Error(shutting_down());
        }
        answer
            .await
            .unwrap_or_else(|_| Response::Error(shutting_down()))
    }

    /// A membership datagram; dropped when the core is behind.
    pub(crate) fn datagram(&self, from: &str, data: Bytes) {
        if self.datagrams.fetch_add(1, Ordering::AcqRel) >= DATAGRAMS_QUEUED_MAX {
            self.datagrams.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let input = Input::Datagram {
            from: from.to_string(),
            data,
        };
        if self.inputs.send(input).is_err() {
            self.datagrams.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Runs `call` on the core in its task and returns what it returned (`None` when
    /// the node is shutting down).
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut NodeCore, Now, &Store) -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        let call: Call = Box::new(move |core, now, store| {
            let _ = reply.send(call(core, now, store));
        });
        self.inputs.send(Input::Call(call)).ok()?;
        answer.await.ok()
    }

    pub(crate) fn answer_response(&self, id: ReqId, result: Result<Response, PeerFailure>) {
        let result = Box::new(result);
        let _ = self.inputs.send(Input::Response { id, result });
    }

    fn stored(&self, id: StoreId, done: StoreDone) {
        let _ = self.inputs.send(Input::Stored { id, done });
    }
}

/// A store effect under way, and what it is for.
type StoreFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (StoreId, StoreDone)> + Send>>;

/// The driver's books: who waits for which answer.
struct Driver {
    /// Store effects queued to the writer, awaited here.
    stores: FuturesUnordered<StoreFuture>,
    asks: HashMap<
        AskId,
        (
            oneshot::Sender<Answer>,
            Option<mpsc::Sender<RepairProgress>>,
        ),
    >,
    replies: HashMap<ReplyTo, oneshot::Sender<Response>>,
    next_id: u64,
    links: Links,
    events: super::events::EventLog,
    /// Meta writes (members, fill books) go to the store one after the other, in the
    /// order the core made them: an older fill book must never land after a newer one.
    meta: mpsc::UnboundedSender<(StoreId, StoreWork)>,
    stopping: bool,
}

/// The core's task. After shutdown it goes on until the operations in flight have
/// ended, so their clients are answered.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut core: NodeCore,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) {
    let (meta, meta_rx) = mpsc::unbounded_channel();
    shared.tasks.spawn(meta_writer(shared.clone(), meta_rx));
    let mut driver = Driver {
        stores: FuturesUnordered::new(),
        asks: HashMap::new(),
        replies: HashMap::new(),
        next_id: 1,
        links: Links::default(),
        events: super::events::EventLog::default(),
        meta,
        stopping: false,
    };
    // Both futures live across turns: making them anew each turn would register a
    // waiter and a timer for every batch of inputs.
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    let wake = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(wake);
    let mut armed: Option<Millis> = None;
    let mut metrics = tokio::time::interval(METRICS_PERIOD);
    metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    driver.carry_out(&shared, &mut core);
    loop {
        if driver.stopping && core.ops_in_flight() == 0 {
            break;
        }
        let deadline = core.poll_timeout();
        if deadline != armed {
            if let Some(at) = deadline {
                let at = tokio::time::Instant::from_std(shared.started) + at.duration();
                wake.as_mut().reset(at);
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            _ = &mut cancelled, if !driver.stopping => {
                driver.stopping = true;
                continue;
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                driver.handle(&shared, &mut core, input);
                for _ in 1..INPUTS_PER_TURN {
                    match inputs.try_recv() {
                        Ok(input) => driver.handle(&shared, &mut core, input),
                        Err(_) => break,
                    }
                }
            }
            Some((id, done)) = driver.stores.next(), if !driver.stores.is_empty() => {
                core.handle_stored(id, done, shared.now(), &shared.store);
                while let Some(Some((id, done))) = driver.stores.next().now_or_never() {
                    core.handle_stored(id, done, shared.now(), &shared.store);
                }
            }
            _ = &mut wake, if armed.is_some() => {
                armed = None;
                core.handle_timeout(shared.now(), &shared.store);
            }
            _ = metrics.tick(), if super::metrics::installed() => {
                let mut status = core.status(shared.now(), &shared.store);
                // The metrics take the counts as they come: they do not ask for more.
                let wanted = shared.bucket_keys_wanted.load(std::sync::atomic::Ordering::Relaxed);
                shared.fill_bucket_keys(&mut status);
                shared.bucket_keys_wanted.store(wanted, std::sync::atomic::Ordering::Relaxed);
                super::metrics::status(&status);
                let m = core.membership();
                super::metrics::membership_refusals(m.refusals(), m.unverified_statuses());
            }
        }
        driver.carry_out(&shared, &mut core);
    }
}

impl Driver {
    fn handle(&mut self, shared: &Arc<Shared>, core: &mut NodeCore, input: Input) {
        let store = &shared.store;
        match input {
            Input::Ask {
                ask,
                reply,
                progress,
            } => {
                let data = matches!(
                    ask,
                    Ask::Get { .. } | Ask::Put { .. } | Ask::Update { .. } | Ask::Repair { .. }
                );
                if self.stopping && data {
                    let _ = reply.send(Answer::Failed(ErrorReply::new(
                        ErrorCode::ShuttingDown,
                        crate::coordinator::OpError::ShuttingDown.to_string(),
                    )));
                    return;
                }
                let id = self.id();
                self.asks.insert(id, (reply, progress));
                core.handle_ask(id, ask, shared.now(), store);
            }
            Input::Request {
                from,
                request,
                reply,
            } => {
                let id = self.id();
                self.replies.insert(id, reply);
                core.handle_request(&from, id, request, shared.now(), store);
            }
            Input::Datagram { from, data } => {
                shared.core.datagrams.fetch_sub(1, Ordering::AcqRel);
                core.handle_datagram(&from, &data, shared.now(), store);
            }
            Input::Response { id, result } => {
                core.handle_response(id, *result, shared.now(), store)
            }
            Input::Stored { id, done } => core.handle_stored(id, done, shared.now(), store),
            Input::Call(call) => call(core, shared.now(), store),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Carries out everything the core asks, and publishes its view when it changed.
    fn carry_out(&mut self, shared: &Arc<Shared>, core: &mut NodeCore) {
        while let Some(output) = core.poll_output() {
            match output {
                Output::Send { id, to, request } => self.send(shared, id, to, request),
                Output::Respond { reply, response } => {
                    if let Some(waiter) = self.replies.remove(&reply) {
                        let _ = waiter.send(response);
                    }
                }
                Output::Datagram { to, data } => send_datagram(shared, &to, data),
                Output::Store { id, work } => self.store(shared, id, work),
                Output::Answer { ask, answer } => {
                    if let Some((waiter, _)) = self.asks.remove(&ask) {
                        let _ = waiter.send(answer);
                    }
                }
                Output::Progress { ask, progress } => {
                    // Progress is best effort: a slow reader misses some, never the report.
                    if let Some((_, Some(to))) = self.asks.get(&ask) {
                        let _ = to.try_send(progress);
                    }
                }
                Output::Forget { peer } => shared.peers.forget(&peer),
                Output::Event(event) => self.events.log(shared, event),
            }
        }
        if let Some(view) = core.take_view_changed() {
            *shared.view.write().expect("view lock") = view;
        }
    }

    /// A request to a peer: replication through the peer's link (batched), anything
    /// else on a stream of its own.
    fn send(&mut self, shared: &Arc<Shared>, id: ReqId, to: MemberId, request: Request) {
        let request = match request {
            Request::Replicate { entries } => {
                if let Err(failure) = self.links.enqueue(shared, id, to, entries) {
                    shared.core.answer_response(id, Err(failure));
                }
                return;
            }
            other => other,
        };
        let timeout = match &request {
            Request::Ping { .. } => PROBE_TIMEOUT,
            Request::Members => MEMBERS_TIMEOUT,
            Request::Sync(_) => super::SYNC_STEP_TIMEOUT,
            _ => shared.config.replica_timeout,
        };
        let shared2 = shared.clone();
        shared.tasks.spawn(async move {
            let attempt = async {
                let connection = shared2.peers.connection(&to).await?;
                exchange(&connection, &request).await
            };
            let result = match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(PeerError(why))) => Err(PeerFailure::Path(why)),
                Err(_) => Err(PeerFailure::Path(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            shared2.core.answer_response(id, result);
        });
    }

    /// A store effect: data through the group-commit writer, queued in the order the
    /// core made them and awaited together by this task; the books (members, fills)
    /// by a task of their own, one after the other.
    fn store(&mut self, shared: &Arc<Shared>, id: StoreId, work: StoreWork) {
        let store = &shared.store;
        let done: StoreFuture = match work {
            meta @ (StoreWork::SaveMembers(_)
            | StoreWork::SaveFilled(_)
            | StoreWork::SaveCatalog(_)) => {
                let _ = self.meta.send((id, meta));
                return;
            }
            StoreWork::Apply(entries) => {
                let f = store.apply(entries);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::PutHints(hints) => {
                let f = store.put_hints(hints);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::DeleteHints(keys) => {
                let f = store.delete_hints(keys);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::Purge(tombstones) => {
                let f = store.purge(tombstones);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::DropPartition(p) => {
                let f = store.drop_partition(p);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::DropBuckets(ids) => {
                let f = store.drop_buckets(ids);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::Update {
                key,
                change,
                actor,
                at,
                ttl_ms,
            } => {
                let f = store.update(key, change, actor, at, ttl_ms);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::Prepare { key, ballot } => {
                let f = store.prepare(key, ballot);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::DropPromises(before) => {
                let f = store.drop_promises(before);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
            StoreWork::Accept { key, record, next } => {
                let f = store.accept(key, record, next);
                Box::pin(async move { (id, StoreDone::from_result(f.await)) })
            }
        };
        self.stores.push(done);
    }
}

/// Carries out the meta writes in the order the core made them.
async fn meta_writer(
    shared: Arc<Shared>,
    mut works: mpsc::UnboundedReceiver<(StoreId, StoreWork)>,
) {
    while let Some((id, work)) = works.recv().await {
        let shared2 = shared.clone();
        let done =
            tokio::task::spawn_blocking(move || crate::core::carry_out(&shared2.store, work))
                .await
                .unwrap_or_else(|e| {
                    StoreDone::Failed(ErrorReply::new(
                        ErrorCode::Storage,
                        format!("the store task failed: {e}"),
                    ))
                });
        shared.core.stored(id, done);
    }
}

fn send_datagram(shared: &Arc<Shared>, to: &MemberId, data: Bytes) {
    if let Some(connection) = shared.peers.cached(to) {
        if let Err(err) = connection.send_datagram(data) {
            tracing::debug!(peer = %to.name, "membership datagram not sent: {err}");
        }
        return;
    }
    // No connection yet: dial in the background and let SWIM retry; it tolerates loss.
    if shared.peers.begin_background_dial(&to.name) {
        let (shared, to) = (shared.clone(), to.clone());
        shared.clone().tasks.spawn(async move {
            match shared.peers.connection(&to).await {
                Ok(connection) => {
                    let _ = connection.send_datagram(data);
                }
                Err(err) => tracing::debug!(peer = %to.name, "cannot reach peer: {err}"),
            }
            shared.peers.end_background_dial(&to.name);
        });
    }
}
