//! Telling a full device apart from other write failures, in the operating system's
//! words.

use super::*;

impl Tables {
    /// What a failed write means. A full device shows first as ENOSPC, but mostly as
    /// EIO: LMDB writes dirty pages with `pwrite` and reports a short write (the kernel
    /// wrote what still fitted) as EIO, and once a device is full nearly every write
    /// comes up short. So the device's own ENOSPC is remembered until a commit succeeds
    /// again, and an EIO in that streak is the same full device; an EIO with no ENOSPC
    /// before it counts as a full device only if the device has (almost) no room left
    /// (statvfs). Either way the message names the device's error, not EIO.
    pub(super) fn write_error(&self, context: &'static str, err: heed::Error) -> StoreError {
        let io = match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => {
                return StoreError::Full {
                    map_size_bytes: self.map_size_bytes,
                };
            }
            heed::Error::Io(io) => io,
            other => return StoreError::lmdb(context)(other),
        };
        let cause = {
            let mut streak = self.no_space.lock().expect("no-space lock");
            no_space_cause(&io, &mut streak, || available_bytes(&self.dir))
        };
        match cause {
            Some(cause) => StoreError::DeviceFull {
                path: self.dir.clone(),
                cause,
                available_bytes: available_bytes(&self.dir),
            },
            None => StoreError::lmdb(context)(heed::Error::Io(io)),
        }
    }
}

/// The device's error behind a failed write when the device is full, remembering an
/// ENOSPC in `streak`; see [`Tables::write_error`].
pub(super) fn no_space_cause(
    err: &std::io::Error,
    streak: &mut Option<String>,
    available: impl FnOnce() -> Option<u64>,
) -> Option<String> {
    match err.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => {
            let cause = os_error_text(err, code);
            *streak = Some(cause.clone());
            Some(cause)
        }
        Some(libc::EIO) => streak.clone().or_else(|| {
            available()
                .is_some_and(|free| free < DEVICE_FULL_BYTES)
                .then(|| "No space left on device: a write came up short".to_string())
        }),
        _ => None,
    }
}

/// Free bytes below which a short write is taken for a full device: a write comes up
/// short only when the device cannot hold it, and then it has next to nothing left.
const DEVICE_FULL_BYTES: u64 = 1 << 20;

/// "No space left on device, os error 28": the operating system's words and number.
fn os_error_text(err: &std::io::Error, code: i32) -> String {
    let text = err.to_string();
    let suffix = format!(" (os error {code})");
    match text.strip_suffix(&suffix) {
        Some(words) => format!("{words}, os error {code}"),
        None => text,
    }
}

/// Bytes free to unprivileged writers on the device holding `dir`, if it can be told.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) only writes into the struct it is given, which is plain data
    // (all-zero is a valid value), and reads the NUL-terminated path it is given.
    #[allow(unsafe_code)]
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stat) == 0).then_some(stat)
    }?;
    // The field types are u64 here but narrower on some platforms.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}
