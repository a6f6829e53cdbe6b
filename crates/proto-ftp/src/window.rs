//! The receive window of data connections, and the round trip it is sized
//! from.
//!
//! A `RETR` from `REST` has no end: a part that ends before the end of the
//! file is cut by closing its data connection, and whatever the server had
//! put on the wire past the cut by then is sent for nothing. That is at
//! most the receive window we offered when the cut came. A data connection
//! of such a part therefore opens with a small window (the tail window:
//! 1/128 of the part, and at least what the server's round trip needs for
//! [`MIN_RATE`]). Once its pace shows that it will be done before the
//! engine would cut it early (and it did not wait long for its bytes), its
//! receive buffer grows to the bulk window (1/8 of the part), and as the
//! bytes left come within what that window could let past the planned
//! cut, it shrinks back in steps (a quarter of the bytes left each time),
//! so that the speed falls with the bytes left ([`Tail`]). TCP never takes
//! back a window it offered, so each step comes early enough for the old
//! window to end before the cut.
//!
//! Below [`MSS_BELOW`] the connection asks for a small segment size before
//! it opens: a sender holds back a segment the window cannot take whole,
//! and waits for its probe timer when the window is smaller than one
//! segment (64 KiB on loopback). Small segments cost CPU on loopback; the
//! bulk window is what wins most of it back (`docs/benchmarks.md`, "FTP
//! with many parts regressed").
//!
//! The round trip is the shortest TCP handshake seen to the server, on its
//! control and data connections alike. One handshake timed on a busy
//! machine is mostly the time until the client's task ran again; the
//! shortest of many is the path's own (TCP's congestion control keeps the
//! minimum for the same reason).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The receive windows of a session's next data connection.
#[derive(Clone, Debug)]
pub(crate) struct DataWindow {
    /// The next [`Plan`], packed (`bulk << 32 | tail`); 0 for none.
    plan: Arc<AtomicU64>,
    /// The server's round trip, shared by all its sessions.
    rtt: Arc<RoundTrip>,
}

/// The receive buffers asked for on a data connection of a cut part: at
/// first, and for the last bytes before the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) bulk: u32,
    pub(crate) tail: u32,
}

/// The tail window of a part cut after `len` bytes: this share of it.
const SHARE: u64 = 128;
/// Nor more than this share of it, whatever the round trip: a round trip
/// timed long (a busy machine, or the first one to a server) must not
/// waste a large part of a short part. A distant server then serves the
/// tail of a short part at a few dozen round trips, not one.
const MAX_SHARE: u64 = 32;
/// The bulk window: this share of the part. The last bulk window's worth
/// of the part comes through the tail window, so the bulk is a small
/// share.
const BULK_SHARE: u64 = 8;
/// Smallest receive window asked for.
const MIN_WINDOW: u64 = 8 << 10;
/// From this window on, the system's own tuning is kept: it wastes no more
/// of a part than the window would.
const MAX_WINDOW: u64 = 4 << 20;
/// A window covers at least this rate (bytes per second) at the server's
/// round trip.
const MIN_RATE: f64 = 100e6;
/// What the TLS layer may have read from the socket ahead of the bytes it
/// gave us: a record, and some.
const READ_AHEAD: u64 = 64 << 10;
/// The segment size asked for with a small tail window. Below the usual
/// Ethernet one, so that it changes nothing but on loopback and jumbo-frame
/// links, where a tail window of a few dozen KiB is less than one segment.
const MSS: u32 = 1400;
/// Tail windows from this size on keep the system's segment size.
const MSS_BELOW: u32 = 256 << 10;

impl DataWindow {
    /// For a session to a server whose round trips are noted in `rtt`.
    pub(crate) fn new(rtt: Arc<RoundTrip>) -> DataWindow {
        DataWindow {
            plan: Arc::default(),
            rtt,
        }
    }

    /// Sizes the next data connection for a transfer that will be cut
    /// after `len` bytes, or leaves it to the system (`None`: to the end of
    /// the file). Returns the plan, for the [`Tail`] of the transfer.
    pub(crate) fn set(&self, cut_after: Option<u64>) -> Option<Plan> {
        // No round trip timed yet: leave it to the system rather than
        // guess one that would slow a distant server.
        let plan = cut_after
            .zip(self.rtt.get())
            .and_then(|(len, rtt)| plan_for(len, rtt));
        tracing::trace!(?cut_after, rtt = ?self.rtt.get(), ?plan, "data window");
        let packed = plan.map_or(0, |p| (u64::from(p.bulk) << 32) | u64::from(p.tail));
        self.plan.store(packed, Ordering::Relaxed);
        plan
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
        let plan = self.plan.clone();
        let rtt = self.rtt.clone();
        move |addr| {
            let plan = unpack(plan.load(Ordering::Relaxed));
            let through = through.clone();
            let rtt = rtt.clone();
            Box::pin(async move {
                match through {
                    Some((proxy, host)) => {
                        let stream = proxy.connect(&host, addr.port()).await;
                        // The proxy dialled: the buffer is set once the
                        // connection is up (the segment size is the
                        // proxy's to choose).
                        if let (Ok(stream), Some(plan)) = (&stream, plan) {
                            let _ = socket2::SockRef::from(stream)
                                .set_recv_buffer_size(plan.tail as usize);
                        }
                        stream
                    }
                    None => data_socket(addr, plan, &rtt).await,
                }
                .map_err(FtpError::ConnectionError)
            })
        }
    }
}

/// The tail receive buffer for a transfer cut after `len` bytes, on a path
/// with a round trip of `rtt`; `None` leaves it to the system.
fn window_for(len: u64, rtt: Duration) -> Option<u32> {
    let window = (len / SHARE)
        .max(for_rate(rtt))
        .min(len / MAX_SHARE)
        .max(MIN_WINDOW);
    (window < MAX_WINDOW).then(|| u32::try_from(window).expect("below MAX_WINDOW"))
}

fn for_rate(rtt: Duration) -> u64 {
    (rtt.as_secs_f64() * MIN_RATE) as u64
}

/// Both windows of a transfer cut after `len` bytes; `None` leaves it to
/// the system.
fn plan_for(len: u64, rtt: Duration) -> Option<Plan> {
    let tail = window_for(len, rtt)?;
    let bulk = (len / BULK_SHARE)
        .max(for_rate(rtt))
        .clamp(u64::from(tail), MAX_WINDOW);
    Some(Plan {
        bulk: u32::try_from(bulk).expect("at most MAX_WINDOW"),
        tail,
    })
}

fn unpack(packed: u64) -> Option<Plan> {
    (packed != 0).then_some(Plan {
        bulk: (packed >> 32) as u32,
        tail: packed as u32,
    })
}

/// A TCP connection to `addr` with the tail receive buffer of `plan`, and
/// the segment size it needs (none: the system's own).
async fn data_socket(
    addr: SocketAddr,
    plan: Option<Plan>,
    rtt: &RoundTrip,
) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(plan) = plan {
        // Only a saving: a system that refuses either still transfers.
        let _ = socket.set_recv_buffer_size(plan.tail);
        if plan.tail < MSS_BELOW {
            let _ = socket2::SockRef::from(&socket).set_tcp_mss(MSS);
        }
    }
    let dialed = Instant::now();
    let stream = socket.connect(addr).await?;
    rtt.note(dialed.elapsed());
    Ok(stream)
}

/// Grows the receive buffer of a cut transfer's data connection once the
/// part will be done soon, and shrinks it again as the cut comes within
/// reach of its window.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Bytes up to the cut.
    left: u64,
    /// Bytes read.
    read: u64,
    /// When the engine asked for the part, and when its bytes began.
    asked_at: Instant,
    started: Instant,
    /// The bulk receive buffer, until asked for; then 0.
    bulk: u64,
    /// The smallest receive buffer to ask for.
    tail: u64,
    /// The last one asked for on the way down; 0 before the first.
    asked: u64,
    /// The system's receive buffer as last read back (`None`: unknown).
    /// Read at the start and after each change we make: a buffer set
    /// explicitly (every data connection of a plan's, see
    /// `DataWindow::builder`) is never resized by the system, and a read
    /// at each chunk would cost a system call each.
    buffer: Option<u64>,
}

/// The window grows only after this many tail windows' worth of bytes,
/// and this long, which time the part's pace.
const PACE_AFTER: u64 = 4;
const PACE_AFTER_TIME: Duration = Duration::from_millis(10);
/// The window grows only for a part that, at its pace, will be done this
/// soon. The engine cuts a running part inside its request only when it is
/// further from done (twice `SPLIT_HORIZON`, in core's scheduler): a cut
/// in the middle of a part wastes its whole window, so a part that may be
/// cut keeps the tail window.
const DONE_WITHIN: f64 = 0.5;
/// Nor for a part whose bytes began this long after it was asked for (a
/// slow login): the engine may have cut it while it waited, unknown to us
/// (after `SPLIT_HORIZON` of waiting).
const WAITED_AT_MOST: Duration = Duration::from_millis(500);

impl Tail {
    /// For a data connection `socket` opened under `plan`, cut after
    /// `len` bytes, for a part asked for at `asked_at`.
    pub(crate) fn new(plan: Plan, len: u64, socket: &impl AsFd, asked_at: Instant) -> Tail {
        // Whatever segment size the connection got: two of them.
        let sock = socket2::SockRef::from(socket);
        let segment = sock.tcp_mss().unwrap_or(0);
        let tail = u64::from(plan.tail.max(segment.next_power_of_two()));
        Tail {
            buffer: sock.recv_buffer_size().ok().map(|b| b as u64),
            left: len,
            read: 0,
            asked_at,
            started: Instant::now(),
            bulk: u64::from(plan.bulk).max(tail),
            tail,
            asked: 0,
        }
    }

    /// Asks for the bulk window when the part will be done soon at its
    /// pace, began soon after it was asked for, and still has several bulk
    /// windows to go.
    fn grow(&mut self, sock: &socket2::SockRef<'_>) {
        if self.bulk == 0 || self.read < PACE_AFTER * self.tail {
            return;
        }
        if self.left <= 4 * self.bulk + READ_AHEAD
            || self.started.saturating_duration_since(self.asked_at) >= WAITED_AT_MOST
        {
            // Too late to be worth it.
            self.bulk = 0;
            return;
        }
        let elapsed = self.started.elapsed();
        if elapsed < PACE_AFTER_TIME {
            return;
        }
        let pace = self.read as f64 / elapsed.as_secs_f64();
        if (self.left as f64) < pace * DONE_WITHIN {
            // Only a saving: a system that refuses it still transfers.
            let _ = sock.set_recv_buffer_size(self.bulk as usize);
            self.buffer = sock.recv_buffer_size().ok().map(|b| b as u64);
            tracing::trace!(left = self.left, bulk = self.bulk, "data window grown");
            self.bulk = 0;
        }
    }

    /// How many bytes may be read before the window must shrink again
    /// (`None`: any number). Shrinks it when that is none.
    pub(crate) fn allowed(&mut self, socket: &impl AsFd) -> Option<u64> {
        let sock = socket2::SockRef::from(socket);
        if self.asked == 0 {
            self.grow(&sock);
        }
        loop {
            if self.asked == self.tail {
                return None;
            }
            // How far past what we have read the window may reach: the
            // system's receive buffer (which bounds the window), and what
            // the TLS layer may have read ahead. Unknown, the cut is taken
            // as within reach.
            let reach = self.buffer.unwrap_or(u64::MAX);
            match self.left.saturating_sub(reach.saturating_add(READ_AHEAD)) {
                0 => {
                    let next = (self.left / 4).max(self.tail);
                    self.asked = match self.asked {
                        0 => next,
                        // Never larger: the loop ends at the tail.
                        asked => next.min(asked / 2).max(self.tail),
                    };
                    // Only a saving: a system that refuses it still
                    // transfers.
                    let _ = sock.set_recv_buffer_size(self.asked as usize);
                    self.buffer = sock.recv_buffer_size().ok().map(|b| b as u64);
                    tracing::trace!(left = self.left, asked = self.asked, "data window shrunk");
                }
                n => return Some(n),
            }
        }
    }

    /// Counts `n` bytes read.
    pub(crate) fn read(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n as u64);
        self.read += n as u64;
    }
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
        assert_eq!(a.set(Some(2 << 20)), None, "no round trip yet");
        assert_eq!(a.plan.load(Ordering::Relaxed), 0);
        rtt.note(Duration::from_millis(10));
        let far = b.set(Some(64 << 20)).unwrap();
        assert_eq!(far.tail, 1_000_000);
        rtt.note(Duration::from_micros(50));
        let near = a.set(Some(2 << 20)).unwrap();
        assert_eq!(near.tail, 16 << 10);
        assert_eq!(
            a.plan.load(Ordering::Relaxed),
            (u64::from(near.bulk) << 32) | (16 << 10)
        );
    }

    /// A cut part opens with a window for speed; only its tail is small.
    #[test]
    fn the_bulk_window_is_a_share_of_the_part_and_covers_the_round_trip() {
        let loopback = Duration::from_micros(50);
        let plan = plan_for(16 << 20, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (2 << 20, 128 << 10));
        let plan = plan_for(3 << 20, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (384 << 10, 24 << 10));
        // A short part: no bulk window below the tail one.
        let plan = plan_for(256 << 10, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (32 << 10, 8 << 10));
        let plan = plan_for(32 << 10, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (8 << 10, 8 << 10));
        // A distant server: the bulk covers its round trip...
        let plan = plan_for(8 << 20, Duration::from_millis(20)).unwrap();
        assert_eq!((plan.bulk, plan.tail), (2_000_000, 256 << 10));
        // ...up to where the system's own tuning takes over.
        let plan = plan_for(64 << 20, Duration::from_millis(20)).unwrap();
        assert_eq!((plan.bulk, plan.tail), (4 << 20, 2_000_000));
        assert_eq!(plan_for(1 << 30, loopback), None);
    }

    /// The receive buffer shrinks in steps as the cut comes within reach
    /// of the window, down to the tail window and never below two
    /// segments.
    #[test]
    fn the_window_shrinks_as_the_cut_comes_within_reach() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let plan = Plan {
            bulk: 256 << 10,
            tail: 8 << 10,
        };
        socket.set_recv_buffer_size(plan.bulk as usize).unwrap();
        socket
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let buffer = || socket.recv_buffer_size().unwrap() as u64;
        let bulk = buffer();
        let segment = socket.tcp_mss().unwrap();
        let len = 4 << 20;
        let mut tail = Tail::new(plan, len, &socket, Instant::now());
        let mut left = len;
        let allowed = tail.allowed(&socket).unwrap();
        assert_eq!(allowed, len - bulk - READ_AHEAD);
        assert_eq!(buffer(), bulk, "not yet");
        // Reads up to each step: the window then never reaches past the
        // cut, and shrinks each time.
        let mut last = bulk;
        let mut steps = 0;
        let mut step = Some(allowed);
        while let Some(n) = step {
            assert!(left - n >= buffer() + READ_AHEAD);
            tail.read(n as usize);
            left -= n;
            step = tail.allowed(&socket);
            assert!(buffer() < last, "{} after {last}", buffer());
            last = buffer();
            steps += 1;
        }
        assert!(steps > 2, "in steps: {steps}");
        let floor = u64::from(plan.tail.max(segment.next_power_of_two()));
        assert!(buffer() >= floor, "{} for {floor}", buffer());
        assert!(
            buffer() >= 2 * u64::from(segment),
            "{} for {segment}",
            buffer()
        );
        assert!(
            buffer() <= 2 * floor + (4 << 10),
            "{} for {floor}",
            buffer()
        );
        // At the tail: no more steps.
        tail.read(4096);
        assert_eq!(tail.allowed(&socket), None);
        assert_eq!(buffer(), last);
    }

    fn connected(buffer: u32) -> (std::net::TcpListener, socket2::Socket) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(buffer as usize).unwrap();
        socket
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        (listener, socket)
    }

    /// A part that will be done soon at its pace gets the bulk window; one
    /// that waited long for its bytes (a slow login: the engine may have
    /// cut it meanwhile) keeps the tail window.
    #[test]
    fn only_a_part_done_soon_after_it_was_asked_for_grows_its_window() {
        let plan = Plan {
            bulk: 128 << 10,
            tail: 16 << 10,
        };
        // Done soon at its pace (unless this test stalls for most of
        // a second): two thirds read, at once.
        let len = 3 << 20;
        for (waited, grows) in [(Duration::ZERO, true), (Duration::from_secs(2), false)] {
            let (_listener, socket) = connected(plan.tail);
            let small = socket.recv_buffer_size().unwrap();
            let asked_at = Instant::now() - waited;
            let mut tail = Tail::new(plan, len, &socket, asked_at);
            tail.allowed(&socket);
            std::thread::sleep(PACE_AFTER_TIME);
            tail.read(2 << 20);
            tail.allowed(&socket);
            let now = socket.recv_buffer_size().unwrap();
            assert_eq!(now > small, grows, "waited {waited:?}: {now} from {small}");
        }
    }
}
