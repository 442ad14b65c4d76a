//! Prometheus metrics, recorded through the `metrics` facade. Without an installed
//! exporter (`vergent serve --metrics-listen`), recording costs next to nothing.
//!
//! Series (units are name suffixes, as Prometheus names them):
//! - `vergent_requests_total{op, consistency, outcome}` and
//!   `vergent_request_duration_seconds{op, consistency}` (histogram): client operations.
//! - `vergent_hints`, `vergent_hint_oldest_age_seconds`: the hint backlog.
//! - `vergent_members{state}`: members by state in this node's view.
//! - `vergent_hlc_skew_seconds{member}`: each member's clock minus this node's, as
//!   probes measure it (half the round trip taken out).
//! - `vergent_clock_cluster_offset_seconds`: the live members' median clock minus this
//!   node's; `vergent_clock_outlier`: 1 while this node's clock is off the cluster's by
//!   more than the bound (it coordinates no writes then).
//! - `vergent_records`: records (tombstones included) held.
//! - `vergent_antientropy_exchanges_total{outcome}`,
//!   `vergent_antientropy_bytes_total{direction, kind}`,
//!   `vergent_antientropy_keys_total{direction}`: anti-entropy work.
//! - `vergent_clock_refusals_total`: peer timestamps refused for being too far ahead.
//! - `vergent_bucket_lost_writes_total{bucket}`: writes of a lww bucket that reached
//!   this node older than what it held (concurrent writes that lost).
//! - `vergent_bucket_siblings_max{bucket}`: the most values a siblings key was seen
//!   holding side by side.
//! - `vergent_bucket_records{bucket}`: records held in each bucket, as last counted.
//! - `vergent_linearizable_ops_total`, `vergent_linearizable_round_trips_total`,
//!   `vergent_linearizable_fast_total` (answered in one round trip),
//!   `vergent_linearizable_retries_total` (prepares that found no quorum) and
//!   `vergent_linearizable_in_flight`: this node's proposals on linearizable keys.
//! - `vergent_membership_refused_total{reason}`: membership messages refused for
//!   speaking as another member (`not_the_sender`: the datagram names another sender
//!   than its connection's certificate; `forged_status`: a status its member did not
//!   sign); `vergent_membership_unverified_statuses_total`: statuses passed on by a
//!   peer whose author this node has not met yet, left for a copy it can check.

use std::net::SocketAddr;
use std::time::Duration;

use crate::antientropy::report::SyncCounts;
use crate::protocol::ClusterStatus;

/// Request latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Whether a listener serves the metrics: the gauges read off the status are taken
/// only then (a status costs the core's task a look at every partition).
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The recorder's handle, once installed: what `/metrics` on the HTTPS side renders.
static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Records metrics from now on, and serves them as Prometheus text on `addr` when
/// given (`GET /metrics`, any path); [`render`] gives the same text. Call inside a
/// runtime, once.
pub fn install(addr: Option<SocketAddr>) -> Result<(), String> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?;
    let where_ = addr.map_or_else(|| "the HTTPS API".to_string(), |a| a.to_string());
    let recorder = match addr {
        Some(addr) => {
            let (recorder, exporter) = builder
                .with_http_listener(addr)
                .build()
                .map_err(|e| format!("cannot serve metrics on {where_}: {e}"))?;
            tokio::spawn(async move {
                if let Err(err) = exporter.await {
                    tracing::warn!("the metrics listener stopped: {err:?}");
                }
            });
            recorder
        }
        None => builder.build_recorder(),
    };
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot serve metrics on {where_}: {e}"))?;
    let _ = HANDLE.set(handle);
    INSTALLED.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The metrics as Prometheus text, when they are recorded.
pub fn render() -> Option<String> {
    HANDLE.get().map(|h| h.render())
}

/// Whether the metrics are served.
pub(crate) fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// One client operation.
pub(crate) fn request(op: &'static str, consistency: &'static str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("vergent_requests_total", "op" => op, "consistency" => consistency, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("vergent_request_duration_seconds", "op" => op, "consistency" => consistency)
        .record(took.as_secs_f64());
}

/// The gauges read off this node's status, once a second.
pub(crate) fn status(status: &ClusterStatus) {
    for state in ["alive", "suspect", "dead", "left"] {
        let count = status.members.iter().filter(|m| m.state == state).count();
        metrics::gauge!("vergent_members", "state" => state).set(count as f64);
    }
    for member in &status.members {
        if let Some(skew) = member.clock_skew_ms {
            metrics::gauge!("vergent_hlc_skew_seconds", "member" => member.name.clone())
                .set(skew as f64 / 1000.0);
        }
        if member.name == status.node {
            metrics::gauge!("vergent_hints").set(member.hints as f64);
            metrics::gauge!("vergent_hint_oldest_age_seconds")
                .set(member.hints_oldest_age_ms as f64 / 1000.0);
            metrics::gauge!("vergent_records").set(member.records.unwrap_or(0) as f64);
        }
    }
    metrics::counter!("vergent_clock_refusals_total").absolute(status.clock_refusals);
    let lin = &status.linearizable;
    metrics::counter!("vergent_linearizable_ops_total").absolute(lin.ops);
    metrics::counter!("vergent_linearizable_round_trips_total").absolute(lin.round_trips);
    metrics::counter!("vergent_linearizable_fast_total").absolute(lin.fast);
    metrics::counter!("vergent_linearizable_retries_total").absolute(lin.retries);
    metrics::gauge!("vergent_linearizable_in_flight").set(lin.in_flight as f64);
    for bucket in &status.bucket_stats {
        let name = bucket.name.clone();
        metrics::counter!("vergent_bucket_lost_writes_total", "bucket" => name.clone())
            .absolute(bucket.lost_writes);
        metrics::gauge!("vergent_bucket_siblings_max", "bucket" => name.clone())
            .set(bucket.siblings_max as f64);
        if let Some(keys) = bucket.keys {
            metrics::gauge!("vergent_bucket_records", "bucket" => name).set(keys as f64);
        }
    }
}

/// This node's clock against the cluster's, after each round of probes.
pub(crate) fn cluster_clock(offset_ms: Option<i64>, outlier: bool) {
    if let Some(offset) = offset_ms {
        metrics::gauge!("vergent_clock_cluster_offset_seconds").set(offset as f64 / 1000.0);
    }
    metrics::gauge!("vergent_clock_outlier").set(if outlier { 1.0 } else { 0.0 });
}

/// One exchange run with a peer.
pub(crate) fn exchange(counts: &SyncCounts, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!("vergent_antientropy_exchanges_total", "outcome" => outcome).increment(1);
    let bytes = [
        ("sent", "metadata", counts.metadata_bytes_sent),
        ("received", "metadata", counts.metadata_bytes_received),
        ("sent", "entries", counts.entry_bytes_sent),
        ("received", "entries", counts.entry_bytes_received),
    ];
    for (direction, kind, value) in bytes {
        metrics::counter!("vergent_antientropy_bytes_total", "direction" => direction, "kind" => kind).increment(value);
    }
    metrics::counter!("vergent_antientropy_keys_total", "direction" => "sent")
        .increment(counts.keys_sent);
    metrics::counter!("vergent_antientropy_keys_total", "direction" => "received")
        .increment(counts.keys_received);
}

/// A peer this node cannot reach on the data path (1) or can again (0).
pub(crate) fn unreachable(peer: &str, unreachable: bool) {
    metrics::gauge!("vergent_peer_unreachable", "peer" => peer.to_string()).set(if unreachable {
        1.0
    } else {
        0.0
    });
}

/// Partitions this node takes writes for but is still filling.
pub(crate) fn filling(partitions: usize) {
    metrics::gauge!("vergent_partitions_filling").set(partitions as f64);
}

/// Membership's refusals so far, by reason, and the statuses it could not check.
pub(crate) fn membership_refusals(
    totals: &std::collections::BTreeMap<&'static str, u64>,
    unverified: u64,
) {
    for reason in crate::membership::Refusal::REASONS {
        metrics::counter!("vergent_membership_refused_total", "reason" => reason)
            .absolute(totals.get(reason).copied().unwrap_or(0));
    }
    metrics::counter!("vergent_membership_unverified_statuses_total").absolute(unverified);
}
