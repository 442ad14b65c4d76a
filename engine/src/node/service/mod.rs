//! What a node does with each request, once the shell has read it and knows who sent it.
//! Membership changes ([`members`]), the status ([`status`]) and the answers that are
//! streams ([`streams`]) are in modules of their own.

use std::sync::Arc;

mod members;
mod status;
mod streams;

pub(crate) use self::streams::{repair, watch};
use super::Shared;
use crate::buckets::BucketType;
use crate::core::{Answer, Ask};
use crate::hlc::Timestamp;
use crate::net::PeerIdentity;
use crate::protocol::TypedValue;
use crate::protocol::{BucketRequest, Consistency, ErrorCode, ErrorReply, Request, Response};
use crate::record::{Payload, Record};
use crate::types::{Context, Kind, State};
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
                let get = self.get(None, key, consistency, after);
                self.measured("get", consistency, get).await
            }
            Request::Put {
                key,
                value,
                consistency,
                after,
            } => {
                let put = self.write(
                    None,
                    key,
                    Payload::Value(value),
                    None,
                    None,
                    consistency,
                    after,
                );
                self.measured("put", consistency, put).await
            }
            Request::Delete {
                key,
                consistency,
                after,
            } => {
                let delete = self.write(
                    None,
                    key,
                    Payload::Tombstone,
                    None,
                    None,
                    consistency,
                    after,
                );
                self.measured("delete", consistency, delete).await
            }
            Request::Read {
                bucket,
                key,
                consistency,
                after,
            } => {
                let get = self.get(Some(bucket), key, consistency, after);
                self.measured("get", consistency, get).await
            }
            Request::Write {
                bucket,
                key,
                value,
                context,
                ttl_ms,
                consistency,
                after,
            } => {
                let (op, payload) = match value {
                    Some(value) => ("put", Payload::Value(value)),
                    None => ("delete", Payload::Tombstone),
                };
                let write = self.write(
                    Some(bucket),
                    key,
                    payload,
                    context,
                    ttl_ms,
                    consistency,
                    after,
                );
                self.measured(op, consistency, write).await
            }
            Request::Update {
                bucket,
                key,
                change,
                consistency,
                after,
            } => {
                let ask = Ask::Update {
                    bucket,
                    key,
                    change,
                    consistency,
                    after,
                };
                let update = async {
                    match self.core.ask(ask).await {
                        Answer::Written(version) => Ok(Response::Written {
                            version: self.describe(version),
                        }),
                        other => Err(unexpected(other)),
                    }
                };
                self.measured("update", consistency, update).await
            }
            Request::Status => match self.core.ask(Ask::Status).await {
                Answer::Status(mut status) => {
                    self.fill_bucket_keys(&mut status);
                    Ok(Response::Status(*status))
                }
                other => Err(unexpected(other)),
            },
            // Answered here, not by the core: the clock is read as the probe arrives
            // and as it is answered, with no queue between them.
            Request::Ping { .. } => Ok(crate::core::pong(received_us, system_wall_us())),
            Request::Members => match self.core.ask(Ask::Members).await {
                Answer::Members(members) => Ok(Response::Members(members)),
                other => Err(unexpected(other)),
            },
            Request::Cas {
                bucket,
                key,
                expect,
                value,
                after,
            } => {
                let ask = Ask::Cas {
                    bucket,
                    key,
                    expect,
                    value,
                    after,
                };
                let cas = async {
                    match self.core.ask(ask).await {
                        Answer::Written(version) => Ok(Response::Written {
                            version: self.describe(version),
                        }),
                        Answer::NotSwapped(record) => Ok(Response::NotSwapped {
                            found: self.found(record),
                        }),
                        other => Err(unexpected(other)),
                    }
                };
                self.measured("cas", None, cas).await
            }
            request @ (Request::Replicate { .. }
            | Request::Prepare { .. }
            | Request::Propose { .. }
            | Request::Accept { .. }
            | Request::ReadLocal { .. }
            | Request::Sync(_)
            | Request::Catalog(_)
            | Request::UpdateLocal { .. }) => Ok(self.core.request(&peer.name, request).await),
            Request::Buckets(what) => self.buckets(what).await,
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
        bucket: Option<String>,
        key: Vec<u8>,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        let ask = Ask::Get {
            bucket,
            key,
            consistency,
            after,
        };
        match self.core.ask(ask).await {
            Answer::Read {
                record,
                kind: BucketType::Lww | BucketType::Linearizable,
            } => Ok(Response::Value {
                found: self.found(record),
            }),
            Answer::Read { record, kind } => Ok(Response::Typed(typed_value(record, kind))),
            other => Err(unexpected(other)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        self: &Arc<Self>,
        bucket: Option<String>,
        key: Vec<u8>,
        payload: Payload,
        context: Option<String>,
        ttl_ms: Option<u64>,
        consistency: Option<Consistency>,
        after: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        let context = context
            .map(|token| Context::from_token(&token))
            .transpose()
            .map_err(|why| ErrorReply::new(ErrorCode::BadRequest, why))?;
        let ask = Ask::Put {
            bucket,
            key,
            payload,
            context,
            ttl_ms,
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

    /// A record's value and version as a client reads them (nothing for a tombstone).
    fn found(&self, record: Option<Record>) -> Option<(Vec<u8>, crate::protocol::VersionInfo)> {
        record.and_then(|record| match record.payload {
            Payload::Value(value) => Some((value, self.describe(record.version))),
            Payload::Tombstone | Payload::Typed(_) => None,
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
        let present = self.cluster_wall_ms().await?;
        let future = self.future_versions(present).await?;
        Ok(Response::Verified {
            checked: u64::from(partitions),
            mismatched,
            future,
        })
    }

    /// Buckets: defined, deleted, listed, shown.
    async fn buckets(&self, what: BucketRequest) -> Result<Response, ErrorReply> {
        let ask = match what {
            BucketRequest::Create {
                name,
                kind,
                ttl_ms,
                consistency,
            } => Ask::CreateBucket {
                name,
                kind,
                ttl_ms,
                consistency,
            },
            BucketRequest::Delete { name } => Ask::DeleteBucket { name },
            BucketRequest::List => Ask::Buckets(None),
            BucketRequest::Show { name } => Ask::Buckets(Some(name)),
        };
        match self.core.ask(ask).await {
            Answer::Buckets(buckets) => Ok(Response::Buckets(buckets)),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's time as the core measures it.
    pub(crate) async fn cluster_wall_ms(&self) -> Result<u64, ErrorReply> {
        self.core
            .call(|core, now, _| core.cluster_wall_ms(now))
            .await
            .ok_or_else(shutting_down)
    }
}

/// A typed value as a client reads it (nothing written: the type's empty value).
fn typed_value(record: Option<Record>, kind: BucketType) -> TypedValue {
    let state = record
        .and_then(|r| match r.payload {
            Payload::Typed(state) => Some(state),
            _ => None,
        })
        .unwrap_or_else(|| {
            State::empty(match kind {
                BucketType::Set => Kind::Set,
                BucketType::Siblings => Kind::Siblings,
                _ => Kind::Counter,
            })
        });
    match state {
        State::Counter(c) => TypedValue::Counter(c.value()),
        State::Set(s) => TypedValue::Set(s.members().map(<[u8]>::to_vec).collect()),
        State::Siblings(r) => TypedValue::Siblings {
            values: r.values().map(<[u8]>::to_vec).collect(),
            context: r.context().token(),
        },
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
