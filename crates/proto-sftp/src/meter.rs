//! What one SSH connection measures of itself, for the pool's growth
//! (`growth.rs`) and the depth of each part's reads (`read.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a connection measures of itself: the bytes its reads brought, the
/// rate they came at, and the shortest round trip of a request.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    received: AtomicU64,
    /// Every byte read over the key's connections.
    key_received: Arc<AtomicU64>,
    /// Bytes per second as last measured, 0 before.
    rate: AtomicU64,
    /// The shortest time from a request to its reply, in microseconds; 0
    /// before one.
    rtt_us: AtomicU64,
    /// When the rate was last measured, and the bytes then.
    last: Mutex<Option<(Instant, u64)>>,
}

/// The rate is measured over at least this long: shorter, one late
/// reply halves it.
const RATE_PERIOD: Duration = Duration::from_millis(250);

impl Meter {
    pub(crate) fn new(key_received: Arc<AtomicU64>) -> Meter {
        Meter {
            key_received,
            ..Meter::default()
        }
    }

    /// `n` bytes of reads arrived.
    pub(crate) fn add(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.key_received.fetch_add(n, Ordering::Relaxed);
    }

    /// A request was answered `took` after it was sent.
    pub(crate) fn saw_round_trip(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .rtt_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                (old == 0 || us < old).then_some(us)
            });
    }

    pub(crate) fn rate(&self) -> Option<f64> {
        let r = self.rate.load(Ordering::Relaxed);
        (r > 0).then_some(r as f64)
    }

    pub(crate) fn rtt(&self) -> Option<Duration> {
        let us = self.rtt_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us))
    }

    /// Measures the rate since the last time, if long enough ago; the
    /// new rate is averaged with the old one, to smooth out bursts.
    pub(crate) fn update(&self, now: Instant) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let received = self.received.load(Ordering::Relaxed);
        match *last {
            Some((t0, b0)) if now.duration_since(t0) >= RATE_PERIOD => {
                let r = (received - b0) as f64 / now.duration_since(t0).as_secs_f64();
                let old = self.rate.load(Ordering::Relaxed) as f64;
                let new = if old > 0.0 { (old + r) / 2.0 } else { r };
                self.rate.store(new as u64, Ordering::Relaxed);
                *last = Some((now, received));
            }
            Some(_) => {}
            None => *last = Some((now, received)),
        }
    }
}
