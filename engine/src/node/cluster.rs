//! The membership task: owns the [`Membership`] state machine, feeds it datagrams and
//! timers, sends what it wants sent, publishes this node's status every second, and
//! turns its roster into the [`ClusterView`] everything else reads.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use foca::Timer;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::join::Joined;
use crate::membership::{
    GossipStatus, MemberId, MemberState, MemberView, Membership, MembershipEvent,
};
use crate::placement::{Placement, partition_of};
use crate::storage::{ClusterSettings, MemberRecord};
use crate::wallclock::system_wall_ms;

/// Membership inputs waiting for the task; datagrams past it are dropped (SWIM
/// tolerates loss).
const INPUT_QUEUE_MAX: usize = 4096;
/// Time between status publications.
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Time a leaving node keeps gossiping its departure before it leaves SWIM.
const LEAVE_GRACE: Duration = Duration::from_millis(1500);

/// What this node believes about the cluster: members and placement.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This node's name.
    pub me: String,
    /// The cluster's settings.
    pub settings: ClusterSettings,
    /// Every member known, by name.
    pub members: Vec<MemberView>,
    /// Which members hold which partitions.
    pub placement: Arc<Placement>,
}

impl ClusterView {
    pub(crate) fn initial(me: &MemberId, settings: &ClusterSettings) -> ClusterView {
        ClusterView {
            me: me.name.clone(),
            settings: *settings,
            members: vec![MemberView {
                id: me.clone(),
                state: MemberState::Alive,
                swim_incarnation: 0,
                status: None,
                status_at: crate::coordinator::Millis(0),
                since: crate::coordinator::Millis(0),
            }],
            placement: Arc::new(Placement::compute(
                [me.name.clone()],
                settings.partitions,
                settings.replication_factor,
            )),
        }
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id.name == name)
    }

    /// The replicas of `key`.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<String> {
        let partition = partition_of(key, self.settings.partitions);
        self.placement
            .replicas(partition)
            .map(str::to_string)
            .collect()
    }

    /// Members in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

pub(crate) enum MembershipInput {
    Data(Bytes),
    Leave,
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
    pub(crate) fn datagram(&self, data: Bytes) {
        let _ = self.inputs.try_send(MembershipInput::Data(data));
    }

    /// Starts leaving the cluster.
    pub(crate) async fn leave(&self) -> bool {
        self.inputs.send(MembershipInput::Leave).await.is_ok()
    }
}

/// foca's timers order only by kind; the queue orders by deadline, then arrival.
struct Due(Instant, u64, Timer<MemberId>);

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
    remembered: Vec<MemberRecord>,
    joined: Joined,
) {
    let seed = {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let mut m = Membership::new(
        shared.me.clone(),
        &shared.config.membership,
        seed,
        shared.now(),
    );
    m.restore(&remembered, shared.now());
    for seed in joined.seeds {
        m.announce(seed, shared.now());
    }
    let mut timers: BinaryHeap<Due> = BinaryHeap::new();
    let mut timer_seq = 0u64;
    let mut status_tick = tokio::time::interval(STATUS_PERIOD);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leave_at: Option<Instant> = None;
    let mut placement = shared.view().placement.clone();
    flush(&shared, &mut m, &mut timers, &mut timer_seq, &mut placement);
    loop {
        let next_timer = timers.peek().map(|d| d.0);
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            input = inputs.recv() => match input {
                Some(MembershipInput::Data(data)) => {
                    if let Err(err) = m.handle_data(&data, shared.now()) {
                        tracing::debug!("{err}");
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
        let members = m.placement_members();
        if members != placement.members() {
            let next = Placement::compute(
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
    let view = ClusterView {
        me: shared.me.name.clone(),
        settings: shared.settings,
        members: m.roster().cloned().collect(),
        placement: placement.clone(),
    };
    *shared.view.write().expect("view lock") = Arc::new(view);
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
    }
}

fn status(shared: &Shared, m: &Membership, placement: &Placement) -> GossipStatus {
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
        ..GossipStatus::default()
    }
}
