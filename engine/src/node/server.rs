//! Connections and streams: the byte-moving shell around [`Shared::handle`].
//!
//! Bounds, outermost first: connections (`connections_max`, further ones refused),
//! streams per connection (QUIC stream credit), requests in flight across the node
//! (`requests_max`, further ones answered `Overloaded`), bytes per frame (checked
//! before allocating), and time per request (`request_timeout`). A misbehaving peer
//! can exhaust its own share, never the node.

use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};

use super::Shared;
use super::links::batch_frame_bytes_max;
use crate::limits::frame_bytes_max;
use crate::net::{NetError, PeerIdentity, peer_certificate, peer_identity};
use crate::protocol::Role;
use crate::protocol::frame::{self, FrameError};
use crate::protocol::{ErrorCode, ErrorReply, PROTOCOL_VERSION, Request, Response};

/// Connection close code: the node is shutting down.
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(1);
/// Connection close code: the peer's certificate names no usable identity.
const CLOSE_IDENTITY: VarInt = VarInt::from_u32(2);
/// Connection close code: the handshake request was missing, malformed or of another version.
const CLOSE_HELLO: VarInt = VarInt::from_u32(3);
/// Connection close code: a limit on connections was reached.
const CLOSE_LIMIT: VarInt = VarInt::from_u32(4);
/// Stream stop code: the request was refused before it was read in full.
const STOP_REFUSED: VarInt = VarInt::from_u32(1);
/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let (shutdown, tasks) = (shared.shutdown.clone(), shared.tasks.clone());
    let connections = Arc::new(tokio::sync::Semaphore::new(shared.config.connections_max));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                remote = %incoming.remote_address(),
                limit = shared.config.connections_max,
                "connection refused: at the connection limit"
            );
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            serve_connection(incoming, shared).await;
            drop(permit);
        });
    }
}

async fn serve_connection(incoming: Incoming, shared: Arc<Shared>) {
    let (shutdown, tasks) = (shared.shutdown.clone(), shared.tasks.clone());
    let remote = incoming.remote_address();
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            tracing::info!(%remote, "handshake failed: {err}");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "handshake timed out after {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let peer = match peer_identity(&connection).and_then(member_name_checked) {
        Ok(peer) => peer,
        Err(err) => {
            tracing::info!(%remote, "connection refused: {err}");
            connection.close(CLOSE_IDENTITY, err.to_string().as_bytes());
            return;
        }
    };
    // One certificate cannot take every connection slot from the others.
    let Some(_slot) = IdentitySlot::take(&shared, &peer.name) else {
        let reason = format!(
            "too many connections for {:?}: the limit is {} per certificate",
            peer.name, shared.config.connections_per_identity_max
        );
        tracing::warn!(%remote, "connection refused: {reason}");
        connection.close(CLOSE_LIMIT, reason.as_bytes());
        return;
    };
    if let Err(reason) = hello(&connection, &shared).await {
        tracing::info!(%remote, peer = %peer.name, "connection closed: {reason}");
        connection.close(CLOSE_HELLO, reason.as_bytes());
        return;
    }
    tracing::debug!(%remote, peer = %peer.name, role = %peer.role, "connection open");
    if peer.role == Role::Node {
        if let Ok(cert) = peer_certificate(&connection) {
            shared.seal.learn(&peer.name, &cert);
        }
        tasks.spawn(read_datagrams(
            connection.clone(),
            shared.clone(),
            peer.name.clone(),
        ));
    }
    let peer = Arc::new(peer);
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break,
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%remote, "connection ended: {err}");
                    break;
                }
            },
        };
        let (shared, peer) = (shared.clone(), peer.clone());
        tasks.spawn(async move { serve_stream(send, recv, &shared, &peer).await });
    }
}

/// The first stream must carry `Hello` with our protocol version.
async fn hello(connection: &Connection, shared: &Shared) -> Result<(), String> {
    let timeout = shared.config.request_timeout;
    let (mut send, mut recv) = tokio::time::timeout(timeout, connection.accept_bi())
        .await
        .map_err(|_| format!("no hello within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let limit = frame_bytes_max(shared.config.value_bytes_max);
    let request =
        tokio::time::timeout(timeout, frame::read_message::<Request, _>(&mut recv, limit))
            .await
            .map_err(|_| format!("hello not received within {timeout:?}"))?;
    let (response, outcome) = match request {
        Ok(Request::Hello { protocol_version }) if protocol_version == PROTOCOL_VERSION => (
            Response::Welcome {
                protocol_version: PROTOCOL_VERSION,
                node: shared.config.name.clone(),
            },
            Ok(()),
        ),
        Ok(Request::Hello { protocol_version }) => {
            let message = format!(
                "protocol version {protocol_version} is not supported; this node speaks version {PROTOCOL_VERSION}"
            );
            (
                Response::Error(ErrorReply::new(ErrorCode::VersionMismatch, &message)),
                Err(message),
            )
        }
        Ok(other) => {
            let message = format!(
                "the first request on a connection must be hello, not {}",
                other.name()
            );
            (
                Response::Error(ErrorReply::new(ErrorCode::BadRequest, &message)),
                Err(message),
            )
        }
        Err(err) => {
            let message = format!("bad hello: {err}");
            (
                Response::Error(error_for_frame(&err, shared.config.value_bytes_max)),
                Err(message),
            )
        }
    };
    let _ = frame::write_message(&mut send, &response, limit).await;
    let _ = send.finish();
    if outcome.is_err() {
        // Give the error a moment to reach the peer before the connection closes.
        let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
    }
    outcome
}

/// A node certificate must name a valid member: the name is its identity in the
/// cluster, in placement and in every message.
fn member_name_checked(peer: PeerIdentity) -> Result<PeerIdentity, NetError> {
    if peer.role == Role::Node
        && let Err(err) = crate::certs::check_name(&peer.name)
    {
        return Err(NetError::Identity(format!(
            "a node certificate must name a valid member: {err}"
        )));
    }
    Ok(peer)
}

/// Membership datagrams from another node go to the membership task, with the name its
/// certificate gives (a datagram speaking for anyone else is refused there).
async fn read_datagrams(connection: Connection, shared: Arc<Shared>, from: String) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            datagram = connection.read_datagram() => match datagram {
                Ok(data) => shared.core.datagram(&from, data),
                Err(_) => break,
            },
        }
    }
}

/// A stream carries one request and its answer, or (between nodes) a sequence of them
/// in lockstep. `Watch` turns the stream into a feed of changes.
async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: &Arc<Shared>,
    peer: &PeerIdentity,
) {
    let limit = match peer.role {
        Role::Node => batch_frame_bytes_max(shared.config.value_bytes_max),
        _ => frame_bytes_max(shared.config.value_bytes_max),
    };
    let timeout = shared.config.request_timeout;
    let mut first = true;
    loop {
        let wait = if first {
            timeout
        } else {
            shared.config.stream_idle_timeout
        };
        let next = tokio::time::timeout(wait, frame::read(&mut recv, limit));
        // A stream waiting for its next request is not in flight: shutdown ends it.
        let next = if first {
            next.await
        } else {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                next = next => next,
            }
        };
        let body = match next {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => break,
            Ok(Err(err)) => {
                if matches!(err, FrameError::TooLarge { .. }) {
                    let _ = recv.stop(STOP_REFUSED);
                }
                let _ = frame::write_message(
                    &mut send,
                    &Response::Error(error_for_frame(&err, shared.config.value_bytes_max)),
                    limit,
                )
                .await;
                break;
            }
            Err(_) if first => {
                let _ = recv.stop(STOP_REFUSED);
                let reply = ErrorReply::new(
                    ErrorCode::Timeout,
                    format!("request not received within {} ms", timeout.as_millis()),
                );
                let _ = frame::write_message(&mut send, &Response::Error(reply), limit).await;
                break;
            }
            Err(_) => break,
        };
        first = false;
        let request = match frame::decode::<Request>(&body) {
            Ok(request) => request,
            Err(err) => {
                let _ = frame::write_message(
                    &mut send,
                    &Response::Error(error_for_frame(&err, shared.config.value_bytes_max)),
                    limit,
                )
                .await;
                break;
            }
        };
        if let Request::Watch { prefix } = &request
            && request.allowed(peer.role)
        {
            super::service::watch(shared, &mut send, prefix, limit).await;
            break;
        }
        if let Request::Repair {
            partition,
            peer: with,
            dry_run,
        } = &request
            && request.allowed(peer.role)
        {
            super::service::repair(shared, &mut send, *partition, with.clone(), *dry_run, limit)
                .await;
            break;
        }
        let response = match shared.requests.clone().try_acquire_owned() {
            Err(_) => Response::Error(ErrorReply::new(
                ErrorCode::Overloaded,
                format!(
                    "node is at its limit of {} requests in flight; retry shortly",
                    shared.config.requests_max
                ),
            )),
            Ok(_permit) => {
                match tokio::time::timeout(timeout, shared.handle(peer, request)).await {
                    Ok(response) => response,
                    Err(_) => Response::Error(ErrorReply::new(
                        ErrorCode::Timeout,
                        format!("request not completed within {} ms", timeout.as_millis()),
                    )),
                }
            }
        };
        if let Response::Error(err) = &response {
            tracing::debug!(peer = %peer.name, code = ?err.code, "request failed: {}", err.message);
        }
        // A peer that does not read its answers holds only its own stream, and only
        // for a while.
        match tokio::time::timeout(timeout, frame::write_message(&mut send, &response, limit)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(peer = %peer.name, "answer not delivered: {err}");
                break;
            }
            Err(_) => {
                tracing::debug!(peer = %peer.name, "answer not read within {timeout:?}; stream reset");
                let _ = send.reset(STOP_REFUSED);
                return;
            }
        }
    }
    let _ = send.finish();
}

fn error_for_frame(err: &FrameError, value_bytes_max: usize) -> ErrorReply {
    match err {
        FrameError::TooLarge { len, .. } => ErrorReply::new(
            ErrorCode::LimitExceeded,
            format!(
                "value too large: the request is {len} bytes; this node takes values of at most {value_bytes_max} bytes ({err})"
            ),
        ),
        FrameError::Malformed(_) | FrameError::Truncated { .. } | FrameError::Io(_) => {
            ErrorReply::new(ErrorCode::BadRequest, format!("request refused: {err}"))
        }
    }
}

/// A connection counted against its certificate's share; released when dropped.
struct IdentitySlot<'a> {
    shared: &'a Shared,
    name: String,
}

impl<'a> IdentitySlot<'a> {
    fn take(shared: &'a Shared, name: &str) -> Option<IdentitySlot<'a>> {
        let mut counts = shared
            .connections_by_identity
            .lock()
            .expect("connection counts lock");
        let count = counts.entry(name.to_string()).or_default();
        if *count >= shared.config.connections_per_identity_max {
            return None;
        }
        *count += 1;
        Some(IdentitySlot {
            shared,
            name: name.to_string(),
        })
    }
}

impl Drop for IdentitySlot<'_> {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .connections_by_identity
            .lock()
            .expect("connection counts lock");
        if let Some(count) = counts.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.name);
            }
        }
    }
}
