//! When tombstones arrived on this node, so a purge never takes one that reached it
//! after the agreements it goes by.
//!
//! An agreement with a replica at monotonic time `T` says both held the same data at
//! `T`; it says nothing of a tombstone that landed here later. A tombstone's version
//! does not tell when it landed: a hint, a fill or another replica's exchange brings one
//! long after its timestamp (up to the hint window, or days for an exchange with a
//! member that was away). Purged here because the agreements postdate its timestamp,
//! while the replica still holds the value it deleted, it would let that value come
//! back. So each tombstone's arrival is noted, and a purge stays below the oldest
//! timestamp of the tombstones that arrived at or after the oldest agreement it counts.
//!
//! Arrivals are kept per partition as a few spans (monotonic time of the last arrival
//! in the span, oldest timestamp in it); close arrivals share a span and, past
//! [`SPANS_MAX`], the two oldest spans merge. Merging only lowers what may be purged.
//! Spans every counted agreement postdates are forgotten, and the time before which
//! arrivals are forgotten is kept: an agreement older than that (a member that starts
//! to count with an old agreement) allows no purge until it agrees again.
//!
//! The book also keeps when the last write of any kind landed on each partition, which
//! handoff waits for agreements after ([`crate::policy::may_hand_off`]).
//!
//! Times: `mono` is the node's monotonic milliseconds (the clock agreements are kept
//! in), `hlc_ms` a version's wall milliseconds (what tombstones are purged by).

use std::collections::VecDeque;

use crate::placement::PartitionId;

/// Spans kept per partition before the two oldest merge.
pub const SPANS_MAX: usize = 16;
/// Arrivals this close (monotonic ms) to a span's last share it.
pub const SPAN_MS: u64 = 1_000;

/// Tombstone arrivals for every partition of a node.
#[derive(Debug, Clone)]
pub struct TombstoneArrivals {
    partitions: Vec<PartitionArrivals>,
}

impl TombstoneArrivals {
    /// Books for `partitions` partitions, nothing arrived.
    pub fn new(partitions: u16) -> TombstoneArrivals {
        TombstoneArrivals {
            partitions: vec![PartitionArrivals::default(); usize::from(partitions)],
        }
    }

    /// The book of `partition`, `None` past the partition count.
    pub fn partition(&mut self, partition: PartitionId) -> Option<&mut PartitionArrivals> {
        self.partitions.get_mut(usize::from(partition))
    }
}

/// One partition's tombstone arrivals.
#[derive(Debug, Clone, Default)]
pub struct PartitionArrivals {
    spans: VecDeque<Span>,
    /// Arrivals before this (monotonic ms) were forgotten.
    forgotten_before: u64,
    /// Tombstones about to be written and not yet known to be (see [`Self::begin`]).
    pending: u32,
    pending_oldest_ms: u64,
    /// Writes of any kind in flight, and when the last one landed (monotonic ms).
    writes_pending: u32,
    last_write_mono: u64,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    last_mono: u64,
    oldest_hlc_ms: u64,
}

impl PartitionArrivals {
    /// A write (of anything) is about to land; see [`Self::last_landed`].
    pub fn begin_write(&mut self) {
        self.writes_pending += 1;
    }

    /// The write begun with [`Self::begin_write`] is done (or failed) at `mono`.
    pub fn end_write(&mut self, mono: u64) {
        self.writes_pending = self.writes_pending.saturating_sub(1);
        self.note_write(mono);
    }

    /// A write landed at `mono`.
    pub fn note_write(&mut self, mono: u64) {
        self.last_write_mono = self.last_write_mono.max(mono);
    }

    /// When the last write landed here (0 when none has since the node started), or
    /// `None` while one is in flight: what handoff waits for agreements after.
    pub fn last_landed(&self) -> Option<u64> {
        (self.writes_pending == 0).then_some(self.last_write_mono)
    }

    /// A tombstone timestamped `hlc_ms` is about to be written. Until [`Self::end`], no
    /// purge reaches it: a compare may run between now and the commit and not see it.
    pub fn begin(&mut self, hlc_ms: u64) {
        if self.pending == 0 {
            self.pending_oldest_ms = hlc_ms;
        }
        self.pending += 1;
        self.pending_oldest_ms = self.pending_oldest_ms.min(hlc_ms);
    }

    /// The write begun with [`Self::begin`] is done (or failed) at `mono`.
    pub fn end(&mut self, hlc_ms: u64, mono: u64) {
        self.pending = self.pending.saturating_sub(1);
        self.note(hlc_ms, mono);
    }

    /// A tombstone timestamped `hlc_ms` was written at `mono`.
    pub fn note(&mut self, hlc_ms: u64, mono: u64) {
        if let Some(last) = self.spans.back_mut()
            && mono.saturating_sub(last.last_mono) <= SPAN_MS
        {
            last.last_mono = last.last_mono.max(mono);
            last.oldest_hlc_ms = last.oldest_hlc_ms.min(hlc_ms);
            return;
        }
        self.spans.push_back(Span {
            last_mono: mono,
            oldest_hlc_ms: hlc_ms,
        });
        if self.spans.len() > SPANS_MAX
            && let (Some(oldest), Some(next)) = (self.spans.pop_front(), self.spans.front_mut())
        {
            next.last_mono = next.last_mono.max(oldest.last_mono);
            next.oldest_hlc_ms = next.oldest_hlc_ms.min(oldest.oldest_hlc_ms);
        }
    }

    /// The timestamp below which tombstones may be purged as far as arrivals go, when
    /// the oldest agreement counted began at `agreed_mono`: the oldest timestamp of those
    /// that arrived at or after it (`u64::MAX` when none did), `None` when arrivals
    /// that old were forgotten.
    pub fn purge_cap(&mut self, agreed_mono: u64) -> Option<u64> {
        if agreed_mono < self.forgotten_before {
            return None;
        }
        while let Some(first) = self.spans.front()
            && first.last_mono < agreed_mono
        {
            self.forgotten_before = self.forgotten_before.max(first.last_mono + 1);
            self.spans.pop_front();
        }
        let mut cap = self
            .spans
            .iter()
            .map(|s| s.oldest_hlc_ms)
            .min()
            .unwrap_or(u64::MAX);
        if self.pending > 0 {
            cap = cap.min(self.pending_oldest_ms);
        }
        Some(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_that_arrived_after_the_agreement_caps_the_purge() {
        let mut book = PartitionArrivals::default();
        assert_eq!(book.purge_cap(0), Some(u64::MAX));
        // Timestamped 100, landed at 5,000 (a late hint).
        book.note(100, 5_000);
        assert_eq!(book.purge_cap(4_000), Some(100));
        assert_eq!(
            book.purge_cap(5_000),
            Some(100),
            "at the same moment: not seen"
        );
        assert_eq!(book.purge_cap(5_001), Some(u64::MAX));
    }

    #[test]
    fn forgotten_arrivals_allow_no_purge_to_an_older_agreement() {
        let mut book = PartitionArrivals::default();
        book.note(100, 5_000);
        assert_eq!(book.purge_cap(6_000), Some(u64::MAX));
        // A member that starts to count, agreed before the arrival.
        assert_eq!(book.purge_cap(4_000), None);
        assert_eq!(book.purge_cap(6_000), Some(u64::MAX));
    }

    #[test]
    fn a_write_in_flight_caps_the_purge_until_it_ends() {
        let mut book = PartitionArrivals::default();
        book.begin(300);
        book.begin(200);
        assert_eq!(book.purge_cap(10_000), Some(200));
        book.end(300, 10_000);
        assert_eq!(book.purge_cap(10_000), Some(200), "one is still in flight");
        book.end(200, 10_000);
        assert_eq!(book.purge_cap(10_000), Some(200), "landed at the agreement");
        assert_eq!(book.purge_cap(10_001), Some(u64::MAX));
    }

    #[test]
    fn merged_spans_keep_the_oldest_timestamp_and_the_last_arrival() {
        let mut book = PartitionArrivals::default();
        for i in 0..(SPANS_MAX as u64 + 5) {
            book.note(1_000 + i, (i + 1) * 10 * SPAN_MS);
        }
        assert!(book.spans.len() <= SPANS_MAX);
        // The oldest timestamp still caps every agreement before the merged span's end.
        assert_eq!(book.purge_cap(10 * SPAN_MS), Some(1_000));
        let last = (SPANS_MAX as u64 + 5) * 10 * SPAN_MS;
        assert_eq!(book.purge_cap(last + 1), Some(u64::MAX));
    }

    #[test]
    fn the_last_landing_is_unknown_while_a_write_is_in_flight() {
        let mut book = PartitionArrivals::default();
        assert_eq!(book.last_landed(), Some(0));
        book.note_write(40);
        book.begin_write();
        assert_eq!(book.last_landed(), None);
        book.end_write(70);
        assert_eq!(book.last_landed(), Some(70));
        book.note_write(60);
        assert_eq!(book.last_landed(), Some(70));
    }

    #[test]
    fn close_arrivals_share_a_span() {
        let mut book = PartitionArrivals::default();
        book.note(500, 1_000);
        book.note(400, 1_500);
        book.note(600, 2_400);
        assert_eq!(book.spans.len(), 1);
        assert_eq!(book.purge_cap(2_000), Some(400));
        assert_eq!(book.purge_cap(2_401), Some(u64::MAX));
    }
}
