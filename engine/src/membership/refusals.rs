//! Membership messages refused for claiming another member's identity: every one is
//! counted, and each peer's refusals are reported at most once a minute, so a peer that
//! keeps trying cannot flood the log. Also where membership is given its status seal.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::seal::StatusSeal;
use super::{Membership, MembershipEvent};
use crate::base::Millis;

/// How often refusals from one peer are reported, ms.
pub const REFUSALS_REPORTED_EVERY_MS: u64 = 60_000;

/// Why a membership message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its SWIM header names another member as its sender than the certificate of the
    /// connection it came on.
    NotTheSender {
        /// The member it claims to come from.
        claimed: String,
    },
    /// It carries a status of another member that member did not sign.
    ForgedStatus {
        /// The member the status claims to be from.
        subject: String,
    },
}

impl Refusal {
    /// Every [`Refusal::reason`].
    pub const REASONS: [&'static str; 2] = ["not_the_sender", "forged_status"];

    /// A short name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotTheSender { .. } => "not_the_sender",
            Refusal::ForgedStatus { .. } => "forged_status",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotTheSender { claimed } => write!(
                f,
                "it claims to be sent by {claimed:?}; a member speaks only for itself"
            ),
            Refusal::ForgedStatus { subject } => write!(
                f,
                "it carries a status of {subject:?} that {subject:?} did not sign"
            ),
        }
    }
}

/// A report of refusals from one peer, at most one a minute per peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalReport {
    /// The certificate name of the connection the messages came on.
    pub from: String,
    /// The refusal that prompted this report.
    pub refusal: Refusal,
    /// Refusals from this peer since its previous report, this one included.
    pub count: u64,
}

/// Counts refusals and decides when to report them.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// Every refusal since the start, by reason.
    totals: BTreeMap<&'static str, u64>,
    /// Per peer: when it was last reported, and refusals since then not yet reported.
    peers: BTreeMap<String, (Option<Millis>, u64)>,
}

impl RefusalLog {
    /// Counts a refusal; a report when this peer's last one is a minute old (or none
    /// was made yet).
    pub(super) fn note(
        &mut self,
        from: &str,
        refusal: Refusal,
        now: Millis,
    ) -> Option<RefusalReport> {
        *self.totals.entry(refusal.reason()).or_default() += 1;
        let (last, pending) = self.peers.entry(from.to_string()).or_default();
        *pending += 1;
        if last.is_some_and(|at| now.0 < at.0 + REFUSALS_REPORTED_EVERY_MS) {
            return None;
        }
        *last = Some(now);
        let count = std::mem::take(pending);
        Some(RefusalReport {
            from: from.to_string(),
            refusal,
            count,
        })
    }

    /// Refusals since the start, by reason.
    pub(super) fn totals(&self) -> &BTreeMap<&'static str, u64> {
        &self.totals
    }
}

impl Membership {
    /// Signs this node's statuses with `seal` and checks others' with it from now on
    /// (a membership starts [`Unsealed`](super::seal::Unsealed)).
    pub fn set_seal(&mut self, seal: Arc<dyn StatusSeal>) {
        self.book.lock().expect("status book lock").seal = seal;
    }

    /// Messages refused for speaking as another member since the start, by reason
    /// ([`Refusal::reason`]).
    pub fn refusals(&self) -> &BTreeMap<&'static str, u64> {
        self.refusals.totals()
    }

    /// Second-hand statuses dropped because their author's certificate was not known
    /// here yet (a later copy, or the author's own, is taken).
    pub fn unverified_statuses(&self) -> u64 {
        self.book.lock().expect("status book lock").unverified
    }

    pub(super) fn refuse(&mut self, from: &str, refusal: Refusal, now: Millis) {
        if let Some(report) = self.refusals.note(from, refusal, now) {
            self.events.push_back(MembershipEvent::Refused(report));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn impersonation() -> Refusal {
        Refusal::NotTheSender {
            claimed: "n1".into(),
        }
    }

    #[test]
    fn one_report_per_peer_per_minute_and_every_refusal_counted() {
        let mut log = RefusalLog::default();
        let first = log.note("n2", impersonation(), Millis(1_000)).unwrap();
        assert_eq!(first.count, 1);
        for at in 1..100 {
            assert!(
                log.note("n2", impersonation(), Millis(1_000 + at))
                    .is_none()
            );
        }
        // Another peer is reported on its own.
        assert!(log.note("n3", impersonation(), Millis(2_000)).is_some());
        let forged = Refusal::ForgedStatus {
            subject: "n1".into(),
        };
        let next = log.note("n2", forged, Millis(61_000)).unwrap();
        assert_eq!(next.count, 100, "the 99 held back and this one");
        assert_eq!(log.totals()["not_the_sender"], 101);
        assert_eq!(log.totals()["forged_status"], 1);
    }
}
