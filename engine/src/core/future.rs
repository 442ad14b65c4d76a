//! The core's part in `vergent rewrite-future` (the runtime scans and rewrites the
//! records in steps, see `node/future.rs`): whether versions from the future can be
//! told apart now and what "now" is, no writes coordinated while the rewrite runs,
//! the rewritten records noted as changes, and the clock brought back after.

use super::io::Landing;
use super::*;
use crate::hlc::skew::Verdict;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::record::Entry;

/// What a rewrite goes by, once the core says it may run.
#[derive(Debug, Clone, Copy)]
pub struct RewritePlan {
    /// The cluster's time as this node measures it.
    pub present_ms: u64,
    /// The version's time every rewritten record gets.
    pub at: Timestamp,
    /// Records beyond this are from the future.
    pub scan_limit_ms: u64,
}

impl NodeCore {
    /// Whether versions from the future can be told apart now, and what a rewrite goes
    /// by; with `begin`, no writes are coordinated from now until
    /// [`NodeCore::end_rewrite`].
    pub fn begin_rewrite(
        &mut self,
        at: Option<Timestamp>,
        begin: bool,
        now: Now,
    ) -> Result<RewritePlan, ErrorReply> {
        self.serving()?;
        // "The future" is the cluster's time plus the bound; a node that cannot measure
        // the cluster's time, or whose own clock is off it, cannot tell.
        if let Some(refusal) = self.clock_refusal(now) {
            return Err(ErrorReply::new(
                refusal.code,
                format!(
                    "versions from the future cannot be told apart now: {}",
                    refusal.message
                ),
            ));
        }
        if matches!(self.clock_verdict(now), Verdict::Alone) && self.view.members.len() > 1 {
            return Err(ErrorReply::new(
                ErrorCode::Unavailable,
                "versions from the future cannot be told apart now: no other member is alive to compare this node's clock with",
            ));
        }
        let bound = self.config.max_clock_offset_ms;
        let present_ms = self.cluster_wall_ms(now);
        // Records less than twice the bound ahead are left alone: every node accepts
        // them within a bound's time, and nodes' estimates of the cluster's time differ
        // by a few milliseconds.
        let scan_limit_ms = present_ms.saturating_add(2 * bound);
        let at = match at {
            Some(at) if at.wall_ms() > present_ms.saturating_add(bound) => {
                return Err(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!(
                        "--at {at} is itself from the future (the cluster's time is {})",
                        Timestamp::new(present_ms, 0)
                    ),
                ));
            }
            Some(at) => at,
            None => Timestamp::new(present_ms, 0),
        };
        if begin {
            if self.rewriting {
                return Err(ErrorReply::new(
                    ErrorCode::Refused,
                    "a rewrite of versions from the future is already running on this node",
                ));
            }
            self.rewriting = true;
        }
        Ok(RewritePlan {
            present_ms,
            at,
            scan_limit_ms,
        })
    }

    /// Records about to be rewritten: changes to their partitions, and their tombstones
    /// hold purges back until [`NodeCore::rewritten`].
    pub fn rewriting(&mut self, entries: &[Entry], now: Now) -> u64 {
        let landing = self.landing(entries, now.wall_ms());
        self.next_landing += 1;
        self.landings.insert(self.next_landing, landing);
        self.next_landing
    }

    /// The records of [`NodeCore::rewriting`]'s `id` are written (or not).
    pub fn rewritten(&mut self, id: u64, now: Now) {
        if let Some(landing) = self.landings.remove(&id) {
            self.landed(landing, now);
        }
    }

    /// The rewrite is over: the clock back from the future and past the rewritten
    /// version, so the next write through this node to any of those keys wins, and
    /// writes coordinated again. Whether the clock moved back.
    pub fn end_rewrite(&mut self, at: Timestamp, now: Now) -> bool {
        let rewound = self.clock.rewind(self.future_limit_ms(now));
        let cluster_ms = self.cluster_wall_ms(now);
        let _ = self.clock.observe_against(at, now.wall_ms(), cluster_ms);
        self.rewriting = false;
        rewound
    }
}

/// Landings of writes made outside the core's own effects.
pub(super) type Landings = BTreeMap<u64, Landing>;
