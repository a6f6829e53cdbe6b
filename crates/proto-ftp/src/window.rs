//! The receive window of data connections, and the round trip it is sized
//! from.
//!
//! A `RETR` from `REST` has no end: a part that ends before the end of the
//! file is cut by closing its data connection, and whatever the server had
//! written into its socket by then counts as sent for nothing: our receive
//! window, and the server's send buffer, which Linux sizes from the segment
//! size and the congestion window. A receive buffer and a segment size
//! asked for before the connection opens keep both smaller (see
//! `docs/architecture.md`). The window is sized from the part's length, and
//! never below what the server's round trip needs for [`MIN_RATE`], so
//! distant servers keep their speed.
//!
//! The round trip is the shortest TCP handshake seen to the server, on its
//! control and data connections alike. One handshake timed on a busy
//! machine is mostly the time until the client's task ran again; the
//! shortest of many is the path's own (TCP's congestion control keeps the
//! minimum for the same reason).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pymatris_core::socks::SocksProxy;
use suppaftp::FtpError;
use suppaftp::FtpResult;
use tokio::net::{TcpSocket, TcpStream};

/// The shortest round trip seen to one server.
#[derive(Debug)]
pub(crate) struct RoundTrip {
    /// Nanoseconds; `u64::MAX` until the first sample.
    nanos: AtomicU64,
}

impl Default for RoundTrip {
    fn default() -> RoundTrip {
        RoundTrip {
            nanos: AtomicU64::new(u64::MAX),
        }
    }
}

impl RoundTrip {
    /// Takes one timed round trip into account.
    pub(crate) fn note(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX - 1);
        self.nanos.fetch_min(nanos, Ordering::Relaxed);
    }

    /// The shortest round trip seen, if any was.
    pub(crate) fn get(&self) -> Option<Duration> {
        let nanos = self.nanos.load(Ordering::Relaxed);
        (nanos != u64::MAX).then(|| Duration::from_nanos(nanos))
    }
}

/// The TCP receive window of a session's next data connection.
#[derive(Clone, Debug)]
pub(crate) struct DataWindow {
    bytes: Arc<AtomicU32>,
    /// The server's round trip, shared by all its sessions.
    rtt: Arc<RoundTrip>,
}

/// The receive window of a part cut after `len` bytes: this share of it.
const SHARE: u64 = 128;
/// Nor more than this share of it, whatever the round trip: a round trip
/// timed long (a busy machine, or the first one to a server) must not
/// waste a large part of a short part. A distant server then serves a
/// short part at a few dozen round trips, not one.
const MAX_SHARE: u64 = 32;
/// Smallest receive window asked for.
const MIN_WINDOW: u64 = 8 << 10;
/// From this window on, the system's own tuning is kept: it wastes no more
/// of a part than the window would.
const MAX_WINDOW: u64 = 4 << 20;
/// A window covers at least this rate (bytes per second) at the server's
/// round trip.
const MIN_RATE: f64 = 100e6;
/// The segment size asked for with a small window. Below the usual
/// Ethernet one, so that it changes nothing but on loopback and jumbo-frame
/// links, where segments of 64 KiB make the server's send buffer start at
/// megabytes.
const MSS: u32 = 1400;
/// Windows from this size on keep the system's segment size: the parts
/// they serve are long, where small segments on loopback cost more CPU
/// than the send buffer they save is worth.
const MSS_BELOW: u32 = 256 << 10;

impl DataWindow {
    /// For a session to a server whose round trips are noted in `rtt`.
    pub(crate) fn new(rtt: Arc<RoundTrip>) -> DataWindow {
        DataWindow {
            bytes: Arc::default(),
            rtt,
        }
    }

    /// Sizes the next data connection for a transfer that will be cut
    /// after `len` bytes, or leaves it to the system (`None`: to the end of
    /// the file).
    pub(crate) fn set(&self, cut_after: Option<u64>) {
        // No round trip timed yet: leave it to the system rather than
        // guess one that would slow a distant server.
        let bytes = cut_after
            .zip(self.rtt.get())
            .and_then(|(len, rtt)| window_for(len, rtt));
        tracing::trace!(?cut_after, rtt = ?self.rtt.get(), ?bytes, "data window");
        self.bytes.store(bytes.unwrap_or(0), Ordering::Relaxed);
    }

    /// Opens passive data connections with the window asked for, timing
    /// their handshakes into the server's round trip, or through the SOCKS
    /// proxy to the server's host (`through`; not timed: its handshake is
    /// the proxy's). The address the server's `PASV`/`EPSV` answer comes
    /// to is the control connection's peer with the port it gave
    /// (suppaftp's NAT workaround): through a proxy that peer is the proxy,
    /// so only the port is kept.
    pub(crate) fn builder(
        &self,
        through: Option<(SocksProxy, String)>,
    ) -> impl Fn(SocketAddr) -> Pin<Box<dyn Future<Output = FtpResult<TcpStream>> + Send + Sync>>
    + Send
    + Sync
    + 'static {
        let window = self.bytes.clone();
        let rtt = self.rtt.clone();
        move |addr| {
            let bytes = window.load(Ordering::Relaxed);
            let through = through.clone();
            let rtt = rtt.clone();
            Box::pin(async move {
                match through {
                    Some((proxy, host)) => proxy.connect(&host, addr.port()).await,
                    None => data_socket(addr, bytes, &rtt).await,
                }
                .map_err(FtpError::ConnectionError)
            })
        }
    }
}

/// The receive buffer for a transfer cut after `len` bytes, on a path with
/// a round trip of `rtt`; `None` leaves it to the system.
fn window_for(len: u64, rtt: Duration) -> Option<u32> {
    let for_rate = (rtt.as_secs_f64() * MIN_RATE) as u64;
    let window = (len / SHARE)
        .max(for_rate)
        .min(len / MAX_SHARE)
        .max(MIN_WINDOW);
    (window < MAX_WINDOW).then(|| u32::try_from(window).expect("below MAX_WINDOW"))
}

/// A TCP connection to `addr` with a receive buffer of `window` bytes and
/// a segment size to match (0: the system's own).
async fn data_socket(addr: SocketAddr, window: u32, rtt: &RoundTrip) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if window > 0 {
        // Only a saving: a system that refuses either still transfers.
        let _ = socket.set_recv_buffer_size(window);
        if window < MSS_BELOW {
            let _ = socket2::SockRef::from(&socket).set_tcp_mss(MSS);
        }
    }
    let dialed = Instant::now();
    let stream = socket.connect(addr).await?;
    rtt.note(dialed.elapsed());
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_transfer_gets_a_window_sized_from_its_length_and_round_trip() {
        let loopback = Duration::from_micros(50);
        // A small share of the part, with a floor.
        assert_eq!(window_for(2 << 20, loopback), Some(16 << 10));
        assert_eq!(window_for(100 << 10, loopback), Some(8 << 10));
        // Long parts waste no more than the system's own window would.
        assert_eq!(window_for(1 << 30, loopback), None);
        // A distant server: the window covers its round trip...
        assert_eq!(
            window_for(64 << 20, Duration::from_millis(10)),
            Some(1_000_000)
        );
        assert_eq!(window_for(256 << 20, Duration::from_millis(50)), None);
        // ...but never more than a share of the part: a short part, or a
        // round trip timed long on a busy machine, wastes little.
        assert_eq!(
            window_for(2 << 20, Duration::from_millis(10)),
            Some(64 << 10)
        );
        assert_eq!(
            window_for(1 << 20, Duration::from_millis(5)),
            Some(32 << 10)
        );
    }

    #[test]
    fn the_round_trip_is_the_shortest_seen() {
        let rtt = RoundTrip::default();
        assert_eq!(rtt.get(), None);
        rtt.note(Duration::from_millis(3));
        rtt.note(Duration::from_micros(80));
        // A handshake slowed by a busy machine changes nothing.
        rtt.note(Duration::from_millis(12));
        assert_eq!(rtt.get(), Some(Duration::from_micros(80)));
    }

    /// The windows of all sessions to a server follow the shortest round
    /// trip any of them timed.
    #[test]
    fn sessions_share_their_servers_round_trip() {
        let rtt = Arc::new(RoundTrip::default());
        let (a, b) = (DataWindow::new(rtt.clone()), DataWindow::new(rtt.clone()));
        a.set(Some(2 << 20));
        assert_eq!(a.bytes.load(Ordering::Relaxed), 0, "no round trip yet");
        rtt.note(Duration::from_millis(10));
        b.set(Some(64 << 20));
        assert_eq!(b.bytes.load(Ordering::Relaxed), 1_000_000);
        rtt.note(Duration::from_micros(50));
        a.set(Some(2 << 20));
        assert_eq!(a.bytes.load(Ordering::Relaxed), 16 << 10);
    }
}
