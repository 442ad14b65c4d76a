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
        match &self.payload {
            Payload::Value(v) => {
                out.push(KIND_VALUE);
                out.extend_from_slice(v);
            }
            Payload::Tombstone => out.push(KIND_TOMBSTONE),
            Payload::Typed(state) => {
                out.push(KIND_TYPED);
                out.extend_from_slice(&state.encode());
            }
        }
    }

    /// A typed record holding `state`, the latest of its updates made at `hlc`: its
    /// version's node part is a hash of the state, so two replicas hold the same version
    /// exactly when they hold the same state (an exchange tells them apart by version,
    /// and sends both ways where they differ).
    pub fn typed(state: State, hlc: Timestamp) -> Record {
        let hash = blake3::hash(&state.encode());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        Record {
            version: Version {
                hlc,
                node: NodeId(u64::from_be_bytes(first)),
            },
            payload: Payload::Typed(state),
        }
    }

    /// What the key holds once `incoming` reaches it where it holds `self`. Two typed
    /// records merge (the later update's time, the merged state); otherwise the higher
    /// version wins (last writer wins).
    pub fn merge(&self, incoming: &Record) -> Merged {
        if let (Payload::Typed(mine), Payload::Typed(theirs)) = (&self.payload, &incoming.payload)
            && mine.kind() == theirs.kind()
        {
            let mut state = mine.clone();
            if !state.merge(theirs) {
                return Merged::Kept;
            }
            let hlc = self.version.hlc.max(incoming.version.hlc);
            return Merged::Changed(Record::typed(state, hlc));
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
        let rest = &bytes[RECORD_HEADER_BYTES..];
        let payload = match bytes[16] {
            KIND_VALUE => Payload::Value(rest.to_vec()),
            KIND_TYPED => Payload::Typed(
                State::decode(rest)
                    .map_err(|e| RecordDecodeError::BadState { why: e.to_string() })?,
            ),
            KIND_TOMBSTONE if rest.is_empty() => Payload::Tombstone,
            KIND_TOMBSTONE => {
                return Err(RecordDecodeError::TombstoneWithValue { len: rest.len() });
            }
            kind => return Err(RecordDecodeError::UnknownKind { kind }),
        };
        Ok(Record { version, payload })
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

    proptest! {
        #[test]
        fn stored_records_round_trip(hlc: u64, node: u64, value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let record = Record {
                version: version(hlc, node),
                payload: value.map_or(Payload::Tombstone, Payload::Value),
            };
            prop_assert_eq!(Record::decode(&record.encode()), Ok(record));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
        }
    }
}
