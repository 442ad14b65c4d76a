//! Versions from the future on this node: a clock that ran ahead (this node's, or
//! versions stored before the offset checks existed) leaves records and a clock reading
//! beyond the cluster's time plus the bound. The other nodes refuse such versions, so
//! this node must not issue more of them: it stops coordinating writes and says why,
//! `verify` lists the records, and `vergent rewrite-future` brings them back.
//!
//! Rewrite, not drop: a version from the future may carry a write a client was told
//! succeeded (the whole cluster's clocks ran ahead together, or the write predates the
//! checks), and dropping it would lose that write. Rewritten to a present version of
//! this node's, the value stays and the next write to its key wins again, as a client
//! expects. Every node that holds such versions rewrites its own (each `status` says
//! so); replicas then converge by anti-entropy on the highest rewritten version.

use std::sync::Arc;

use super::Shared;
use crate::hlc::Timestamp;
use crate::hlc::skew::describe_us;
use crate::protocol::{ErrorCode, ErrorReply, FutureVersions, Response};
use crate::record::{Entry, Record, Version};
use crate::storage::FutureScan;
use crate::wallclock::system_wall_ms;

/// Records listed by `verify` and the rewrite's report.
const LISTED: usize = 10;
/// Records rewritten per transaction.
const BATCH: usize = 1024;

impl Shared {
    /// The latest version wall time the cluster accepts now: its time plus the bound.
    pub(crate) fn future_limit_ms(&self) -> u64 {
        self.cluster_wall_ms()
            .saturating_add(self.config.max_clock_offset_ms)
    }

    /// Why this node may not issue a version now because its clock reads beyond the
    /// cluster's time plus the bound (it issued or stored versions from the future),
    /// if it may not.
    pub(crate) fn future_refusal(&self) -> Option<String> {
        let limit = self.future_limit_ms();
        let last = self
            .clock
            .lock()
            .expect("clock lock")
            .read(system_wall_ms());
        if last.wall_ms() <= limit {
            return None;
        }
        let ahead_ms = last.wall_ms() - limit + self.config.max_clock_offset_ms;
        Some(format!(
            "this node's clock has issued or stored versions {} ahead of the cluster's time (the limit is {} ms): its clock ran ahead earlier; it coordinates no writes until the cluster's time catches up or an admin runs `vergent rewrite-future` on it, and still serves reads and replication",
            describe_us(ahead_ms * 1000),
            self.config.max_clock_offset_ms
        ))
    }

    /// Counts the records from the future and describes the first few.
    pub(crate) async fn future_versions(
        self: &Arc<Self>,
        limit_ms: u64,
    ) -> Result<FutureVersions, ErrorReply> {
        let scan = self.scan_future(limit_ms, LISTED).await?;
        let bound = self.config.max_clock_offset_ms;
        let ahead_ms_max = if scan.count == 0 {
            0
        } else {
            scan.latest_ms - limit_ms + bound
        };
        Ok(FutureVersions {
            count: scan.count,
            first: scan
                .first
                .iter()
                .map(|e| {
                    (
                        String::from_utf8_lossy(&e.key).into_owned(),
                        self.describe(e.record.version),
                    )
                })
                .collect(),
            ahead_ms_max,
        })
    }

    async fn scan_future(
        self: &Arc<Self>,
        limit_ms: u64,
        keep: usize,
    ) -> Result<FutureScan, ErrorReply> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.store.from_the_future(limit_ms, keep))
            .await
            .map_err(|e| ErrorReply::new(ErrorCode::Storage, format!("scan failed: {e}")))?
            .map_err(|e| ErrorReply::new(ErrorCode::Storage, e.to_string()))
    }

    /// `vergent rewrite-future`: see the module documentation.
    pub(crate) async fn rewrite_future(
        self: &Arc<Self>,
        dry_run: bool,
    ) -> Result<Response, ErrorReply> {
        self.serving()?;
        // "The future" is the cluster's time plus the bound; a node that cannot measure
        // the cluster's time, or whose own clock is off it, cannot tell.
        if let Some(refusal) = self.clock_refusal().await {
            return Err(ErrorReply::new(
                refusal.code,
                format!(
                    "versions from the future cannot be told apart now: {}",
                    refusal.message
                ),
            ));
        }
        let limit_ms = self.future_limit_ms();
        let found = self.future_versions(limit_ms).await?;
        if dry_run {
            return Ok(Response::RewroteFuture {
                found,
                rewritten: 0,
                clock_rewound: false,
            });
        }
        // The clock first, so nothing issued from here on is from the future: at the
        // limit, above every version the cluster accepts from this node.
        let rewound = self.clock.lock().expect("clock lock").rewind(limit_ms);
        let mut rewritten = 0;
        // Each batch lowers the count (a rewritten key is not from the future); the
        // bound on rounds only guards against a store that says otherwise.
        for _ in 0..=found.count / BATCH as u64 + 1 {
            let scan = self.scan_future(limit_ms, BATCH).await?;
            let (version, cap) = {
                let mut clock = self.clock.lock().expect("clock lock");
                let hlc = clock.tick(system_wall_ms());
                (
                    Version {
                        hlc,
                        node: self.store.node_id(),
                    },
                    clock.last().max(Timestamp::new(limit_ms, 0)),
                )
            };
            // One version for the whole batch: versions order writes of one key, and
            // each key here gets one.
            let rewrites: Vec<(Entry, Version)> = scan
                .first
                .into_iter()
                .map(|e| {
                    let old = e.record.version;
                    let entry = Entry {
                        key: e.key,
                        record: Record {
                            version,
                            payload: e.record.payload,
                        },
                    };
                    (entry, old)
                })
                .collect();
            let last_batch = rewrites.len() < BATCH;
            rewritten += self
                .store
                .rewrite(rewrites, cap)
                .await
                .map_err(|e| ErrorReply::new(ErrorCode::Storage, e.to_string()))?;
            if last_batch {
                break;
            }
        }
        tracing::warn!(
            rewritten,
            found = found.count,
            clock_rewound = rewound,
            "versions from the future rewritten to the present by an admin's request"
        );
        Ok(Response::RewroteFuture {
            found,
            rewritten,
            clock_rewound: rewound,
        })
    }
}
