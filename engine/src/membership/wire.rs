//! The membership datagram as it crosses the wire: SWIM's header (who sends it, to
//! whom, what it is), the member updates it piggybacks, then the statuses it carries,
//! each with its length. The codec is foca's postcard codec, the one membership speaks.
//!
//! The runtime reads only the header, to bind the sender to its certificate; the
//! encoder is for tools and tests that have to speak as a member (and for fuzzing).

use bytes::BufMut;
use foca::{Codec, Header, Member, Message, PostcardCodec};

use super::MemberId;
use super::seal::{Seal, SealedStatus};
use super::status::GossipStatus;

/// Why a datagram could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// postcard refused a part of it.
    #[error("cannot encode a membership datagram: {0}")]
    Encode(String),
    /// A part is larger than its length field can say.
    #[error("a membership datagram part of {bytes} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// The SWIM header at the start of `data`, if it has one.
pub fn header(data: &[u8]) -> Option<Header<MemberId>> {
    PostcardCodec.decode_header(data).ok()
}

/// Encodes a datagram: `header`, then `updates` (not for [`Message::Broadcast`], which
/// carries statuses only), then each of `statuses` ([`encode_status`]).
pub fn encode(
    header: &Header<MemberId>,
    updates: &[Member<MemberId>],
    statuses: &[Vec<u8>],
) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    let encode_err = |e: postcard::Error| WireError::Encode(e.to_string());
    PostcardCodec
        .encode_header(header, &mut out)
        .map_err(encode_err)?;
    if header.message != Message::Broadcast {
        let count = u16::try_from(updates.len()).map_err(|_| WireError::TooLarge {
            bytes: updates.len(),
            limit: usize::from(u16::MAX),
        })?;
        out.put_u16(count);
        for update in updates {
            PostcardCodec
                .encode_member(update, &mut out)
                .map_err(encode_err)?;
        }
    }
    for status in statuses {
        let len = u16::try_from(status.len()).map_err(|_| WireError::TooLarge {
            bytes: status.len(),
            limit: usize::from(u16::MAX),
        })?;
        out.put_u16(len);
        out.put_slice(status);
    }
    Ok(out)
}

/// A status as membership disseminates it: encoded, with its seal.
pub fn encode_status(status: &[u8], seal: Option<Seal>) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(&SealedStatus {
        status: status.to_vec(),
        seal,
    })
    .map_err(|e| WireError::Encode(e.to_string()))
}

/// A status's own encoding (what its seal covers).
pub fn status_bytes(status: &GossipStatus) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(status).map_err(|e| WireError::Encode(e.to_string()))
}
