//! Creating or joining a cluster at start.
//!
//! Without `--join`, a node creates a cluster (or restarts into the one its data belongs
//! to). With `--join`, it asks a seed for the cluster's settings before it serves
//! anything: a node never holds data of two clusters, and never runs with settings that
//! differ from its cluster's. A first join that reaches no seed fails after a bounded
//! number of attempts with the reason; a restarting node that reaches no seed starts
//! anyway and finds the members it remembers.

use std::time::{Duration, Instant};

use super::peers::{PeerError, Peers, exchange};
use super::{NodeConfig, NodeError, check_flags, new_cluster};
use crate::membership::MemberId;
use crate::protocol::{Request, Response};
use crate::storage::{ClusterSettings, Store};

/// What joining produced: identities to announce this node to.
pub(crate) struct Joined {
    pub(crate) seeds: Vec<MemberId>,
}

/// Longest pause between rounds of join attempts.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(4);

enum Attempt {
    Joined(ClusterSettings, Vec<MemberId>),
    /// The seed answered and said no: retrying cannot help.
    Refused(String),
    Unreachable(String),
    Myself,
}

pub(crate) async fn join_or_create(
    config: &NodeConfig,
    store: &Store,
    peers: &Peers,
    me: &MemberId,
) -> Result<Joined, NodeError> {
    if config.join.is_empty() {
        match store.cluster() {
            Some(settings) => check_flags(config, &settings)?,
            None => store.set_cluster(new_cluster(config)?)?,
        }
        return Ok(Joined { seeds: Vec::new() });
    }
    let started = Instant::now();
    let mut reasons: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    for round in 1..=config.join_attempts.max(1) {
        reasons.clear();
        for seed in &config.join {
            match attempt(seed, store.cluster(), peers, me).await {
                Attempt::Joined(settings, seeds) => {
                    check_flags(config, &settings)?;
                    store.set_cluster(settings)?;
                    tracing::info!(seed = %seed, cluster = %settings.id_hex(), "joined the cluster");
                    return Ok(Joined { seeds });
                }
                Attempt::Refused(reason) => {
                    return Err(NodeError::Join(format!(
                        "cannot join through {seed}: {reason}"
                    )));
                }
                Attempt::Myself => reasons.push(format!("{seed} is this node")),
                Attempt::Unreachable(reason) => {
                    tracing::warn!(seed = %seed, round, "join attempt failed: {reason}");
                    reasons.push(format!("{seed}: {reason}"));
                }
            }
        }
        if round < config.join_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(JOIN_BACKOFF_MAX);
        }
    }
    let summary = format!(
        "{}; gave up after {} attempts over {:.1} s",
        reasons.join("; "),
        config.join_attempts.max(1),
        started.elapsed().as_secs_f64()
    );
    match store.cluster() {
        Some(settings) => {
            check_flags(config, &settings)?;
            tracing::warn!(
                "no seed reachable ({summary}); starting with the members remembered from the last run"
            );
            Ok(Joined { seeds: Vec::new() })
        }
        None => Err(NodeError::Join(format!(
            "cannot join the cluster: {summary}"
        ))),
    }
}

async fn attempt(
    seed: &str,
    cluster: Option<ClusterSettings>,
    peers: &Peers,
    me: &MemberId,
) -> Attempt {
    let addr = match tokio::net::lookup_host(seed).await.map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return Attempt::Refused(format!("{seed:?} resolves to no address")),
        Err(e) => {
            return Attempt::Refused(format!("cannot resolve {seed:?} (expected host:port): {e}"));
        }
    };
    let host = seed.rsplit_once(':').map_or(seed, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (connection, name) = match peers.dial(addr, host, None).await {
        Ok(dialled) => dialled,
        Err(PeerError(reason)) => return Attempt::Unreachable(reason),
    };
    if name == me.name {
        connection.close(0u32.into(), b"self");
        return Attempt::Myself;
    }
    let join = Request::Join {
        id: me.clone(),
        cluster,
    };
    let answer = exchange(&connection, &join).await;
    connection.close(0u32.into(), b"joined");
    match answer {
        Ok(Response::Joined {
            cluster,
            seed,
            members,
        }) => {
            let mut seeds = vec![seed];
            seeds.extend(members.into_iter().filter(|m| m.name != me.name));
            Attempt::Joined(cluster, seeds)
        }
        Ok(Response::Error(reply)) => Attempt::Refused(reply.message),
        Ok(other) => Attempt::Refused(format!("unexpected answer {other:?}")),
        Err(PeerError(reason)) => Attempt::Unreachable(reason),
    }
}
