//! Versions from the future on this node: a clock that ran ahead (this node's, or
//! versions stored before the offset checks existed) leaves records and a clock reading
//! beyond the cluster's time plus the bound. The other nodes refuse such versions, so
//! this node must not issue more of them: it stops coordinating writes and says why,
//! `verify` lists the records, and `vergent rewrite-future` brings them back.
//!
//! Rewrite, not drop: a version from the future may carry a write a client was told
//! succeeded (the whole cluster's clocks ran ahead together, or the write predates the
//! checks), and dropping it would lose that write. Rewritten to the cluster's present
//! time, the value stays and later writes to its key win again, as a client expects.
//! Every node that holds such versions rewrites its own (each `status` says so), all to
//! the time the first run printed (`--at`), so a write made through a node that already
//! rewrote is not beaten by another node's later rewrite; replicas then converge by
//! anti-entropy. While it runs the node coordinates no writes: one acknowledged then
//! could lose to the rewritten version.

use std::sync::Arc;

use super::Shared;
use crate::hlc::Timestamp;
use crate::protocol::{ErrorCode, ErrorReply, FutureVersions, Response};
use crate::record::{Entry, Record, Version};
use crate::storage::FutureScan;

/// Records listed by `verify` and the rewrite's report.
const LISTED: usize = 10;
/// Records rewritten per transaction.
const BATCH: usize = 1024;

fn shutting_down() -> ErrorReply {
    ErrorReply::new(ErrorCode::ShuttingDown, "the node is shutting down")
}

impl Shared {
    /// Counts the records more than twice the bound ahead of the cluster's time
    /// `present_ms` and describes the first few.
    pub(crate) async fn future_versions(
        self: &Arc<Self>,
        present_ms: u64,
    ) -> Result<FutureVersions, ErrorReply> {
        let limit_ms = present_ms.saturating_add(2 * self.config.max_clock_offset_ms);
        let scan = self.scan_future(limit_ms, LISTED).await?;
        let ahead_ms_max = scan.latest_ms.saturating_sub(present_ms);
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
            ahead_ms_max: if scan.count == 0 { 0 } else { ahead_ms_max },
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
        at: Option<Timestamp>,
    ) -> Result<Response, ErrorReply> {
        let plan = self
            .core
            .call(move |core, now, _| core.begin_rewrite(at, false, now))
            .await
            .ok_or_else(shutting_down)??;
        let found = self.future_versions(plan.present_ms).await?;
        if dry_run {
            return Ok(Response::RewroteFuture {
                found,
                rewritten: 0,
                clock_rewound: false,
                at: plan.at,
            });
        }
        // The same checks again, now taking the node out of coordinating writes.
        let plan = self
            .core
            .call(move |core, now, _| core.begin_rewrite(Some(plan.at), true, now))
            .await
            .ok_or_else(shutting_down)??;
        let result = self
            .rewrite_batches(plan.scan_limit_ms, plan.at, found.count)
            .await;
        // Then the clock: back from the future, and past the rewritten version, so the
        // next write through this node to any of those keys wins.
        let at = plan.at;
        let rewound = self
            .core
            .call(move |core, now, _| core.end_rewrite(at, now))
            .await
            .unwrap_or(false);
        let rewritten = result?;
        tracing::warn!(
            rewritten,
            found = found.count,
            clock_rewound = rewound,
            at = %at,
            "versions from the future rewritten to the present by an admin's request"
        );
        Ok(Response::RewroteFuture {
            found,
            rewritten,
            clock_rewound: rewound,
            at,
        })
    }

    /// Rewrites every record beyond `scan_limit_ms` to version `at` of this node's, in
    /// batches; returns how many. Every rewritten record gets the same version:
    /// versions order the writes of one key, and each key here gets one.
    async fn rewrite_batches(
        self: &Arc<Self>,
        scan_limit_ms: u64,
        at: Timestamp,
        found: u64,
    ) -> Result<u64, ErrorReply> {
        let version = Version {
            hlc: at,
            node: self.store.node_id(),
        };
        let mut rewritten = 0;
        // Each batch lowers the count (a rewritten record is at `at`, below the scan's
        // limit); the bound on rounds only guards against a store that says otherwise.
        for _ in 0..=found / BATCH as u64 + 1 {
            let scan = self.scan_future(scan_limit_ms, BATCH).await?;
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
                            expires_ms: None,
                        },
                    };
                    (entry, old)
                })
                .collect();
            let last_batch = rewrites.len() < BATCH;
            // A rewritten record is a change: its partition is not confirmed in sync
            // until the replicas compare again, and its tombstones hold purges back.
            let entries: Vec<Entry> = rewrites.iter().map(|(e, _)| e.clone()).collect();
            let landing = self
                .core
                .call(move |core, now, _| core.rewriting(&entries, now))
                .await
                .ok_or_else(shutting_down)?;
            let done = self
                .store
                .rewrite(rewrites, Timestamp::new(scan_limit_ms, 0))
                .await;
            let _ = self
                .core
                .call(move |core, now, _| core.rewritten(landing, now))
                .await;
            rewritten += done.map_err(|e| ErrorReply::new(ErrorCode::Storage, e.to_string()))?;
            if last_batch {
                break;
            }
        }
        Ok(rewritten)
    }
}
