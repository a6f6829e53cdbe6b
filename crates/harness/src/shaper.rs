//! A shaping TCP proxy on loopback, to put a server behind a wide-area link
//! (the WAN bench, issue 14): latency, a per-connection rate cap, an
//! optional cap across connections and a bound on the bytes in flight,
//! which on a real path is what the TCP window and the round trip allow.
//!
//! Each accepted connection gets its own upstream connection to the
//! target. Bytes are released `delay` after they were read, in order, in
//! each direction; the connection's setup pays the delay too: the upstream
//! connect starts `delay` after the accept (the SYN's way), and what the
//! client sends first is held until its connect would have returned (one
//! round trip) and then sent the one-way delay on, so a fresh request's
//! first byte reaches the client about four delays after its connect. The
//! proxy runs on a runtime of its own, on its own threads, so external
//! processes (the bench's tools) can use it while the caller blocks.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::Servers;

/// The link a [`Shaper`] emulates. Rates are bytes per second; `None`
/// means unlimited. The default is a transparent proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shape {
    /// One-way delay, in each direction.
    pub delay: Duration,
    /// Per connection, server to client.
    pub rate: Option<u64>,
    /// Per connection, client to server.
    pub rate_up: Option<u64>,
    /// All connections together, server to client.
    pub total_rate: Option<u64>,
    /// Bytes read and not yet acknowledged, per connection and direction: a
    /// byte's credit comes back one round trip after it was read, as a TCP
    /// sender's window does, so one connection carries at most
    /// `window / (2 * delay)` bytes per second.
    pub window: Option<u64>,
}

impl Shape {
    /// No delay, no cap (as [`Shape::default`]).
    pub fn new() -> Shape {
        Shape::default()
    }

    /// Sets the one-way delay.
    pub fn delay(mut self, delay: Duration) -> Shape {
        self.delay = delay;
        self
    }

    /// Caps each connection's server-to-client rate.
    pub fn rate(mut self, bytes_per_sec: Option<u64>) -> Shape {
        self.rate = bytes_per_sec;
        self
    }

    /// Caps each connection's client-to-server rate.
    pub fn rate_up(mut self, bytes_per_sec: Option<u64>) -> Shape {
        self.rate_up = bytes_per_sec;
        self
    }

    /// Caps the server-to-client rate of all connections together.
    pub fn total_rate(mut self, bytes_per_sec: Option<u64>) -> Shape {
        self.total_rate = bytes_per_sec;
        self
    }

    /// Bounds the bytes in flight per connection and direction.
    pub fn window(mut self, bytes: Option<u64>) -> Shape {
        self.window = bytes;
        self
    }
}

/// What a [`Shaper`] has carried since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes read from clients.
    pub to_server: u64,
    /// Bytes read from the server: what it put on the link, whether the
    /// client read them or closed first.
    pub to_client: u64,
}

impl Counters {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            connections: self.connections - earlier.connections,
            to_server: self.to_server - earlier.to_server,
            to_client: self.to_client - earlier.to_client,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    connections: AtomicU64,
    /// Connections open now, and the most that were at once.
    open: AtomicU64,
    peak: AtomicU64,
    to_server: AtomicU64,
    to_client: AtomicU64,
}

/// A running shaping proxy: listens on a free port of 127.0.0.1 and
/// forwards each connection to its target through the [`Shape`]d link.
/// Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct Shaper {
    port: u16,
    target: SocketAddr,
    shape: Shape,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Servers {
    /// A [`Shaper`] in front of `port` of 127.0.0.1 (one of this harness's
    /// servers, e.g. [`Servers::http_port`]); keep it no longer than the
    /// servers.
    pub fn shaped(&self, port: u16, shape: Shape) -> Result<Shaper> {
        Shaper::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), shape)
    }
}

impl Shaper {
    /// Starts a proxy to `target`, which must be a loopback address.
    pub fn start(target: SocketAddr, shape: Shape) -> Result<Shaper> {
        if !target.ip().is_loopback() {
            bail!("the shaping proxy forwards to loopback only, not {target}");
        }
        if shape.window == Some(0)
            || [shape.rate, shape.rate_up, shape.total_rate].contains(&Some(0))
        {
            bail!("a zero window or rate would carry nothing");
        }
        let listener =
            StdListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the shaping proxy")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        // Two workers: one connection's copying must not wait for another's
        // on a machine that has few cores to give.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shaper")
            .enable_all()
            .build()
            .context("starting the shaping proxy's runtime")?;
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel();
        let link = Link {
            target,
            shape,
            counts: counts.clone(),
            total: shape
                .total_rate
                .map(|r| Arc::new(Mutex::new(Bucket::new(r)))),
        };
        let thread = thread::Builder::new()
            .name(format!("shaper-{port}"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, Arc::new(link)) => {}
                    }
                });
                // Dropping the runtime drops every connection's task.
                rt.shutdown_background();
            })
            .context("starting the shaping proxy's thread")?;
        Ok(Shaper {
            port,
            target,
            shape,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The port clients connect to, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The link it emulates.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// What it has carried so far.
    pub fn counters(&self) -> Counters {
        Counters {
            connections: self.counts.connections.load(Ordering::SeqCst),
            to_server: self.counts.to_server.load(Ordering::SeqCst),
            to_client: self.counts.to_client.load(Ordering::SeqCst),
        }
    }

    /// The most connections it carried at once (a client that grows its
    /// connections and takes some back is told apart from one that only
    /// replaces them).
    pub fn most_open(&self) -> u64 {
        self.counts.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What every connection of one proxy shares.
#[derive(Debug)]
struct Link {
    target: SocketAddr,
    shape: Shape,
    counts: Arc<Counts>,
    total: Option<Arc<Mutex<Bucket>>>,
}

async fn accept_loop(listener: TcpListener, link: Arc<Link>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let accepted = Instant::now();
        link.counts.connections.fetch_add(1, Ordering::SeqCst);
        let open = link.counts.open.fetch_add(1, Ordering::SeqCst) + 1;
        link.counts.peak.fetch_max(open, Ordering::SeqCst);
        let link = link.clone();
        tokio::spawn(async move {
            // An error on either side ends both; nothing to report.
            let _ = carry(client, &link, accepted).await;
            link.counts.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Chunks of this size are read, paced and released as one; smaller when
/// capped, so a capped connection's bytes flow evenly.
const CHUNK: usize = 64 * 1024;
const CAPPED_CHUNK: usize = 16 * 1024;

/// Chunks queued between a reader and its writer; the window, when set,
/// is the tighter bound.
const QUEUE: usize = 4096;

/// Forwards one connection both ways until both sides have closed.
async fn carry(client: TcpStream, link: &Link, accepted: Instant) -> io::Result<()> {
    let shape = link.shape;
    let d = shape.delay;
    client.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let up = Direction::new(shape.rate_up, None, shape);
    let down = Direction::new(shape.rate, link.total.clone(), shape);
    let (up_tx, up_rx) = mpsc::channel(QUEUE);
    let (down_tx, down_rx) = mpsc::channel(QUEUE);
    // What the client sends before its connect would have returned (one
    // round trip after the accept) leaves then.
    let from_client = pump_in(
        client_read,
        up_tx,
        &up,
        accepted + 2 * d,
        &link.counts.to_server,
    );
    let rest = async {
        // The SYN reaches the server one delay after the client sent it.
        sleep_until(accepted + d).await;
        let server = TcpStream::connect(link.target).await?;
        server.set_nodelay(true)?;
        let (server_read, server_write) = server.into_split();
        tokio::try_join!(
            pump_out(up_rx, server_write, &up),
            pump_in(
                server_read,
                down_tx,
                &down,
                accepted,
                &link.counts.to_client
            ),
            pump_out(down_rx, client_write, &down),
        )
    };
    tokio::try_join!(from_client, rest)?;
    Ok(())
}

/// A chunk on its way, with the instant it leaves the link.
enum Piece {
    Data(Vec<u8>, Instant),
    End(Instant),
}

/// One direction of one connection: its pacing and its window.
struct Direction {
    delay: Duration,
    chunk: usize,
    bucket: Option<Mutex<Bucket>>,
    total: Option<Arc<Mutex<Bucket>>>,
    window: Option<Semaphore>,
}

impl Direction {
    fn new(rate: Option<u64>, total: Option<Arc<Mutex<Bucket>>>, shape: Shape) -> Direction {
        let capped = rate.is_some() || total.is_some();
        let mut chunk = if capped { CAPPED_CHUNK } else { CHUNK };
        if let Some(w) = shape.window {
            chunk = chunk.min(w as usize);
        }
        Direction {
            delay: shape.delay,
            chunk,
            bucket: rate.map(|r| Mutex::new(Bucket::new(r))),
            total,
            // Semaphore permits are counted in usize and taken in u32.
            window: shape
                .window
                .map(|w| Semaphore::new(w.min(Semaphore::MAX_PERMITS as u64) as usize)),
        }
    }

    /// Waits until `n` bytes may pass the rate caps.
    async fn pace(&self, n: usize) {
        let now = Instant::now();
        let mut until = now;
        for bucket in [self.bucket.as_ref(), self.total.as_deref()]
            .into_iter()
            .flatten()
        {
            let at = bucket.lock().expect("bucket lock").take(n, now);
            until = until.max(at);
        }
        if until > now {
            sleep_until(until).await;
        }
    }
}

/// Reads from `src`, paces, stamps each chunk with its release instant (not
/// before `not_before` plus the delay) and queues it for [`pump_out`].
async fn pump_in(
    mut src: OwnedReadHalf,
    tx: mpsc::Sender<Piece>,
    dir: &Direction,
    not_before: Instant,
    counter: &AtomicU64,
) -> io::Result<()> {
    let release = |now: Instant| now.max(not_before) + dir.delay;
    loop {
        let want = dir.chunk;
        if let Some(w) = &dir.window {
            w.acquire_many(want as u32)
                .await
                .expect("the window is never closed")
                .forget();
        }
        // Not zeroed: at hundreds of MB/s, zeroing costs as much as copying.
        let mut buf = Vec::with_capacity(want);
        let n = src.read_buf(&mut buf).await?;
        if let Some(w) = &dir.window {
            w.add_permits(want - n);
        }
        if n == 0 {
            let _ = tx.send(Piece::End(release(Instant::now()))).await;
            return Ok(());
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        dir.pace(n).await;
        if tx
            .send(Piece::Data(buf, release(Instant::now())))
            .await
            .is_err()
        {
            // The writer has failed, which ends the connection.
            return Ok(());
        }
    }
}

/// Writes each queued chunk to `dst` at its release instant and returns
/// its window credit one delay later (the acknowledgement's way back);
/// half-closes `dst` when the other side did.
async fn pump_out(
    mut rx: mpsc::Receiver<Piece>,
    mut dst: OwnedWriteHalf,
    dir: &Direction,
) -> io::Result<()> {
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<(Instant, usize)>();
    let acks = async {
        while let Some((at, n)) = ack_rx.recv().await {
            sleep_until(at).await;
            if let Some(w) = &dir.window {
                w.add_permits(n);
            }
        }
        Ok::<(), io::Error>(())
    };
    let writes = async move {
        while let Some(piece) = rx.recv().await {
            match piece {
                Piece::Data(buf, at) => {
                    if at > Instant::now() {
                        sleep_until(at).await;
                    }
                    dst.write_all(&buf).await?;
                    if dir.window.is_some() {
                        let _ = ack_tx.send((at + dir.delay, buf.len()));
                    }
                }
                Piece::End(at) => {
                    sleep_until(at).await;
                    let _ = dst.shutdown().await;
                    break;
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(writes, acks)?;
    Ok(())
}

/// A token bucket that lends: a taker always gets its bytes and waits until
/// the debt is paid, so takers are served in the order they came.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        let rate = rate as f64;
        // A burst of 10 ms of the rate (one chunk at least): enough to keep
        // the timer's granularity from costing rate, small enough that the
        // cap holds over any stretch a test or a bench measures.
        let burst = (rate / 100.0).max(CAPPED_CHUNK as f64);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes at `now`; returns when they may pass.
    fn take(&mut self, n: usize, now: Instant) -> Instant {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lends_and_is_paid_back_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1_000_000);
        b.last = t0;
        // The burst passes at once; the next chunk waits for its bytes.
        assert_eq!(b.take(16 * 1024, t0), t0);
        let at = b.take(100_000, t0);
        let wait = at - t0;
        assert!(
            (Duration::from_millis(99)..Duration::from_millis(101)).contains(&wait),
            "{wait:?}"
        );
        // A second later the debt is paid and a little burst is back.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.take(1000, later), later);
    }
}
