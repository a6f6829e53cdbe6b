//! An in-process HTTP/1.1 server that misbehaves on demand, for the faults a
//! real server will not produce when asked: connections dropped mid-body,
//! stalls, `503` with `Retry-After`, `200` to a range request, a body
//! shorter than its `Content-Length`, close-delimited bodies, redirect
//! chains, hostile `Content-Disposition`s.
//!
//! It is a small hand-written responder over tokio's `TcpStream` rather
//! than a hyper server, because the faults are about the bytes on the wire
//! (close after N body bytes, lie in `Content-Length`), which hyper rightly
//! refuses to produce.
//!
//! # API
//!
//! ```no_run
//! use pymatris_tests::fault_server::{Behaviour, FaultServer, Route};
//! let server = FaultServer::start([
//!     ("/a.bin", Route::new(vec![7u8; 1000]).behaviour(Behaviour::DropAfter { bytes: 100, times: 2 })),
//!     ("/moved", Route::redirect(302, "/a.bin")),
//!     ("/named", Route::new(&b"x"[..]).header("Content-Disposition", "attachment; filename=\"../x\"")),
//!     ("/gone", Route::status(404)),
//! ]);
//! let url = server.url("/a.bin");          // http://127.0.0.1:PORT/a.bin
//! // ... download ...
//! assert_eq!(server.hits("/a.bin"), 4);    // requests seen for that path
//! for r in server.requests("/a.bin") {     // what each request asked and got
//!     println!("{} {:?} -> {} ({} body bytes, fault: {})", r.method, r.range, r.status, r.body_bytes, r.fault);
//! }
//! ```
//!
//! - [`FaultServer::start`] binds `127.0.0.1:0` and serves from a thread
//!   of its own (with its own tokio runtime), so it works from sync tests,
//!   from any tokio runtime flavour, and while a test blocks on a child
//!   process. Dropping the server stops it and closes every connection.
//! - Paths are matched without the query string; a path with no route gets
//!   `404` (and is logged too).
//! - [`Behaviour::Normal`] is an honest static file server: `Range:
//!   bytes=a-b`, `bytes=a-` and `bytes=-n` give `206` with `Content-Range`;
//!   an unsatisfiable range (including any range of an empty file) gives
//!   `416` with `Content-Range: bytes */LEN` (RFC 9110; nginx 1.22 sends
//!   `200` with an empty body for an empty file instead, which
//!   [`Behaviour::IgnoreRange`] reproduces); several ranges or a malformed
//!   header give `200` with the whole body; `If-Range` that does not match
//!   the `ETag`/`Last-Modified` gives `200`; `HEAD` works. Responses carry
//!   `Accept-Ranges: bytes`, a strong `ETag` derived from the body and a
//!   fixed `Last-Modified`, and connections are kept alive.
//! - The faulty behaviours misbehave on the first `times` requests of the
//!   route (counted per route) and then behave as `Normal`; use
//!   `usize::MAX` for "always". A faulty response always ends its
//!   connection.
//! - Every request is logged ([`RequestLog`]): method, target, `Range`,
//!   `If-Range`, `Authorization`, all headers, when it arrived, which
//!   connection carried it, the status sent, how many body bytes were
//!   written, and whether it was one of the faulty responses.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a route answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// An honest server (see the module documentation).
    Normal,
    /// The first `times` GETs are answered as `Normal` (206 or 200, full
    /// headers), but the connection is closed after `bytes` bytes of the
    /// response's body.
    DropAfter { bytes: u64, times: usize },
    /// Like `DropAfter`, but instead of closing, the connection goes
    /// silent after `bytes` body bytes until the client gives up (or the
    /// server is dropped).
    StallAfter { bytes: u64, times: usize },
    /// The first `times` requests get `503 Service Unavailable`, with
    /// `Retry-After: SECS` when given.
    ServiceUnavailable {
        times: usize,
        retry_after_secs: Option<u64>,
    },
    /// Always `200` with the whole body and no `Accept-Ranges`, whatever
    /// the `Range` header says (keep-alive, correct `Content-Length`).
    IgnoreRange,
    /// The first `after` requests are served as `Normal` (206 to a range),
    /// the later ones as [`IgnoreRange`](Behaviour::IgnoreRange): a server
    /// (or a CDN node behind one name) that stops honouring ranges in the
    /// middle of a download.
    IgnoreRangeAfter { after: usize },
    /// The first `times` responses describe the file as `extra` bytes
    /// longer than it is (`Content-Length`, and the total of
    /// `Content-Range`), send the bytes that exist, then close the
    /// connection: a body shorter than announced. (For a body cut short
    /// under honest headers, see `DropAfter`.)
    LongContentLength { extra: u64, times: usize },
    /// The first `times` requests get no answer at all (not even a status
    /// line) until the client gives up or the server is dropped.
    Hang { times: usize },
    /// `200`, no `Content-Length`, no `Accept-Ranges`, the whole body
    /// whatever the `Range`, then the connection is closed
    /// (close-delimited body, HTTP/1.0 style).
    NoContentLength,
    /// A redirect with this status to `to` (a path or an absolute URL).
    Redirect { to: String, status: u16 },
    /// This status with a short text body (and `Content-Range: bytes */LEN`
    /// for 416).
    Status(u16),
    /// `206` with a `Content-Range` that starts `shift` bytes later than
    /// asked (and the bytes from there) for every range request not
    /// starting at 0: a broken cache.
    WrongContentRange { shift: u64 },
    /// The file changes after `after` requests: later requests see `body`
    /// (with a new `ETag`).
    ChangeAfter { after: usize, body: Bytes },
    /// Requests after the first `after` are answered normally, but only
    /// after `delay`: a server whose new connections take long to be
    /// served (a slow login, in HTTP's terms).
    SlowStart { delay: Duration, after: usize },
    /// Every range is answered with at most `max` bytes, correctly
    /// labelled (`206`, `Content-Range: bytes a-(a+max-1)/LEN`, keep-alive):
    /// a server (or CDN) that caps the size of a range response.
    ShortRanges { max: u64 },
    /// Served as `Normal` until the route has sent `bytes` body bytes in
    /// all; the response under way then breaks off, and every later
    /// request of the route has its connection closed without an answer:
    /// a mirror that dies in the middle of a file.
    DieAfter { bytes: u64 },
}

/// What a path serves: a body, a behaviour, extra response headers.
#[derive(Debug, Clone)]
pub struct Route {
    body: Bytes,
    behaviour: Behaviour,
    headers: Vec<(String, String)>,
    ranges: bool,
}

impl Route {
    /// `body`, served honestly.
    pub fn new(body: impl Into<Bytes>) -> Route {
        Route {
            body: body.into(),
            behaviour: Behaviour::Normal,
            headers: Vec::new(),
            ranges: true,
        }
    }

    /// A redirect (`301`, `302`, `303`, `307`, `308`) to `to`.
    pub fn redirect(status: u16, to: impl Into<String>) -> Route {
        Route::new(Bytes::new()).behaviour(Behaviour::Redirect {
            to: to.into(),
            status,
        })
    }

    /// Always this status.
    pub fn status(status: u16) -> Route {
        Route::new(Bytes::new()).behaviour(Behaviour::Status(status))
    }

    /// Serves the body with `behaviour`.
    pub fn behaviour(mut self, behaviour: Behaviour) -> Route {
        self.behaviour = behaviour;
        self
    }

    /// Whether the route honours `Range` (default: yes). Without, every
    /// behaviour answers `200` with the whole body and no `Accept-Ranges`
    /// where it would have answered `206`: e.g. `DropAfter` on a route
    /// without ranges is a server without range support whose responses
    /// break off.
    pub fn ranges(mut self, ranges: bool) -> Route {
        self.ranges = ranges;
        self
    }

    /// Adds a header to every response of this route (e.g.
    /// `Content-Disposition`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One request the server received, and what it did with it.
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// `GET`, `HEAD`…
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The path the route was looked up by (no query).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-Range` header, if any.
    pub if_range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Every header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// When the request's head was complete.
    pub at: Instant,
    /// Which connection carried it (0, 1, 2… in accept order).
    pub connection: usize,
    /// The status sent (0 if nothing was sent).
    pub status: u16,
    /// Body bytes written to the socket.
    pub body_bytes: u64,
    /// Whether this response was one of the route's faulty ones.
    pub fault: bool,
}

impl RequestLog {
    /// The first byte the `Range` header asked for, when it is a single
    /// `bytes=a-` or `bytes=a-b`.
    pub fn range_start(&self) -> Option<u64> {
        match parse_range(self.range.as_deref()?) {
            RangeSpec::FromTo(a, _) => Some(a),
            _ => None,
        }
    }
}

/// The fault server. See the [module documentation](self).
#[derive(Debug)]
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    routes: HashMap<String, RouteState>,
    log: Mutex<Vec<RequestLog>>,
    connections: AtomicUsize,
    /// Responses being written now, and the most there ever were at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Body writes started and not yet returned: the client may already
    /// hold bytes the log does not count yet.
    writing: AtomicUsize,
}

#[derive(Debug)]
struct RouteState {
    route: Route,
    /// Requests seen by this route so far.
    seen: AtomicUsize,
    /// Body bytes sent by this route so far (for `DieAfter`).
    sent: std::sync::atomic::AtomicU64,
}

impl FaultServer {
    /// Starts a server on `127.0.0.1:0` serving `routes` (path, route).
    ///
    /// # Panics
    /// When it cannot bind or start its thread.
    pub fn start<I, P>(routes: I) -> FaultServer
    where
        I: IntoIterator<Item = (P, Route)>,
        P: Into<String>,
    {
        FaultServer::start_at("127.0.0.1:0".parse().expect("address"), routes)
    }

    /// [`FaultServer::start`] on a given address (to stand in for a server
    /// that was stopped, at the same URLs).
    pub fn start_at<I, P>(addr: SocketAddr, routes: I) -> FaultServer
    where
        I: IntoIterator<Item = (P, Route)>,
        P: Into<String>,
    {
        let routes = routes
            .into_iter()
            .map(|(path, route)| {
                let path = path.into();
                assert!(path.starts_with('/'), "route paths start with /: {path}");
                (
                    path,
                    RouteState {
                        route,
                        seen: AtomicUsize::new(0),
                        sent: std::sync::atomic::AtomicU64::new(0),
                    },
                )
            })
            .collect();
        let state = Arc::new(State {
            routes,
            log: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
        });
        let listener =
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault server runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = rx => {}
                        () = accept_loop(listener, thread_state) => {}
                    }
                });
                // Dropping the runtime cancels every connection task, which
                // closes their sockets (stalled ones included).
            })
            .expect("fault server thread");
        FaultServer {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// How many requests arrived for `path` (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        self.requests(path).len()
    }

    /// The requests that arrived for `path`, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<RequestLog> {
        self.all_requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Every request, in arrival order.
    ///
    /// A client can read the last bytes of a body before the server's
    /// write returns and the log counts them; so this first waits (up to
    /// half a second, for a client that stopped reading) for the body
    /// writes under way to return.
    pub fn all_requests(&self) -> Vec<RequestLog> {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while self.state.writing.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.state.log.lock().expect("log poisoned").clone()
    }

    /// Body bytes written for `path`, over all its requests.
    pub fn body_bytes(&self, path: &str) -> u64 {
        self.requests(path).iter().map(|r| r.body_bytes).sum()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most responses that were being sent at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let id = state.connections.fetch_add(1, Ordering::SeqCst);
        let state = state.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, id, state).await;
        });
    }
}

/// The most a request head may weigh.
const MAX_HEAD: usize = 64 * 1024;

/// How long a stalled response stays silent before the server closes it
/// anyway.
const STALL: Duration = Duration::from_secs(120);

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn serve_connection(mut stream: TcpStream, id: usize, state: Arc<State>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some(head) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        // Requests of a downloader have no body; skip one if sent.
        if let Some(len) = head
            .get("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while buf.len() < len {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..len);
        }
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let keep = respond(&mut stream, id, &state, &head).await;
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        let keep = keep?;
        if !keep || !head.keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// Reads one request head; `None` at a clean end of the connection.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Head>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let raw: Vec<u8> = buf.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&raw[..end]).into_owned();
            return parse_head(&text).map(Some);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(text: &str) -> io::Result<Head> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad request head");
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or_else(bad)?;
    let mut parts = request_line.split(' ');
    let method = parts.next().ok_or_else(bad)?.to_owned();
    let target = parts.next().ok_or_else(bad)?.to_owned();
    let version = parts.next().ok_or_else(bad)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let connection = headers
        .iter()
        .filter(|(k, _)| k == "connection")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(",");
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    Ok(Head {
        method,
        target,
        headers,
        keep_alive,
    })
}

/// A `Range` header, as far as the server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    /// `bytes=a-b` (`b` inclusive) or `bytes=a-` (`None`).
    FromTo(u64, Option<u64>),
    /// `bytes=-n`.
    Suffix(u64),
    /// Several ranges, another unit, or a malformed header: ignored.
    Ignored,
}

fn parse_range(value: &str) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignored;
    };
    if spec.contains(',') {
        return RangeSpec::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignored;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => num(b).map_or(RangeSpec::Ignored, RangeSpec::Suffix),
        (false, true) => num(a).map_or(RangeSpec::Ignored, |a| RangeSpec::FromTo(a, None)),
        (false, false) => match (num(a), num(b)) {
            (Some(a), Some(b)) => RangeSpec::FromTo(a, Some(b)),
            _ => RangeSpec::Ignored,
        },
        (true, true) => RangeSpec::Ignored,
    }
}

/// What part of the body a request gets.
enum Selection {
    /// `200`, the whole body.
    Whole,
    /// `206`, `start..end` (exclusive).
    Part(u64, u64),
    /// `416`.
    Unsatisfiable,
}

/// Resolves a range against a body of `len` bytes, as RFC 9110 says.
fn select(range: Option<&str>, len: u64) -> Selection {
    let Some(range) = range else {
        return Selection::Whole;
    };
    match parse_range(range) {
        RangeSpec::Ignored => Selection::Whole,
        RangeSpec::FromTo(a, b) => {
            if b.is_some_and(|b| b < a) {
                // Syntactically invalid: ignored.
                return Selection::Whole;
            }
            if a >= len {
                return Selection::Unsatisfiable;
            }
            let end = b.map_or(len, |b| b.saturating_add(1).min(len));
            Selection::Part(a, end)
        }
        RangeSpec::Suffix(n) => {
            if n == 0 || len == 0 {
                return Selection::Unsatisfiable;
            }
            Selection::Part(len - n.min(len), len)
        }
    }
}

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// The `Last-Modified` every route sends, in seconds since the Unix
/// epoch: a file given this time on a real server is the same version.
pub const LAST_MODIFIED_UNIX: u64 = 1_445_412_480;

fn etag_of(body: &[u8]) -> String {
    let digest = crate::sha256_hex(body);
    format!("\"{}-{}\"", body.len(), &digest[..16])
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// All of it, connection reusable.
    Complete,
    /// All of it, then close (close-delimited or lying length).
    CompleteThenClose,
    /// Close after this many bytes.
    DropAfter(u64),
    /// Go silent after this many bytes.
    StallAfter(u64),
    /// Wait this long, then answer in full.
    Late(Duration),
    /// Send nothing at all, not even the head.
    Hang,
}

/// A response about to be written.
struct Plan {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    ending: Ending,
    fault: bool,
}

fn text_response(status: u16, extra: Vec<(String, String)>) -> Plan {
    let body = Bytes::from(format!("{status} {}\n", reason(status)));
    let mut headers = vec![
        ("Content-Type".to_owned(), "text/plain".to_owned()),
        ("Content-Length".to_owned(), body.len().to_string()),
    ];
    headers.extend(extra);
    Plan {
        status,
        headers,
        body,
        ending: Ending::Complete,
        fault: false,
    }
}

/// The honest answer for `body` (a static file server); without `ranges`,
/// `Range` is ignored (always `200`, no `Accept-Ranges`).
fn normal(head: &Head, body: &Bytes, ranges: bool) -> Plan {
    let len = body.len() as u64;
    let etag = etag_of(body);
    let mut headers = vec![
        ("ETag".to_owned(), etag.clone()),
        ("Last-Modified".to_owned(), LAST_MODIFIED.to_owned()),
        (
            "Content-Type".to_owned(),
            "application/octet-stream".to_owned(),
        ),
    ];
    if ranges {
        headers.push(("Accept-Ranges".to_owned(), "bytes".to_owned()));
    }
    // If-Range that does not name this version: the whole (new) file.
    let range = match head.get("if-range") {
        _ if !ranges => None,
        Some(v) if v != etag && v != LAST_MODIFIED => None,
        _ => head.get("range"),
    };
    match select(range, len) {
        Selection::Whole => {
            headers.push(("Content-Length".to_owned(), len.to_string()));
            Plan {
                status: 200,
                headers,
                body: body.clone(),
                ending: Ending::Complete,
                fault: false,
            }
        }
        Selection::Part(a, b) => {
            headers.push(("Content-Length".to_owned(), (b - a).to_string()));
            headers.push((
                "Content-Range".to_owned(),
                format!("bytes {a}-{}/{len}", b - 1),
            ));
            Plan {
                status: 206,
                headers,
                body: body.slice(a as usize..b as usize),
                ending: Ending::Complete,
                fault: false,
            }
        }
        Selection::Unsatisfiable => text_response(
            416,
            vec![("Content-Range".to_owned(), format!("bytes */{len}"))],
        ),
    }
}

/// Sets a header of `plan`, replacing one of the same name.
fn set_header(plan: &mut Plan, name: &str, value: String) {
    plan.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    plan.headers.push((name.to_owned(), value));
}

/// A response that describes the file as `extra` bytes longer than it is
/// (`Content-Length`, and the total of `Content-Range`), sends the bytes
/// that exist and closes the connection.
fn long_content_length(head: &Head, body: &Bytes, extra: u64, ranges: bool) -> Plan {
    let len = body.len() as u64;
    let announced = len + extra;
    let range = if ranges { head.get("range") } else { None };
    let clamp = |x: u64| x.min(len) as usize;
    let mut plan = match select(range, announced) {
        Selection::Whole => Plan {
            status: 200,
            headers: vec![("Content-Length".to_owned(), announced.to_string())],
            body: body.clone(),
            ending: Ending::CompleteThenClose,
            fault: true,
        },
        Selection::Part(a, b) => Plan {
            status: 206,
            headers: vec![
                ("Content-Length".to_owned(), (b - a).to_string()),
                (
                    "Content-Range".to_owned(),
                    format!("bytes {a}-{}/{announced}", b - 1),
                ),
            ],
            body: body.slice(clamp(a)..clamp(b)),
            ending: Ending::CompleteThenClose,
            fault: true,
        },
        Selection::Unsatisfiable => {
            return text_response(
                416,
                vec![("Content-Range".to_owned(), format!("bytes */{announced}"))],
            );
        }
    };
    if ranges {
        plan.headers
            .push(("Accept-Ranges".to_owned(), "bytes".to_owned()));
    }
    plan.headers.push((
        "Content-Type".to_owned(),
        "application/octet-stream".to_owned(),
    ));
    plan
}

/// Decides the answer to `head`; `n` is the route's request count before
/// this one.
fn plan(head: &Head, route: &Route, n: usize) -> Plan {
    let body = &route.body;
    let mut plan = match &route.behaviour {
        Behaviour::Normal | Behaviour::DieAfter { .. } => normal(head, body, route.ranges),
        Behaviour::DropAfter { bytes, times } => {
            let mut p = normal(head, body, route.ranges);
            if n < *times && p.status / 100 == 2 {
                p.ending = Ending::DropAfter(*bytes);
                p.fault = true;
            }
            p
        }
        Behaviour::StallAfter { bytes, times } => {
            let mut p = normal(head, body, route.ranges);
            if n < *times && p.status / 100 == 2 {
                p.ending = Ending::StallAfter(*bytes);
                p.fault = true;
            }
            p
        }
        Behaviour::ServiceUnavailable {
            times,
            retry_after_secs,
        } => {
            if n < *times {
                let extra = retry_after_secs
                    .map(|s| vec![("Retry-After".to_owned(), s.to_string())])
                    .unwrap_or_default();
                let mut p = text_response(503, extra);
                p.fault = true;
                p
            } else {
                normal(head, body, route.ranges)
            }
        }
        Behaviour::IgnoreRange => normal(head, body, false),
        Behaviour::Hang { times } => {
            let mut p = normal(head, body, route.ranges);
            if n < *times {
                p.ending = Ending::Hang;
                p.fault = true;
            }
            p
        }
        Behaviour::IgnoreRangeAfter { after } => {
            if n < *after {
                normal(head, body, route.ranges)
            } else {
                let mut p = normal(head, body, false);
                p.fault = head.get("range").is_some();
                p
            }
        }
        Behaviour::LongContentLength { extra, times } => {
            if n < *times {
                let mut p = long_content_length(head, body, *extra, route.ranges);
                p.fault = p.status / 100 == 2;
                p
            } else {
                normal(head, body, route.ranges)
            }
        }
        Behaviour::NoContentLength => Plan {
            status: 200,
            headers: vec![
                (
                    "Content-Type".to_owned(),
                    "application/octet-stream".to_owned(),
                ),
                ("Connection".to_owned(), "close".to_owned()),
            ],
            body: body.clone(),
            ending: Ending::CompleteThenClose,
            fault: false,
        },
        Behaviour::Redirect { to, status } => {
            text_response(*status, vec![("Location".to_owned(), to.clone())])
        }
        Behaviour::Status(status) => {
            let mut extra = Vec::new();
            if *status == 416 {
                extra.push((
                    "Content-Range".to_owned(),
                    format!("bytes */{}", body.len()),
                ));
            }
            if *status == 401 {
                extra.push((
                    "WWW-Authenticate".to_owned(),
                    "Basic realm=\"fault\"".to_owned(),
                ));
            }
            text_response(*status, extra)
        }
        Behaviour::WrongContentRange { shift } => {
            let mut p = normal(head, body, route.ranges);
            if p.status == 206 {
                let len = body.len() as u64;
                let start = len - p.body.len() as u64;
                // `normal` served `start..start+body.len()`; from `start`
                // on, only for ranges that do not start at 0.
                if start > 0 {
                    let from = (start + shift).min(len.saturating_sub(1));
                    let end = start + p.body.len() as u64;
                    let end = end.max(from + 1).min(len);
                    p.body = body.slice(from as usize..end as usize);
                    let n = p.body.len();
                    set_header(&mut p, "Content-Length", n.to_string());
                    set_header(
                        &mut p,
                        "Content-Range",
                        format!("bytes {from}-{}/{len}", end - 1),
                    );
                    p.fault = true;
                }
            }
            p
        }
        Behaviour::SlowStart { delay, after } => {
            let mut p = normal(head, body, route.ranges);
            if n >= *after {
                p.ending = Ending::Late(*delay);
                p.fault = true;
            }
            p
        }
        Behaviour::ShortRanges { max } => {
            let mut p = normal(head, body, route.ranges);
            let len = body.len() as u64;
            // A 206 answers the one range of the request.
            if p.status == 206
                && let Selection::Part(from, to) = select(head.get("range"), len)
                && to - from > *max
            {
                let to = from + max;
                p.body = body.slice(from as usize..to as usize);
                set_header(&mut p, "Content-Length", max.to_string());
                set_header(
                    &mut p,
                    "Content-Range",
                    format!("bytes {from}-{}/{len}", to - 1),
                );
                p.fault = true;
            }
            p
        }
        Behaviour::ChangeAfter { after, body: new } => {
            if n < *after {
                normal(head, body, route.ranges)
            } else {
                let mut p = normal(head, new, route.ranges);
                p.fault = true;
                p
            }
        }
    };
    for (k, v) in &route.headers {
        plan.headers.push((k.clone(), v.clone()));
    }
    plan
}

/// Answers one request; returns whether the connection may serve another.
async fn respond(
    stream: &mut TcpStream,
    id: usize,
    state: &State,
    head: &Head,
) -> io::Result<bool> {
    let path = request_path(&head.target);
    // What a dying route has left to send, and its counter.
    let dying = state
        .routes
        .get(&path)
        .and_then(|rs| match rs.route.behaviour {
            Behaviour::DieAfter { bytes } => Some((
                bytes.saturating_sub(rs.sent.load(Ordering::SeqCst)),
                &rs.sent,
            )),
            _ => None,
        });
    let plan = match state.routes.get(&path) {
        Some(_) if dying.is_some_and(|(left, _)| left == 0) => Plan {
            status: 0,
            fault: true,
            ..text_response(500, Vec::new())
        },
        Some(rs) => {
            let n = rs.seen.fetch_add(1, Ordering::SeqCst);
            plan(head, &rs.route, n)
        }
        None => text_response(404, Vec::new()),
    };
    let index = {
        let mut log = state.log.lock().expect("log poisoned");
        log.push(RequestLog {
            method: head.method.clone(),
            target: head.target.clone(),
            path,
            range: head.get("range").map(str::to_owned),
            if_range: head.get("if-range").map(str::to_owned),
            authorization: head.get("authorization").map(str::to_owned),
            headers: head.headers.clone(),
            at: Instant::now(),
            connection: id,
            status: plan.status,
            body_bytes: 0,
            fault: plan.fault,
        });
        log.len() - 1
    };

    if plan.status == 0 {
        // Dead: the connection closes without an answer.
        return Ok(false);
    }
    if plan.ending == Ending::Hang {
        tokio::time::sleep(STALL).await;
        return Ok(false);
    }
    if let Ending::Late(delay) = plan.ending {
        tokio::time::sleep(delay).await;
    }
    let keep = matches!(plan.ending, Ending::Complete | Ending::Late(_)) && head.keep_alive;
    let mut out = format!("HTTP/1.1 {} {}\r\n", plan.status, reason(plan.status));
    out.push_str("Server: pymatris-fault-server\r\n");
    out.push_str(&format!("Date: {}\r\n", http_date()));
    for (k, v) in &plan.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep && !plan.headers.iter().any(|(k, _)| k == "Connection") {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;

    let body: &[u8] = if head.method == "HEAD" {
        &[]
    } else {
        &plan.body
    };
    let limit = match plan.ending {
        Ending::DropAfter(n) | Ending::StallAfter(n) => (n as usize).min(body.len()),
        _ => body.len(),
    };
    let limit = dying.map_or(limit, |(left, _)| limit.min(left as usize));
    let mut sent = 0usize;
    for chunk in body[..limit].chunks(64 * 1024) {
        state.writing.fetch_add(1, Ordering::SeqCst);
        let wrote = stream.write_all(chunk).await;
        if wrote.is_ok() {
            sent += chunk.len();
            state.log.lock().expect("log poisoned")[index].body_bytes = sent as u64;
        }
        state.writing.fetch_sub(1, Ordering::SeqCst);
        wrote?;
        if let Some((_, counter)) = dying {
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    }
    stream.flush().await?;
    if dying.is_some() && limit < body.len() {
        // Died in the middle of this response.
        return Ok(false);
    }
    if let Ending::StallAfter(_) = plan.ending {
        tokio::time::sleep(STALL).await;
        return Ok(false);
    }
    Ok(keep)
}

/// The path of a request target, without query; absolute-form targets
/// (through a proxy) are reduced to their path.
fn request_path(target: &str) -> String {
    let mut path = target;
    if let Some(rest) = path.split_once("://").map(|(_, r)| r) {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

/// The current time as an HTTP date (enough for a `Date` header).
fn http_date() -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        let part = |r: &str, len| match select(Some(r), len) {
            Selection::Part(a, b) => Some((a, b)),
            _ => None,
        };
        assert_eq!(part("bytes=0-", 10), Some((0, 10)));
        assert_eq!(part("bytes=2-4", 10), Some((2, 5)));
        assert_eq!(part("bytes=2-400", 10), Some((2, 10)));
        assert_eq!(part("bytes=-3", 10), Some((7, 10)));
        assert_eq!(part("bytes=-30", 10), Some((0, 10)));
        assert!(matches!(
            select(Some("bytes=10-"), 10),
            Selection::Unsatisfiable
        ));
        assert!(matches!(
            select(Some("bytes=0-"), 0),
            Selection::Unsatisfiable
        ));
        assert!(matches!(
            select(Some("bytes=0-1,3-4"), 10),
            Selection::Whole
        ));
        assert!(matches!(select(Some("bytes=4-2"), 10), Selection::Whole));
        assert!(matches!(select(Some("items=0-1"), 10), Selection::Whole));
        assert!(matches!(select(None, 10), Selection::Whole));
    }

    #[test]
    fn paths_and_dates() {
        assert_eq!(request_path("/a/b?x=1"), "/a/b");
        assert_eq!(request_path("http://h:1/a?x"), "/a");
        assert_eq!(request_path("http://h:1"), "/");
        let date = http_date();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    }

    fn get(url: &str, extra: &str) -> (String, Vec<u8>) {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let end = find(&raw, b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&raw[..end]).into_owned(),
            raw[end + 4..].to_vec(),
        )
    }

    #[test]
    fn serves_ranges_and_faults() {
        let body: Vec<u8> = (0..=255).collect();
        let server = FaultServer::start([
            ("/a", Route::new(body.clone())),
            ("/empty", Route::new(Vec::new())),
            (
                "/drop",
                Route::new(body.clone()).behaviour(Behaviour::DropAfter {
                    bytes: 10,
                    times: 1,
                }),
            ),
            (
                "/long",
                Route::new(body.clone())
                    .behaviour(Behaviour::LongContentLength { extra: 5, times: 1 }),
            ),
            ("/r", Route::redirect(302, "/a")),
            (
                "/short",
                Route::new(body.clone()).behaviour(Behaviour::ShortRanges { max: 100 }),
            ),
        ]);
        let (h, b) = get(&server.url("/short"), "Range: bytes=10-\r\n");
        assert!(h.contains("Content-Range: bytes 10-109/256"), "{h}");
        assert_eq!(b, &body[10..110]);
        let (h, b) = get(&server.url("/a"), "Range: bytes=10-19\r\n");
        assert!(h.starts_with("HTTP/1.1 206"), "{h}");
        assert!(h.contains("Content-Range: bytes 10-19/256"), "{h}");
        assert_eq!(b, &body[10..20]);
        let (h, b) = get(&server.url("/a"), "");
        assert!(
            h.starts_with("HTTP/1.1 200") && h.contains("Accept-Ranges: bytes"),
            "{h}"
        );
        assert_eq!(b, body);
        let (h, _) = get(&server.url("/empty"), "Range: bytes=0-\r\n");
        assert!(
            h.starts_with("HTTP/1.1 416") && h.contains("bytes */0"),
            "{h}"
        );
        let (h, b) = get(&server.url("/drop"), "Range: bytes=0-\r\n");
        assert!(h.contains("Content-Length: 256"), "{h}");
        assert_eq!(b, &body[..10]);
        let (_, b) = get(&server.url("/drop"), "Range: bytes=0-\r\n");
        assert_eq!(b, body);
        let (h, b) = get(&server.url("/long"), "Range: bytes=0-\r\n");
        assert!(h.contains("Content-Length: 261"), "{h}");
        assert_eq!(b, body);
        let (h, _) = get(&server.url("/r"), "");
        assert!(
            h.starts_with("HTTP/1.1 302") && h.contains("Location: /a"),
            "{h}"
        );
        let (h, _) = get(&server.url("/nothing"), "");
        assert!(h.starts_with("HTTP/1.1 404"), "{h}");
        assert_eq!(server.hits("/drop"), 2);
        let drops = server.requests("/drop");
        assert!(drops[0].fault && !drops[1].fault);
        assert_eq!(drops[0].body_bytes, 10);
        assert_eq!(drops[0].range_start(), Some(0));
        assert_eq!(server.hits("/nothing"), 1);
    }

    /// The log counts every byte a client has read, even when the client
    /// reads the last one before the server's write returns (seen as
    /// 64 KiB missing from a count under load).
    #[test]
    fn bytes_a_client_has_read_are_counted() {
        use std::io::{Read, Write};
        let body = vec![7u8; 1 << 20];
        let server = FaultServer::start([("/a", Route::new(body.clone()))]);
        let host = server.addr.to_string();
        for round in 1..=50u64 {
            let mut s = std::net::TcpStream::connect(&host).unwrap();
            write!(s, "GET /a HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
            let mut raw = Vec::new();
            let mut chunk = vec![0u8; 1 << 16];
            // Keep-alive: read exactly the head and the body, no more.
            loop {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed early");
                raw.extend_from_slice(&chunk[..n]);
                if find(&raw, b"\r\n\r\n").is_some_and(|end| raw.len() - (end + 4) >= body.len()) {
                    break;
                }
            }
            assert_eq!(server.body_bytes("/a"), round * body.len() as u64);
        }
    }
}
