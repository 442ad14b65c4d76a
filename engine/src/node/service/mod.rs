//! What a node does with each request, once the shell has read it and knows who sent it.
//! Membership changes ([`members`]), the status ([`status`]) and the answers that are
//! streams ([`streams`]) are in modules of their own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

mod members;
mod status;
mod streams;

pub(crate) use self::streams::{repair, watch};
use super::Shared;
use super::replication::coordinate;
use crate::coordinator::{OpError, Outcome};
use crate::hlc::Timestamp;
use crate::limits::{check_key, check_value};
use crate::membership::MemberState;
use crate::net::PeerIdentity;
use crate::policy::unheard_refusal;
use crate::protocol::{ErrorCode, ErrorReply, Request, Response};
use crate::record::{Entry, Payload, Record, Version};
use crate::storage::StoreError;
use crate::wallclock::system_wall_ms;

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
                let get = self.get(key, consistency, after);
                self.measured("get", consistency, get).await
            }
            Request::Put {
                key,
                value,
                consistency,
                after,
            } => {
                let put = self.write(key, Payload::Value(value), consistency, after);
                self.measured("put", consistency, put).await
            }
            Request::Delete {
                key,
                consistency,
                after,
            } => {
                let delete = self.write(key, Payload::Tombstone, consistency, after);
                self.measured("delete", consistency, delete).await
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

    /// Runs a data operation and records its outcome and latency, by operation and the
    /// consistency it ran at.
    async fn measured(
        &self,
        op: &'static str,
        consistency: Option<crate::protocol::Consistency>,
        run: impl std::future::Future<Output = Result<Response, ErrorReply>>,
    ) -> Result<Response, ErrorReply> {
        let started = std::time::Instant::now();
        let level = consistency.unwrap_or(self.config.default_consistency);
        let result = run.await;
        super::metrics::request(op, level.as_str(), result.is_ok(), started.elapsed());
        result
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
        let view = self.view();
        let others_known = view
            .members
            .iter()
            .any(|m| m.id.name != view.me && m.state != MemberState::Left);
        if let Some(why) = unheard_refusal(others_known, view.heard) {
            return Err(ErrorReply::new(ErrorCode::Unavailable, why));
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
}

fn op_error(err: OpError) -> ErrorReply {
    let code = match err {
        OpError::Overloaded { .. } => ErrorCode::Overloaded,
        OpError::ShuttingDown => ErrorCode::ShuttingDown,
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
