//! Connections to other nodes: one cached QUIC connection per peer, dialled on demand
//! from the node's own endpoint (so a peer sees this node's certificate), checked to
//! really be the node it should be.
//!
//! A cached connection belongs to one life of the peer (its identity's epoch and
//! incarnation). When the peer restarts, the connection to the old process looks open
//! until QUIC's idle timeout; asking for the new identity drops it and dials afresh, so
//! the first request after a restart does not wait out the dead connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Connection;

use crate::client::describe_connection_error;
use crate::limits::{VALUE_BYTES_MAX_CEILING, frame_bytes_max};
use crate::membership::MemberId;
use crate::net::seal::CertSeal;
use crate::net::{peer_certificate, peer_identity};
use crate::protocol::frame;
use crate::protocol::{PROTOCOL_VERSION, Request, Response, Role};

/// Time allowed to dial a peer, handshake and hello included.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why talking to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PeerError(pub(crate) String);

#[derive(Default)]
struct Slot {
    /// The connection and the life of the peer (epoch, incarnation) it was dialled for.
    cached: Mutex<Option<(Connection, (u64, u32))>>,
    dial: tokio::sync::Mutex<()>,
    dialing: AtomicBool,
}

/// The node's connections to its peers.
pub(crate) struct Peers {
    endpoint: quinn::Endpoint,
    me: String,
    /// Learns the certificates of the nodes dialled, to check their status seals.
    seal: Arc<CertSeal>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Peers {
    pub(crate) fn new(endpoint: quinn::Endpoint, me: String, seal: Arc<CertSeal>) -> Peers {
        Peers {
            endpoint,
            me,
            seal,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("peer slots lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Dials `addr`, verifies the certificate belongs to a node (named `expect`, when
    /// given) and says hello. Returns the connection and the peer's name.
    pub(crate) async fn dial(
        &self,
        addr: SocketAddr,
        server_name: &str,
        expect: Option<&str>,
    ) -> Result<(Connection, String), PeerError> {
        let attempt = async {
            let connecting = self
                .endpoint
                .connect(addr, server_name)
                .map_err(|e| PeerError(format!("cannot dial {addr}: {e}")))?;
            let connection = connecting
                .await
                .map_err(|e| PeerError(format!("{addr}: {}", describe_connection_error(&e))))?;
            let identity =
                peer_identity(&connection).map_err(|e| PeerError(format!("{addr}: {e}")))?;
            if identity.role != Role::Node {
                connection.close(0u32.into(), b"not a node");
                return Err(PeerError(format!(
                    "{addr} presented a {} certificate, not a node certificate",
                    identity.role
                )));
            }
            if let Some(expected) = expect
                && identity.name != expected
            {
                connection.close(0u32.into(), b"unexpected node");
                return Err(PeerError(format!(
                    "{addr} is node {:?}, expected {expected:?}",
                    identity.name
                )));
            }
            if let Ok(cert) = peer_certificate(&connection) {
                self.seal.learn(&identity.name, &cert);
            }
            let hello = Request::Hello {
                protocol_version: PROTOCOL_VERSION,
            };
            match request(&connection, &hello).await? {
                Response::Welcome { .. } => Ok((connection, identity.name)),
                other => Err(PeerError(format!("{addr} answered hello with {other:?}"))),
            }
        };
        tokio::time::timeout(DIAL_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                PeerError(format!(
                    "no answer from {addr} within {} ms",
                    DIAL_TIMEOUT.as_millis()
                ))
            })?
    }

    /// The open connection to the peer `id`, dialling it if there is none (or only one
    /// to an earlier life of the peer).
    pub(crate) async fn connection(&self, id: &MemberId) -> Result<Connection, PeerError> {
        if id.name == self.me {
            return Err(PeerError("a node does not dial itself".into()));
        }
        let slot = self.slot(&id.name);
        if let Some(connection) = open(&slot, id) {
            return Ok(connection);
        }
        let _dialing = slot.dial.lock().await;
        if let Some(connection) = open(&slot, id) {
            return Ok(connection);
        }
        let (connection, _) = self.dial(id.addr, &id.name, Some(&id.name)).await?;
        *slot.cached.lock().expect("peer slot lock") =
            Some((connection.clone(), (id.epoch_ms, id.incarnation)));
        Ok(connection)
    }

    /// The open connection to the peer `id`, if there is one; never waits.
    pub(crate) fn cached(&self, id: &MemberId) -> Option<Connection> {
        open(&self.slot(&id.name), id)
    }

    /// Drops the cached connection to `name` (it failed in a way that says the
    /// connection, not the request, is broken), so the next request dials afresh.
    pub(crate) fn forget(&self, name: &str) {
        if let Some((connection, _)) = self
            .slot(name)
            .cached
            .lock()
            .expect("peer slot lock")
            .take()
        {
            connection.close(0u32.into(), b"stale");
        }
    }

    /// Marks a background dial to `name` as started; false if one is already running.
    pub(crate) fn begin_background_dial(&self, name: &str) -> bool {
        !self.slot(name).dialing.swap(true, Ordering::AcqRel)
    }

    /// Marks a background dial to `name` as finished.
    pub(crate) fn end_background_dial(&self, name: &str) {
        self.slot(name).dialing.store(false, Ordering::Release);
    }
}

/// The cached connection, unless it is closed or belongs to an earlier life of `id`
/// (then it is dropped).
fn open(slot: &Slot, id: &MemberId) -> Option<Connection> {
    let mut cached = slot.cached.lock().expect("peer slot lock");
    let stale = cached.as_ref().is_some_and(|(connection, life)| {
        connection.close_reason().is_some() || *life < (id.epoch_ms, id.incarnation)
    });
    if stale {
        if let Some((connection, _)) = cached.take() {
            connection.close(0u32.into(), b"peer restarted");
        }
        return None;
    }
    cached.as_ref().map(|(connection, _)| connection.clone())
}

/// One request on its own stream of `connection`; a node's error answer is an error.
pub(crate) async fn request(
    connection: &Connection,
    request: &Request,
) -> Result<Response, PeerError> {
    match exchange(connection, request).await? {
        Response::Error(reply) => Err(PeerError(reply.message)),
        other => Ok(other),
    }
}

/// One request on its own stream of `connection`; the answer as it came, errors included.
pub(crate) async fn exchange(
    connection: &Connection,
    request: &Request,
) -> Result<Response, PeerError> {
    let limit = frame_bytes_max(VALUE_BYTES_MAX_CEILING);
    let lost = |e: &dyn std::fmt::Display| {
        PeerError(match connection.close_reason() {
            Some(reason) => describe_connection_error(&reason),
            None => e.to_string(),
        })
    };
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
    frame::write_message(&mut send, request, limit)
        .await
        .map_err(|e| lost(&e))?;
    let _ = send.finish();
    frame::read_message::<Response, _>(&mut recv, limit)
        .await
        .map_err(|e| lost(&e))
}
