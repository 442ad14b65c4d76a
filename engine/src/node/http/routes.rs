//! The API's routes and its OpenAPI description, built together: a route exists only
//! through [`utoipa_axum::routes!`] with its description beside it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Caller;
use super::answer::{ErrorBody, HttpError, call, unexpected, user};
use super::keys;
use crate::base::Consistency;
use crate::buckets::BucketType;
use crate::node::Shared;
use crate::protocol::{BucketRequest, Request, Response};

#[derive(OpenApi)]
#[openapi(info(
    title = "Vergent",
    description = "A leaderless key-value store: keys in buckets, typed values, linearizable compare-and-set, the cluster's status and a change feed. Every request needs a client certificate of the cluster's CA (client or admin role)."
))]
struct ApiDoc;

fn parts() -> (Router<Arc<Shared>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            keys::get_key,
            keys::put_key,
            keys::delete_key,
            keys::update_key
        ))
        .routes(routes!(list_buckets, create_bucket))
        .routes(routes!(show_bucket, delete_bucket))
        .routes(routes!(status))
        .routes(routes!(watch))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .split_for_parts()
}

/// The API's OpenAPI description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The router, with a JSON 404 for every other path.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    parts()
        .0
        .fallback(|| async {
            HttpError::not_found("no such route: see /v1/openapi.json for the routes")
        })
        .with_state(shared)
}

/// The cluster as this node sees it: the same JSON as `vergent status --json`.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, description = "The status")))]
async fn status(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<HttpResponse, HttpError> {
    match call(&shared, &caller, Request::Status).await? {
        Response::Status(status) => {
            Ok(Json(serde_json::to_value(status).unwrap_or_default()).into_response())
        }
        other => Err(unexpected(other)),
    }
}

/// A bucket, as JSON.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct BucketBody {
    name: String,
    /// `lww`, `counter`, `set`, `siblings` or `linearizable`.
    #[serde(rename = "type")]
    kind: String,
    /// How long a write lives, in milliseconds, when it expires.
    ttl_ms: Option<u64>,
    /// The consistency of operations that name none.
    consistency: Option<&'static str>,
}

fn buckets_body(response: Response) -> Result<Vec<BucketBody>, HttpError> {
    match response {
        Response::Buckets(buckets) => Ok(buckets
            .into_iter()
            .map(|b| BucketBody {
                name: b.name,
                kind: serde_json::to_value(b.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                ttl_ms: b.ttl_ms,
                consistency: b.consistency.map(Consistency::as_str),
            })
            .collect()),
        other => Err(unexpected(other)),
    }
}

/// Every bucket.
#[utoipa::path(get, path = "/v1/buckets", responses((status = 200, body = Vec<BucketBody>)))]
async fn list_buckets(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
) -> Result<Json<Vec<BucketBody>>, HttpError> {
    let response = call(&shared, &caller, Request::Buckets(BucketRequest::List)).await?;
    Ok(Json(buckets_body(response)?))
}

/// A bucket to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewBucket {
    name: String,
    /// `lww` (the default), `counter`, `set`, `siblings` or `linearizable`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// How long a write lives, with a unit (`1h`).
    ttl: Option<String>,
    /// `one`, `quorum` or `all`.
    consistency: Option<String>,
}

/// Creates a bucket (admin).
#[utoipa::path(
    post,
    path = "/v1/buckets",
    request_body = NewBucket,
    responses((status = 200, body = Vec<BucketBody>), (status = 403, body = ErrorBody))
)]
async fn create_bucket(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<BucketBody>>, HttpError> {
    user(&caller)?;
    let new: NewBucket = serde_json::from_slice(&body).map_err(|e| {
        HttpError::bad_request(format!(
            "the body is not a bucket ({{\"name\": \"…\", \"type\": \"counter\"}}): {e}"
        ))
    })?;
    let kind =
        BucketType::parse(new.kind.as_deref().unwrap_or("lww")).map_err(HttpError::bad_request)?;
    let ttl_ms = keys::ttl_ms_of(new.ttl.as_deref())?;
    let query = keys::KeyQuery::with_consistency(new.consistency);
    let request = Request::Buckets(BucketRequest::Create {
        name: new.name,
        kind,
        ttl_ms,
        consistency: keys::consistency(&query)?,
    });
    let response = call(&shared, &caller, request).await?;
    Ok(Json(buckets_body(response)?))
}

/// One bucket.
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}",
    params(("bucket" = String, Path, description = "The bucket")),
    responses((status = 200, body = Vec<BucketBody>), (status = 404, body = ErrorBody))
)]
async fn show_bucket(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(bucket): Path<String>,
) -> Result<Json<Vec<BucketBody>>, HttpError> {
    let request = Request::Buckets(BucketRequest::Show { name: bucket });
    let response = call(&shared, &caller, request).await?;
    Ok(Json(buckets_body(response)?))
}

/// Deletes a bucket and all its data (admin).
#[utoipa::path(
    delete,
    path = "/v1/buckets/{bucket}",
    params(("bucket" = String, Path, description = "The bucket")),
    responses((status = 200, body = Vec<BucketBody>), (status = 403, body = ErrorBody))
)]
async fn delete_bucket(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path(bucket): Path<String>,
) -> Result<Json<Vec<BucketBody>>, HttpError> {
    let request = Request::Buckets(BucketRequest::Delete { name: bucket });
    let response = call(&shared, &caller, request).await?;
    Ok(Json(buckets_body(response)?))
}

/// The query of the change feed.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WatchQuery {
    /// Only keys of the default bucket starting with this.
    prefix: Option<String>,
}

/// A change, as the feed sends it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ChangeEvent {
    key: String,
    /// The new value (absent when deleted), UTF-8 text or base64 as `encoding` says.
    value: Option<String>,
    /// `utf-8` or `base64`.
    encoding: &'static str,
    deleted: bool,
    version: String,
    node: String,
}

/// Every change this node applies to keys of the default bucket from now on, as
/// server-sent events (`event: change`, the data JSON); `event: lagged` when the feed
/// fell behind and changes were not shown.
#[utoipa::path(
    get,
    path = "/v1/watch",
    params(WatchQuery),
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream"))
)]
async fn watch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Query(query): Query<WatchQuery>,
) -> Result<HttpResponse, HttpError> {
    let peer = user(&caller)?;
    let prefix = query.prefix.unwrap_or_default().into_bytes();
    let request = Request::Watch {
        prefix: prefix.clone(),
    };
    if !request.allowed(peer.role) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("forbidden: watch is not allowed to {:?}", peer.name),
        ));
    }
    let changes = shared.store.subscribe();
    let shutdown = shared.shutdown.clone();
    let state = (changes, shared, prefix);
    let stream = futures_util::stream::unfold(state, move |(mut changes, shared, prefix)| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                let change = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    change = changes.recv() => change,
                };
                let event = match change {
                    Ok(entry) if entry.key.starts_with(&prefix) => {
                        let version = shared.describe(entry.record.version);
                        let value = entry.record.payload.value().map(<[u8]>::to_vec);
                        let (value, encoding) = match value {
                            None => (None, "utf-8"),
                            Some(v) => match String::from_utf8(v) {
                                Ok(text) => (Some(text), "utf-8"),
                                Err(e) => (
                                    Some(
                                        base64::engine::general_purpose::STANDARD
                                            .encode(e.as_bytes()),
                                    ),
                                    "base64",
                                ),
                            },
                        };
                        let change = ChangeEvent {
                            key: String::from_utf8_lossy(&entry.key).into_owned(),
                            deleted: value.is_none(),
                            value,
                            encoding,
                            version: version.version.hlc.to_string(),
                            node: version
                                .origin
                                .clone()
                                .unwrap_or_else(|| version.version.node.to_string()),
                        };
                        Event::default()
                            .event("change")
                            .json_data(&change)
                            .unwrap_or_else(|_| Event::default().event("change"))
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => Event::default().event("lagged").data(
                        format!("watch fell behind: {missed} changes were not shown"),
                    ),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), (changes, shared, prefix)));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// This node's metrics as Prometheus text, when it was started with `--http-metrics`
/// or `--metrics-listen`.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain"), (status = 404, body = ErrorBody)))]
async fn metrics(ConnectInfo(caller): ConnectInfo<Caller>) -> Result<HttpResponse, HttpError> {
    user(&caller)?;
    match crate::node::metrics::render() {
        Some(text) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
        }
        None => Err(HttpError::not_found(
            "metrics are off: start the node with --http-metrics (or --metrics-listen)",
        )),
    }
}

/// This description.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "The OpenAPI description")))]
async fn openapi_json(ConnectInfo(caller): ConnectInfo<Caller>) -> Result<HttpResponse, HttpError> {
    user(&caller)?;
    Ok(Json(openapi()).into_response())
}
