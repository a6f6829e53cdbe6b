//! The receive window of data connections, and the round trip it is sized
//! from.
//!
//! A `RETR` from `REST` has no end: a part that ends before the end of the
//! file is cut by closing its data connection, and whatever the server had
//! put on the wire past the cut by then is sent for nothing. That is at
//! most the receive window we offered when the cut came. The engine tells
//! a transfer where its part now ends ([`PartEnd`]), also when it gives
//! the back of a running part to another connection (always far from
//! where the part has got to). A data connection of a part that ends
//! before the end of the file therefore opens with the bulk window (1/8 of
//! the part up to [`BULK`], and at least what the server's round trip needs
//! for [`MIN_RATE`]). What it lets past the bytes read stays within half
//! the bytes left (where the engine would cut the part next) and within
//! [`CUT_NOTICE`] at the transfer's pace; as the end nears, the window
//! shrinks in steps (halving) down to the tail window (1/128 of the part as
//! it is now, and never below two segments, under which a sender that saw
//! a larger window waits for its probe timer), so that the speed falls with
//! the bytes left ([`Tail`]). TCP never takes back a window it offered, so
//! each step comes early enough for the old window to end before the end.
//! The transfer stops there: its last bytes are read up to the end and no
//! further. The segment size is the system's but where two of them would
//! not fit in the tail window (parts under 16 MiB, on loopback's 64 KiB
//! segments): there it is half the tail window, never below 1400 bytes.
//! Each segment costs CPU on loopback whatever its size, so that is as few
//! as the tail allows (`docs/benchmarks.md`, "The engine tells FTP where a
//! part ends").
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

use pymatris_core::PartEnd;
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
/// first, and for the last bytes before the end.
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
/// The bulk window: this share of the part, up to [`BULK`], and at least
/// what the round trip needs for [`MIN_RATE`]. The last bulk window's
/// worth of the part comes through ever smaller windows, so the bulk is a
/// small share.
const BULK_SHARE: u64 = 8;
/// A bulk window this large already keeps a loopback connection at full
/// speed, with the system's segment size. A larger one only fills with
/// bytes the client has not read yet (under a bandwidth cap, or a slow
/// disk), and a buffer that shrinks under them drops what arrives next:
/// sent twice.
const BULK: u64 = 256 << 10;
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
/// The smallest segment size asked for.
const MIN_SEGMENT: u32 = 1400;
/// Segments from this size on are the system's to choose.
const SYSTEM_SEGMENT_FROM: u32 = 64 << 10;

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
                        // connection is up.
                        if let (Ok(stream), Some(plan)) = (&stream, plan) {
                            let _ = socket2::SockRef::from(stream)
                                .set_recv_buffer_size(plan.bulk as usize);
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
        .min(BULK)
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

/// The segment size to ask for, for a part whose tail window is `tail`:
/// two segments fit in it (see [`Tail`]), where the system's may not (64
/// KiB on loopback). `None` keeps the system's: a segment below the usual
/// Ethernet one is never asked for, and this changes nothing but on
/// loopback and jumbo-frame links, where each segment costs the same CPU
/// whatever its size: small ones only for short parts.
fn segment_for(tail: u32) -> Option<u32> {
    (tail / 2 < SYSTEM_SEGMENT_FROM).then_some((tail / 2).max(MIN_SEGMENT))
}

/// A TCP connection to `addr` with the bulk receive buffer of `plan` (none:
/// the system's own).
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
        let _ = socket.set_recv_buffer_size(plan.bulk);
        if let Some(mss) = segment_for(plan.tail) {
            let _ = socket2::SockRef::from(&socket).set_tcp_mss(mss);
        }
    }
    let dialed = Instant::now();
    let stream = socket.connect(addr).await?;
    rtt.note(dialed.elapsed());
    Ok(stream)
}

/// Where a transfer stops, and how its receive buffer shrinks on the way
/// there.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Where the part ends now.
    end: PartEnd,
    /// Where the transfer started, and how long its part was then.
    start: u64,
    len: u64,
    /// When its bytes began, for its pace.
    began: Instant,
    /// The offset in the file of the next byte read.
    pos: u64,
    /// The tail window of the part as planned, before any cut; and the
    /// least the window may shrink to, whatever the part: two segments.
    tail: u64,
    floor: u64,
    /// The last receive buffer asked for: the bulk at first; 0 when the
    /// buffer is the system's to size (a long part, or no round trip
    /// known).
    asked: u64,
    /// The system's receive buffer as last read back (`None`: unknown).
    /// Read at the start and after each change we make: a buffer set
    /// explicitly (every data connection of a plan's, see
    /// `DataWindow::builder`) is never resized by the system, and a read
    /// at each chunk would cost a system call each.
    buffer: Option<u64>,
}

/// The pace of a transfer counts once it ran this long.
const PACE_AFTER: Duration = Duration::from_millis(250);
/// The engine cuts a running part only where this much of its time is
/// left, at its pace (its `SPLIT_HORIZON`, less a margin for the two
/// paces' differences): the window never reaches further.
const CUT_NOTICE: Duration = Duration::from_millis(500);

impl Tail {
    /// For a data connection `socket` from `pos` of a part that ends at
    /// `end`, opened under `plan`.
    pub(crate) fn new(end: PartEnd, pos: u64, plan: Option<Plan>, socket: &impl AsFd) -> Tail {
        let sock = socket2::SockRef::from(socket);
        // Two segments of whatever size the connection got, at least: with
        // less, a sender that saw a larger window waits for its probe
        // timer before each segment.
        let segment = u64::from(sock.tcp_mss().unwrap_or(0)).next_power_of_two();
        Tail {
            len: end.get().saturating_sub(pos),
            end,
            start: pos,
            began: Instant::now(),
            pos,
            tail: plan.map_or(0, |p| u64::from(p.tail)),
            floor: 2 * segment,
            asked: plan.map_or(0, |p| u64::from(p.bulk)),
            buffer: sock.recv_buffer_size().ok().map(|b| b as u64),
        }
    }

    /// The bytes left up to the end of the part.
    pub(crate) fn left(&self) -> u64 {
        self.end.get().saturating_sub(self.pos)
    }

    /// The smallest window: the planned share of the part as it is now
    /// (a cut part wastes no more of itself than an uncut one), never
    /// below two segments nor above the bulk.
    fn tail(&self) -> u64 {
        let len = self.end.get().saturating_sub(self.start);
        let share = u128::from(self.tail) * u128::from(len) / u128::from(self.len.max(1));
        (share as u64).max(self.floor).min(self.asked)
    }

    /// How far past what was read the window may reach: within half the
    /// bytes left (the engine cuts a part at the middle of what is left),
    /// and within [`CUT_NOTICE`] at the transfer's pace (several cuts at
    /// once each halve that again, but each leaves the part that much).
    fn limit(&self, left: u64) -> u64 {
        let elapsed = self.began.elapsed();
        let paced = (elapsed >= PACE_AFTER).then(|| {
            let pace = (self.pos - self.start) as f64 / elapsed.as_secs_f64();
            (pace * CUT_NOTICE.as_secs_f64()) as u64
        });
        (left / 2).min(paced.unwrap_or(u64::MAX))
    }

    /// How many bytes may be read before the window must shrink again or
    /// the part ends (0: it ended). Shrinks the window when its reach
    /// comes to its limit.
    pub(crate) fn allowed(&mut self, socket: &impl AsFd) -> u64 {
        let left = self.left();
        if left == 0 || self.asked == 0 {
            return left;
        }
        let tail = self.tail();
        let limit = self.limit(left);
        let sock = socket2::SockRef::from(socket);
        loop {
            if self.asked <= tail {
                return left;
            }
            // The system's receive buffer bounds the window, and the TLS
            // layer may have read ahead of us. Unknown, the end is taken
            // as within reach.
            let reach = self.buffer.unwrap_or(u64::MAX).saturating_add(READ_AHEAD);
            if reach <= limit {
                return left.saturating_sub(reach.saturating_mul(2)).max(1);
            }
            // Never larger: the loop ends at the tail. (The system doubles
            // what is asked for.)
            self.asked = (limit / 4).min(self.asked / 2).max(tail);
            // Only a saving: a system that refuses it still transfers.
            let _ = sock.set_recv_buffer_size(self.asked as usize);
            self.buffer = sock.recv_buffer_size().ok().map(|b| b as u64);
            tracing::trace!(left, asked = self.asked, "data window shrunk");
        }
    }

    /// Counts `n` bytes read.
    pub(crate) fn read(&mut self, n: usize) {
        self.pos += n as u64;
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
        assert_eq!((plan.bulk, plan.tail), (256 << 10, 128 << 10));
        let plan = plan_for(3 << 20, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (256 << 10, 24 << 10));
        let plan = plan_for(1 << 20, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (128 << 10, 8 << 10));
        // A short part: no bulk window below the tail one.
        let plan = plan_for(32 << 10, loopback).unwrap();
        assert_eq!((plan.bulk, plan.tail), (8 << 10, 8 << 10));
        // A distant server: the bulk covers its round trip...
        let plan = plan_for(8 << 20, Duration::from_millis(20)).unwrap();
        assert_eq!((plan.bulk, plan.tail), (2_000_000, 256 << 10));
        let plan = plan_for(256 << 20, Duration::from_millis(30)).unwrap();
        assert_eq!((plan.bulk, plan.tail), (3_000_000, 3_000_000));
        // ...up to where the system's own tuning takes over.
        assert_eq!(plan_for(256 << 20, Duration::from_millis(50)), None);
        assert_eq!(plan_for(1 << 30, loopback), None);
    }

    /// Short parts ask for segments that fit twice in their tail window;
    /// long ones keep the system's.
    #[test]
    fn only_short_parts_ask_for_small_segments() {
        assert_eq!(segment_for(8 << 10), Some(4 << 10));
        assert_eq!(segment_for(24 << 10), Some(12 << 10));
        assert_eq!(segment_for(2000), Some(MIN_SEGMENT));
        assert_eq!(segment_for(128 << 10), None);
        let loopback = Duration::from_micros(50);
        let long = plan_for(16 << 20, loopback).unwrap();
        assert_eq!(segment_for(long.tail), None);
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

    /// Reads through `tail` as it allows, `chunk` bytes at most at once,
    /// until it says the part ended, lowering the end to `cut.1` once
    /// `cut.0` bytes are read. Checks that no read passes the end and that
    /// the window never reaches past it once it shrank; returns the bytes
    /// read and the receive buffers asked for.
    fn drive(
        tail: &mut Tail,
        socket: &socket2::Socket,
        end: &PartEnd,
        chunk: u64,
        cut: (u64, u64),
    ) -> (u64, Vec<u64>) {
        let buffer = || socket.recv_buffer_size().unwrap() as u64;
        let (mut read, mut buffers) = (0, vec![buffer()]);
        let start = tail.pos;
        loop {
            if read >= cut.0 {
                end.lower(cut.1);
            }
            let n = tail.allowed(socket);
            if buffer() != *buffers.last().unwrap() {
                buffers.push(buffer());
            }
            // Where the engine would cut next is out of the window's reach.
            let left = end.get() - start - read;
            if tail.asked > tail.tail() && n > 0 {
                assert!(
                    left / 2 >= buffer() + READ_AHEAD,
                    "{left} left, {buffers:?}"
                );
            }
            if n == 0 {
                return (read, buffers);
            }
            let n = n.min(chunk);
            assert!(start + read + n <= end.get());
            tail.read(n as usize);
            read += n;
        }
    }

    /// The receive buffer opens at the bulk window and shrinks in steps as
    /// the end comes within its reach, down to the tail window and never
    /// below two segments; the transfer stops at the end.
    #[test]
    fn the_window_shrinks_as_the_end_comes_within_reach() {
        let plan = Plan {
            bulk: 256 << 10,
            tail: 8 << 10,
        };
        let (_listener, socket) = connected(plan.bulk);
        let bulk = socket.recv_buffer_size().unwrap() as u64;
        let segment = socket.tcp_mss().unwrap();
        let (start, len) = (1 << 20, 4 << 20);
        let end = PartEnd::new(start + len);
        let mut tail = Tail::new(end.clone(), start, Some(plan), &socket);
        assert_eq!(tail.allowed(&socket), len - 2 * (bulk + READ_AHEAD));
        let (read, buffers) = drive(&mut tail, &socket, &end, 1 << 20, (u64::MAX, 0));
        assert_eq!(read, len);
        assert!(buffers.windows(2).all(|w| w[1] < w[0]), "{buffers:?}");
        assert!(buffers.len() >= 3, "in steps: {buffers:?}");
        let last = *buffers.last().unwrap();
        let floor = u64::from(plan.tail).max(2 * u64::from(segment).next_power_of_two());
        assert!(last >= floor, "{last} for {floor}");
        assert!(last <= 2 * floor + (4 << 10), "{last} for {floor}");
    }

    /// The engine cuts a running part far from where it got to: the window
    /// shrinks in time for the new end, and the transfer stops there.
    #[test]
    fn a_part_cut_while_it_runs_stops_at_its_new_end() {
        let plan = Plan {
            bulk: 512 << 10,
            tail: 16 << 10,
        };
        let (_listener, socket) = connected(plan.bulk);
        let len = 64 << 20;
        let end = PartEnd::new(len);
        let mut tail = Tail::new(end.clone(), 0, Some(plan), &socket);
        let (read, buffers) = drive(&mut tail, &socket, &end, 64 << 10, (8 << 20, 20 << 20));
        assert_eq!(read, 20 << 20);
        assert!(buffers.len() > 3, "in steps: {buffers:?}");
        // Cut before its first byte (a slow login): the same.
        let (_listener, socket) = connected(plan.bulk);
        let end = PartEnd::new(len);
        end.lower(3 << 20);
        let mut tail = Tail::new(end.clone(), 2 << 20, Some(plan), &socket);
        let (read, _) = drive(&mut tail, &socket, &end, 64 << 10, (u64::MAX, 0));
        assert_eq!(read, 1 << 20);
    }

    /// Without a plan (a part too long for one, or no round trip known) the
    /// buffer is the system's, and the transfer still stops at the end.
    #[test]
    fn without_a_plan_the_transfer_still_stops_at_the_end() {
        let (_listener, socket) = connected(64 << 10);
        let end = PartEnd::new(10 << 20);
        let mut tail = Tail::new(end.clone(), 0, None, &socket);
        assert_eq!(tail.allowed(&socket), 10 << 20);
        let (read, buffers) = drive(&mut tail, &socket, &end, 1 << 20, (4 << 20, 5 << 20));
        assert_eq!((read, buffers.len()), (5 << 20, 1));
    }
}
