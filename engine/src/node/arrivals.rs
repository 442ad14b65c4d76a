//! The node's book of tombstone arrivals ([`crate::policy::TombstoneArrivals`]), and
//! the guard a write holds from just before it reaches the store until it is done, so
//! no purge can take a tombstone a compare may not have seen.

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

    /// The tombstones among `entries` are about to be written: they hold purges back
    /// until the returned guard is dropped, after the write.
    pub(crate) fn landing(&self, entries: &[Entry]) -> Landing {
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
        if !tombstones.is_empty() {
            let mut book = self.book.lock().expect("arrivals lock");
            for &(p, hlc_ms) in &tombstones {
                if let Some(part) = book.partition(p) {
                    part.begin(hlc_ms);
                }
            }
        }
        Landing {
            book: self.book.clone(),
            started: self.started,
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
    tombstones: Vec<(PartitionId, u64)>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if self.tombstones.is_empty() {
            return;
        }
        let mono = self.started.elapsed().as_millis() as u64;
        let mut book = self.book.lock().expect("arrivals lock");
        for &(p, hlc_ms) in &self.tombstones {
            if let Some(part) = book.partition(p) {
                part.end(hlc_ms, mono);
            }
        }
    }
}
