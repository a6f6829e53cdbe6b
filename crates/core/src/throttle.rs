//! `--max-speed`: one token bucket shared by every transfer of a batch.
//! A part that received a chunk waits here before it asks for the next, so
//! TCP's flow control slows the server down; no byte is held back.
//!
//! Hand-written rather than `governor`: that crate's cells are `u32` counts
//! with a burst that every request must fit in, and it brings a clock and a
//! concurrent map that a bucket of one float does not need.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bandwidth cap in bytes per second.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `rate` bytes per second, with a burst of a tenth of a second (at
    /// least 64 KiB).
    pub(crate) fn new(rate: u64) -> Throttle {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(64.0 * 1024.0);
        Throttle {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Accounts for `bytes` received, and says how long to wait before the
    /// next read: the bucket may go into debt, which is paid by waiting.
    fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let mut state = self.state.lock().expect("throttle poisoned");
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst) - bytes as f64;
        *last = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }

    /// Waits as long as the cap asks after receiving `bytes`.
    pub(crate) async fn take(&self, bytes: u64) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_by_waiting() {
        let t = Throttle::new(1_000_000);
        let start = Instant::now();
        // The burst (100 kB) is free; beyond it, a second per megabyte.
        assert_eq!(t.charge(100_000, start), Duration::ZERO);
        let wait = t.charge(500_000, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Half a second later the debt is paid, and nothing is owed.
        let later = start + Duration::from_millis(500);
        assert_eq!(t.charge(0, later), Duration::ZERO);
        // Unused time does not pile up beyond the burst.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(t.charge(100_000, much_later), Duration::ZERO);
        assert!(t.charge(100_000, much_later) > Duration::from_millis(99));
    }
}
