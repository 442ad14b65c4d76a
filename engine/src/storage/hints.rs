//! The `hints` table: writes a replica missed, kept durably until they are delivered.
//!
//! Key: `target name length (u8) ‖ target name ‖ sequence (u64 BE)`, so one target's
//! hints are one contiguous range, oldest first. Value: `created wall ms (u64 BE) ‖ key
//! length (u16 BE) ‖ key ‖ stored record`.

use std::future::Future;

use crate::record::{Entry, Record};

use super::StoreError;

/// Default most hints a node keeps, across all targets.
pub const HINTS_MAX_DEFAULT: u64 = 1_000_000;

/// A write kept for a replica that did not acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The replica it is for.
    pub target: String,
    /// The write.
    pub entry: Entry,
    /// When it was kept, wall-clock milliseconds.
    pub created_ms: u64,
}

/// A stored hint with the key that deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHint {
    /// The table key.
    pub key: Vec<u8>,
    /// The hint.
    pub hint: Hint,
}

/// One target's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintBacklog {
    /// The replica the hints are for.
    pub target: String,
    /// Hints waiting.
    pub count: u64,
    /// When the oldest was kept, wall-clock milliseconds.
    pub oldest_ms: u64,
}

pub(crate) fn target_prefix(target: &str) -> Vec<u8> {
    let name = target.as_bytes();
    let len = name.len().min(255);
    let mut out = Vec::with_capacity(1 + len);
    out.push(len as u8);
    out.extend_from_slice(&name[..len]);
    out
}

pub(crate) fn hint_key(target: &str, seq: u64) -> Vec<u8> {
    let mut key = target_prefix(target);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

pub(crate) fn target_of(key: &[u8]) -> Option<String> {
    let len = usize::from(*key.first()?);
    let name = key.get(1..1 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

pub(crate) fn encode_value(hint: &Hint) -> Vec<u8> {
    let key = &hint.entry.key;
    let mut out = Vec::with_capacity(10 + key.len() + 17 + hint.entry.record.payload.len());
    out.extend_from_slice(&hint.created_ms.to_be_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    hint.entry.record.encode_into(&mut out);
    out
}

/// Parses a stored hint (its table key and value).
pub fn decode(key: &[u8], value: &[u8]) -> Result<Hint, StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        what: "hint",
        detail: detail.to_string(),
    };
    let target = target_of(key).ok_or_else(|| corrupt("bad key"))?;
    let created_ms = u64::from_be_bytes(
        value
            .get(..8)
            .ok_or_else(|| corrupt("truncated"))?
            .try_into()
            .expect("8 bytes"),
    );
    let key_len = usize::from(u16::from_be_bytes(
        value
            .get(8..10)
            .ok_or_else(|| corrupt("truncated"))?
            .try_into()
            .expect("2 bytes"),
    ));
    let user_key = value
        .get(10..10 + key_len)
        .ok_or_else(|| corrupt("truncated key"))?;
    let record = Record::decode(&value[10 + key_len..]).map_err(StoreError::corrupt_record)?;
    Ok(Hint {
        target,
        entry: Entry {
            key: user_key.to_vec(),
            record,
        },
        created_ms,
    })
}

/// The hints as the node reads and keeps them.
impl super::Store {
    /// Keeps `hints` durably. Returns how many were stored; the rest were over
    /// `hints_max` and dropped (anti-entropy repairs what they would have).
    pub fn put_hints(
        &self,
        hints: Vec<Hint>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.put_hints(&hints))
    }

    /// Keeps `hints` in a transaction of their own on the calling thread (tools, tests,
    /// the simulator). Returns how many were stored.
    pub fn put_hints_now(&self, hints: Vec<Hint>) -> Result<usize, StoreError> {
        self.tables.transaction(|batch| batch.put_hints(&hints))
    }

    /// Deletes hints in a transaction of their own on the calling thread.
    pub fn delete_hints_now(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.tables.transaction(|batch| batch.delete_hints(&keys))
    }

    /// Deletes delivered or expired hints by key.
    pub fn delete_hints(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        self.writer.submit(move |batch| batch.delete_hints(&keys))
    }

    /// Up to `limit` hints for `target` (at most `bytes_max` of values), oldest first.
    pub fn hints_for(
        &self,
        target: &str,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Vec<StoredHint>, StoreError> {
        let rtxn = self.tables.read_txn()?;
        let prefix = target_prefix(target);
        let iter = self
            .tables
            .hints
            .prefix_iter(&rtxn, &prefix)
            .map_err(StoreError::lmdb("reading hints"))?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter {
            let (key, value) = item.map_err(StoreError::lmdb("reading hints"))?;
            if key.len() != prefix.len() + 8 {
                continue;
            }
            if !out.is_empty() && (out.len() >= limit || bytes + value.len() > bytes_max) {
                break;
            }
            bytes += value.len();
            out.push(StoredHint {
                key: key.to_vec(),
                hint: decode(key, value)?,
            });
        }
        Ok(out)
    }

    /// Every target with hints waiting: count and age of the oldest.
    pub fn hint_backlog(&self) -> Result<Vec<HintBacklog>, StoreError> {
        let counts: Vec<(String, u64)> = {
            let state = self.tables.hint_state.lock().expect("hint state lock");
            state
                .counts
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(t, c)| (t.clone(), *c))
                .collect()
        };
        let rtxn = self.tables.read_txn()?;
        let mut out = Vec::with_capacity(counts.len());
        for (target, count) in counts {
            let prefix = target_prefix(&target);
            let first = self
                .tables
                .hints
                .prefix_iter(&rtxn, &prefix)
                .map_err(StoreError::lmdb("reading hints"))?
                .next()
                .transpose()
                .map_err(StoreError::lmdb("reading hints"))?;
            let oldest_ms = first
                .and_then(|(_, v)| v.get(..8))
                .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
            out.push(HintBacklog {
                target,
                count,
                oldest_ms,
            });
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(out)
    }

    /// Hints dropped since start because storage was at `hints_max`.
    pub fn hints_dropped(&self) -> u64 {
        self.tables
            .hint_state
            .lock()
            .expect("hint state lock")
            .dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use crate::record::{NodeId, Payload, Version};

    #[test]
    fn hints_round_trip_and_sort_by_target_then_sequence() {
        let hint = Hint {
            target: "n2".into(),
            entry: Entry {
                key: b"k".to_vec(),
                record: Record {
                    version: Version {
                        hlc: Timestamp::new(5, 1),
                        node: NodeId(7),
                    },
                    payload: Payload::Value(b"v".to_vec()),
                    expires_ms: None,
                },
            },
            created_ms: 99,
        };
        let key = hint_key("n2", 3);
        assert_eq!(decode(&key, &encode_value(&hint)).unwrap(), hint);
        assert_eq!(seq_of(&key), Some(3));
        assert_eq!(target_of(&key).as_deref(), Some("n2"));
        assert!(hint_key("n2", 3) < hint_key("n2", 4));
        assert!(hint_key("n2", u64::MAX) < hint_key("n3", 0));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let _ = decode(&bytes, &bytes);
        }
    }
}
