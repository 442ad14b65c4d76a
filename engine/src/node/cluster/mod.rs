//! The membership task: owns the [`Membership`] state machine, feeds it datagrams and
//! timers, sends what it wants sent, publishes this node's status every second, and
//! turns its roster into the [`ClusterView`] everything else reads.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod admit;

use self::admit::admit;
use super::Shared;
use crate::core::ClusterView;
use crate::membership::{
    GossipStatus, MemberId, Membership, MembershipError, MembershipEvent, SeedMember, SwimTimer,
};
use crate::placement::{PartitionSet, Placement};
use crate::policy::{Holding, also_holding, filled_word, holding_of};
use crate::protocol::{ErrorCode, ErrorReply};
use crate::wallclock::system_wall_ms;

/// Membership inputs waiting for the task; datagrams past it are dropped (SWIM
/// tolerates loss).
const INPUT_QUEUE_MAX: usize = 4096;
/// Time between status publications.
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Time a leaving node keeps gossiping its departure before it leaves SWIM.
const LEAVE_GRACE: Duration = Duration::from_millis(1500);

/// The answer to a join request: what the seed knows, and the token the joining node
/// takes over.
pub(crate) type Admission = Result<(Vec<SeedMember>, Option<String>), ErrorReply>;

pub(crate) enum MembershipInput {
    /// A datagram, and the certificate name of the connection it came on.
    Data(String, Bytes),
    Leave,
    Join {
        id: MemberId,
        replace: Option<String>,
        reply: oneshot::Sender<Admission>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<MemberId, String>>,
    },
    /// This node's own state changed (its filled partitions): rebuild the view and
    /// tell the cluster now.
    Refresh,
    /// The node is shutting down: tell the others this life is over.
    GoDown(oneshot::Sender<()>),
    /// What this node knows of every member, for a peer that asks.
    Members(oneshot::Sender<Vec<SeedMember>>),
    /// A live member's view of the cluster, asked for because this node keeps being
    /// declared dead.
    SeedView(Vec<SeedMember>),
}

/// How the rest of the node reaches the membership task.
pub(crate) struct MembershipHandle {
    inputs: mpsc::Sender<MembershipInput>,
}

impl MembershipHandle {
    pub(crate) fn new() -> (MembershipHandle, mpsc::Receiver<MembershipInput>) {
        let (inputs, rx) = mpsc::channel(INPUT_QUEUE_MAX);
        (MembershipHandle { inputs }, rx)
    }

    /// A datagram from a node; dropped when the task is behind.
    pub(crate) fn datagram(&self, from: &str, data: Bytes) {
        let _ = self
            .inputs
            .try_send(MembershipInput::Data(from.to_string(), data));
    }

    /// Starts leaving the cluster.
    pub(crate) async fn leave(&self) -> bool {
        self.inputs.send(MembershipInput::Leave).await.is_ok()
    }

    /// Asks membership to admit a joining node.
    pub(crate) async fn admit(&self, id: MemberId, replace: Option<String>) -> Admission {
        let (reply, answer) = oneshot::channel();
        let stopped = || ErrorReply::new(ErrorCode::ShuttingDown, "the node is shutting down");
        self.inputs
            .send(MembershipInput::Join { id, replace, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Asks membership to remove a dead member.
    pub(crate) async fn remove(&self, name: String) -> Result<MemberId, String> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(MembershipInput::Remove { name, reply })
            .await
            .map_err(|_| "the node is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the node is shutting down".to_string())?
    }

    /// What this node knows of every member.
    pub(crate) async fn members(&self) -> Result<Vec<SeedMember>, String> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(MembershipInput::Members(reply))
            .await
            .map_err(|_| "the node is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the node is shutting down".to_string())
    }

    /// Tells the cluster this node is going down, and waits until that is sent.
    pub(crate) async fn go_down(&self) {
        let (done, sent) = oneshot::channel();
        if self
            .inputs
            .send(MembershipInput::GoDown(done))
            .await
            .is_ok()
        {
            let _ = sent.await;
        }
    }

    /// Rebuilds the view and publishes this node's status now.
    pub(crate) fn refresh(&self) {
        let _ = self.inputs.try_send(MembershipInput::Refresh);
    }
}

/// foca's timers order only by kind; the queue orders by deadline, then arrival.
struct Due(Instant, u64, SwimTimer);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.0, other.1).cmp(&(self.0, self.1))
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut inputs: mpsc::Receiver<MembershipInput>,
    mut m: Membership,
    seeds: Vec<MemberId>,
    primed: oneshot::Sender<()>,
) {
    for seed in seeds {
        m.announce(seed, shared.now());
    }
    let mut timers: BinaryHeap<Due> = BinaryHeap::new();
    let mut timer_seq = 0u64;
    let mut status_tick = tokio::time::interval(STATUS_PERIOD);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leave_at: Option<Instant> = None;
    let mut placement = shared.view().placement.clone();
    flush(&shared, &mut m, &mut timers, &mut timer_seq, &mut placement);
    let _ = primed.send(());
    loop {
        let next_timer = timers.peek().map(|d| d.0);
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            input = inputs.recv() => match input {
                Some(MembershipInput::Data(from, data)) => {
                    match m.handle_data(&from, &data, shared.now()) {
                        Ok(()) => {}
                        // Counted and reported (once a minute per peer) by membership.
                        Err(MembershipError::Refused { .. }) => {}
                        Err(err) => tracing::debug!("{err}"),
                    }
                }
                Some(MembershipInput::Leave) => {
                    if !m.is_leaving() {
                        tracing::info!("leaving the cluster");
                        let status = status(&shared, &m, &placement);
                        m.leave(status, shared.now());
                        leave_at = Some(Instant::now() + LEAVE_GRACE);
                    }
                }
                Some(MembershipInput::Join { id, replace, reply }) => {
                    let answer = admit(&shared, &mut m, id, replace);
                    let _ = reply.send(answer);
                }
                Some(MembershipInput::Remove { name, reply }) => {
                    let answer = m.depart(&name, shared.now(), shared.cluster_wall_ms());
                    if answer.is_ok() {
                        // The removal is durable before it is acknowledged: a crash of
                        // this node right after must not bring the member back.
                        if let Err(err) = shared.store.save_members(&m.records()) {
                            tracing::error!("member records not saved: {err}");
                        }
                    }
                    if let Ok(id) = &answer {
                        tracing::warn!(member = %id.name, addr = %id.addr, "member removed from the cluster; its partitions move to the others");
                    }
                    let _ = reply.send(answer);
                }
                Some(MembershipInput::GoDown(done)) => {
                    if !m.is_leaving() {
                        m.go_down(shared.now());
                    }
                    flush(&shared, &mut m, &mut timers, &mut timer_seq, &mut placement);
                    let _ = done.send(());
                    continue;
                }
                Some(MembershipInput::Members(reply)) => {
                    let _ = reply.send(m.seed_members());
                }
                Some(MembershipInput::SeedView(members)) => {
                    m.install(members, shared.now());
                }
                Some(MembershipInput::Refresh) => {
                    if !m.is_leaving() {
                        let status = status(&shared, &m, &placement);
                        m.publish(status, shared.now());
                    }
                }
                None => break,
            },
            _ = sleep_until(next_timer), if next_timer.is_some() => {
                let now = Instant::now();
                while timers.peek().is_some_and(|d| d.0 <= now) {
                    let Due(_, _, timer) = timers.pop().expect("peeked");
                    m.handle_timer(timer, shared.now());
                }
            }
            _ = status_tick.tick(), if !m.is_leaving() => {
                m.tick(shared.now());
                super::metrics::membership_refusals(m.refusals(), m.unverified_statuses());
                let status = status(&shared, &m, &placement);
                m.publish(status, shared.now());
                m.announce_if_isolated(shared.now());
                super::metrics::status(&shared.status());
            }
            _ = sleep_until(leave_at), if leave_at.is_some() => {
                leave_at = None;
                m.finish_leaving(shared.now());
                flush(&shared, &mut m, &mut timers, &mut timer_seq, &mut placement);
                tracing::info!("left the cluster");
                shared.left.notify_one();
            }
        }
        flush(&shared, &mut m, &mut timers, &mut timer_seq, &mut placement);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends what membership wants sent, arms its timers, reports its events, and
/// publishes the new view.
fn flush(
    shared: &Arc<Shared>,
    m: &mut Membership,
    timers: &mut BinaryHeap<Due>,
    timer_seq: &mut u64,
    placement: &mut Arc<Placement>,
) {
    while let Some((to, data)) = m.poll_send() {
        send_datagram(shared, &to, data);
    }
    while let Some((after, timer)) = m.poll_timer() {
        *timer_seq += 1;
        timers.push(Due(Instant::now() + after, *timer_seq, timer));
    }
    while let Some(event) = m.poll_event() {
        log_event(&event);
        if matches!(
            event,
            MembershipEvent::RemovedWhileAway | MembershipEvent::NameTakenBack(_)
        ) {
            let cleared = {
                let mut fill = shared.fill.lock().expect("fill lock");
                fill.clear();
                fill.filled().clone()
            };
            if let Err(err) = shared.store.save_filled(&cleared) {
                tracing::error!("filled partitions not saved: {err}");
            }
        }
        match &event {
            MembershipEvent::SteppedAside(other) => {
                *shared.stepped_aside.lock().expect("stepped aside lock") =
                    Some(other.addr.to_string());
            }
            MembershipEvent::NameTakenBack(_) => {
                *shared.stepped_aside.lock().expect("stepped aside lock") = None;
            }
            _ => {}
        }
        if matches!(event, MembershipEvent::ConsultSeed) {
            consult_seed(shared, m.consult_whom().map(str::to_string));
        }
        if let MembershipEvent::Died(id) = &event {
            // Whatever comes back (the same process after a pause, or a new one) is
            // reached on a fresh connection, not one that may be dead without knowing.
            shared.peers.forget(&id.name);
        }
        if matches!(
            event,
            MembershipEvent::Joined(_) | MembershipEvent::Recovered(_)
        ) {
            shared.hints_wake.notify_one();
            // A member that joins or returns has to catch up; so may this node.
            shared.anti_entropy.wake.notify_one();
        }
    }
    if m.take_roster_changed() {
        let mut members = m.placement_members();
        members.sort_by(|a, b| a.1.cmp(&b.1));
        let current: Vec<(String, String)> = placement
            .tokens()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if members != current {
            let next = Placement::compute_with_tokens(
                members,
                shared.settings.partitions,
                shared.settings.replication_factor,
            );
            tracing::info!(
                members = ?next.members(),
                digest = %next.digest(),
                held = next.partitions_of(&shared.me.name).count(),
                "placement changed"
            );
            *placement = Arc::new(next);
            // New owners fill from the old ones: handoff is repair.
            shared.anti_entropy.wake.notify_one();
        }
        let records = m.records();
        let store_shared = shared.clone();
        shared.tasks.spawn_blocking(move || {
            if let Err(err) = store_shared.store.save_members(&records) {
                tracing::warn!("member records not saved: {err}");
            }
        });
    }
    let partitions = shared.settings.partitions;
    let mut filled: HashMap<String, PartitionSet> = m
        .roster()
        .filter_map(|v| Some((v.id.name.clone(), filled_word(v, partitions)?.clone())))
        .collect();
    let holding: HashMap<String, Holding> = m
        .roster()
        .filter(|v| v.id.name != shared.me.name)
        .filter_map(|v| Some((v.id.name.clone(), holding_of(v, partitions)?)))
        .collect();
    let own = shared.fill.lock().expect("fill lock").filled().clone();
    filled.insert(shared.me.name.clone(), own);
    let unreachable = shared.peers.unreachable();
    let view = ClusterView {
        me: shared.me.name.clone(),
        settings: shared.settings,
        members: m.roster().cloned().collect(),
        placement: placement.clone(),
        filled,
        holding,
        settling: HashMap::new(),
        unreachable,
        heard: m.heard_from_others(),
    };
    if shared.update_view(|current| *current = view) {
        super::fill::update(shared);
    }
}

/// Asks a live member for its view of the cluster and hands it to membership: a node
/// that keeps being declared dead learns whether another process holds its name.
fn consult_seed(shared: &Arc<Shared>, told_by: Option<String>) {
    let view = shared.view();
    // The member that said this node is down first: it may be the only one holding
    // the later life of this name that keeps this one out.
    let told = told_by.and_then(|name| view.member(&name).map(|m| m.id.clone()));
    let Some(seed) = told.or_else(|| {
        view.members
            .iter()
            .find(|m| m.id.name != shared.me.name && m.state.is_live())
            .map(|m| m.id.clone())
    }) else {
        return;
    };
    let shared2 = shared.clone();
    shared.tasks.spawn(async move {
        let asked = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let connection = shared2.peers.connection(&seed).await?;
            super::peers::request(&connection, &crate::protocol::Request::Members).await
        })
        .await;
        match asked {
            Ok(Ok(crate::protocol::Response::Members(members))) => {
                let _ = shared2
                    .membership
                    .inputs
                    .try_send(MembershipInput::SeedView(members));
            }
            other => tracing::debug!(seed = %seed.name, "no view from the seed: {other:?}"),
        }
    });
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

fn log_event(event: &MembershipEvent) {
    match event {
        MembershipEvent::Joined(id) => {
            tracing::info!(member = %id.name, addr = %id.addr, "member joined")
        }
        MembershipEvent::Recovered(id) => {
            tracing::info!(member = %id.name, incarnation = id.incarnation, "member alive again")
        }
        MembershipEvent::Suspected(id) => tracing::warn!(member = %id.name, "member suspected"),
        MembershipEvent::Died(id) => tracing::warn!(member = %id.name, "member declared dead"),
        MembershipEvent::Left(id) => tracing::info!(member = %id.name, "member left"),
        MembershipEvent::RejoinedAs(id) => {
            tracing::warn!(
                incarnation = id.incarnation,
                "this node was declared dead; rejoined with a new incarnation"
            )
        }
        MembershipEvent::RejoinDelayed(ms) => tracing::warn!(
            wait_ms = ms,
            "this node keeps being declared dead; it waits before rejoining again (is another process running under its name?)"
        ),
        MembershipEvent::SteppedAside(later) => tracing::error!(
            other = %later.addr,
            "another process started later under this node's name at {}; this one steps aside and no longer takes part in the cluster: stop one of them",
            later.addr
        ),
        MembershipEvent::RemovedWhileAway => tracing::warn!(
            "the cluster removed this node while it was away; it rejoins as a new member and refills its partitions before it counts in quorums"
        ),
        MembershipEvent::ConsultSeed => {
            tracing::debug!(
                "declared dead again soon after rejoining; asking a member for its view"
            )
        }
        MembershipEvent::NameTakenBack(other) => tracing::warn!(
            other = %other.addr,
            "the other process under this node's name is gone; this one takes the name back and refills its partitions before it counts in quorums"
        ),
        MembershipEvent::Refused(report) => tracing::warn!(
            peer = %report.from,
            refused = report.count,
            "membership messages from {} refused: {} ({} since the last report; reported at most once a minute per peer)",
            report.from,
            report.refusal,
            report.count
        ),
    }
}

fn status(shared: &Shared, m: &Membership, placement: &Placement) -> GossipStatus {
    // Taken apart: the fill lock is not reentrant, and a guard inside the literal below
    // would live to its end.
    let filled = shared.fill.lock().expect("fill lock").filled().clone();
    let backlog = shared.store.hint_backlog().unwrap_or_default();
    GossipStatus {
        hlc: shared
            .clock
            .lock()
            .expect("clock lock")
            .read(system_wall_ms()),
        wall_ms: system_wall_ms(),
        hints: backlog.iter().map(|b| b.count).sum(),
        hints_oldest_ms: backlog
            .iter()
            .map(|b| b.oldest_ms)
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(0),
        writes: shared.writes.load(Ordering::Relaxed),
        reads: shared.reads.load(Ordering::Relaxed),
        partitions_held: placement.partitions_of(&m.me().name).count() as u16,
        records: shared.store.len().unwrap_or(0),
        placement_digest: placement.digest(),
        also_holding: also_holding(shared.store.partitions_with_data(), &filled),
        filled,
        sync: super::antientropy::confirmations::summary(shared, &shared.view()),
        ..GossipStatus::default()
    }
}
