//! Versions and the records they stamp.
//!
//! A [`Version`] is a hybrid-logical-clock timestamp plus the id of the node that
//! coordinated the write. Versions are totally ordered by `(hlc, node)`; that order is
//! the whole conflict-resolution rule (last writer wins), so every replica that has
//! seen the same set of versions holds the same record.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::types::State;

/// A node's numeric identity: the first eight bytes of `blake3(name)`. It derives from
/// the name so a node that returns with an empty disk keeps its identity.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The id of the node called `name`.
    pub fn from_name(name: &str) -> NodeId {
        let hash = blake3::hash(name.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        NodeId(u64::from_be_bytes(first))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:016x})", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The version of a record: ordered by timestamp, then by node id.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Version {
    /// When the write was coordinated.
    pub hlc: Timestamp,
    /// The node that coordinated it; breaks ties between equal timestamps.
    pub node: NodeId,
}

/// What a version says about its key: a value, that the key was deleted, or a typed
/// value that replicas merge.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Payload {
    /// The key holds these bytes.
    Value(Vec<u8>),
    /// The key was deleted; the tombstone takes part in ordering like a value, so an
    /// older value arriving late cannot bring the key back.
    Tombstone,
    /// A typed value (a counter, a set, siblings): replicas merge what they hold rather
    /// than keep the newest, and the record's version follows its state
    /// ([`Record::typed`]).
    Typed(State),
}

impl Payload {
    /// The value of a last-writer-wins record, unless it is a tombstone (a typed value
    /// has no bytes of its own: see [`Payload::typed`]).
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Payload::Value(v) => Some(v),
            Payload::Tombstone | Payload::Typed(_) => None,
        }
    }

    /// The typed value, if this is one.
    pub fn typed(&self) -> Option<&State> {
        match self {
            Payload::Typed(state) => Some(state),
            _ => None,
        }
    }

    /// Whether this is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Payload::Tombstone)
    }

    /// Bytes of user data carried (a typed value's encoded state).
    pub fn len(&self) -> usize {
        match self {
            Payload::Value(v) => v.len(),
            Payload::Tombstone => 0,
            Payload::Typed(state) => state.encode().len(),
        }
    }

    /// Whether no user data is carried (a tombstone or an empty value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A versioned record as stored and replicated.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Its version.
    pub version: Version,
    /// A value or a tombstone.
    pub payload: Payload,
    /// When the record expires, in HLC wall milliseconds (a bucket's or a write's TTL
    /// after the write): from then on it reads as absent everywhere and is purged by
    /// the tombstones' rules. `None`: never.
    pub expires_ms: Option<u64>,
}

/// One key's record, as replicated between nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The user key.
    pub key: Vec<u8>,
    /// Its record.
    pub record: Record,
}

/// Why stored record bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// Fewer bytes than the fixed header.
    #[error("stored record is {len} bytes, shorter than its {RECORD_HEADER_BYTES}-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// An unknown kind byte.
    #[error("stored record has unknown kind {kind}")]
    UnknownKind {
        /// The byte found.
        kind: u8,
    },
    /// A tombstone that carries bytes.
    #[error("stored tombstone carries {len} bytes of value")]
    TombstoneWithValue {
        /// Bytes found after the header.
        len: usize,
    },
    /// A typed record whose state cannot be read.
    #[error("stored typed record: {why}")]
    BadState {
        /// Why.
        why: String,
    },
}

/// Size of the fixed part of a stored record: hlc (8), node (8), kind (1).
pub const RECORD_HEADER_BYTES: usize = 17;
const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
/// The kind byte of a typed record, whose bytes after the header are its state.
pub const KIND_TYPED: u8 = 2;
/// Set in the kind byte of a record that expires: its expiry (u64 BE) follows the
/// header.
const KIND_EXPIRES: u8 = 0x80;

/// What the kind byte of a stored record says, read without decoding the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKind {
    /// A tombstone.
    pub tombstone: bool,
    /// A typed value.
    pub typed: bool,
    /// Its expiry, if it has one.
    pub expires_ms: Option<u64>,
}

impl StoredKind {
    /// The wall time from which the record is dead (a tombstone from its write, an
    /// expiring record from its expiry): what the purge horizon is compared with.
    pub fn dead_from_ms(&self, version: Version) -> Option<u64> {
        dead_from(self.tombstone, self.expires_ms, version)
    }
}

fn dead_from(tombstone: bool, expires_ms: Option<u64>, version: Version) -> Option<u64> {
    if tombstone {
        Some(version.hlc.wall_ms())
    } else {
        expires_ms
    }
}

/// What applying a record to what a key holds gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The key keeps what it holds (the same, or newer).
    Kept,
    /// The key holds this now.
    Changed(Record),
}

impl Record {
    /// The stored form: `hlc (u64 BE) ‖ node (u64 BE) ‖ kind (u8) ‖ value`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the stored form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.hlc.as_u64().to_be_bytes());
        out.extend_from_slice(&self.version.node.0.to_be_bytes());
        let kind = match &self.payload {
            Payload::Value(_) => KIND_VALUE,
            Payload::Tombstone => KIND_TOMBSTONE,
            Payload::Typed(_) => KIND_TYPED,
        };
        // A tombstone never expires: it is already what expiry leads to.
        match self.expires_ms.filter(|_| !self.payload.is_tombstone()) {
            Some(expires) => {
                out.push(kind | KIND_EXPIRES);
                out.extend_from_slice(&expires.to_be_bytes());
            }
            None => out.push(kind),
        }
        match &self.payload {
            Payload::Value(v) => out.extend_from_slice(v),
            Payload::Tombstone => {}
            Payload::Typed(state) => out.extend_from_slice(&state.encode()),
        }
    }

    /// Whether the record reads as absent at wall time `now_ms`: a tombstone, or past
    /// its expiry.
    pub fn is_dead_at(&self, now_ms: u64) -> bool {
        self.payload.is_tombstone() || self.expires_ms.is_some_and(|e| e <= now_ms)
    }

    /// The wall time from which the record is dead (see [`StoredKind::dead_from_ms`]).
    pub fn dead_from_ms(&self) -> Option<u64> {
        dead_from(self.payload.is_tombstone(), self.expires_ms, self.version)
    }

    /// Reads the kind byte (and the expiry) of stored record bytes.
    pub fn stored_kind(bytes: &[u8]) -> Result<StoredKind, RecordDecodeError> {
        let Some(&kind) = bytes.get(RECORD_HEADER_BYTES - 1) else {
            return Err(RecordDecodeError::Truncated { len: bytes.len() });
        };
        let expires_ms = if kind & KIND_EXPIRES != 0 {
            let end = RECORD_HEADER_BYTES + 8;
            let raw = bytes
                .get(RECORD_HEADER_BYTES..end)
                .ok_or(RecordDecodeError::Truncated { len: bytes.len() })?;
            Some(u64::from_be_bytes(raw.try_into().expect("8 bytes")))
        } else {
            None
        };
        let base = kind & !KIND_EXPIRES;
        if base > KIND_TYPED || (base == KIND_TOMBSTONE && expires_ms.is_some()) {
            return Err(RecordDecodeError::UnknownKind { kind });
        }
        Ok(StoredKind {
            tombstone: base == KIND_TOMBSTONE,
            typed: base == KIND_TYPED,
            expires_ms,
        })
    }

    /// A typed record holding `state`, the latest of its updates made at `hlc`: its
    /// version's node part is a hash of the state, so two replicas hold the same version
    /// exactly when they hold the same state (an exchange tells them apart by version,
    /// and sends both ways where they differ).
    ///
    /// `expires_ms` is the key's expiry (its bucket's TTL after the latest update); the
    /// hash covers it too, so replicas that differ only in it tell so and merge.
    pub fn typed(state: State, hlc: Timestamp, expires_ms: Option<u64>) -> Record {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&state.encode());
        if let Some(expires) = expires_ms {
            hasher.update(&expires.to_be_bytes());
        }
        let hash = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        Record {
            version: Version {
                hlc,
                node: NodeId(u64::from_be_bytes(first)),
            },
            payload: Payload::Typed(state),
            expires_ms,
        }
    }

    /// What the key holds once `incoming` reaches it where it holds `self`. Two typed
    /// records merge (the later update's time, the merged state, the later expiry);
    /// otherwise the higher version wins (last writer wins).
    pub fn merge(&self, incoming: &Record) -> Merged {
        if let (Payload::Typed(mine), Payload::Typed(theirs)) = (&self.payload, &incoming.payload)
            && mine.kind() == theirs.kind()
        {
            // A join of each part: the states, the latest update's time, the expiry
            // (never is the top, else the later). Equal states may come with different
            // times (an update that changed nothing still stamped one): the later
            // time wins, so every replica ends with the same record.
            let mut state = mine.clone();
            state.merge(theirs);
            let expires_ms = match (self.expires_ms, incoming.expires_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            let hlc = self.version.hlc.max(incoming.version.hlc);
            let merged = Record::typed(state, hlc, expires_ms);
            return if merged == *self {
                Merged::Kept
            } else {
                Merged::Changed(merged)
            };
        }
        if incoming.version > self.version {
            Merged::Changed(incoming.clone())
        } else {
            Merged::Kept
        }
    }

    /// Only the version, without copying the value.
    pub fn decode_version(bytes: &[u8]) -> Result<Version, RecordDecodeError> {
        if bytes.len() < RECORD_HEADER_BYTES {
            return Err(RecordDecodeError::Truncated { len: bytes.len() });
        }
        let hlc = u64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let node = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
        Ok(Version {
            hlc: Timestamp::from_u64(hlc),
            node: NodeId(node),
        })
    }

    /// Parses the stored form.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordDecodeError> {
        let version = Record::decode_version(bytes)?;
        let kind = Record::stored_kind(bytes)?;
        let start = RECORD_HEADER_BYTES + if kind.expires_ms.is_some() { 8 } else { 0 };
        let rest = &bytes[start..];
        let payload = if kind.typed {
            Payload::Typed(
                State::decode(rest)
                    .map_err(|e| RecordDecodeError::BadState { why: e.to_string() })?,
            )
        } else if kind.tombstone {
            if !rest.is_empty() {
                return Err(RecordDecodeError::TombstoneWithValue { len: rest.len() });
            }
            Payload::Tombstone
        } else {
            Payload::Value(rest.to_vec())
        };
        Ok(Record {
            version,
            payload,
            expires_ms: kind.expires_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(hlc: u64, node: u64) -> Version {
        Version {
            hlc: Timestamp::from_u64(hlc),
            node: NodeId(node),
        }
    }

    #[test]
    fn versions_order_by_hlc_then_node() {
        assert!(version(2, 1) > version(1, 9));
        assert!(version(1, 2) > version(1, 1));
        assert_eq!(version(1, 1), version(1, 1));
    }

    #[test]
    fn node_id_is_stable_for_a_name() {
        assert_eq!(NodeId::from_name("n1"), NodeId::from_name("n1"));
        assert_ne!(NodeId::from_name("n1"), NodeId::from_name("n2"));
        // Pinned: the id is part of every stored version and must never change.
        assert_eq!(NodeId::from_name("n1").to_string().len(), 16);
    }

    #[test]
    fn equal_typed_states_at_different_times_merge_to_one_record() {
        let mut counter = crate::types::Counter::default();
        counter.add(7, 2).unwrap();
        let state = State::Counter(counter);
        let early = Record::typed(state.clone(), Timestamp::from_u64(10), None);
        let late = Record::typed(state, Timestamp::from_u64(20), None);
        let Merged::Changed(a) = early.merge(&late) else {
            panic!("the later time must win")
        };
        assert_eq!(a, late);
        assert_eq!(late.merge(&early), Merged::Kept);
    }

    proptest! {
        #[test]
        fn stored_records_round_trip(hlc: u64, node: u64, value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)), expires: Option<u64>) {
            let payload = value.map_or(Payload::Tombstone, Payload::Value);
            let expires_ms = expires.filter(|_| !payload.is_tombstone());
            let record = Record {
                version: version(hlc, node),
                payload,
                expires_ms,
            };
            prop_assert_eq!(Record::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
        }
    }
}
