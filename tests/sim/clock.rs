//! Each node's clocks: its wall clock with its skew, the cluster's time as its probes
//! measure it, and how far off that measurement may be.

use vergent::hlc::skew::{Probe, Reading, SkewBook, Verdict};

use super::Sim;
use super::config::{EPOCH_MS, MAX_OFFSET_MS, SKEW_SAMPLE_MAX_AGE_MS};

impl Sim {
    /// Node `i`'s monotonic and wall clocks, read together.
    pub(super) fn reading(&self, i: usize) -> Reading {
        Reading {
            mono_us: self.now * 1000,
            wall_us: self.wall(i) * 1000,
        }
    }

    /// What node `i` concludes about its own clock from its probes.
    pub(super) fn verdict(&self, i: usize) -> Option<Verdict> {
        let core = self.nodes[i].core.as_ref()?;
        Some(core.clock_verdict(self.now_of(i)))
    }

    /// How far off node `i`'s clock truly is from the median of the clocks its probes
    /// reach (the same rule they approximate), milliseconds.
    pub(super) fn true_cluster_offset_ms(&self, i: usize) -> i64 {
        let mut exact = SkewBook::new();
        // The clocks its probes reach: with only a majority measured the median is
        // over them (a known limit, in the README), and that is what is checked here.
        let now = self.reading(i);
        let live: Vec<String> = self
            .live_peers(i)
            .into_iter()
            .filter(|name| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.skew().offset(name, now).is_some())
            })
            .collect();
        for name in &live {
            let j = self.index_of(name).expect("a member");
            // A peer's clock as of its last answer: a step since, while it could not be
            // probed, is not something this node could have seen.
            let theirs = self.nodes[i]
                .seen_skew
                .get(&j)
                .copied()
                .unwrap_or(self.nodes[j].skew_ms);
            let offset_us = (theirs - self.nodes[i].skew_ms) * 1000;
            let now = self.reading(i);
            let at_peer = (now.wall_us as i64 + offset_us) as u64;
            exact.record(
                name,
                Probe {
                    sent_us: now.wall_us,
                    received_us: at_peer,
                    replied_us: at_peer,
                    answered_us: now.wall_us,
                },
                now.mono_us,
            );
        }
        exact
            .verdict(
                live.iter().map(String::as_str),
                self.reading(i),
                MAX_OFFSET_MS,
            )
            .cluster_offset_ms()
            .unwrap_or(0)
    }

    /// The most a probe's estimate may be off: half the longest round trip a message
    /// may take (duplicates arrive up to four jitters late).
    pub(super) fn measurement_error_ms(&self) -> u64 {
        let jitter = if self.now < self.jitter_recent.1 + SKEW_SAMPLE_MAX_AGE_MS {
            self.jitter_recent.0.max(self.jitter_ms)
        } else {
            self.jitter_ms
        };
        (2 + 5 * jitter) / 2 + 1
    }

    pub(super) fn set_skew(&mut self, i: usize, skew_ms: i64) {
        if self.nodes[i].skew_ms != skew_ms {
            self.nodes[i].skew_ms = skew_ms;
            self.skew_changed_ms = self.now;
        }
    }

    pub(super) fn wall(&self, node: usize) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }
}
