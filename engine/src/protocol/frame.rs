//! Length-prefixed frames: `u32` big-endian length, then a postcard message.
//!
//! The length is checked against the caller's limit before any buffer is reserved, and
//! the buffer then grows only as bytes actually arrive, so a peer that announces a huge
//! frame, or trickles one, costs at most what it really sent.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in the length prefix.
pub const LENGTH_BYTES: usize = 4;
/// Initial buffer reserved for a frame body, whatever length it announces.
const INITIAL_RESERVE_BYTES: usize = 16 << 10;

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced or encoded length is over the limit; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended after {got} of {expected} bytes of a frame")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        expected: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(postcard::Error),
    /// The transport failed.
    #[error("transport error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `message` as one frame (prefix included), refusing one over `limit` bytes.
pub fn encode<T: Serialize>(message: &T, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut out =
        postcard::to_extend(message, vec![0u8; LENGTH_BYTES]).map_err(FrameError::Malformed)?;
    let len = out.len() - LENGTH_BYTES;
    if len > limit || len > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit,
        });
    }
    out[..LENGTH_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame body (without the prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(FrameError::Malformed)
}

/// Decodes one frame from the front of `bytes`: the message and the bytes it used, or
/// `None` when more bytes are needed.
pub fn decode_frame<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(prefix) = bytes.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len > limit {
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit,
        });
    }
    let Some(body) = bytes.get(LENGTH_BYTES..LENGTH_BYTES + len) else {
        return Ok(None);
    };
    Ok(Some((decode(body)?, LENGTH_BYTES + len)))
}

/// Reads one frame body. `Ok(None)` when the stream ends cleanly before a frame starts.
pub async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LENGTH_BYTES];
    let mut got = 0;
    while got < LENGTH_BYTES {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                got,
                expected: LENGTH_BYTES,
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit,
        });
    }
    let mut body = Vec::with_capacity(len.min(INITIAL_RESERVE_BYTES));
    reader.take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(FrameError::Truncated {
            got: body.len(),
            expected: len,
        });
    }
    Ok(Some(body))
}

/// Reads and decodes one message; a clean end of stream is an error here.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<T, FrameError> {
    match read(reader, limit).await? {
        Some(body) => decode(&body),
        None => Err(FrameError::Truncated {
            got: 0,
            expected: LENGTH_BYTES,
        }),
    }
}

/// Encodes and writes one message.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &T,
    limit: usize,
) -> Result<(), FrameError> {
    let frame = encode(message, limit)?;
    writer.write_all(&frame).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, Response};
    use proptest::prelude::*;

    #[test]
    fn a_frame_round_trips() {
        let request = Request::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            consistency: None,
            after: None,
        };
        let frame = encode(&request, 1024).unwrap();
        let (decoded, used): (Request, usize) = decode_frame(&frame, 1024).unwrap().unwrap();
        assert_eq!(decoded, request);
        assert_eq!(used, frame.len());
    }

    #[test]
    fn a_huge_announced_length_is_refused_before_allocating() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = decode_frame::<Request>(&bytes, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 1048576 bytes"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(read(&mut &bytes[..], 1 << 20))
            .unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 4294967295,
                ..
            }
        ));
    }

    #[test]
    fn encoding_over_the_limit_is_refused() {
        let request = Request::Put {
            key: b"k".to_vec(),
            value: vec![0; 100],
            consistency: None,
            after: None,
        };
        assert!(matches!(
            encode(&request, 50),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = [0, 0, 0, 10, 1, 2];
        let err = runtime.block_on(read(&mut &bytes[..], 1024)).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Truncated {
                got: 2,
                expected: 10
            }
        ));
    }

    proptest! {
        /// Whatever bytes arrive, decoding either yields a message, asks for more, or
        /// fails cleanly: it never panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Request>(&bytes, 1 << 20);
            let _ = decode_frame::<Response>(&bytes, 1 << 20);
            let _ = decode::<Request>(&bytes);
        }

        /// A valid frame with arbitrary bytes mixed in still never panics.
        #[test]
        fn corrupting_a_valid_frame_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let request = Request::Replicate { entries: vec![] };
            let mut frame = encode(&request, 1024).unwrap();
            for (at, byte) in flips {
                let at = at % frame.len();
                frame[at] = byte;
            }
            let _ = decode_frame::<Request>(&frame, 1024);
        }
    }
}
