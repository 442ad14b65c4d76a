//! Sealed statuses: a member's status travels from member to member (SWIM gossips it on),
//! so the connection it arrives on proves only who passed it on. Each status therefore
//! carries its author's signature, made with the private key of its node certificate,
//! and a status that reaches a node second-hand counts only if that signature checks
//! against the author's certificate. Only a member can publish its own status, and so
//! announce its own leave or the partitions it holds.
//!
//! Membership does no cryptography itself: the runtime gives it a [`StatusSeal`] that
//! signs with the node's key and checks with the certificates its peers presented.

use serde::{Deserialize, Serialize};

/// What a signature is computed over: this prefix, then the encoded status. The prefix
/// keeps a status signature from ever being taken for a signature of anything else.
const SEAL_CONTEXT: &[u8] = b"vergent membership status v1\0";

/// A signature over a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// The TLS signature scheme (its IANA code point).
    pub scheme: u16,
    /// The signature.
    pub signature: Vec<u8>,
}

/// A status as it travels: the encoded status, and its author's seal when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedStatus {
    /// The status, encoded (the bytes the seal covers).
    pub status: Vec<u8>,
    /// The author's signature.
    pub seal: Option<Seal>,
}

/// The bytes a seal over `status` signs.
pub fn sealed_message(status: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SEAL_CONTEXT.len() + status.len());
    message.extend_from_slice(SEAL_CONTEXT);
    message.extend_from_slice(status);
    message
}

/// What checking a seal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealCheck {
    /// The named member signed it.
    Valid,
    /// Not signed, or not by the named member: a forgery.
    Invalid,
    /// The named member's certificate is not known here yet (no connection with it so
    /// far): the status cannot be checked, and waits for a copy that can.
    UnknownKey,
}

/// Signs this node's statuses and checks other members'.
pub trait StatusSeal: Send + Sync {
    /// A seal over `message` ([`sealed_message`]) by this node, if it can sign.
    fn seal(&self, message: &[u8]) -> Option<Seal>;

    /// Whether `seal` is `member`'s over `message`.
    fn check(&self, member: &str, message: &[u8], seal: Option<&Seal>) -> SealCheck;

    /// The most bytes a seal of this node's takes in an encoded status.
    fn seal_bytes_max(&self) -> usize;
}

/// No sealing: every status is taken as its author's. For a membership that is not
/// reached through certificates (the simulator, unit tests); a running node always
/// checks.
pub struct Unsealed;

impl StatusSeal for Unsealed {
    fn seal(&self, _message: &[u8]) -> Option<Seal> {
        None
    }

    fn check(&self, _member: &str, _message: &[u8], _seal: Option<&Seal>) -> SealCheck {
        SealCheck::Valid
    }

    fn seal_bytes_max(&self) -> usize {
        0
    }
}
