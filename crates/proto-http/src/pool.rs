//! Idle HTTP/1.1 connections kept for reuse, each driven by the task that
//! uses it.
//!
//! hyper-util's pooled `Client` spawns a task per connection, and one more
//! per response to put the connection back once it is idle. A request then
//! crosses tasks, and often the runtime's threads, several times: the
//! request to the connection's task, the response head back, each body
//! chunk back, and the return to the pool. For 2000 files of 16 KiB that
//! cost more CPU than the transfers themselves.
//!
//! Here a connection is a [`Lease`]: the sender and the connection's state
//! machine together, owned by one request at a time. The task that sends
//! the request polls the connection while it waits for the head and while
//! it reads the body (see `body.rs`), and puts the lease back into the
//! [`Pool`] when the body has ended. Nothing is spawned and no wakeup
//! crosses tasks.
//!
//! An idle connection is polled by nobody, so a server's close is noticed
//! when the connection is taken out again: it is polled once then, and
//! dropped if it has ended.
//!
//! A lease may also be one stream of a shared HTTP/2 connection (`h2.rs`),
//! which its own task drives; it goes back by being dropped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_rustls::MaybeHttpsStream;
use pymatris_core::Url;

use crate::connector::Conn;
use crate::h2;

/// What every connection runs over: TCP, or TLS over TCP.
pub(crate) type Io = MaybeHttpsStream<Conn>;

type ReqBody = Empty<Bytes>;

/// Which connections may serve a URL: same scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    https: bool,
    host: String,
    port: u16,
}

impl Key {
    pub(crate) fn of(url: &Url) -> Key {
        Key {
            https: url.scheme() == "https",
            host: url.host_str().unwrap_or("").to_ascii_lowercase(),
            port: url.port_or_known_default().unwrap_or(0),
        }
    }

    pub(crate) fn is_https(&self) -> bool {
        self.https
    }
}

/// Idle connections by [`Key`], and how to start new ones.
pub(crate) struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    /// The HTTP/2 connections, shared rather than leased.
    pub(crate) h2: h2::Conns,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    builder: Builder,
}

struct Idle {
    lease: Lease,
    since: Instant,
}

impl Pool {
    pub(crate) fn new(max_idle_per_host: usize, idle_timeout: Duration, max_buf: usize) -> Self {
        let mut builder = Builder::new();
        builder.max_buf_size(max_buf);
        Pool {
            idle: Mutex::new(HashMap::new()),
            h2: h2::Conns::default(),
            max_idle_per_host,
            idle_timeout,
            builder,
        }
    }

    /// The most recently used idle connection for `key` that can still
    /// take a request.
    pub(crate) fn checkout(self: &Arc<Self>, key: &Key) -> Option<Lease> {
        loop {
            let Idle { mut lease, since } = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.get_mut(key)?.pop()?
            };
            if since.elapsed() >= self.idle_timeout {
                continue;
            }
            // Notice a close or a stray byte from the server since.
            lease.drive(&mut Context::from_waker(Waker::noop()));
            if lease.h1_ready() {
                lease.reused = true;
                return Some(lease);
            }
        }
    }

    /// A stream of an HTTP/2 connection to `key` with room for one.
    pub(crate) fn checkout_h2(self: &Arc<Self>, key: &Key) -> Option<Lease> {
        let stream = self.h2.checkout(key)?;
        Some(self.h2_lease(key.clone(), stream, true))
    }

    fn h2_lease(self: &Arc<Self>, key: Key, stream: h2::Stream, reused: bool) -> Lease {
        Lease {
            conn: Kind::H2(stream),
            proxied: false,
            reused,
            key,
            pool: Arc::downgrade(self),
        }
    }

    /// A new connection over `io`, which reaches `key` directly or, when
    /// `proxied`, through a proxy that takes absolute-form requests; HTTP/2
    /// when TLS negotiated it, and then shared with other requests.
    pub(crate) async fn handshake(
        self: &Arc<Self>,
        key: Key,
        io: Io,
        proxied: bool,
    ) -> Result<Lease, hyper::Error> {
        if negotiated_h2(&io) {
            let stream = self.h2.handshake(&key, io).await?;
            return Ok(self.h2_lease(key, stream, false));
        }
        let (sender, conn) = self.builder.handshake(io).await?;
        Ok(Lease {
            conn: Kind::H1 {
                sender,
                conn: Some(conn),
            },
            proxied,
            reused: false,
            key,
            pool: Arc::downgrade(self),
        })
    }

    fn put(&self, lease: Lease) {
        let oldest = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.entry(lease.key.clone()).or_default();
            let oldest = (list.len() >= self.max_idle_per_host).then(|| list.remove(0));
            list.push(Idle {
                lease,
                since: Instant::now(),
            });
            oldest
        };
        // Closed outside the lock.
        drop(oldest);
    }
}

/// Whether TLS agreed on HTTP/2 (ALPN `h2`).
fn negotiated_h2(io: &Io) -> bool {
    match io {
        MaybeHttpsStream::Https(tls) => tls.inner().get_ref().1.alpn_protocol() == Some(b"h2"),
        MaybeHttpsStream::Http(_) => false,
    }
}

/// One connection, owned by one request at a time, or one stream of a
/// shared HTTP/2 connection.
pub(crate) struct Lease {
    conn: Kind,
    proxied: bool,
    reused: bool,
    key: Key,
    /// Where it goes back to. Weak: the pool holds its idle leases, and
    /// the connections must close when the protocol that owns the pool
    /// is dropped.
    pool: Weak<Pool>,
}

// The HTTP/1.1 connection is inline as it was before HTTP/2 came: a
// lease moves between a request and the pool, never copied in bulk.
#[allow(clippy::large_enum_variant)]
enum Kind {
    H1 {
        sender: SendRequest<ReqBody>,
        /// `None` once the connection has ended.
        conn: Option<Connection<Io, ReqBody>>,
    },
    H2(h2::Stream),
}

/// Why a request got no response.
pub(crate) enum SendError {
    /// The connection closed before the request was written: it may go
    /// again on another connection.
    NotSent(Box<Request<ReqBody>>, hyper::Error),
    /// The request went out, or may have; the error says what happened.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl From<TrySendError<Request<ReqBody>>> for SendError {
    fn from(mut err: TrySendError<Request<ReqBody>>) -> Self {
        match err.take_message() {
            Some(request) => SendError::NotSent(Box::new(request), err.into_error()),
            None => SendError::Failed(err.into_error().into()),
        }
    }
}

impl Lease {
    /// Whether requests on this connection go to a proxy in absolute form.
    pub(crate) fn proxied(&self) -> bool {
        self.proxied
    }

    /// Whether this connection served a request before.
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// Whether this is an HTTP/2 stream.
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self.conn, Kind::H2(_))
    }

    /// Whether an HTTP/1.1 connection is open and free for a request.
    fn h1_ready(&self) -> bool {
        match &self.conn {
            Kind::H1 { sender, conn } => conn.is_some() && sender.is_ready(),
            Kind::H2(_) => false,
        }
    }

    /// Sends `request` and waits for the response head, driving the
    /// connection meanwhile (an HTTP/2 connection drives itself).
    pub(crate) async fn send(
        &mut self,
        request: Request<ReqBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let (sender, conn) = match &mut self.conn {
            Kind::H1 { sender, conn } => (sender, conn),
            Kind::H2(stream) => {
                // The absolute URI's authority is the request's
                // `:authority`; nginx answers 400 to a `Host` beside it.
                // (Put back if the request goes again, over HTTP/1.1.)
                let mut request = request;
                let host = request.headers_mut().remove(http::header::HOST);
                return match stream.sender().try_send_request(request).await {
                    Ok(response) => {
                        stream.sized(response.body().size_hint().exact());
                        Ok(response)
                    }
                    Err(mut err) => match err.take_message() {
                        Some(mut request) => {
                            if let Some(host) = host {
                                request.headers_mut().insert(http::header::HOST, host);
                            }
                            Err(SendError::NotSent(Box::new(request), err.into_error()))
                        }
                        None => Err(SendError::Failed(err.into_error().into())),
                    },
                };
            }
        };
        let mut pending = pin!(sender.try_send_request(request));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = pending.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(SendError::from));
            }
            if drive(conn, cx) {
                // The connection ended, and with it every request it held:
                // the answer is in `pending` now.
                if let Poll::Ready(result) = pending.as_mut().poll(cx) {
                    return Poll::Ready(result.map_err(SendError::from));
                }
                return Poll::Ready(Err(SendError::Failed(Box::new(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before the response",
                )))));
            }
            Poll::Pending
        })
        .await
    }

    /// Polls an HTTP/1.1 connection: it reads and writes what it can, and
    /// hands what it read to the response body. Returns whether it has
    /// ended (it is dropped then, which ends its body too).
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.conn {
            Kind::H1 { conn, .. } => drive(conn, cx),
            Kind::H2(_) => false,
        }
    }

    /// Back to the pool once its response has been read to the end, if
    /// the connection can take another request. (A stream of HTTP/2 ends
    /// here, and its connection takes the next.)
    pub(crate) fn release(mut self) {
        // Let the connection see that the body was read and turn idle.
        self.drive(&mut Context::from_waker(Waker::noop()));
        if self.h1_ready()
            && let Some(pool) = self.pool.upgrade()
        {
            pool.put(self);
        }
    }
}

/// See [`Lease::drive`].
fn drive(conn: &mut Option<Connection<Io, ReqBody>>, cx: &mut Context<'_>) -> bool {
    let Some(running) = conn else {
        return true;
    };
    match Pin::new(running).poll(cx) {
        Poll::Pending => false,
        Poll::Ready(result) => {
            if let Err(err) = result {
                tracing::debug!("HTTP connection ended: {err}");
            }
            *conn = None;
            true
        }
    }
}
