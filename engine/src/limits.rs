//! The bounds on user input. Every key and value is checked here before it reaches
//! storage or the network, and the error names the limit that was passed.

/// Longest key in bytes: LMDB's 511-byte key limit less Vergent's own prefix, with
/// room to spare for future prefixes.
pub const KEY_BYTES_MAX: usize = 480;
/// Bytes a bucket other than `default` puts in front of a key it stores
/// ([`crate::buckets::BUCKET_KEY_OVERHEAD`]).
pub const BUCKET_KEY_BYTES: usize = 12;
/// Longest key as stored: a user key with its bucket's prefix.
pub const STORED_KEY_BYTES_MAX: usize = KEY_BYTES_MAX + BUCKET_KEY_BYTES;
/// Default largest value in bytes (1 MiB).
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// The largest value limit a node accepts in its configuration (64 MiB).
pub const VALUE_BYTES_MAX_CEILING: usize = 64 << 20;
/// Room in a frame for everything but the value: key, version, message framing.
pub const FRAME_OVERHEAD_BYTES: usize = 64 << 10;

/// Why a key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Keys must have at least one byte.
    #[error("empty key: a key must be 1 to {KEY_BYTES_MAX} bytes")]
    EmptyKey,
    /// The key is longer than [`KEY_BYTES_MAX`].
    #[error("key too long: {len} bytes, the limit is {KEY_BYTES_MAX} bytes")]
    KeyTooLong {
        /// Bytes in the key.
        len: usize,
    },
    /// The value is larger than the node's limit.
    #[error("value too large: {len} bytes, the limit is {max} bytes")]
    ValueTooLarge {
        /// Bytes in the value.
        len: usize,
        /// The node's `value_bytes_max`.
        max: usize,
    },
}

/// Checks a key against [`KEY_BYTES_MAX`].
pub fn check_key(key: &[u8]) -> Result<(), LimitError> {
    match key.len() {
        0 => Err(LimitError::EmptyKey),
        len if len > KEY_BYTES_MAX => Err(LimitError::KeyTooLong { len }),
        _ => Ok(()),
    }
}

/// Checks a value against `max` bytes.
pub fn check_value(value: &[u8], max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The frame limit that fits one value of `value_bytes_max` with its envelope.
pub fn frame_bytes_max(value_bytes_max: usize) -> usize {
    value_bytes_max + FRAME_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_480_bytes() {
        assert_eq!(check_key(b""), Err(LimitError::EmptyKey));
        assert!(check_key(&[0; 1]).is_ok());
        assert!(check_key(&[0; KEY_BYTES_MAX]).is_ok());
        let err = check_key(&[0; 600]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key too long: 600 bytes, the limit is 480 bytes"
        );
    }

    #[test]
    fn values_are_bounded_by_the_configured_limit() {
        assert!(check_value(&[0; 10], 10).is_ok());
        let err = check_value(&[0; 11], 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value too large: 11 bytes, the limit is 10 bytes"
        );
    }
}
