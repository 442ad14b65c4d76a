//! The node's book of arrivals ([`crate::policy::TombstoneArrivals`]), and the guard a
//! write holds from just before it reaches the store until it is done, so no purge can
//! take a tombstone, and no handoff drop a write, that a compare may not have seen.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::placement::{PartitionId, partition_of};
use crate::policy::TombstoneArrivals;
use crate::record::{Entry, Payload};

/// Tombstone arrivals, shared by the tasks that write and the purge.
pub(crate) struct ArrivalsBook {
    book: Arc<Mutex<TombstoneArrivals>>,
    started: Instant,
    partitions: u16,
}

impl ArrivalsBook {
    /// An empty book; `started` is the node's monotonic origin.
    pub(crate) fn new(partitions: u16, started: Instant) -> ArrivalsBook {
        ArrivalsBook {
            book: Arc::new(Mutex::new(TombstoneArrivals::new(partitions))),
            started,
            partitions,
        }
    }

    /// `entries` are about to be written: they hold handoff of their partitions back,
    /// and their tombstones purges, until the returned guard is dropped after the write.
    pub(crate) fn landing(&self, entries: &[Entry]) -> Landing {
        let mut written: Vec<PartitionId> = entries
            .iter()
            .map(|e| partition_of(&e.key, self.partitions))
            .collect();
        written.sort_unstable();
        written.dedup();
        let tombstones: Vec<(PartitionId, u64)> = entries
            .iter()
            .filter(|e| matches!(e.record.payload, Payload::Tombstone))
            .map(|e| {
                (
                    partition_of(&e.key, self.partitions),
                    e.record.version.hlc.wall_ms(),
                )
            })
            .collect();
        if !written.is_empty() {
            let mut book = self.book.lock().expect("arrivals lock");
            for &p in &written {
                if let Some(part) = book.partition(p) {
                    part.begin_write();
                }
            }
            for &(p, hlc_ms) in &tombstones {
                if let Some(part) = book.partition(p) {
                    part.begin(hlc_ms);
                }
            }
        }
        Landing {
            book: self.book.clone(),
            started: self.started,
            written,
            tombstones,
        }
    }

    /// Runs `f` on the book (for a purge).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut TombstoneArrivals) -> T) -> T {
        f(&mut self.book.lock().expect("arrivals lock"))
    }
}

/// Held while a write that may carry tombstones is in flight.
#[must_use = "the write's tombstones hold purges back until this is dropped after it"]
pub(crate) struct Landing {
    book: Arc<Mutex<TombstoneArrivals>>,
    started: Instant,
    written: Vec<PartitionId>,
    tombstones: Vec<(PartitionId, u64)>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if self.written.is_empty() {
            return;
        }
        let mono = self.started.elapsed().as_millis() as u64;
        let mut book = self.book.lock().expect("arrivals lock");
        for &p in &self.written {
            if let Some(part) = book.partition(p) {
                part.end_write(mono);
            }
        }
        for &(p, hlc_ms) in &self.tombstones {
            if let Some(part) = book.partition(p) {
                part.end(hlc_ms, mono);
            }
        }
    }
}
