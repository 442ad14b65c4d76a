//! What concurrent writes did, per bucket, for `status`, the metrics and the dashboard:
//! in lww buckets, the writes that reached this node older than what it held (a write
//! its client saw acknowledged, and that lost); in siblings buckets, how many values
//! keys hold side by side. Each keeps its hottest keys.

use std::collections::{BTreeMap, HashMap};

use crate::buckets::{BucketId, BucketType, Catalog, split_key};
use crate::protocol::{BucketStatus, KeyCount};
use crate::storage::ApplyOutcome;

/// Keys a bucket's hot list keeps.
const HOT_KEYS: usize = 64;
/// Keys `status` shows of each list.
const HOT_SHOWN: usize = 5;

/// The hottest keys by a count, in bounded memory: when full, a new key takes the
/// place of the coldest and starts from its count (the space-saving rule), so a key
/// that keeps coming back rises whatever came before it.
#[derive(Debug, Default)]
struct HotKeys {
    counts: HashMap<Vec<u8>, u64>,
}

impl HotKeys {
    fn bump(&mut self, key: &[u8]) {
        if let Some(count) = self.counts.get_mut(key) {
            *count += 1;
            return;
        }
        let mut start = 0;
        if self.counts.len() >= HOT_KEYS
            && let Some((coldest, count)) = self
                .counts
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                .map(|(k, c)| (k.clone(), *c))
        {
            self.counts.remove(&coldest);
            start = count;
        }
        self.counts.insert(key.to_vec(), start + 1);
    }

    /// Sets `key`'s count (`0`: forgets it).
    fn set(&mut self, key: &[u8], count: u64) {
        if count == 0 {
            self.counts.remove(key);
            return;
        }
        if !self.counts.contains_key(key) && self.counts.len() >= HOT_KEYS {
            let coldest = self
                .counts
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                .map(|(k, c)| (k.clone(), *c));
            match coldest {
                Some((_, c)) if c >= count => return,
                Some((k, _)) => {
                    self.counts.remove(&k);
                }
                None => {}
            }
        }
        self.counts.insert(key.to_vec(), count);
    }

    fn top(&self, n: usize) -> Vec<KeyCount> {
        let mut all: Vec<(&Vec<u8>, &u64)> = self.counts.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        all.into_iter()
            .take(n)
            .map(|(key, &count)| KeyCount {
                key: String::from_utf8_lossy(key).into_owned(),
                count,
            })
            .collect()
    }

    fn max(&self) -> u64 {
        self.counts.values().copied().max().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct BucketConflicts {
    lost: u64,
    lost_keys: HotKeys,
    siblings: HotKeys,
}

/// Every bucket's conflicts seen by this node since it started.
#[derive(Debug, Default)]
pub(crate) struct ConflictBook {
    by_bucket: BTreeMap<BucketId, BucketConflicts>,
}

impl ConflictBook {
    /// Fresh writes applied here (a coordinator's own, a peer's `Replicate`, hints):
    /// those of lww buckets that arrived older than what the key held lost.
    pub(crate) fn applied(
        &mut self,
        catalog: &Catalog,
        keys: &[Vec<u8>],
        outcomes: &[ApplyOutcome],
    ) {
        for (key, outcome) in keys.iter().zip(outcomes) {
            if !matches!(outcome, ApplyOutcome::Superseded { .. }) {
                continue;
            }
            let (bucket, user_key) = split_key(key);
            if catalog
                .by_id(bucket)
                .is_some_and(|b| b.kind == BucketType::Lww)
            {
                let book = self.by_bucket.entry(bucket).or_default();
                book.lost += 1;
                book.lost_keys.bump(user_key);
            }
        }
    }

    /// A siblings key seen holding `count` values (by a read, or an update made here).
    pub(crate) fn siblings(&mut self, key: &[u8], count: usize) {
        let (bucket, user_key) = split_key(key);
        let count = if count > 1 { count as u64 } else { 0 };
        self.by_bucket
            .entry(bucket)
            .or_default()
            .siblings
            .set(user_key, count);
    }

    /// Every bucket of `catalog` with what was seen of it.
    pub(crate) fn status(&self, catalog: &Catalog) -> Vec<BucketStatus> {
        catalog
            .list()
            .into_iter()
            .map(|bucket| {
                let book = self.by_bucket.get(&bucket.id);
                BucketStatus {
                    lost_writes: book.map_or(0, |b| b.lost),
                    lost_keys: book.map_or_else(Vec::new, |b| b.lost_keys.top(HOT_SHOWN)),
                    siblings_max: book.map_or(0, |b| b.siblings.max()),
                    sibling_keys: book.map_or_else(Vec::new, |b| b.siblings.top(HOT_SHOWN)),
                    keys: None,
                    id: bucket.id,
                    name: bucket.name,
                    kind: bucket.kind,
                    ttl_ms: bucket.ttl_ms,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_keeps_coming_back_rises_above_a_crowd_of_cold_ones() {
        let mut hot = HotKeys::default();
        for i in 0..1_000u32 {
            hot.bump(format!("cold{i}").as_bytes());
            if i % 10 == 0 {
                hot.bump(b"hot");
            }
        }
        assert!(hot.counts.len() <= HOT_KEYS);
        assert_eq!(hot.top(1)[0].key, "hot");
    }

    #[test]
    fn sibling_counts_follow_the_latest_word_and_a_resolved_key_leaves() {
        let mut hot = HotKeys::default();
        hot.set(b"a", 3);
        hot.set(b"b", 2);
        assert_eq!(hot.max(), 3);
        hot.set(b"a", 0);
        assert_eq!(hot.max(), 2);
        assert_eq!(hot.top(5).len(), 1);
    }
}
