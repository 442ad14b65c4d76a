//! The system clock. Only the runtime shell and the command line read it; the
//! mechanisms (HLC, membership, coordinator, anti-entropy exchange) take time as an
//! argument (DESIGN.md, principle 1).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the system clock (0 if the clock is set
/// before 1970).
pub fn system_wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch from the system clock (0 before 1970): the
/// resolution clock probes need.
pub fn system_wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
