//! The key routes: raw bytes in and out, the version in headers, typed operations as
//! JSON, conditional writes as compare-and-set on linearizable buckets.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Caller;
use super::answer::{HttpError, call, unexpected};
use crate::base::Consistency;
use crate::node::Shared;
use crate::paxos::Expect;
use crate::protocol::{Request, Response, TypedValue, VersionInfo};
use crate::types::Change;

/// The header that carries a version.
pub(crate) const VERSION_HEADER: &str = "x-vergent-version";
/// The header that names the node that coordinated a version.
pub(crate) const NODE_HEADER: &str = "x-vergent-node";
/// The header that carries a siblings key's context.
pub(crate) const CONTEXT_HEADER: &str = "x-vergent-context";

/// The query of a key route.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct KeyQuery {
    /// `one`, `quorum` or `all`; the bucket's, or the node's default, when absent.
    consistency: Option<String>,
    /// How long the value lives (lww buckets), with a unit: `30s`, `15m`, `2h`.
    ttl: Option<String>,
}

/// A typed change, as JSON: exactly one of its fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeBody {
    /// Add this to a counter (negative: take away).
    incr: Option<i64>,
    /// Add these members to a set.
    add: Option<Vec<String>>,
    /// Remove these members from a set.
    remove: Option<Vec<String>>,
}

/// The answer to a write.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Written {
    /// The version the write was given.
    version: String,
    /// The node that coordinated it.
    node: String,
}

/// A typed value, as JSON. Values and members are UTF-8 text, or all base64 when any
/// of them is not (`encoding` says which).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TypedBody {
    /// `counter`, `set` or `siblings`.
    kind: &'static str,
    /// A counter's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    value: Option<String>,
    /// A set's members, or a register's concurrent values.
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
    /// `utf-8` or `base64`: how `values` are written.
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    /// A siblings key's context: send it back (header `X-Vergent-Context`) with the
    /// write that resolves them.
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

impl KeyQuery {
    /// A query naming only a consistency.
    pub(crate) fn with_consistency(consistency: Option<String>) -> KeyQuery {
        KeyQuery {
            consistency,
            ..KeyQuery::default()
        }
    }
}

pub(crate) fn consistency(query: &KeyQuery) -> Result<Option<Consistency>, HttpError> {
    query
        .consistency
        .as_deref()
        .map(|c| match c {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => Err(HttpError::bad_request(format!(
                "consistency {other:?} is not one of one, quorum, all"
            ))),
        })
        .transpose()
}

fn ttl_ms(query: &KeyQuery) -> Result<Option<u64>, HttpError> {
    ttl_ms_of(query.ttl.as_deref())
}

/// A TTL with a unit (`30s`, `15m`, `2h`), in milliseconds.
pub(crate) fn ttl_ms_of(text: Option<&str>) -> Result<Option<u64>, HttpError> {
    text.map(|t| {
        humantime::parse_duration(t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| HttpError::bad_request(format!("ttl {t:?}: {e} (e.g. 30s, 15m, 2h)")))
    })
    .transpose()
}

/// The entity tag of a value: a hash of its bytes, so `If-Match` holds for the value
/// it names whichever version carries it.
pub(crate) fn etag(value: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(value).to_hex()[..32])
}

fn version_headers(headers: &mut HeaderMap, version: &VersionInfo) {
    if let Ok(v) = HeaderValue::from_str(&version.version.hlc.to_string()) {
        headers.insert(VERSION_HEADER, v);
    }
    let node = version
        .origin
        .clone()
        .unwrap_or_else(|| version.version.node.to_string());
    if let Ok(v) = HeaderValue::from_str(&node) {
        headers.insert(NODE_HEADER, v);
    }
}

fn written(version: &VersionInfo, value: Option<&[u8]>) -> HttpResponse {
    let body = Written {
        version: version.version.hlc.to_string(),
        node: version
            .origin
            .clone()
            .unwrap_or_else(|| version.version.node.to_string()),
    };
    let mut response = (StatusCode::OK, Json(body)).into_response();
    version_headers(response.headers_mut(), version);
    if let Some(value) = value
        && let Ok(tag) = HeaderValue::from_str(&etag(value))
    {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

fn encoded(values: &[Vec<u8>]) -> (Vec<String>, &'static str) {
    match values
        .iter()
        .map(|v| String::from_utf8(v.clone()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(text) => (text, "utf-8"),
        Err(_) => (
            values
                .iter()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v))
                .collect(),
            "base64",
        ),
    }
}

/// Reads a key: a value's bytes (`ETag`, `X-Vergent-Version`), or a typed value as
/// JSON.
#[utoipa::path(
    get,
    path = "/v1/buckets/{bucket}/keys/{key}",
    params(("bucket" = String, Path, description = "The bucket (`default` for the default one)"),
           ("key" = String, Path, description = "The key, percent-encoded"), KeyQuery),
    responses(
        (status = 200, description = "The value's bytes, or a typed value", content_type = "application/octet-stream"),
        (status = 404, description = "No such key or bucket", body = super::answer::ErrorBody),
        (status = 503, description = "Not enough replicas answered", body = super::answer::ErrorBody),
    )
)]
pub(crate) async fn get_key(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((bucket, key)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
) -> Result<HttpResponse, HttpError> {
    let request = Request::Read {
        bucket,
        key: key.clone().into_bytes(),
        consistency: consistency(&query)?,
        after: None,
    };
    match call(&shared, &caller, request).await? {
        Response::Value { found: None } => Err(HttpError::not_found(format!("{key:?} not found"))),
        Response::Value {
            found: Some((value, version)),
        } => {
            let tag = etag(&value);
            let mut response = (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from(value),
            )
                .into_response();
            version_headers(response.headers_mut(), &version);
            if let Ok(tag) = HeaderValue::from_str(&tag) {
                response.headers_mut().insert(header::ETAG, tag);
            }
            Ok(response)
        }
        Response::Typed(typed) => Ok(typed_body(typed)),
        other => Err(unexpected(other)),
    }
}

fn typed_body(typed: TypedValue) -> HttpResponse {
    let body = match typed {
        TypedValue::Counter(n) => TypedBody {
            kind: "counter",
            value: Some(n.to_string()),
            values: None,
            encoding: None,
            context: None,
        },
        TypedValue::Set(members) => {
            let (values, encoding) = encoded(&members);
            TypedBody {
                kind: "set",
                value: None,
                values: Some(values),
                encoding: Some(encoding),
                context: None,
            }
        }
        TypedValue::Siblings { values, context } => {
            let (values, encoding) = encoded(&values);
            TypedBody {
                kind: "siblings",
                value: None,
                values: Some(values),
                encoding: Some(encoding),
                context: Some(context),
            }
        }
    };
    let context = body.context.clone();
    let mut response = Json(body).into_response();
    if let Some(context) = context
        && let Ok(v) = HeaderValue::from_str(&context)
    {
        response.headers_mut().insert(CONTEXT_HEADER, v);
    }
    response
}

/// What a conditional write's headers ask.
enum Condition {
    None,
    /// `If-None-Match: *`: only if the key holds nothing.
    Absent,
    /// `If-Match: "tag"`: only if the key holds the value of that tag.
    Matches(String),
}

fn condition(headers: &HeaderMap) -> Result<Condition, HttpError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, HttpError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| HttpError::bad_request(format!("{name} is not text")))
            })
            .transpose()
    };
    match (text(header::IF_NONE_MATCH)?, text(header::IF_MATCH)?) {
        (Some(_), Some(_)) => Err(HttpError::bad_request(
            "give If-Match or If-None-Match, not both",
        )),
        (Some(star), None) if star == "*" => Ok(Condition::Absent),
        (Some(other), None) => Err(HttpError::bad_request(format!(
            "If-None-Match takes only * (create if absent), not {other}"
        ))),
        (None, Some(tag)) => Ok(Condition::Matches(tag)),
        (None, None) => Ok(Condition::None),
    }
}

/// Writes (`Some`) or deletes (`None`) a key, plainly or under a condition.
async fn write(
    shared: Arc<Shared>,
    caller: Caller,
    bucket: String,
    key: String,
    query: KeyQuery,
    headers: HeaderMap,
    value: Option<Vec<u8>>,
) -> Result<HttpResponse, HttpError> {
    let context = headers
        .get(CONTEXT_HEADER)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| HttpError::bad_request("X-Vergent-Context is not text"))
        })
        .transpose()?;
    let condition = condition(&headers)?;
    if !matches!(condition, Condition::None) {
        linearizable(&shared, &caller, &bucket).await?;
    }
    let expect = match condition {
        Condition::None => None,
        Condition::Absent => Some(Expect::Absent),
        Condition::Matches(tag) => {
            // The value the tag names, read linearizably: the compare-and-set then
            // swaps only if the key still holds exactly it.
            let read = Request::Read {
                bucket: bucket.clone(),
                key: key.clone().into_bytes(),
                consistency: None,
                after: None,
            };
            match call(&shared, &caller, read).await? {
                Response::Value {
                    found: Some((current, _)),
                } if etag(&current) == tag => Some(Expect::Value(current)),
                Response::Value { found } => {
                    return Err(precondition_failed(found.as_ref()));
                }
                Response::Typed(_) => {
                    return Err(HttpError::bad_request(
                        "If-Match needs a linearizable bucket: conditional writes are compare-and-set",
                    ));
                }
                other => return Err(unexpected(other)),
            }
        }
    };
    if expect.is_some() && (context.is_some() || query.ttl.is_some()) {
        return Err(HttpError::bad_request(
            "a conditional write takes no context and no ttl",
        ));
    }
    let key_bytes = key.into_bytes();
    let request = match expect {
        Some(expect) => Request::Cas {
            bucket,
            key: key_bytes,
            expect,
            value: value.clone(),
            after: None,
        },
        None => Request::Write {
            bucket,
            key: key_bytes,
            value: value.clone(),
            context,
            ttl_ms: ttl_ms(&query)?,
            consistency: consistency(&query)?,
            after: None,
        },
    };
    match call(&shared, &caller, request).await? {
        Response::Written { version } => Ok(written(&version, value.as_deref())),
        Response::NotSwapped { found } => Err(precondition_failed(found.as_ref())),
        other => Err(unexpected(other)),
    }
}

/// Refuses a conditional write outside a linearizable bucket: compare-and-set is
/// offered only where every operation on a key is agreed on.
async fn linearizable(
    shared: &Arc<Shared>,
    caller: &Caller,
    bucket: &str,
) -> Result<(), HttpError> {
    let show = Request::Buckets(crate::protocol::BucketRequest::Show {
        name: bucket.to_string(),
    });
    match call(shared, caller, show).await? {
        Response::Buckets(found) => match found.first() {
            Some(b) if b.kind == crate::buckets::BucketType::Linearizable => Ok(()),
            Some(b) => Err(HttpError::bad_request(format!(
                "If-Match and If-None-Match need a linearizable bucket (a compare-and-set): {} is a {} bucket",
                b.name,
                serde_json::to_value(b.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ))),
            None => Err(HttpError::not_found(format!("no bucket {bucket}"))),
        },
        other => Err(unexpected(other)),
    }
}

fn precondition_failed(found: Option<&(Vec<u8>, VersionInfo)>) -> HttpError {
    let message = match found {
        Some((value, version)) => format!(
            "not swapped: the value is {} ({version}), tag {}",
            String::from_utf8_lossy(value),
            etag(value)
        ),
        None => "not swapped: the key holds no value".to_string(),
    };
    HttpError::new(StatusCode::PRECONDITION_FAILED, "not-swapped", message)
}

/// Reads a request body whole, refusing one over the value limit before reading it
/// when its length is given, and as soon as it passes the limit otherwise.
pub(crate) async fn body_within(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, HttpError> {
    let limit = shared.config.value_bytes_max;
    let too_large = |length: String| {
        HttpError::too_large(
            format!("value too large: {length} bytes, the limit is {limit} bytes"),
            limit,
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(too_large(length.to_string()));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large("over".to_string()))
}

/// Writes a key: the body's bytes (a lww, siblings or linearizable bucket).
/// `If-None-Match: *` and `If-Match: "tag"` make it a compare-and-set (linearizable
/// buckets).
#[utoipa::path(
    put,
    path = "/v1/buckets/{bucket}/keys/{key}",
    params(("bucket" = String, Path, description = "The bucket"),
           ("key" = String, Path, description = "The key, percent-encoded"), KeyQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = Written),
        (status = 412, description = "The condition did not hold", body = super::answer::ErrorBody),
        (status = 413, description = "Over the value limit", body = super::answer::ErrorBody),
    )
)]
pub(crate) async fn put_key(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((bucket, key)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<HttpResponse, HttpError> {
    super::answer::user(&caller)?;
    let value = body_within(&shared, &headers, body).await?;
    write(
        shared,
        caller,
        bucket,
        key,
        query,
        headers,
        Some(value.to_vec()),
    )
    .await
}

/// Deletes a key (a tombstone). `If-Match` makes it a compare-and-delete.
#[utoipa::path(
    delete,
    path = "/v1/buckets/{bucket}/keys/{key}",
    params(("bucket" = String, Path, description = "The bucket"),
           ("key" = String, Path, description = "The key, percent-encoded"), KeyQuery),
    responses(
        (status = 200, description = "Deleted", body = Written),
        (status = 412, description = "The condition did not hold", body = super::answer::ErrorBody),
    )
)]
pub(crate) async fn delete_key(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((bucket, key)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
) -> Result<HttpResponse, HttpError> {
    write(shared, caller, bucket, key, query, headers, None).await
}

/// Updates a counter or a set: `{"incr": 5}`, `{"add": ["a"]}`, `{"remove": ["a"]}`.
#[utoipa::path(
    post,
    path = "/v1/buckets/{bucket}/keys/{key}",
    params(("bucket" = String, Path, description = "The bucket"),
           ("key" = String, Path, description = "The key, percent-encoded"), KeyQuery),
    request_body = ChangeBody,
    responses(
        (status = 200, description = "Updated", body = Written),
        (status = 409, description = "The bucket holds another type", body = super::answer::ErrorBody),
    )
)]
pub(crate) async fn update_key(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Path((bucket, key)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<HttpResponse, HttpError> {
    super::answer::user(&caller)?;
    let bytes = body_within(&shared, &headers, body).await?;
    let change: ChangeBody = serde_json::from_slice(&bytes).map_err(|e| {
        HttpError::bad_request(format!(
            "the body is not a change ({{\"incr\": N}}, {{\"add\": [...]}} or {{\"remove\": [...]}}): {e}"
        ))
    })?;
    let to_bytes = |members: Vec<String>| members.into_iter().map(String::into_bytes).collect();
    let change = match change {
        ChangeBody {
            incr: Some(by),
            add: None,
            remove: None,
        } => Change::Incr(by),
        ChangeBody {
            incr: None,
            add: Some(members),
            remove: None,
        } => Change::Add(to_bytes(members)),
        ChangeBody {
            incr: None,
            add: None,
            remove: Some(members),
        } => Change::Remove(to_bytes(members)),
        _ => {
            return Err(HttpError::bad_request(
                "give exactly one of incr, add, remove",
            ));
        }
    };
    let request = Request::Update {
        bucket,
        key: key.into_bytes(),
        change,
        consistency: consistency(&query)?,
        after: None,
    };
    match call(&shared, &caller, request).await? {
        Response::Written { version } => Ok(written(&version, None)),
        other => Err(unexpected(other)),
    }
}
