//! Creating or joining a cluster at start.
//!
//! Without `--join`, a node creates a cluster (or restarts into the one its data belongs
//! to). With `--join`, it asks a seed for the cluster's settings before it serves
//! anything: a node never holds data of two clusters, and never runs with settings that
//! differ from its cluster's. A first join that reaches no seed fails after a bounded
//! number of attempts with the reason; a restarting node that reaches no seed starts
//! anyway and finds the members it remembers.
//!
//! Either way the seed answers with every member it knows, their states and statuses,
//! and the joining node installs them before it serves a request: it never coordinates
//! from a view that holds only itself. A restarting node without `--join` asks the
//! members it remembers the same question, briefly, so it too starts from the
//! cluster's view. A seed refuses a second process under the name of a live member.

use std::time::{Duration, Instant};

use super::peers::{PeerError, Peers, exchange};
use super::{NodeConfig, NodeError, check_flags, new_cluster};
use crate::core::Joined;
use crate::membership::MemberId;
use crate::protocol::{ErrorCode, Request, Response};
use crate::storage::{ClusterSettings, Store};

/// Time a restarting node spends asking the members it remembers for the cluster's
/// view before it starts from its own memory.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest pause between rounds of join attempts.
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(4);

enum Attempt {
    Joined(ClusterSettings, Joined),
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
        return match store.cluster() {
            Some(settings) => {
                check_flags(config, &settings)?;
                rejoin(config, store, peers, me).await
            }
            None => {
                if config.replace.is_some() {
                    return Err(NodeError::Config(
                        "--replace needs --join: the node that replaces a member joins through a live one".into(),
                    ));
                }
                store.set_cluster(new_cluster(config)?)?;
                Ok(Joined {
                    created: true,
                    ..Joined::default()
                })
            }
        };
    }
    let started = Instant::now();
    let mut reasons: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    for round in 1..=config.join_attempts.max(1) {
        reasons.clear();
        for seed in &config.join {
            match attempt(seed, store.cluster(), peers, me, config.replace.clone()).await {
                Attempt::Joined(settings, joined) => {
                    check_flags(config, &settings)?;
                    store.set_cluster(settings)?;
                    tracing::info!(seed = %seed, cluster = %settings.id_hex(), members = joined.members.len(), "joined the cluster");
                    return Ok(joined);
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
        Some(settings) if config.replace.is_none() => {
            check_flags(config, &settings)?;
            tracing::warn!(
                "no seed reachable ({summary}); starting with the members remembered from the last run"
            );
            Ok(Joined::default())
        }
        _ => Err(NodeError::Join(format!(
            "cannot join the cluster: {summary}"
        ))),
    }
}

/// A restart without `--join`: asks the members this node remembers for the cluster's
/// view, all at once and briefly; the first answer wins. Nobody answering is normal
/// (the whole cluster is starting), and the node starts from what it remembers.
async fn rejoin(
    config: &NodeConfig,
    store: &Store,
    peers: &Peers,
    me: &MemberId,
) -> Result<Joined, NodeError> {
    let remembered: Vec<String> = store
        .members()?
        .into_iter()
        .filter(|r| r.name != me.name && !r.left)
        .map(|r| r.addr.to_string())
        .collect();
    if remembered.is_empty() {
        return Ok(Joined::default());
    }
    let cluster = store.cluster();
    let mut asks: futures_util::stream::FuturesUnordered<_> = remembered
        .iter()
        .map(|addr| async move { (addr, attempt(addr, cluster, peers, me, None).await) })
        .collect();
    let deadline = tokio::time::sleep(REJOIN_TIMEOUT);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            next = futures_util::StreamExt::next(&mut asks) => match next {
                None => break,
                Some((addr, Attempt::Joined(settings, joined))) => {
                    check_flags(config, &settings)?;
                    tracing::info!(seed = %addr, members = joined.members.len(), "rejoined the cluster");
                    return Ok(joined);
                }
                Some((addr, Attempt::Refused(reason))) => {
                    return Err(NodeError::Join(format!("{addr} refused this node: {reason}")));
                }
                Some(_) => {}
            },
        }
    }
    tracing::info!(
        "no remembered member answered; starting with the members remembered from the last run"
    );
    Ok(Joined::default())
}

async fn attempt(
    seed: &str,
    cluster: Option<ClusterSettings>,
    peers: &Peers,
    me: &MemberId,
    replace: Option<String>,
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
        replace,
    };
    let answer = exchange(&connection, &join).await;
    connection.close(0u32.into(), b"joined");
    match answer {
        Ok(Response::Joined {
            cluster,
            seed,
            members,
            token,
        }) => {
            let mut seeds = vec![seed];
            seeds.extend(
                members
                    .iter()
                    .filter(|m| m.id.name != me.name && m.state.is_live())
                    .map(|m| m.id.clone()),
            );
            Attempt::Joined(
                cluster,
                Joined {
                    seeds,
                    members,
                    token,
                    created: false,
                    through: Some(seed_name(addr, &name)),
                },
            )
        }
        Ok(Response::Error(reply)) if reply.code == ErrorCode::NotReady => {
            Attempt::Unreachable(reply.message)
        }
        Ok(Response::Error(reply)) => Attempt::Refused(reply.message),
        Ok(other) => Attempt::Refused(format!("unexpected answer {other:?}")),
        Err(PeerError(reason)) => Attempt::Unreachable(reason),
    }
}

fn seed_name(addr: std::net::SocketAddr, name: &str) -> String {
    format!("{name} at {addr}")
}
