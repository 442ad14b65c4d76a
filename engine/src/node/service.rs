//! What a node does with each request, once the shell has read it and knows who sent it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use quinn::SendStream;
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use super::replication::coordinate;
use crate::coordinator::{OpError, Outcome};
use crate::hlc::Timestamp;
use crate::limits::{check_key, check_value};
use crate::net::PeerIdentity;
use crate::protocol::frame;
use crate::protocol::{
    ClusterStatus, ErrorCode, ErrorReply, MemberStatus, Request, Response, RootInfo, VersionInfo,
};
use crate::record::{Entry, NodeId, Payload, Record, Version};
use crate::storage::StoreError;
use crate::wallclock::system_wall_ms;

fn view_knows_older(view: &super::ClusterView, id: &crate::membership::MemberId) -> bool {
    view.member(&id.name).is_some_and(|m| id.supersedes(&m.id))
}

/// Time given to a member's old address to answer before a join under its name from
/// another address is taken for a restart.
const NAME_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

impl Shared {
    pub(crate) async fn handle(
        self: &Arc<Self>,
        peer: &PeerIdentity,
        request: Request,
    ) -> Response {
        let received_us = crate::wallclock::system_wall_us();
        if !request.allowed(peer.role) {
            return Response::Error(ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "forbidden: {} requires a{} {} certificate, but {:?} presented a {} certificate",
                    request.name(),
                    if request.required_role() == crate::protocol::Role::Admin {
                        "n"
                    } else {
                        ""
                    },
                    request.required_role(),
                    peer.name,
                    peer.role
                ),
            ));
        }
        let result = match request {
            Request::Hello { .. } => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "hello is only valid as the first request on a connection",
            )),
            Request::Get {
                key,
                consistency,
                after,
            } => {
                let started = std::time::Instant::now();
                let level = consistency.unwrap_or(self.config.default_consistency);
                let result = self.get(key, consistency, after).await;
                super::metrics::request("get", level.as_str(), result.is_ok(), started.elapsed());
                result
            }
            Request::Put {
                key,
                value,
                consistency,
                after,
            } => {
                let started = std::time::Instant::now();
                let level = consistency.unwrap_or(self.config.default_consistency);
                let result = self
                    .write(key, Payload::Value(value), consistency, after)
                    .await;
                super::metrics::request("put", level.as_str(), result.is_ok(), started.elapsed());
                result
            }
            Request::Delete {
                key,
                consistency,
                after,
            } => {
                let started = std::time::Instant::now();
                let level = consistency.unwrap_or(self.config.default_consistency);
                let result = self
                    .write(key, Payload::Tombstone, consistency, after)
                    .await;
                super::metrics::request(
                    "delete",
                    level.as_str(),
                    result.is_ok(),
                    started.elapsed(),
                );
                result
            }
            Request::Status => Ok(Response::Status(self.status())),
            Request::Ping { .. } => Ok(super::clocks::pong(received_us)),
            Request::Members => self
                .membership
                .members()
                .await
                .map(Response::Members)
                .map_err(|e| ErrorReply::new(ErrorCode::ShuttingDown, e)),
            Request::Replicate { entries } => self.replicate(entries).await,
            Request::ReadLocal { key } => self.read_local(&key),
            Request::Join {
                id,
                cluster,
                replace,
            } => self.join(peer, id, cluster, replace).await,
            Request::Remove { name } => self.remove(name).await,
            Request::Leave => self.leave().await,
            Request::Watch { .. } | Request::Repair { .. } => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "this request needs a stream of its own",
            )),
            Request::Sync(request) => super::antientropy::respond(self, &peer.name, request).await,
            Request::Verify => self.verify().await,
            Request::RewriteFuture { dry_run, at } => self.rewrite_future(dry_run, at).await,
        };
        result.unwrap_or_else(Response::Error)
    }

    /// Refuses data operations while another process holds this node's name: this one
    /// has stepped aside, and its view of the cluster is frozen.
    pub(crate) fn serving(&self) -> Result<(), ErrorReply> {
        match &*self.stepped_aside.lock().expect("stepped aside lock") {
            None => Ok(()),
            Some(other) => Err(ErrorReply::new(
                ErrorCode::NotReady,
                format!(
                    "not ready: another process under the name {} is in the cluster (at {other}); this one stepped aside and serves no data until it takes the name back",
                    self.me.name
                ),
            )),
        }
    }

    /// Advances this node's clock past the session's last version, so whatever the
    /// session does next here is ordered after what it saw elsewhere.
    fn observe_session(&self, after: Option<Timestamp>) -> Result<(), ErrorReply> {
        let Some(after) = after else {
            return Ok(());
        };
        let cluster_ms = self.cluster_wall_ms();
        self.clock
            .lock()
            .expect("clock lock")
            .observe_against(after, system_wall_ms(), cluster_ms)
            .map(|_| ())
            .map_err(|err| {
                ErrorReply::new(
                    ErrorCode::ClockOffset,
                    format!("the session's last version is refused: {err}"),
                )
            })
    }

    async fn get(
        self: &Arc<Self>,
        key: Vec<u8>,
        consistency: Option<crate::protocol::Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        self.serving()?;
        check_key(&key).map_err(limit_error)?;
        self.observe_session(after)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let level = consistency.unwrap_or(self.config.default_consistency);
        let replicas = self.view().replica_set(&key);
        let now = self.now();
        match coordinate(self, move |c| c.begin_read(key, replicas, level, now)).await {
            Outcome::Read { record } => Ok(Response::Value {
                found: record.and_then(|record| match record.payload {
                    Payload::Value(value) => Some((value, self.describe(record.version))),
                    Payload::Tombstone => None,
                }),
            }),
            Outcome::Failed(err) => Err(op_error(err)),
            Outcome::Written { .. } => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "a read was answered as a write",
            )),
        }
    }

    async fn write(
        self: &Arc<Self>,
        key: Vec<u8>,
        payload: Payload,
        consistency: Option<crate::protocol::Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        self.serving()?;
        check_key(&key).map_err(limit_error)?;
        if let Payload::Value(value) = &payload {
            check_value(value, self.config.value_bytes_max).map_err(limit_error)?;
        }
        // A version from a clock the cluster would refuse must never be issued: it
        // would be stored here and win later over writes acknowledged meanwhile.
        if let Some(refusal) = self.clock_refusal().await {
            return Err(refusal);
        }
        if let Some(why) = self.future_refusal() {
            return Err(ErrorReply::new(ErrorCode::ClockOffset, why));
        }
        if self.rewriting_future.load(Ordering::SeqCst) {
            // A write acknowledged now could lose to the rewritten versions.
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "unavailable: versions from the future are being rewritten on this node; it coordinates no writes until that ends",
            ));
        }
        self.observe_session(after)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        let level = consistency.unwrap_or(self.config.default_consistency);
        let version = Version {
            hlc: self
                .clock
                .lock()
                .expect("clock lock")
                .tick(system_wall_ms()),
            node: self.store.node_id(),
        };
        let replicas = self.view().replica_set(&key);
        let entry = Entry {
            key,
            record: Record { version, payload },
        };
        let now = self.now();
        match coordinate(self, move |c| c.begin_write(entry, replicas, level, now)).await {
            Outcome::Written { version } => Ok(Response::Written {
                version: self.describe(version),
            }),
            Outcome::Failed(err) => Err(op_error(err)),
            Outcome::Read { .. } => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "a write was answered as a read",
            )),
        }
    }

    async fn replicate(&self, entries: Vec<Entry>) -> Result<Response, ErrorReply> {
        for entry in &entries {
            check_key(&entry.key).map_err(limit_error)?;
            if let Payload::Value(value) = &entry.record.payload {
                check_value(value, self.config.value_bytes_max).map_err(limit_error)?;
            }
        }
        {
            let cluster_ms = self.cluster_wall_ms();
            let mut clock = self.clock.lock().expect("clock lock");
            let now = system_wall_ms();
            for entry in &entries {
                if let Err(err) = clock.observe_against(entry.record.version.hlc, now, cluster_ms) {
                    self.clock_refused("replicated entry", &err);
                    return Err(ErrorReply::new(ErrorCode::ClockOffset, err.to_string()));
                }
            }
        }
        let outcomes = self.apply_noted(entries).await.map_err(storage_error)?;
        let applied = outcomes.iter().filter(|o| o.applied()).count() as u32;
        Ok(Response::Replicated { applied })
    }

    fn read_local(&self, key: &[u8]) -> Result<Response, ErrorReply> {
        check_key(key).map_err(limit_error)?;
        let record = self.store.get(key).map_err(storage_error)?;
        Ok(Response::Record { record })
    }

    async fn join(
        &self,
        peer: &PeerIdentity,
        id: crate::membership::MemberId,
        cluster: Option<crate::storage::ClusterSettings>,
        replace: Option<String>,
    ) -> Result<Response, ErrorReply> {
        if id.name != peer.name {
            return Err(ErrorReply::new(
                ErrorCode::Forbidden,
                format!(
                    "a join request for {:?} came with the certificate of {:?}; a node joins under its own name",
                    id.name, peer.name
                ),
            ));
        }
        if let Some(theirs) = cluster
            && theirs != self.settings
        {
            let message = if theirs.cluster_id != self.settings.cluster_id {
                format!(
                    "node {} holds data of cluster {}, but this is cluster {}; it cannot join",
                    id.name,
                    theirs.id_hex(),
                    self.settings.id_hex()
                )
            } else {
                format!(
                    "node {} has partitions {} and replication factor {}, the cluster {} and {}",
                    id.name,
                    theirs.partitions,
                    theirs.replication_factor,
                    self.settings.partitions,
                    self.settings.replication_factor
                )
            };
            tracing::warn!("join refused: {message}");
            return Err(ErrorReply::new(ErrorCode::ClusterMismatch, message));
        }
        self.refuse_second_process(&id).await?;
        if view_knows_older(&self.view(), &id) {
            // A restarted node: whatever connection this node kept to its old process
            // is dead without knowing it.
            self.peers.forget(&id.name);
        }
        let (members, token) = self.membership.admit(id, replace).await?;
        let view = self.view();
        let me = view
            .member(&self.me.name)
            .map_or_else(|| self.me.clone(), |m| m.id.clone());
        Ok(Response::Joined {
            cluster: self.settings,
            seed: me,
            members,
            token,
        })
    }

    /// A join under the name of a member this node sees alive at another address is a
    /// second process under that name, unless the first is gone (killed and restarted
    /// elsewhere before the cluster noticed). Asking the old address tells which: if a
    /// node of that name answers there, the join is refused and the live one is never
    /// disturbed.
    async fn refuse_second_process(
        &self,
        id: &crate::membership::MemberId,
    ) -> Result<(), ErrorReply> {
        let view = self.view();
        let Some(live) = view.member(&id.name) else {
            return Ok(());
        };
        if !live.state.is_live() || live.id.addr == id.addr {
            return Ok(());
        }
        let probe = tokio::time::timeout(
            NAME_PROBE_TIMEOUT,
            self.peers.dial(live.id.addr, &id.name, Some(&id.name)),
        )
        .await;
        let Ok(Ok((connection, _))) = probe else {
            tracing::info!(member = %id.name, old = %live.id.addr, new = %id.addr, "a member restarted at a new address; the old one does not answer");
            return Ok(());
        };
        connection.close(0u32.into(), b"name probe");
        let message = format!(
            "{} is alive at {} (it answered just now); a second process under the same name is refused",
            id.name, live.id.addr
        );
        tracing::warn!(member = %id.name, addr = %id.addr, "join refused: {message}");
        Err(ErrorReply::new(ErrorCode::NameInUse, message))
    }

    async fn remove(&self, name: String) -> Result<Response, ErrorReply> {
        let id = self
            .membership
            .remove(name)
            .await
            .map_err(|reason| ErrorReply::new(ErrorCode::Refused, reason))?;
        let hints = self
            .store
            .hint_backlog()
            .unwrap_or_default()
            .iter()
            .filter(|b| b.target == id.name)
            .map(|b| b.count)
            .sum::<u64>();
        Ok(Response::Removed {
            message: format!(
                "{} removed from the cluster; its partitions move to the remaining members, which fill them by anti-entropy ({} hints kept for it here are dropped)",
                id.name, hints
            ),
        })
    }

    async fn verify(self: &Arc<Self>) -> Result<Response, ErrorReply> {
        let shared = self.clone();
        let partitions = self.settings.partitions;
        let mismatched = tokio::task::spawn_blocking(move || {
            (0..partitions)
                .filter(|&p| !shared.store.verify_tree(p).unwrap_or(false))
                .collect::<Vec<u16>>()
        })
        .await
        .map_err(|e| ErrorReply::new(ErrorCode::Storage, format!("verify failed: {e}")))?;
        let future = self.future_versions(self.cluster_wall_ms()).await?;
        Ok(Response::Verified {
            checked: u64::from(partitions),
            mismatched,
            future,
        })
    }

    async fn leave(&self) -> Result<Response, ErrorReply> {
        if !self.membership.leave().await {
            return Err(ErrorReply::new(
                ErrorCode::ShuttingDown,
                "the node is shutting down",
            ));
        }
        Ok(Response::Leaving {
            message: format!(
                "{} is leaving the cluster; its partitions move to the remaining members, then it stops",
                self.me.name
            ),
        })
    }

    pub(crate) fn status(&self) -> ClusterStatus {
        let view = self.view();
        let now_wall = system_wall_ms();
        let now = self.now();
        let backlog = self.store.hint_backlog().unwrap_or_default();
        let verdict = self.clock_verdict();
        // Before the status below: its clock readings hold the clock's lock to its end.
        let clock_refusal = verdict
            .refusal(self.config.max_clock_offset_ms)
            .or_else(|| self.future_refusal());
        let skew = self.skew.lock().expect("skew lock").clone();
        let reading = self.reading();
        let partition_states = super::antientropy::confirmations::partition_states(self, &view);
        let members = view
            .members
            .iter()
            .map(|m| {
                let name = &m.id.name;
                let held = view.placement.partitions_of(name).count() as u16;
                let mut status = MemberStatus {
                    name: name.clone(),
                    address: m.id.addr.to_string(),
                    state: m.state.as_str().to_string(),
                    incarnation: m.id.incarnation,
                    swim_incarnation: m.swim_incarnation,
                    hlc: None,
                    clock_skew_ms: None,
                    clock_skew_us: None,
                    report_age_ms: None,
                    partitions_held: held,
                    records: None,
                    hints: 0,
                    hints_oldest_age_ms: 0,
                    writes: 0,
                    reads: 0,
                    placement_digest: None,
                    state_age_ms: now.0.saturating_sub(m.since.0),
                    partitions_filling: view.filling_of(name) as u16,
                    reachable: self.peers.unreachable_reason(name).is_none(),
                    sync_lag_ms: None,
                    run: None,
                };
                if *name == self.me.name {
                    let oldest = backlog.iter().map(|b| b.oldest_ms).filter(|&t| t > 0).min();
                    status.hlc = Some(self.clock.lock().expect("clock lock").read(now_wall));
                    status.clock_skew_ms = Some(0);
                    status.clock_skew_us = Some(0);
                    status.report_age_ms = Some(0);
                    status.records = self.store.len().ok();
                    status.hints = backlog.iter().map(|b| b.count).sum();
                    status.hints_oldest_age_ms = oldest.map_or(0, |t| now_wall.saturating_sub(t));
                    status.writes = self.writes.load(Ordering::Relaxed);
                    status.reads = self.reads.load(Ordering::Relaxed);
                    status.placement_digest = Some(view.placement.digest());
                    status.run = self.anti_entropy.run();
                } else if let Some(report) = &m.status {
                    let age_ms = now.0.saturating_sub(m.status_at.0);
                    status.hlc = Some(report.hlc);
                    let offset = skew.offset(name, reading);
                    status.clock_skew_us = offset.map(|o| o.offset_us);
                    status.clock_skew_ms = offset.map(|o| o.offset_us / 1000);
                    status.report_age_ms = Some(age_ms);
                    status.records = Some(report.records);
                    status.hints = report.hints;
                    status.hints_oldest_age_ms = if report.hints_oldest_ms == 0 {
                        0
                    } else {
                        report.wall_ms.saturating_sub(report.hints_oldest_ms)
                    };
                    status.writes = report.writes;
                    status.reads = report.reads;
                    status.placement_digest = Some(report.placement_digest.clone());
                    status.run = report.sync.run.clone();
                }
                if *name != self.me.name && m.state.is_live() {
                    let hint = backlog
                        .iter()
                        .find(|b| b.target == *name)
                        .map(|b| b.oldest_ms);
                    status.sync_lag_ms = Some(super::antientropy::confirmations::sync_lag(
                        self,
                        &view,
                        &partition_states,
                        name,
                        hint,
                    ));
                }
                status
            })
            .collect();
        ClusterStatus {
            node: self.me.name.clone(),
            cluster_id: self.settings.id_hex(),
            partitions: self.settings.partitions,
            replication_factor: self.settings.replication_factor,
            placement_digest: view.placement.digest(),
            hlc: self.clock.lock().expect("clock lock").read(now_wall),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            members,
            sync: self.anti_entropy.peer_syncs(),
            repair: self.anti_entropy.progress(),
            repairing: self.anti_entropy.repairing(),
            partition_states,
            placement: (0..self.settings.partitions)
                .map(|p| view.placement.replicas(p).map(str::to_string).collect())
                .collect(),
            roots: (0..self.settings.partitions)
                .map(|p| {
                    let root = self.store.tree_root(p).unwrap_or_default();
                    RootInfo {
                        digest: root.digest.short_hex(),
                        count: root.count,
                    }
                })
                .collect(),
            clock_refusals: self.clock_refusals.load(Ordering::Relaxed),
            clock_offset_ms: verdict.cluster_offset_ms(),
            clock_refusal,
        }
    }

    /// A version with its coordinator's name, when this node knows it.
    pub(crate) fn describe(&self, version: Version) -> VersionInfo {
        let origin = if version.node == self.store.node_id() {
            Some(self.me.name.clone())
        } else {
            self.view()
                .members
                .iter()
                .find(|m| NodeId::from_name(&m.id.name) == version.node)
                .map(|m| m.id.name.clone())
        };
        VersionInfo { version, origin }
    }
}

/// Streams changes to a `watch` client until it goes away or the node stops.
pub(crate) async fn watch(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    prefix: &[u8],
    limit: usize,
) {
    let mut changes = shared.store.subscribe();
    loop {
        let change = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = send.stopped() => break,
            change = changes.recv() => change,
        };
        let response = match change {
            Ok(entry) if entry.key.starts_with(prefix) => Response::Change {
                key: entry.key.clone(),
                value: entry.record.payload.value().map(<[u8]>::to_vec),
                version: shared.describe(entry.record.version),
            },
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => Response::Error(ErrorReply::new(
                ErrorCode::Overloaded,
                format!("watch fell behind: {missed} changes were not shown"),
            )),
            Err(RecvError::Closed) => break,
        };
        if frame::write_message(send, &response, limit).await.is_err() {
            break;
        }
    }
}

/// Runs a repair for an admin, streaming its progress and then its report.
pub(crate) async fn repair(
    shared: &Arc<Shared>,
    send: &mut SendStream,
    partition: Option<u16>,
    peer: Option<String>,
    dry_run: bool,
    limit: usize,
) {
    if let Some(p) = partition
        && p >= shared.settings.partitions
    {
        let reply = ErrorReply::new(
            ErrorCode::BadRequest,
            format!(
                "partition {p} does not exist: the cluster has partitions 0 to {}",
                shared.settings.partitions - 1
            ),
        );
        let _ = frame::write_message(send, &Response::Error(reply), limit).await;
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let progress = move |p| {
        let _ = tx.try_send(p);
    };
    let run = super::antientropy::repair(shared, partition, peer, dry_run, &progress);
    tokio::pin!(run);
    let report = loop {
        tokio::select! {
            report = &mut run => break report,
            Some(p) = rx.recv() => {
                // Progress is best effort: a slow reader misses some updates, never the report.
                let _ = frame::write_message(send, &Response::RepairProgress(p), limit).await;
            }
        }
    };
    tracing::info!(
        dry_run,
        compared = report.counts.partitions_compared,
        differing = report.counts.partitions_differing,
        keys_sent = report.counts.keys_sent,
        keys_received = report.counts.keys_received,
        in_sync = report.in_sync,
        "repair finished"
    );
    let _ = frame::write_message(send, &Response::Repaired(report), limit).await;
}

fn op_error(err: OpError) -> ErrorReply {
    let code = match err {
        OpError::Overloaded { .. } => ErrorCode::Overloaded,
        _ => ErrorCode::Unavailable,
    };
    ErrorReply::new(code, err.to_string())
}

fn limit_error(err: crate::limits::LimitError) -> ErrorReply {
    ErrorReply::new(ErrorCode::LimitExceeded, err.to_string())
}

pub(super) fn storage_error(err: StoreError) -> ErrorReply {
    match err {
        StoreError::Closed => ErrorReply::new(ErrorCode::ShuttingDown, err.to_string()),
        other => {
            tracing::error!("storage: {other}");
            ErrorReply::new(ErrorCode::Storage, format!("not applied: {other}"))
        }
    }
}
