//! What a node does with each request, once the shell has read it and knows who sent it.
//! Membership changes ([`members`]), the status ([`status`]) and the answers that are
//! streams ([`streams`]) are in modules of their own.

use std::sync::Arc;

mod members;
mod status;
mod streams;

pub(crate) use self::streams::{repair, watch};
use super::Shared;
use crate::core::{Answer, Ask};
use crate::hlc::Timestamp;
use crate::net::PeerIdentity;
use crate::protocol::{Consistency, ErrorCode, ErrorReply, Request, Response};
use crate::record::Payload;
use crate::wallclock::system_wall_us;

impl Shared {
    pub(crate) async fn handle(
        self: &Arc<Self>,
        peer: &PeerIdentity,
        request: Request,
    ) -> Response {
        let received_us = system_wall_us();
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
            Request::Status => match self.core.ask(Ask::Status).await {
                Answer::Status(status) => Ok(Response::Status(*status)),
                other => Err(unexpected(other)),
            },
            // Answered here, not by the core: the clock is read as the probe arrives
            // and as it is answered, with no queue between them.
            Request::Ping { .. } => Ok(crate::core::pong(received_us, system_wall_us())),
            Request::Members => match self.core.ask(Ask::Members).await {
                Answer::Members(members) => Ok(Response::Members(members)),
                other => Err(unexpected(other)),
            },
            request
            @ (Request::Replicate { .. } | Request::ReadLocal { .. } | Request::Sync(_)) => {
                Ok(self.core.request(&peer.name, request).await)
            }
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
        consistency: Option<Consistency>,
        run: impl std::future::Future<Output = Result<Response, ErrorReply>>,
    ) -> Result<Response, ErrorReply> {
        let started = std::time::Instant::now();
        let level = consistency.unwrap_or(self.config.default_consistency);
        let result = run.await;
        super::metrics::request(op, level.as_str(), result.is_ok(), started.elapsed());
        result
    }

    async fn get(
        self: &Arc<Self>,
        key: Vec<u8>,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        let ask = Ask::Get {
            key,
            consistency,
            after,
        };
        match self.core.ask(ask).await {
            Answer::Read(record) => Ok(Response::Value {
                found: record.and_then(|record| match record.payload {
                    Payload::Value(value) => Some((value, self.describe(record.version))),
                    // The default bucket holds values and tombstones only.
                    Payload::Tombstone | Payload::Typed(_) => None,
                }),
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn write(
        self: &Arc<Self>,
        key: Vec<u8>,
        payload: Payload,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        let ask = Ask::Put {
            key,
            payload,
            consistency,
            after,
        };
        match self.core.ask(ask).await {
            Answer::Written(version) => Ok(Response::Written {
                version: self.describe(version),
            }),
            other => Err(unexpected(other)),
        }
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
        let present = self.cluster_wall_ms().await?;
        let future = self.future_versions(present).await?;
        Ok(Response::Verified {
            checked: u64::from(partitions),
            mismatched,
            future,
        })
    }

    /// The cluster's time as the core measures it.
    pub(crate) async fn cluster_wall_ms(&self) -> Result<u64, ErrorReply> {
        self.core
            .call(|core, now, _| core.cluster_wall_ms(now))
            .await
            .ok_or_else(shutting_down)
    }
}

fn shutting_down() -> ErrorReply {
    ErrorReply::new(ErrorCode::ShuttingDown, "the node is shutting down")
}

/// The core's answer where another was expected: a refusal passes through as it is.
pub(crate) fn unexpected(answer: Answer) -> ErrorReply {
    match answer {
        Answer::Failed(reply) => reply,
        other => ErrorReply::new(
            ErrorCode::BadRequest,
            format!("unexpected answer from the node's core: {other:?}"),
        ),
    }
}
