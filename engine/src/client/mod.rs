//! A connection to one node: the client side of the protocol.
//!
//! [`Client::connect`] dials with mutual TLS and exchanges `Hello`; each request then
//! travels on its own stream, so one slow request never holds up another, and each has
//! its own timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::hlc::Timestamp;
use crate::limits::{VALUE_BYTES_MAX_CEILING, frame_bytes_max};
use crate::net::{self, NetError, TlsMaterial};
use crate::protocol::frame::{self, FrameError};
use crate::protocol::{
    ClusterStatus, Consistency, ErrorCode, ErrorReply, PROTOCOL_VERSION, Request, Response,
    VersionInfo,
};

/// Default time allowed per request.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);
/// Default time allowed to connect, handshake included.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client's own certificates could not be loaded.
    #[error("{0}")]
    Tls(#[from] NetError),
    /// The node address could not be resolved.
    #[error("cannot resolve node address {target:?}: {message}")]
    Resolve {
        /// What was given.
        target: String,
        /// Why it failed.
        message: String,
    },
    /// The connection could not be established or was refused.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("{what} timed out after {} ms", after.as_millis())]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Server(ErrorReply),
    /// The connection failed mid-request.
    #[error("connection to {addr} lost: {reason}")]
    Transport {
        /// The node's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The node answered something that does not fit the request.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A short name for the kind of failure, for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Tls(_) => "tls",
            ClientError::Resolve { .. } => "resolve",
            ClientError::Connect { .. } => "connect",
            ClientError::Timeout { .. } => "client timeout",
            ClientError::Transport { .. } => "connection lost",
            ClientError::Protocol(_) => "protocol",
            ClientError::Server(reply) => match reply.code {
                ErrorCode::BadRequest => "bad request",
                ErrorCode::LimitExceeded => "limit exceeded",
                ErrorCode::Forbidden => "forbidden",
                ErrorCode::Unavailable => "unavailable",
                ErrorCode::Timeout => "timeout",
                ErrorCode::Overloaded => "overloaded",
                ErrorCode::VersionMismatch => "version mismatch",
                ErrorCode::ClockOffset => "clock offset",
                ErrorCode::Storage => "storage",
                ErrorCode::ShuttingDown => "shutting down",
                ErrorCode::ClusterMismatch => "cluster mismatch",
                ErrorCode::NotReady => "not ready",
                ErrorCode::NameInUse => "name in use",
                ErrorCode::Refused => "refused",
                ErrorCode::NoSuchBucket => "no such bucket",
                ErrorCode::WrongType => "wrong type",
                ErrorCode::Contention => "contention",
            },
        }
    }

    /// The server's error code, when the node answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(reply) => Some(reply.code),
            _ => None,
        }
    }
}

/// What a read of a bucket found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A lww bucket's value and version, or nothing.
    Value(Option<(Vec<u8>, VersionInfo)>),
    /// A typed bucket's value.
    Typed(crate::protocol::TypedValue),
}

/// What a compare-and-set did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// The key held what was expected and now holds the new value, at this version.
    Swapped(VersionInfo),
    /// The key held something else: this value and version, or nothing.
    NotSwapped(Option<(Vec<u8>, VersionInfo)>),
}

/// What one client has seen: the highest version among the answers it got. Sent with
/// every request, it makes a node issue the session's next version above everything the
/// session saw, so one client's later write wins over its earlier ones whichever nodes
/// coordinate them. Clients connected to different nodes share one by
/// [`Client::join_session`].
#[derive(Debug, Default)]
pub struct Session {
    seen: std::sync::atomic::AtomicU64,
}

impl Session {
    /// A session that has seen nothing.
    pub fn new() -> Arc<Session> {
        Arc::new(Session::default())
    }

    /// The highest version timestamp seen, if any.
    pub fn seen(&self) -> Option<Timestamp> {
        match self.seen.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            raw => Some(Timestamp::from_u64(raw)),
        }
    }

    /// Notes a version the session has seen (or was told of: `--after`).
    pub fn observe(&self, ts: Timestamp) {
        self.seen
            .fetch_max(ts.as_u64(), std::sync::atomic::Ordering::AcqRel);
    }
}

/// A connected client.
pub struct Client {
    session: Arc<Session>,
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    addr: SocketAddr,
    node: String,
    request_timeout: Duration,
    frame_limit: usize,
}

impl Client {
    /// Connects to `target` (`host:port`) with `material` and says hello.
    pub async fn connect(target: &str, material: &TlsMaterial) -> Result<Client, ClientError> {
        let addr = resolve(target).await?;
        let host = host_of(target);
        let config = net::client_config(material)?;
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let connect_err = |reason: String| ClientError::Connect { addr, reason };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| connect_err(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, host)
            .map_err(|e| connect_err(e.to_string()))?;
        let connection = tokio::time::timeout(CONNECT_TIMEOUT_DEFAULT, connecting)
            .await
            .map_err(|_| {
                connect_err(format!(
                    "no answer within {} ms; is a Vergent node listening there?",
                    CONNECT_TIMEOUT_DEFAULT.as_millis()
                ))
            })?
            .map_err(|e| match e {
                quinn::ConnectionError::TimedOut => connect_err(format!(
                    "no answer within {} ms; is a Vergent node listening there?",
                    net::IDLE_TIMEOUT.as_millis()
                )),
                other => connect_err(describe_connection_error(&other)),
            })?;
        let mut client = Client {
            session: Session::new(),
            endpoint,
            connection,
            addr,
            node: String::new(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            frame_limit: frame_bytes_max(VALUE_BYTES_MAX_CEILING),
        };
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
        };
        match client.request(&hello).await {
            Ok(Response::Welcome { node, .. }) => client.node = node,
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected welcome, got {other:?}"
                )));
            }
            Err(ClientError::Transport { reason, .. }) => return Err(connect_err(reason)),
            Err(ClientError::Timeout { .. }) => {
                return Err(connect_err(
                    "the node did not answer hello; is it a Vergent node?".into(),
                ));
            }
            Err(other) => return Err(other),
        }
        Ok(client)
    }

    /// Changes the time allowed per request.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// This client's session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Makes this client part of `session`: what it sees and what the session's other
    /// clients saw order each other.
    pub fn join_session(&mut self, session: Arc<Session>) {
        self.session = session;
    }

    /// The name the node gave in its welcome.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The underlying QUIC connection, for tools that speak raw frames.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request on its own stream and waits for the answer. A node's error
    /// answer is returned as [`ClientError::Server`].
    pub async fn request(&self, request: &Request) -> Result<Response, ClientError> {
        let exchange = async {
            // A stream error only says "connection lost"; the connection knows why.
            let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
                addr: self.addr,
                reason: match self.connection.close_reason() {
                    Some(reason) => describe_connection_error(&reason),
                    None => e.to_string(),
                },
            };
            let (mut send, mut recv) = self
                .connection
                .open_bi()
                .await
                .map_err(|e| transport(&describe_connection_error(&e)))?;
            match frame::write_message(&mut send, request, self.frame_limit).await {
                Ok(()) => {}
                Err(e @ FrameError::TooLarge { .. }) => {
                    return Err(ClientError::Server(ErrorReply::new(
                        ErrorCode::LimitExceeded,
                        format!("request not sent: {e}"),
                    )));
                }
                Err(other) => {
                    // A node refuses a request over its limits before reading it all
                    // (it stops the stream) and says why on the answer stream.
                    return match frame::read_message::<Response, _>(&mut recv, self.frame_limit)
                        .await
                    {
                        Ok(answer) => Ok(answer),
                        Err(_) => Err(transport(&other)),
                    };
                }
            }
            let _ = send.finish();
            frame::read_message::<Response, _>(&mut recv, self.frame_limit)
                .await
                .map_err(|e| match e {
                    FrameError::Io(io) => transport(&io),
                    other => ClientError::Protocol(other.to_string()),
                })
        };
        let response = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "request",
                after: self.request_timeout,
            })??;
        match response {
            Response::Error(reply) => Err(ClientError::Server(reply)),
            other => Ok(other),
        }
    }

    /// Writes `value` under `key`; returns the version it was given.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<VersionInfo, ClientError> {
        let request = Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            consistency,
            after: self.session.seen(),
        };
        match self.request(&request).await? {
            Response::Written { version } => {
                self.session.observe(version.version.hlc);
                Ok(version)
            }
            other => Err(unexpected("put", &other)),
        }
    }

    /// Reads `key`: its value and version, or `None` if it holds none.
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<Option<(Vec<u8>, VersionInfo)>, ClientError> {
        let request = Request::Get {
            key: key.to_vec(),
            consistency,
            after: self.session.seen(),
        };
        match self.request(&request).await? {
            Response::Value { found } => {
                if let Some((_, version)) = &found {
                    self.session.observe(version.version.hlc);
                }
                Ok(found)
            }
            other => Err(unexpected("get", &other)),
        }
    }

    /// Deletes `key`; returns the tombstone's version.
    pub async fn delete(
        &self,
        key: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<VersionInfo, ClientError> {
        let request = Request::Delete {
            key: key.to_vec(),
            consistency,
            after: self.session.seen(),
        };
        match self.request(&request).await? {
            Response::Written { version } => {
                self.session.observe(version.version.hlc);
                Ok(version)
            }
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Reads `key` of `bucket`: in a lww bucket its value and version (or `None`), in
    /// the others its typed value.
    pub async fn read(
        &self,
        bucket: &str,
        key: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<Read, ClientError> {
        let request = Request::Read {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            consistency,
            after: self.session.seen(),
        };
        match self.request(&request).await? {
            Response::Value { found } => {
                if let Some((_, version)) = &found {
                    self.session.observe(version.version.hlc);
                }
                Ok(Read::Value(found))
            }
            Response::Typed(value) => Ok(Read::Typed(value)),
            other => Err(unexpected("read", &other)),
        }
    }

    /// Writes `value` (`None`: deletes) under `key` of a lww or siblings `bucket`; in a
    /// siblings bucket, replacing what `context` saw; in a lww bucket, living `ttl_ms`
    /// (the bucket's TTL when `None`). The version it was given.
    pub async fn write(
        &self,
        bucket: &str,
        key: &[u8],
        value: Option<&[u8]>,
        context: Option<&str>,
        ttl_ms: Option<u64>,
        consistency: Option<Consistency>,
    ) -> Result<VersionInfo, ClientError> {
        let request = Request::Write {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            context: context.map(str::to_string),
            ttl_ms,
            consistency,
            after: self.session.seen(),
        };
        self.written("write", &request).await
    }

    /// Updates a counter or a set; the version of the state written.
    pub async fn update(
        &self,
        bucket: &str,
        key: &[u8],
        change: crate::types::Change,
        consistency: Option<Consistency>,
    ) -> Result<VersionInfo, ClientError> {
        let request = Request::Update {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            change,
            consistency,
            after: self.session.seen(),
        };
        self.written("update", &request).await
    }

    /// Compare-and-set on a key of a linearizable bucket: writes `value` (`None`
    /// deletes) if the key holds what `expect` says.
    pub async fn cas(
        &self,
        bucket: &str,
        key: &[u8],
        expect: crate::paxos::Expect,
        value: Option<&[u8]>,
    ) -> Result<Cas, ClientError> {
        let request = Request::Cas {
            bucket: bucket.to_string(),
            key: key.to_vec(),
            expect,
            value: value.map(<[u8]>::to_vec),
            after: self.session.seen(),
        };
        match self.request(&request).await? {
            Response::Written { version } => {
                self.session.observe(version.version.hlc);
                Ok(Cas::Swapped(version))
            }
            Response::NotSwapped { found } => {
                if let Some((_, version)) = &found {
                    self.session.observe(version.version.hlc);
                }
                Ok(Cas::NotSwapped(found))
            }
            other => Err(unexpected("cas", &other)),
        }
    }

    async fn written(&self, what: &str, request: &Request) -> Result<VersionInfo, ClientError> {
        match self.request(request).await? {
            Response::Written { version } => {
                self.session.observe(version.version.hlc);
                Ok(version)
            }
            other => Err(unexpected(what, &other)),
        }
    }

    /// The node's status report.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.request(&Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Sends `request` and returns the stream of answers it opens (`Watch`).
    pub async fn stream(&self, request: &Request) -> Result<Answers, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport {
            addr: self.addr,
            reason: e.to_string(),
        };
        let (mut send, recv) = self.connection.open_bi().await.map_err(|e| transport(&e))?;
        frame::write_message(&mut send, request, self.frame_limit)
            .await
            .map_err(|e| transport(&e))?;
        Ok(Answers {
            _send: send,
            recv,
            limit: self.frame_limit,
        })
    }

    /// Closes the connection and waits briefly for the node to hear it.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"client done");
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

/// Answers streamed back on one request's stream.
pub struct Answers {
    // Kept open: finishing it would tell the node the client is gone.
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    limit: usize,
}

impl Answers {
    /// The next answer; `None` when the node ended the stream.
    pub async fn next(&mut self) -> Result<Option<Response>, ClientError> {
        match frame::read(&mut self.recv, self.limit).await {
            Ok(Some(body)) => frame::decode(&body)
                .map(Some)
                .map_err(|e| ClientError::Protocol(e.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }
}

fn unexpected(what: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("{what} answered with {response:?}"))
}

async fn resolve(target: &str) -> Result<SocketAddr, ClientError> {
    let resolve_err = |message: String| ClientError::Resolve {
        target: target.to_string(),
        message,
    };
    let mut addrs = tokio::net::lookup_host(target)
        .await
        .map_err(|e| resolve_err(format!("{e} (expected host:port, e.g. 127.0.0.1:7001)")))?;
    addrs
        .next()
        .ok_or_else(|| resolve_err("no address found".into()))
}

/// The host part of `host:port` or `[v6]:port`, used as the TLS server name.
fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Turns quinn's connection errors into sentences an operator can act on.
pub fn describe_connection_error(err: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    let alert = |code: quinn::TransportErrorCode| {
        let code = u64::from(code);
        (0x100..0x200).contains(&code).then(|| (code - 0x100) as u8)
    };
    match err {
        E::ConnectionClosed(close) => match alert(close.error_code) {
            Some(alert) => format!(
                "the node refused the TLS handshake ({}): the client certificate must be issued by the cluster's CA and be valid now",
                alert_name(alert)
            ),
            None => format!("the node closed the connection: {close}"),
        },
        E::TransportError(transport) => match alert(transport.code) {
            Some(_) => format!(
                "TLS handshake failed: {}; the node's certificate must be issued by the cluster's CA and name the address dialled",
                transport.reason
            ),
            None => transport.to_string(),
        },
        E::ApplicationClosed(close) => {
            format!(
                "the node closed the connection: {}",
                String::from_utf8_lossy(&close.reason)
            )
        }
        E::TimedOut => "the connection timed out: the node stopped answering".to_string(),
        other => other.to_string(),
    }
}

fn alert_name(alert: u8) -> String {
    let name = match alert {
        40 => "handshake failure",
        42 => "bad certificate",
        43 => "unsupported certificate",
        44 => "certificate revoked",
        45 => "certificate expired",
        46 => "certificate unknown",
        48 => "unknown CA",
        49 => "access denied",
        116 => "certificate required",
        120 => "no application protocol",
        _ => return format!("TLS alert {alert}"),
    };
    format!("TLS alert {alert}, {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_described_whatever_their_code() {
        let close = |code| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: bytes::Bytes::from_static(b"bye"),
            })
        };
        let refused = describe_connection_error(&close(quinn::TransportErrorCode::crypto(48)));
        assert!(refused.contains("TLS alert 48, unknown CA"), "{refused}");
        // Codes below the TLS alert range are not alerts (and must not underflow).
        let plain = describe_connection_error(&close(quinn::TransportErrorCode::NO_ERROR));
        assert!(
            plain.starts_with("the node closed the connection"),
            "{plain}"
        );
    }

    #[test]
    fn host_is_cut_from_the_target() {
        assert_eq!(host_of("127.0.0.1:7001"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7001"), "::1");
        assert_eq!(host_of("node1.example:7001"), "node1.example");
    }
}
