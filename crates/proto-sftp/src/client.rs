//! The SFTP v3 client (draft-ietf-secsh-filexfer-02) over an SSH channel:
//! the few requests a download needs, with handles, paths and data kept as
//! opaque bytes from end to end.
//!
//! It replaces russh-sftp, which keeps handles as `String` decoded lossily:
//! a server whose handles are not UTF-8 (asyncssh numbers them with a 4-byte
//! counter, so its 129th is `00 00 00 80`) got back a handle it never gave,
//! and every later file failed with "Invalid file handle". Patching that
//! would have meant vendoring russh-sftp whole (about 5,000 lines, its
//! serde encoding included) for a one-type change; a download needs only
//! `open`, `fstat`, `stat`, `read` and `close`, which fit here. Owning the
//! framing also lets a read's data be a slice of the packet it came in,
//! never copied again.
//!
//! Paths go out as the bytes the URL percent-decodes to, so a file whose
//! name is not UTF-8 is reachable (`%FF`); nothing here reads a name from
//! the server (no directory listings, no `realpath`), and its status
//! messages, shown to people only, are decoded lossily.
//!
//! One task reads replies and hands each to the request with its id;
//! another writes the queued requests, so any number of tasks can have
//! requests in flight on one session. When the channel ends, every request
//! waiting and every later one fails as "session closed".

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pymatris_core::ConnActivity;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

mod wire;

use self::wire::*;
pub(crate) use self::wire::{Attrs, Handle, LIMITS, Limits, SftpError, StatusCode};

#[derive(Default)]
struct Pending {
    waiting: HashMap<u32, oneshot::Sender<Reply>>,
    /// Set once the session ended: why.
    closed: Option<String>,
}

impl Pending {
    fn close(&mut self, why: String) {
        if self.closed.is_none() {
            tracing::debug!(reason = %why, "SFTP session closed");
            self.closed = Some(why);
        }
        // Dropping the senders wakes every request still waiting.
        self.waiting.clear();
    }
}

/// An SFTP session on one channel.
pub(crate) struct Sftp {
    out: mpsc::UnboundedSender<Bytes>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU32,
    timeout: Duration,
    /// Permits for open handles, when the server says how many it allows.
    handles: Option<Arc<Semaphore>>,
    extensions: Vec<(Bytes, Bytes)>,
    /// When a packet last came: a part whose reads wait behind others'
    /// is not stalled while the session still brings bytes.
    activity: ConnActivity,
    tasks: [JoinHandle<()>; 2],
}

impl fmt::Debug for Sftp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sftp")
            .field("timeout", &self.timeout)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Sftp {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A file opened for reading; its permit (if the server limits handles) is
/// held until it is closed.
#[derive(Debug)]
pub(crate) struct File {
    pub(crate) handle: Handle,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

impl Sftp {
    /// Starts SFTP on `stream` (a channel on which the `sftp` subsystem was
    /// requested): sends INIT, reads VERSION, then serves requests. Every
    /// request, this one included, fails with `Timeout` after `timeout`.
    /// Packets larger than `max_packet` are refused as a protocol error.
    pub(crate) async fn start<S>(stream: S, timeout: Duration, max_packet: u32) -> Result<Sftp>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rx, mut tx) = tokio::io::split(stream);
        let handshake = async {
            let mut init = BytesMut::with_capacity(9);
            init.put_u32(5);
            init.put_u8(FXP_INIT);
            init.put_u32(VERSION);
            tx.write_all(&init).await.map_err(closed)?;
            tx.flush().await.map_err(closed)?;
            let (kind, mut body) = read_packet(&mut rx, max_packet).await?;
            if kind != FXP_VERSION {
                return Err(SftpError::Protocol(format!(
                    "packet type {kind} where VERSION was expected"
                )));
            }
            let version = get_u32(&mut body)?;
            if version > VERSION {
                return Err(SftpError::Protocol(format!(
                    "the server answered version {version} to our {VERSION}"
                )));
            }
            let mut extensions = Vec::new();
            while body.has_remaining() {
                let name = get_string(&mut body)?;
                let data = get_string(&mut body)?;
                extensions.push((name, data));
            }
            Ok(extensions)
        };
        let extensions = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| SftpError::Timeout)??;

        let pending = Arc::new(Mutex::new(Pending::default()));
        let activity = ConnActivity::new();
        let reader = tokio::spawn(read_loop(rx, pending.clone(), max_packet, activity.clone()));
        let (out, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(tx, queue, pending.clone()));
        Ok(Sftp {
            out,
            pending,
            next_id: AtomicU32::new(1),
            timeout,
            handles: None,
            extensions,
            activity,
            tasks: [reader, writer],
        })
    }

    /// Whether the server announced `name` with `data` in its VERSION.
    pub(crate) fn has_extension(&self, name: &[u8], data: &[u8]) -> bool {
        self.extensions
            .iter()
            .any(|(n, d)| n.as_ref() == name && d.as_ref() == data)
    }

    /// When the session last received a packet.
    pub(crate) fn activity(&self) -> &ConnActivity {
        &self.activity
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.pending
            .lock()
            .map(|p| p.closed.is_some())
            .unwrap_or(true)
    }

    /// Asks `limits@openssh.com`; only when [`Sftp::has_extension`] says so.
    pub(crate) async fn limits(&self) -> Result<Limits> {
        let reply = self
            .request(FXP_EXTENDED, |b| put_string(b, LIMITS))
            .await?;
        let mut body = expect(reply, FXP_EXTENDED_REPLY)?;
        Ok(Limits {
            max_packet_len: get_u64(&mut body)?,
            max_read_len: get_u64(&mut body)?,
            max_write_len: get_u64(&mut body)?,
            max_open_handles: get_u64(&mut body)?,
        })
    }

    /// From now on, at most `n` files are open at once: a further `open`
    /// waits for a `close`. Servers refuse handles past their limit.
    pub(crate) fn limit_open_handles(&mut self, n: usize) {
        self.handles = Some(Arc::new(Semaphore::new(n.max(1))));
    }

    /// Opens `path` for reading.
    pub(crate) async fn open(&self, path: &[u8]) -> Result<File> {
        let permit = match &self.handles {
            Some(sem) => Some(
                sem.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SftpError::Closed("handle limit closed".into()))?,
            ),
            None => None,
        };
        let reply = self
            .request(FXP_OPEN, |b| {
                put_string(b, path);
                b.put_u32(FXF_READ);
                // No attributes.
                b.put_u32(0);
            })
            .await?;
        let mut body = expect(reply, FXP_HANDLE)?;
        let handle = Handle(get_string(&mut body)?);
        Ok(File { handle, permit })
    }

    /// Closes a handle.
    pub(crate) async fn close(&self, handle: &Handle) -> Result<()> {
        let reply = self
            .request(FXP_CLOSE, |b| put_string(b, &handle.0))
            .await?;
        expect_ok(reply)
    }

    /// Up to `len` bytes at `offset`; empty at the end of the file.
    pub(crate) async fn read(&self, handle: &Handle, offset: u64, len: u32) -> Result<Bytes> {
        let reply = self
            .request(FXP_READ, |b| {
                put_string(b, &handle.0);
                b.put_u64(offset);
                b.put_u32(len);
            })
            .await?;
        match reply.kind {
            FXP_STATUS => match status(reply.body)? {
                Err(SftpError::Status { code, .. }) if code == StatusCode::EOF => Ok(Bytes::new()),
                Err(e) => Err(e),
                Ok(()) => Err(SftpError::Protocol("OK where DATA was expected".into())),
            },
            _ => {
                let mut body = expect(reply, FXP_DATA)?;
                get_string(&mut body)
            }
        }
    }

    /// The attributes of an open file.
    pub(crate) async fn fstat(&self, handle: &Handle) -> Result<Attrs> {
        let reply = self
            .request(FXP_FSTAT, |b| put_string(b, &handle.0))
            .await?;
        get_attrs(&mut expect(reply, FXP_ATTRS)?)
    }

    /// The attributes of `path`, following symbolic links.
    pub(crate) async fn stat(&self, path: &[u8]) -> Result<Attrs> {
        let reply = self.request(FXP_STAT, |b| put_string(b, path)).await?;
        get_attrs(&mut expect(reply, FXP_ATTRS)?)
    }

    /// Opens the directory `path` for [`Sftp::readdir`].
    pub(crate) async fn opendir(&self, path: &[u8]) -> Result<Handle> {
        let reply = self.request(FXP_OPENDIR, |b| put_string(b, path)).await?;
        let mut body = expect(reply, FXP_HANDLE)?;
        Ok(Handle(get_string(&mut body)?))
    }

    /// The next names of an open directory, with their attributes (not
    /// following links); `None` at its end.
    pub(crate) async fn readdir(&self, handle: &Handle) -> Result<Option<Vec<(Bytes, Attrs)>>> {
        let reply = self
            .request(FXP_READDIR, |b| put_string(b, &handle.0))
            .await?;
        if reply.kind == FXP_STATUS {
            return match status(reply.body)? {
                Err(SftpError::Status { code, .. }) if code == StatusCode::EOF => Ok(None),
                Err(e) => Err(e),
                Ok(()) => Err(SftpError::Protocol("OK where NAME was expected".into())),
            };
        }
        names(expect(reply, FXP_NAME)?).map(Some)
    }

    /// Where the link `path` points, as the server stores it.
    pub(crate) async fn readlink(&self, path: &[u8]) -> Result<Bytes> {
        let reply = self.request(FXP_READLINK, |b| put_string(b, path)).await?;
        let mut found = names(expect(reply, FXP_NAME)?)?;
        found
            .pop()
            .map(|(name, _)| name)
            .ok_or_else(|| SftpError::Protocol("READLINK answered no name".into()))
    }

    /// Sends a request of `kind` whose fields after the id `fields` writes,
    /// and waits for its reply.
    async fn request(&self, kind: u8, fields: impl FnOnce(&mut BytesMut)) -> Result<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut packet = BytesMut::with_capacity(64);
        packet.put_u32(0);
        packet.put_u8(kind);
        packet.put_u32(id);
        fields(&mut packet);
        let len = (packet.len() - 4) as u32;
        packet[..4].copy_from_slice(&len.to_be_bytes());

        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("SFTP session poisoned");
            if let Some(why) = &pending.closed {
                return Err(SftpError::Closed(why.clone()));
            }
            pending.waiting.insert(id, tx);
        }
        // Forgets the request if this future is dropped or times out, so a
        // late reply finds nobody and is discarded.
        let _forget = Forget {
            pending: &self.pending,
            id,
        };
        if self.out.send(packet.freeze()).is_err() {
            return Err(self.closed_error());
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(SftpError::Timeout),
            Ok(Err(_)) => Err(self.closed_error()),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    fn closed_error(&self) -> SftpError {
        let why = self
            .pending
            .lock()
            .ok()
            .and_then(|p| p.closed.clone())
            .unwrap_or_else(|| "the channel ended".into());
        SftpError::Closed(why)
    }
}

struct Forget<'a> {
    pending: &'a Mutex<Pending>,
    id: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.waiting.remove(&self.id);
        }
    }
}

/// Reads replies and hands each to its request until the channel ends.
/// A NAME body: a count, then each name, its long form (skipped) and its
/// attributes.
fn names(mut body: Bytes) -> Result<Vec<(Bytes, Attrs)>> {
    let count = get_u32(&mut body)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let name = get_string(&mut body)?;
        get_string(&mut body)?;
        out.push((name, get_attrs(&mut body)?));
    }
    Ok(out)
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rx: R,
    pending: Arc<Mutex<Pending>>,
    max_packet: u32,
    activity: ConnActivity,
) {
    let why = loop {
        let (kind, mut body) = match read_packet(&mut rx, max_packet).await {
            Ok(p) => p,
            Err(SftpError::Closed(why)) => break why,
            Err(e) => break e.to_string(),
        };
        activity.received();
        let Ok(id) = get_u32(&mut body) else {
            break format!("a reply of type {kind} without a request id");
        };
        let waiter = pending.lock().ok().and_then(|mut p| p.waiting.remove(&id));
        // Nobody waits for a request whose reader gave up: drop its reply.
        if let Some(w) = waiter {
            let _ = w.send(Reply { kind, body });
        }
    };
    if let Ok(mut p) = pending.lock() {
        p.close(why);
    }
}

/// Writes queued requests, flushing when the queue runs dry.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut tx: W,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    pending: Arc<Mutex<Pending>>,
) {
    let result = async {
        while let Some(packet) = queue.recv().await {
            tx.write_all(&packet).await?;
            while let Ok(more) = queue.try_recv() {
                tx.write_all(&more).await?;
            }
            tx.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    if let Err(e) = result
        && let Ok(mut p) = pending.lock()
    {
        p.close(format!("writing: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A scripted server on the other end of a pipe: answers INIT, then
    /// each request as `answer` says.
    async fn serve(
        mut io: DuplexStream,
        answer: impl Fn(u8, u32, Bytes) -> Option<(u8, BytesMut)>,
    ) {
        let (kind, _) = read_packet(&mut io, 1 << 20).await.unwrap();
        assert_eq!(kind, FXP_INIT);
        let mut v = BytesMut::new();
        v.put_u8(FXP_VERSION);
        v.put_u32(3);
        put_string(&mut v, LIMITS);
        put_string(&mut v, b"1");
        send(&mut io, v).await;
        while let Ok((kind, mut body)) = read_packet(&mut io, 1 << 20).await {
            let id = body.get_u32();
            if let Some((rkind, fields)) = answer(kind, id, body) {
                let mut p = BytesMut::new();
                p.put_u8(rkind);
                p.put_u32(id);
                p.put_slice(&fields);
                send(&mut io, p).await;
            }
        }
    }

    async fn send(io: &mut DuplexStream, body: BytesMut) {
        io.write_u32(body.len() as u32).await.unwrap();
        io.write_all(&body).await.unwrap();
    }

    fn status_body(code: u32, msg: &str) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(code);
        put_string(&mut b, msg.as_bytes());
        put_string(&mut b, b"en");
        b
    }

    #[tokio::test]
    async fn handles_and_paths_go_back_byte_for_byte() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        // Handles that are not UTF-8, and a path that is not either.
        let handle: &[u8] = &[0, 0, 0, 0x80];
        let path: &[u8] = b"/d/\xff\xfe.bin";
        tokio::spawn(serve(theirs, move |kind, _, mut body| match kind {
            FXP_OPEN => {
                let got = get_string(&mut body).unwrap();
                if got.as_ref() != path {
                    return Some((FXP_STATUS, status_body(2, "no such file")));
                }
                let mut b = BytesMut::new();
                put_string(&mut b, handle);
                Some((FXP_HANDLE, b))
            }
            FXP_READ | FXP_FSTAT | FXP_CLOSE => {
                let got = get_string(&mut body).unwrap();
                if got.as_ref() != handle {
                    return Some((FXP_STATUS, status_body(4, "Invalid file handle")));
                }
                match kind {
                    FXP_READ => {
                        let offset = body.get_u64();
                        let mut b = BytesMut::new();
                        if offset >= 5 {
                            return Some((FXP_STATUS, status_body(1, "eof")));
                        }
                        put_string(&mut b, &b"hello"[offset as usize..]);
                        Some((FXP_DATA, b))
                    }
                    FXP_FSTAT => {
                        let mut b = BytesMut::new();
                        b.put_u32(ATTR_SIZE | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED);
                        b.put_u64(5);
                        b.put_u32(0o100644);
                        b.put_u32(1);
                        b.put_u32(1_700_000_000);
                        b.put_u32(1);
                        put_string(&mut b, b"x@example.org");
                        put_string(&mut b, b"y");
                        Some((FXP_ATTRS, b))
                    }
                    _ => Some((FXP_STATUS, status_body(0, ""))),
                }
            }
            _ => Some((FXP_STATUS, status_body(8, "unsupported"))),
        }));
        let sftp = Sftp::start(ours, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap();
        assert!(sftp.has_extension(LIMITS, b"1"));
        let file = sftp.open(path).await.unwrap();
        assert_eq!(file.handle.0.as_ref(), handle);
        assert_eq!(sftp.read(&file.handle, 1, 100).await.unwrap(), "ello");
        assert!(sftp.read(&file.handle, 5, 100).await.unwrap().is_empty());
        let attrs = sftp.fstat(&file.handle).await.unwrap();
        assert_eq!(
            attrs,
            Attrs {
                size: Some(5),
                permissions: Some(0o100644),
                mtime: Some(1_700_000_000),
            }
        );
        assert!(!attrs.is_dir());
        sftp.close(&file.handle).await.unwrap();
        let missing = sftp.open(b"/other").await.unwrap_err();
        assert!(
            matches!(missing, SftpError::Status { code, .. } if code == StatusCode::NO_SUCH_FILE),
            "{missing}"
        );
        assert_eq!(missing.to_string(), "No such file");
        let unsupported = sftp.stat(b"/x").await.unwrap_err();
        assert_eq!(
            unsupported.to_string(),
            "Operation unsupported: unsupported"
        );
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_alone() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        // The read at 0 is never answered; the one at 5 is.
        tokio::spawn(serve(theirs, |kind, _, mut body| {
            assert_eq!(kind, FXP_READ);
            get_string(&mut body).unwrap();
            if body.get_u64() == 0 {
                return None;
            }
            let mut b = BytesMut::new();
            put_string(&mut b, b"second");
            Some((FXP_DATA, b))
        }));
        let sftp = Sftp::start(ours, Duration::from_millis(300), 1 << 20)
            .await
            .unwrap();
        let h = Handle(Bytes::from_static(b"h"));
        let (a, b) = tokio::join!(sftp.read(&h, 0, 5), sftp.read(&h, 5, 5));
        assert!(matches!(a, Err(SftpError::Timeout)), "{a:?}");
        assert_eq!(b.unwrap(), "second");
        assert!(!sftp.is_closed());
        assert!(sftp.pending.lock().unwrap().waiting.is_empty());
    }

    #[tokio::test]
    async fn a_channel_that_ends_fails_every_request_as_closed() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut io = theirs;
            let _ = read_packet(&mut io, 1 << 20).await;
            let mut v = BytesMut::new();
            v.put_u8(FXP_VERSION);
            v.put_u32(3);
            send(&mut io, v).await;
            // Reads one request and hangs up.
            let _ = read_packet(&mut io, 1 << 20).await;
        });
        let sftp = Sftp::start(ours, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap();
        assert!(!sftp.has_extension(LIMITS, b"1"));
        let err = sftp.stat(b"/a").await.unwrap_err();
        assert!(matches!(err, SftpError::Closed(_)), "{err}");
        assert!(sftp.is_closed());
        let again = sftp.stat(b"/a").await.unwrap_err();
        assert!(matches!(again, SftpError::Closed(_)), "{again}");
    }

    #[tokio::test]
    async fn an_oversized_packet_closes_the_session() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(theirs, |_, _, _| {
            let mut b = BytesMut::new();
            put_string(&mut b, &vec![0u8; 5000]);
            Some((FXP_DATA, b))
        }));
        let sftp = Sftp::start(ours, Duration::from_secs(5), 4096)
            .await
            .unwrap();
        let h = Handle(Bytes::from_static(b"h"));
        let err = sftp.read(&h, 0, 5000).await.unwrap_err();
        assert!(
            matches!(err, SftpError::Closed(ref why) if why.contains("4096")),
            "{err}"
        );
        assert!(sftp.is_closed());
    }
}
