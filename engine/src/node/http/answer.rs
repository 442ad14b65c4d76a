//! From the node's answers to HTTP: status codes a client library expects, errors as
//! JSON with the one line the command line prints.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use serde::Serialize;

use super::Caller;
use crate::node::Shared;
use crate::protocol::{ErrorCode, ErrorReply, Request, Response, Role};

/// A failed request, as HTTP answers it.
#[derive(Debug)]
pub(crate) struct HttpError {
    status: StatusCode,
    body: ErrorBody,
    retry_after_s: Option<u64>,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// What kind of failure, for programs (`bad-request`, `limit-exceeded`, …).
    pub error: &'static str,
    /// What happened, for people: the line the command line prints.
    pub message: String,
    /// The limit that was passed, when one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                limit: None,
            },
            retry_after_s: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// A body or value over its limit.
    pub(crate) fn too_large(message: impl Into<String>, limit: usize) -> Self {
        let mut err = HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, "limit-exceeded", message);
        err.body.limit = Some(limit as u64);
        err
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, "not-found", message)
    }
}

impl From<ErrorReply> for HttpError {
    fn from(reply: ErrorReply) -> HttpError {
        let (status, error) = match reply.code {
            ErrorCode::BadRequest => (StatusCode::BAD_REQUEST, "bad-request"),
            ErrorCode::VersionMismatch => (StatusCode::BAD_REQUEST, "version-mismatch"),
            ErrorCode::LimitExceeded => (StatusCode::PAYLOAD_TOO_LARGE, "limit-exceeded"),
            ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorCode::NoSuchBucket => (StatusCode::NOT_FOUND, "no-such-bucket"),
            ErrorCode::WrongType => (StatusCode::CONFLICT, "wrong-type"),
            ErrorCode::Contention => (StatusCode::CONFLICT, "contention"),
            ErrorCode::Refused => (StatusCode::CONFLICT, "refused"),
            ErrorCode::NameInUse => (StatusCode::CONFLICT, "name-in-use"),
            ErrorCode::ClusterMismatch => (StatusCode::CONFLICT, "cluster-mismatch"),
            ErrorCode::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorCode::ClockOffset => (StatusCode::SERVICE_UNAVAILABLE, "clock-offset"),
            ErrorCode::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not-ready"),
            ErrorCode::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"),
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorCode::Storage => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        let mut err = HttpError::new(status, error, reply.message);
        if reply.code == ErrorCode::Overloaded {
            err.retry_after_s = Some(1);
        }
        err
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> HttpResponse {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Sends `request` through the node's one entry point, as the QUIC side does: the
/// caller's role checked, under the node's limit of requests in flight and its request
/// timeout. An error answer comes back as an [`HttpError`].
pub(crate) async fn call(
    shared: &Arc<Shared>,
    caller: &Caller,
    request: Request,
) -> Result<Response, HttpError> {
    let peer = user(caller)?;
    let Ok(_permit) = shared.requests.clone().try_acquire_owned() else {
        return Err(ErrorReply::new(
            ErrorCode::Overloaded,
            format!(
                "node is at its limit of {} requests in flight; retry shortly",
                shared.config.requests_max
            ),
        )
        .into());
    };
    let timeout = shared.config.request_timeout;
    match tokio::time::timeout(timeout, shared.handle(&peer, request)).await {
        Ok(Response::Error(reply)) => Err(reply.into()),
        Ok(response) => Ok(response),
        Err(_) => Err(ErrorReply::new(
            ErrorCode::Timeout,
            format!("request not completed within {} ms", timeout.as_millis()),
        )
        .into()),
    }
}

/// The caller as a user of the API: a client or an admin certificate.
pub(crate) fn user(caller: &Caller) -> Result<crate::net::PeerIdentity, HttpError> {
    let peer = caller.identity.clone().map_err(|why| {
        tracing::info!(remote = %caller.remote, "HTTPS request refused: {why}");
        HttpError::new(StatusCode::FORBIDDEN, "forbidden", why)
    })?;
    if peer.role == Role::Node {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "forbidden: {:?} presented a node certificate; the HTTP API takes client and admin certificates",
                peer.name
            ),
        ));
    }
    Ok(peer)
}

/// An answer the route did not expect from its request (a bug, not the caller's).
pub(crate) fn unexpected(response: Response) -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "unexpected",
        format!("unexpected answer: {}", response_name(&response)),
    )
}

fn response_name(response: &Response) -> String {
    let debug = format!("{response:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}
