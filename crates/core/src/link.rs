//! Which connection carries a fetch, for a protocol that carries several
//! at once on one connection (SFTP: many parts on one SSH connection,
//! whose reads the server answers in order). A part silent while its
//! connection still brings bytes to the others waits its turn; taking it
//! over would only discard the reads it already asked for. The engine
//! reads a [`Carrier`] where it judges stalls; the protocol marks its
//! connection's [`ConnActivity`] as bytes come, from its read loop (one
//! clock read and one atomic store per packet).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What every [`ConnActivity`] counts from: instants are kept as
/// nanoseconds since it, in one atomic.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// When one connection last received anything, shared by every fetch it
/// carries. Clones share the same clock.
#[derive(Clone, Debug, Default)]
pub struct ConnActivity {
    /// Nanoseconds from [`base`] to the last receipt, plus one; 0 for
    /// none yet.
    last: Arc<AtomicU64>,
}

impl ConnActivity {
    /// A connection that has received nothing yet.
    pub fn new() -> ConnActivity {
        ConnActivity::default()
    }

    /// The connection received something (a packet, a reply) just now.
    pub fn received(&self) {
        self.received_at(Instant::now());
    }

    /// The connection received something at `at`.
    pub fn received_at(&self, at: Instant) {
        let since = at.saturating_duration_since(base());
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// When the connection last received anything, if ever.
    pub fn last_received(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            n => Some(base() + Duration::from_nanos(n - 1)),
        }
    }
}

/// The connection that carries one fetch now, as the protocol set it
/// in [`Fetched::carrier`](crate::Fetched::carrier): a fetch may move to
/// another connection while it runs. Clones follow the same fetch.
#[derive(Clone, Debug)]
pub struct Carrier {
    conn: Arc<Mutex<ConnActivity>>,
}

impl Carrier {
    /// A fetch carried by the connection whose activity is `conn`.
    pub fn new(conn: &ConnActivity) -> Carrier {
        Carrier {
            conn: Arc::new(Mutex::new(conn.clone())),
        }
    }

    /// The fetch moved to the connection whose activity is `conn`.
    pub fn moved_to(&self, conn: &ConnActivity) {
        if let Ok(mut now) = self.conn.lock() {
            *now = conn.clone();
        }
    }

    /// When the connection that carries the fetch last received anything.
    pub fn last_received(&self) -> Option<Instant> {
        self.conn.lock().ok()?.last_received()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_knows_its_latest_receipt_and_a_carrier_follows_moves() {
        let t0 = Instant::now();
        let a = ConnActivity::new();
        assert_eq!(a.last_received(), None);
        a.received_at(t0 + Duration::from_millis(20));
        // A receipt stamped earlier, by a reader that was slower to
        // record it, does not move the clock back.
        a.received_at(t0 + Duration::from_millis(10));
        assert_eq!(a.last_received(), Some(t0 + Duration::from_millis(20)));
        let carrier = Carrier::new(&a);
        assert_eq!(carrier.clone().last_received(), a.last_received());
        let b = ConnActivity::new();
        carrier.moved_to(&b);
        assert_eq!(carrier.last_received(), None);
        b.received_at(t0 + Duration::from_millis(5));
        assert_eq!(carrier.last_received(), Some(t0 + Duration::from_millis(5)));
    }
}
