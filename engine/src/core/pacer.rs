//! A token bucket over the bytes of entries anti-entropy moves, so repair never starves
//! clients: a step that would take more than the bucket holds goes later.

use crate::base::Millis;

/// The bucket: bytes available, as of a monotonic time.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    state: Option<(f64, u64)>,
}

impl Pacer {
    /// Takes `bytes` at `now` with `per_sec` the rate (0: unlimited): when the step may
    /// go, `now` or later. A step of no bytes still waits for the bytes taken before it
    /// (what was received counts too).
    pub(super) fn take(&mut self, bytes: u64, per_sec: u64, now: Millis) -> Millis {
        if per_sec == 0 {
            return now;
        }
        let rate = per_sec as f64;
        let (tokens, last) = self.state.unwrap_or((rate, now.0));
        let elapsed = now.0.saturating_sub(last) as f64 / 1000.0;
        let left = (tokens + elapsed * rate).min(rate) - bytes as f64;
        self.state = Some((left, now.0.max(last)));
        if left >= 0.0 {
            now
        } else {
            Millis(now.0 + (-left / rate * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_past_the_bucket_waits_for_its_bytes() {
        let mut pacer = Pacer::default();
        assert_eq!(pacer.take(500, 1000, Millis(0)), Millis(0));
        assert_eq!(pacer.take(500, 1000, Millis(0)), Millis(0));
        // Empty now: 1000 bytes more take a second.
        assert_eq!(pacer.take(1000, 1000, Millis(0)), Millis(1000));
        // A step of nothing waits for what was taken before it.
        assert_eq!(pacer.take(0, 1000, Millis(500)), Millis(1000));
        assert_eq!(pacer.take(1, 0, Millis(5)), Millis(5), "no limit");
    }
}
