//! HTTPS/JSON: the node's operations for any language, over HTTP/1.1 with mutual TLS.
//!
//! The same certificates, CA and roles as the QUIC listener: a client certificate is
//! required at the handshake (no certificate, or one of another CA, never reaches a
//! route), a client may read, write, watch and see the status, an admin may do
//! everything, and a node certificate is not a user. Every route turns into the same
//! [`crate::protocol::Request`] the QUIC side takes and goes through
//! [`Shared::handle`], so roles, limits and answers are the same on both sides.
//!
//! Bounds, as on the QUIC listener: connections (`connections_max`, further ones closed
//! after the handshake), requests in flight across the node (`requests_max`, further
//! ones answered 429), a request body (the value limit; a larger `Content-Length` is
//! refused before the body is read, a body without one is read only up to the limit),
//! and time per request (`request_timeout`, then 504). Header sizes are hyper's
//! defaults.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Shared;
use crate::net::{PeerIdentity, TlsMaterial, identity_of};

mod answer;
mod keys;
mod routes;

pub use routes::openapi;

/// Time allowed for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

/// Binds `addr` and serves the HTTPS API until the node shuts down; returns the address
/// bound (port 0 picks a free one).
pub(crate) async fn start(
    shared: Arc<Shared>,
    addr: SocketAddr,
    material: &TlsMaterial,
) -> Result<SocketAddr, String> {
    let tls = crate::net::https_config(material).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for HTTPS on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen for HTTPS on {addr}: {e}"))?;
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let connections = Arc::new(Semaphore::new(shared.config.connections_max));
    let tasks = shared.tasks.clone();
    tasks.spawn(handshakes(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        connections,
        tx,
        shared.clone(),
    ));
    let app = routes::router(shared.clone()).into_make_service_with_connect_info::<Caller>();
    let shutdown = shared.shutdown.clone();
    tasks.spawn(async move {
        let listener = Handshaken { rx, local };
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!("HTTPS listener stopped: {err}");
        }
    });
    tracing::info!(addr = %local, "serving HTTPS");
    Ok(local)
}

/// Accepts TCP connections and runs each one's TLS handshake on a task of its own, so
/// a slow handshake holds up nobody else.
async fn handshakes(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: Arc<Semaphore>,
    tx: mpsc::Sender<(Connection, Caller)>,
    shared: Arc<Shared>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, say: the listener itself is fine.
                    tracing::warn!("HTTPS accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(
                %remote,
                limit = shared.config.connections_max,
                "HTTPS connection refused: at the connection limit"
            );
            continue;
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        shared.tasks.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::info!(%remote, "HTTPS handshake failed: {err}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "HTTPS handshake timed out after {HANDSHAKE_TIMEOUT:?}");
                    return;
                }
            };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or_else(|| "the client presented no certificate".to_string())
                .and_then(|cert| identity_of(cert).map_err(|e| e.to_string()));
            let caller = Caller { remote, identity };
            let _ = tx
                .send((
                    Connection {
                        stream,
                        _permit: permit,
                    },
                    caller,
                ))
                .await;
        });
    }
}

/// Who is on a connection: its address, and who its certificate says it is.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The client's address.
    pub(crate) remote: SocketAddr,
    /// Its identity, or why its certificate names none.
    pub(crate) identity: Result<PeerIdentity, String>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Handshaken>>
    for Caller
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Handshaken>) -> Caller {
        stream.remote_addr().clone()
    }
}

/// The listener axum serves: connections whose handshake is done.
pub(crate) struct Handshaken {
    rx: mpsc::Receiver<(Connection, Caller)>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handshaken {
    type Io = Connection;
    type Addr = Caller;

    async fn accept(&mut self) -> (Connection, Caller) {
        match self.rx.recv().await {
            Some(next) => next,
            // The handshake task ends only at shutdown, and graceful shutdown stops
            // calling accept first.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Caller> {
        Ok(Caller {
            remote: self.local,
            identity: Err("the listener itself".into()),
        })
    }
}

/// A TLS connection holding its place under the connection limit.
pub(crate) struct Connection {
    stream: TlsStream<TcpStream>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
