//! Measures every live peer's clock against this node's (NTP-style probes on the data
//! path, [`crate::hlc::skew`]) and decides from the book whether this node's clock is
//! the wrong one. Only this shell task reads the clock and talks to peers; the book and
//! the verdict are deterministic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::peers::request;
use crate::hlc::skew::{Probe, Reading, Verdict};
use crate::membership::MemberId;
use crate::protocol::{ErrorCode, ErrorReply, Request, Response};
use crate::wallclock::{system_wall_ms, system_wall_us};

/// Time between probes of each live peer.
const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Time a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Shared {
    /// This node's monotonic and wall clocks, read together.
    pub(crate) fn reading(&self) -> Reading {
        Reading {
            mono_us: self.started.elapsed().as_micros() as u64,
            wall_us: system_wall_us(),
        }
    }

    /// The other members alive in this node's view.
    fn live_peers(&self) -> Vec<String> {
        self.view()
            .members
            .iter()
            .filter(|m| m.id.name != self.me.name && m.state.is_live())
            .map(|m| m.id.name.clone())
            .collect()
    }

    /// Whether this node's clock agrees with the live members' clocks.
    pub(crate) fn clock_verdict(&self) -> Verdict {
        let live = self.live_peers();
        self.skew.lock().expect("skew lock").verdict(
            live.iter().map(String::as_str),
            self.reading(),
            self.config.max_clock_offset_ms,
        )
    }

    /// The cluster's time as this node measures it: its wall clock corrected by the
    /// median offset of the live members' clocks (its own when nothing is measured).
    pub(crate) fn cluster_wall_ms(&self) -> u64 {
        let wall = system_wall_ms();
        match self.clock_verdict().cluster_offset_ms() {
            Some(offset) => wall.saturating_add_signed(offset),
            None => wall,
        }
    }

    /// Counts and logs a version refused for coming from too far ahead (`what`: where it
    /// came from).
    pub(crate) fn clock_refused(&self, what: &str, err: &crate::hlc::ClockError) {
        self.clock_refusals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("{what} refused: {err}");
    }

    /// Why this node may not coordinate a write now, if it may not: its clock is off
    /// the cluster's by more than the bound, or it cannot tell. A node that has not
    /// compared its clock with a majority of the live members yet (just started) probes
    /// them first; one that still cannot (they do not answer) issues nothing, since
    /// what it issued might be refused everywhere else.
    ///
    /// Not having compared is `unavailable` (the peers to compare with did not answer,
    /// as during a cut), not `clock offset`: nothing says this node's clock is wrong.
    pub(crate) async fn clock_refusal(self: &Arc<Self>) -> Option<ErrorReply> {
        let mut verdict = self.clock_verdict();
        if let Verdict::Unmeasured { .. } = verdict {
            probe_all(self).await;
            verdict = self.clock_verdict();
        }
        let code = match verdict {
            Verdict::Unmeasured { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::ClockOffset,
        };
        verdict
            .refusal(self.config.max_clock_offset_ms)
            .map(|why| ErrorReply::new(code, why))
    }
}

/// The answer to a probe: when it arrived and when it was answered, by this clock.
pub(crate) fn pong(received_us: u64) -> Response {
    Response::Pong {
        received_us,
        replied_us: system_wall_us(),
    }
}

/// Probes `id` once and records the sample; `false` when it did not answer.
pub(crate) async fn probe(shared: &Shared, id: &MemberId) -> bool {
    shared
        .skew
        .lock()
        .expect("skew lock")
        .probe_sent(&id.name, shared.reading().mono_us);
    let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
        let connection = shared.peers.connection(id).await?;
        let sent_us = system_wall_us();
        let answer = request(&connection, &Request::Ping { sent_us }).await?;
        Ok::<_, super::peers::PeerError>((sent_us, answer, shared.reading()))
    })
    .await;
    match answered {
        Ok(Ok((
            sent_us,
            Response::Pong {
                received_us,
                replied_us,
            },
            now,
        ))) => {
            let sample = Probe {
                sent_us,
                received_us,
                replied_us,
                answered_us: now.wall_us,
            };
            shared
                .skew
                .lock()
                .expect("skew lock")
                .record(&id.name, sample, now.mono_us);
            true
        }
        _ => false,
    }
}

/// Probes every live peer once, at the same time.
async fn probe_all(shared: &Arc<Shared>) {
    let view = shared.view();
    let probes = view
        .members
        .iter()
        .filter(|m| m.id.name != shared.me.name && m.state.is_live())
        .map(|m| {
            let id = m.id.clone();
            async move { probe(shared, &id).await }
        });
    futures_util::future::join_all(probes).await;
}

/// Probes every live peer every [`PROBE_PERIOD`]; says once when this node's clock
/// leaves the cluster's bound and once when it is back.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lives: HashMap<String, MemberId> = HashMap::new();
    // Whether writes are refused, and if so whether for an outlying clock.
    let mut refusing: Option<bool> = None;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A new life of a peer may run on another clock: its old samples go.
        let view = shared.view();
        for member in &view.members {
            let name = &member.id.name;
            if lives.get(name).is_some_and(|id| id != &member.id) {
                shared.skew.lock().expect("skew lock").forget(name);
            }
            lives.insert(name.clone(), member.id.clone());
        }
        probe_all(&shared).await;
        let live = shared.live_peers();
        shared.skew.lock().expect("skew lock").confirm(
            live.iter().map(String::as_str),
            shared.reading(),
            shared.config.max_clock_offset_ms,
        );
        let verdict = shared.clock_verdict();
        let refusal = verdict.refusal(shared.config.max_clock_offset_ms);
        let outlier = matches!(verdict, Verdict::Outlier { .. });
        super::metrics::cluster_clock(verdict.cluster_offset_ms(), outlier);
        // Once per change of state, never per round.
        let state = refusal.as_ref().map(|_| outlier);
        match (&refusal, refusing) {
            (Some(why), before) if before != state => tracing::error!("{why}"),
            (None, Some(_)) => tracing::info!(
                "this node's clock is within {} ms of the cluster's; it coordinates writes again",
                shared.config.max_clock_offset_ms
            ),
            _ => {}
        }
        refusing = state;
    }
}
