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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use crate::limits::frame_bytes_max;
use crate::net::{PeerIdentity, peer_identity};
use crate::protocol::frame::{self, FrameError};
use crate::protocol::{ErrorCode, ErrorReply, PROTOCOL_VERSION, Request, Response};

/// Connection close code: the node is shutting down.
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(1);
/// Connection close code: the peer's certificate names no usable identity.
const CLOSE_IDENTITY: VarInt = VarInt::from_u32(2);
/// Connection close code: the handshake request was missing, malformed or of another version.
const CLOSE_HELLO: VarInt = VarInt::from_u32(3);
/// Stream stop code: the request was refused before it was read in full.
const STOP_REFUSED: VarInt = VarInt::from_u32(1);
/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
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
        let (shared, shutdown, streams) = (shared.clone(), shutdown.clone(), tasks.clone());
        tasks.spawn(async move {
            serve_connection(incoming, shared, shutdown, streams).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    incoming: Incoming,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
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
    let peer = match peer_identity(&connection) {
        Ok(peer) => peer,
        Err(err) => {
            tracing::info!(%remote, "connection refused: {err}");
            connection.close(CLOSE_IDENTITY, err.to_string().as_bytes());
            return;
        }
    };
    if let Err(reason) = hello(&connection, &shared).await {
        tracing::info!(%remote, peer = %peer.name, "connection closed: {reason}");
        connection.close(CLOSE_HELLO, reason.as_bytes());
        return;
    }
    tracing::debug!(%remote, peer = %peer.name, role = %peer.role, "connection open");
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
            (Response::Error(error_for_frame(&err)), Err(message))
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

async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: &Shared,
    peer: &PeerIdentity,
) {
    let limit = frame_bytes_max(shared.config.value_bytes_max);
    let timeout = shared.config.request_timeout;
    let response = match shared.requests.clone().try_acquire_owned() {
        Err(_) => {
            let _ = recv.stop(STOP_REFUSED);
            Response::Error(ErrorReply::new(
                ErrorCode::Overloaded,
                format!(
                    "node is at its limit of {} requests in flight; retry shortly",
                    shared.config.requests_max
                ),
            ))
        }
        Ok(_permit) => {
            match tokio::time::timeout(timeout, read_and_handle(&mut recv, shared, peer, limit))
                .await
            {
                Ok(response) => response,
                Err(_) => {
                    let _ = recv.stop(STOP_REFUSED);
                    Response::Error(ErrorReply::new(
                        ErrorCode::Timeout,
                        format!("request not completed within {} ms", timeout.as_millis()),
                    ))
                }
            }
        }
    };
    if let Response::Error(err) = &response {
        tracing::debug!(peer = %peer.name, code = ?err.code, "request failed: {}", err.message);
    }
    if let Err(err) = frame::write_message(&mut send, &response, limit).await {
        tracing::debug!(peer = %peer.name, "answer not delivered: {err}");
    }
    let _ = send.finish();
}

async fn read_and_handle(
    recv: &mut RecvStream,
    shared: &Shared,
    peer: &PeerIdentity,
    limit: usize,
) -> Response {
    let request = match frame::read_message::<Request, _>(recv, limit).await {
        Ok(request) => request,
        Err(err) => {
            if matches!(err, FrameError::TooLarge { .. }) {
                let _ = recv.stop(STOP_REFUSED);
            }
            return Response::Error(error_for_frame(&err));
        }
    };
    shared.handle(peer, request).await
}

fn error_for_frame(err: &FrameError) -> ErrorReply {
    match err {
        FrameError::TooLarge { .. } => {
            ErrorReply::new(ErrorCode::LimitExceeded, format!("request refused: {err}"))
        }
        FrameError::Malformed(_) | FrameError::Truncated { .. } | FrameError::Io(_) => {
            ErrorReply::new(ErrorCode::BadRequest, format!("request refused: {err}"))
        }
    }
}
