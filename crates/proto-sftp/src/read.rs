//! Pipelined reads of one remote file: many SFTP read requests in flight,
//! each as large as the server serves, answered in order, and none past the
//! end of the range asked for.
//!
//! One request at a time would wait a round trip per 255 KiB; with a window
//! of requests in flight the server streams. russh-sftp's `File` pipelined
//! too, but read ahead past the range's end (the engine then drops the
//! stream, and the server still sends every byte asked for), so the
//! requests are issued here on our own session (`client.rs`).
//!
//! How many are in flight follows what the connection needs (its rate
//! times its round trip, shared by the parts on it): more only queues
//! answers behind each other's, and a part cut short (the engine splits
//! and takes over parts) leaves every answered read to discard. Nor is a
//! read asked past where the engine says the part now ends (`PartEnd`):
//! a cut inside the range costs only the reads already in flight. A part
//! also moves to a less busy connection of its host when the pool opened
//! one (`conn.rs`): its reads already asked are answered where they were
//! asked, in order, before the first read on the new connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{File, Handle, Sftp, SftpError};
use crate::conn::Lease;
use crate::error;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use pymatris_core::{ByteStream, Carrier, PartEnd, Result};

/// Read requests in flight per part at most: 32 x 255 KiB = 8 MiB, half the
/// SSH channel window.
pub(crate) const MAX_IN_FLIGHT: usize = 32;

/// How often a part looks for a less busy connection.
const MOVE_CHECK: Duration = Duration::from_millis(100);

/// A part moves only with this many reads' worth left to ask for: the
/// move costs a round trip (an open).
const MOVE_MIN_READS: u64 = 4;

/// Read requests in flight when a file is opened without a known end (the
/// first request of a file, before its size is known): enough to start
/// streaming, few enough that a small file does not ask for megabytes
/// past its end.
const PROBE: usize = 1;

/// Whether a range's end lies within the file before the file's size is
/// read: the engine asks a range that starts past byte 0 only of a file
/// whose size it knows (a part cut from it, a resume after a stat), but
/// asks a file's first range, from 0, before it knows the size.
pub(crate) fn end_known(start: u64, end: Option<u64>) -> bool {
    start > 0 && end.is_some()
}

/// Whether a range from `next` to `end` is long enough to move to another
/// connection (the move costs an open): what the pool's growth counts.
pub(crate) fn movable(next: u64, end: Option<u64>, chunk: u32) -> bool {
    end.is_some_and(|end| end.saturating_sub(next) >= MOVE_MIN_READS * u64::from(chunk))
}

/// An open remote file, closed when the last user drops it.
pub(crate) struct OpenFile {
    pub(crate) sftp: Arc<Sftp>,
    pub(crate) handle: Handle,
    /// The session's permit for this handle, if it limits them: given
    /// back once the close is answered.
    file: Option<File>,
}

impl OpenFile {
    pub(crate) fn new(sftp: Arc<Sftp>, file: File) -> OpenFile {
        OpenFile {
            sftp,
            handle: file.handle.clone(),
            file: Some(file),
        }
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // The close needs a round trip; nobody waits for it. Outside a
        // runtime (at exit) the connection goes away anyway.
        if let (Ok(rt), Some(file)) = (tokio::runtime::Handle::try_current(), self.file.take()) {
            let sftp = self.sftp.clone();
            rt.spawn(async move {
                let _ = sftp.close(&file.handle).await;
                drop(file.permit);
            });
        }
    }
}

type ReadFuture = Pin<Box<dyn Future<Output = (u64, u32, Result<Bytes, SftpError>)> + Send>>;

/// The reads of one range of one open file.
pub(crate) struct Reader {
    lease: Lease,
    file: Arc<OpenFile>,
    /// The offset of the next request to send.
    next: u64,
    /// One past the last byte wanted, once known.
    end: Option<u64>,
    /// Whether the file's size is known (`limit_to`): until then `end` is
    /// the engine's guess, which for a small file runs far past its end.
    sized: bool,
    /// Where the engine says the part now ends, lowered when it cuts the
    /// part inside this range: no read is asked past it, so a cut part
    /// leaves only the reads already in flight to discard.
    part_end: Option<PartEnd>,
    /// The size of each request.
    chunk: u32,
    in_flight: FuturesOrdered<ReadFuture>,
    done: bool,
    /// The remote path, for messages.
    path: String,
    /// The remote path, to open the file on another connection.
    remote: Vec<u8>,
    last_check: Instant,
    /// The connection the reads go to, for the engine's stall rule: it
    /// follows the part when it moves.
    carrier: Carrier,
}

impl Reader {
    pub(crate) fn new(
        lease: Lease,
        file: Arc<OpenFile>,
        start: u64,
        end: Option<u64>,
        part_end: Option<PartEnd>,
        path: &str,
        remote: &[u8],
    ) -> Reader {
        let chunk = lease.read_len;
        let carrier = Carrier::new(lease.sftp.activity());
        let mut r = Reader {
            lease,
            file,
            next: start,
            end,
            sized: end_known(start, end),
            part_end,
            chunk,
            in_flight: FuturesOrdered::new(),
            done: false,
            path: path.to_owned(),
            remote: remote.to_owned(),
            last_check: Instant::now(),
            carrier,
        };
        let first = if end.is_some() {
            r.lease.read_depth(MAX_IN_FLIGHT)
        } else {
            PROBE
        };
        r.fill(first);
        r
    }

    /// Which connection carries the reads, wherever they move.
    pub(crate) fn carrier(&self) -> Carrier {
        self.carrier.clone()
    }

    /// Stops at `size`: a file is read up to the size it had when opened.
    pub(crate) fn limit_to(&mut self, size: u64) {
        self.end = Some(self.end.map_or(size, |e| e.min(size)));
        self.sized = true;
        self.lease.set_movable(self.movable());
    }

    /// Sends requests until `window` are in flight or the end is reached.
    fn fill(&mut self, window: usize) {
        let cut = self.part_end.as_ref().map(PartEnd::get);
        while !self.done && self.in_flight.len() < window {
            let end = match (self.end, cut) {
                (Some(end), Some(cut)) => Some(end.min(cut)),
                (end, cut) => end.or(cut),
            };
            let len = match end {
                Some(end) if self.next >= end => break,
                Some(end) => (end - self.next).min(u64::from(self.chunk)) as u32,
                None => self.chunk,
            };
            let offset = self.next;
            let file = self.file.clone();
            let meter = self.lease.meter.clone();
            self.in_flight.push_back(Box::pin(async move {
                let result = file.sftp.read(&file.handle, offset, len).await;
                if let Ok(data) = &result {
                    meter.add(data.len() as u64);
                }
                (offset, len, result)
            }));
            self.next += u64::from(len);
        }
    }

    /// The next chunk of the range, `None` at its end (or the file's).
    pub(crate) async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        self.lease.tick();
        self.maybe_move().await;
        let depth = self.lease.read_depth(MAX_IN_FLIGHT);
        self.fill(depth);
        self.lease.set_movable(self.movable());
        let Some((offset, len, result)) = self.in_flight.next().await else {
            self.done = true;
            return None;
        };
        match result {
            // The end of the file (EOF, or no data).
            Ok(data) if data.is_empty() => self.finish(),
            Ok(mut data) => {
                let n = data.len();
                if n > len as usize {
                    data.truncate(len as usize);
                } else if n < len as usize {
                    // A short read: the server serves less per request than
                    // asked. The requests in flight assumed otherwise; drop
                    // them, ask from here on in the server's size.
                    self.in_flight = FuturesOrdered::new();
                    self.next = offset + n as u64;
                    if n >= 1024 {
                        self.chunk = n as u32;
                    }
                }
                Some(Ok(data))
            }
            Err(e) => {
                self.done = true;
                self.in_flight = FuturesOrdered::new();
                let err = error::sftp(&format!("reading {} at byte {offset}", self.path), e);
                if error::breaks_connection(&err) {
                    self.lease.mark_dead();
                }
                Some(Err(err))
            }
        }
    }

    /// Whether enough of the range is left to ask for to move it to
    /// another connection. Not before the file's size is known: a small
    /// file's first read, asked with its size, would count as a part the
    /// pool should open connections for (`growth.rs`).
    fn movable(&self) -> bool {
        !self.done && self.sized && movable(self.next, self.end, self.chunk)
    }

    /// Moves the reads not asked yet to a less busy connection, if the
    /// pool has one and enough of the range is left to make it worth an
    /// open.
    async fn maybe_move(&mut self) {
        let Some(end) = self.end else {
            return;
        };
        if self.last_check.elapsed() < MOVE_CHECK
            || end.saturating_sub(self.next) < MOVE_MIN_READS * u64::from(self.chunk)
        {
            return;
        }
        self.last_check = Instant::now();
        let Some(lease) = self.lease.better() else {
            return;
        };
        let asked = Instant::now();
        match lease.sftp.open(&self.remote).await {
            Ok(opened) => {
                lease.meter.saw_round_trip(asked.elapsed());
                self.file = Arc::new(OpenFile::new(lease.sftp.clone(), opened));
                // The reads in flight keep the old file open until they
                // are answered.
                self.lease = lease;
                self.carrier.moved_to(self.lease.sftp.activity());
            }
            Err(e) => {
                tracing::debug!(path = %self.path, error = %e, "cannot move a part to another SSH connection");
            }
        }
    }

    /// End of file: whatever is in flight asked past it.
    fn finish(&mut self) -> Option<Result<Bytes>> {
        self.done = true;
        self.in_flight = FuturesOrdered::new();
        None
    }

    /// The body: `first` (a chunk already read), then the rest.
    pub(crate) fn into_stream(self, first: Option<Result<Bytes>>) -> ByteStream {
        let state = (first, self);
        Box::pin(futures_util::stream::unfold(
            state,
            |(first, mut reader)| async move {
                let item = match first {
                    Some(item) => Some(item),
                    None => reader.next_chunk().await,
                };
                item.map(|item| (item, (None, reader)))
            },
        ))
    }
}
