//! HTTP/2 connections, shared by the requests they carry: many small files
//! over one TLS connection cost one handshake rather than one each, and
//! none waits for another's response as on an HTTP/1.1 connection.
//!
//! Which requests share a connection is the rule here. A part of a large
//! file (a range that does not start at byte 0) never asks for one: one
//! TCP connection per part is what parallel parts are for (a congestion
//! window, a socket buffer and any per-connection cap of its own), and
//! HTTP/1.1 carries a bulk stream with less framing, so parts keep to
//! HTTP/1.1 connections of their own. A file's first request and small
//! files go to an HTTP/2 connection with fewer than [`MAX_STREAMS`] open
//! streams and none that turned out to be bulk (a response longer than
//! [`BULK`]); else a new connection is opened. While it is not known
//! whether a host speaks HTTP/2 (its first connection), or while one HTTP/2
//! connection to it is being opened, requests wait for that one rather
//! than each opening its own.
//!
//! An HTTP/2 connection is driven by a task of its own (hyper's design:
//! its streams belong to many requests), unlike the HTTP/1.1 leases of
//! `pool.rs`, which the request's own task drives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::TokioExecutor;

use crate::pool::{Io, Key};

/// Open streams per HTTP/2 connection before another connection is
/// opened: a connection is one congestion window (and one cap, where a
/// server caps connections), and eight streams keep one busy across a long
/// round trip while a batch's sixteen files at most spread over two.
pub(crate) const MAX_STREAMS: usize = 8;

/// A response body at least this long makes its stream bulk: its
/// connection takes no new stream until it ends, so that small files do
/// not queue behind it, and it keeps the connection's window to itself.
pub(crate) const BULK: u64 = 1 << 20;

/// The flow-control windows: HTTP/2's default of 64 KiB per stream would
/// allow one window per round trip (about 1.6 MB/s over 40 ms).
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;

/// One HTTP/2 connection and the streams it carries.
pub(crate) struct Shared {
    sender: SendRequest<Empty<Bytes>>,
    streams: AtomicUsize,
    bulk: AtomicUsize,
}

/// What is known of one host's HTTP/2.
#[derive(Default)]
struct Host {
    conns: Vec<Arc<Shared>>,
    /// Whether the host negotiated HTTP/2 when offered (`None`: not asked
    /// yet).
    speaks_h2: Option<bool>,
    /// Held while a connection that may be HTTP/2 is being opened.
    gate: Arc<tokio::sync::Mutex<()>>,
}

/// The HTTP/2 connections of a protocol instance, by [`Key`].
#[derive(Default)]
pub(crate) struct Conns {
    hosts: Mutex<HashMap<Key, Host>>,
}

impl Conns {
    fn with<T>(&self, key: &Key, f: impl FnOnce(&mut Host) -> T) -> T {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        f(hosts.entry(key.clone()).or_default())
    }

    /// A stream on a connection to `key` with room for one.
    pub(crate) fn checkout(&self, key: &Key) -> Option<Stream> {
        self.with(key, |host| {
            host.conns.retain(|c| !c.sender.is_closed());
            let shared = host.conns.iter().find(|c| {
                c.bulk.load(Ordering::SeqCst) == 0
                    && c.streams.load(Ordering::SeqCst) < MAX_STREAMS
                    && c.sender.is_ready()
            })?;
            Some(Stream::new(shared.clone()))
        })
    }

    /// Whether `key` answered an offer of HTTP/2 with HTTP/1.1.
    pub(crate) fn refused(&self, key: &Key) -> bool {
        self.with(key, |host| host.speaks_h2 == Some(false))
    }

    /// The lock to hold while opening a connection to `key` that may be
    /// HTTP/2.
    pub(crate) fn gate(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        self.with(key, |host| host.gate.clone())
    }

    /// Notes what `key` negotiated when offered HTTP/2.
    pub(crate) fn negotiated(&self, key: &Key, h2: bool) {
        self.with(key, |host| host.speaks_h2 = Some(h2));
    }

    /// A new HTTP/2 connection over `io`, driven by a task of its own, and
    /// its first stream.
    pub(crate) async fn handshake(&self, key: &Key, io: Io) -> Result<Stream, hyper::Error> {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_reset_streams(MAX_STREAMS * 4);
        let (sender, conn) = builder.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("HTTP/2 connection ended: {err}");
            }
        });
        let shared = Arc::new(Shared {
            sender,
            streams: AtomicUsize::new(0),
            bulk: AtomicUsize::new(0),
        });
        let stream = Stream::new(shared.clone());
        self.with(key, |host| {
            host.speaks_h2 = Some(true);
            host.conns.push(shared);
        });
        Ok(stream)
    }
}

/// One request's stream on a shared connection, counted until dropped.
pub(crate) struct Stream {
    shared: Arc<Shared>,
    bulk: bool,
}

impl Stream {
    fn new(shared: Arc<Shared>) -> Stream {
        shared.streams.fetch_add(1, Ordering::SeqCst);
        Stream {
            shared,
            bulk: false,
        }
    }

    /// A sender for this stream's request.
    pub(crate) fn sender(&self) -> SendRequest<Empty<Bytes>> {
        self.shared.sender.clone()
    }

    /// Marks the stream bulk when its body is at least [`BULK`] long.
    pub(crate) fn sized(&mut self, len: Option<u64>) {
        if !self.bulk && len.is_some_and(|n| n >= BULK) {
            self.bulk = true;
            self.shared.bulk.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.streams.fetch_sub(1, Ordering::SeqCst);
        if self.bulk {
            self.shared.bulk.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
