//! The bytes of a `RETR`, as the engine's [`ByteStream`](pymatris_core::ByteStream).
//!
//! At the end of the data the server's final reply is read (`226`, or a
//! `426`/`451` that makes the transfer a retryable failure) and the
//! session goes back to the pool. The engine drops a body as soon as it
//! has the bytes of its range: then the data connection is closed and
//! the reply (`426` for the cut transfer, or `226` when the server had sent
//! everything) is read by a background task, which pools the session
//! again. Sending `ABOR` is not needed, and fails against vsftpd. A
//! small listed file next door gave its session back when its transfer
//! began (`EARLY_MAX` in `pipeline.rs`): its body holds the data connection
//! alone, and the session's next user reads the final reply.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use pymatris_core::{Error, ErrorKind};
use suppaftp::tokio::{AsyncRustlsStream, TransferStream};
use suppaftp::{FtpError, FtpResult, Status};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::error::{io_error, keeps_session, timeout_error, transfer_reply_error};
use crate::pool::{Draining, Session};
use crate::window::Tail;

/// Bytes read from the data connection at most at once: as much as hyper
/// reads from an HTTP connection. Each data connection is new, and a read
/// takes whatever has arrived; a smaller cap meant more, smaller reads and
/// more CPU for the same bytes (`docs/benchmarks.md`, "Figures behind the
/// code").
const CHUNK: usize = 1024 * 1024;
/// Below this much free room, the buffer is renewed before a read.
const MIN_ROOM: usize = 128 * 1024;

pub(crate) type Transfer = TransferStream<AsyncRustlsStream>;
type Finish = Pin<Box<dyn Future<Output = Option<Error>> + Send>>;

/// A data connection: suppaftp's, or one opened for a pipelined `RETR`
/// (`pipeline.rs`), whose final reply is read here.
pub(crate) enum Data {
    Client(Transfer),
    Own(TcpStream),
}

impl Data {
    fn socket(&self) -> &TcpStream {
        match self {
            Data::Client(t) => t.get_ref().get_ref(),
            Data::Own(s) => s,
        }
    }

    /// Closes the data connection and reads the server's final reply.
    async fn finish(self, session: &mut Session) -> FtpResult<()> {
        match self {
            Data::Client(t) => t.finish().await,
            Data::Own(s) => {
                drop(s);
                final_reply(session).await
            }
        }
    }
}

/// Reads the final reply of a transfer whose commands this crate wrote
/// itself (`pipeline.rs`): `226`, or `250` from some servers.
pub(crate) async fn final_reply(session: &mut Session) -> FtpResult<()> {
    let ok = [Status::ClosingDataConnection, Status::RequestedFileActionOk];
    session.ftp.read_response_in(&ok).await.map(|_| ())
}

impl tokio::io::AsyncRead for Data {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Data::Client(t) => Pin::new(t).poll_read(cx, buf),
            Data::Own(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// A running transfer and the session it belongs to, unless the session
/// went back to the pool when the transfer began (`early` in
/// `FtpProtocol::fetch_pipelined`): its next user reads the final reply.
struct Live {
    transfer: Data,
    session: Option<Session>,
}

/// The body of a `RETR`.
pub(crate) struct Body {
    live: Option<Live>,
    finishing: Option<Finish>,
    done: bool,
    buf: BytesMut,
    /// For a part that may end before the end of the file: where it ends,
    /// and its window near there.
    tail: Option<Tail>,
    /// For a file whose size came from its listing, not from the server
    /// just now: the bytes it should still send. Its last bytes are given
    /// only once the data has ended there (the engine stops reading at the
    /// size it was told, and would keep a file that grew cut short).
    exact_left: Option<u64>,
    timeout: Duration,
    /// `RETR <url>`, for messages.
    what: String,
}

impl Body {
    /// Checks that the data ends after exactly `len` more bytes.
    pub(crate) fn ending_at(mut self, len: Option<u64>) -> Body {
        self.exact_left = len;
        self
    }

    pub(crate) fn new(
        transfer: Data,
        session: Option<Session>,
        tail: Option<Tail>,
        timeout: Duration,
        what: String,
    ) -> Body {
        Body {
            live: Some(Live { transfer, session }),
            finishing: None,
            done: false,
            buf: BytesMut::new(),
            tail,
            exact_left: None,
            timeout,
            what,
        }
    }
}

/// Reads the final reply of a transfer whose data ended, and pools the
/// session when the control connection is still in step.
async fn finish(live: Live, timeout: Duration, what: String) -> Option<Error> {
    let Live {
        transfer,
        session: Some(mut session),
    } = live
    else {
        // The session's next user reads the reply; a short file is the
        // engine's to see.
        return None;
    };
    match tokio::time::timeout(timeout, transfer.finish(&mut session)).await {
        Ok(Ok(())) => {
            session.release();
            None
        }
        Ok(Err(FtpError::UnexpectedResponse(reply))) => {
            let err = transfer_reply_error(&reply, &what);
            if keeps_session(&FtpError::UnexpectedResponse(reply)) {
                session.release();
            }
            Some(err)
        }
        Ok(Err(FtpError::ConnectionError(e))) => {
            // The data ended and the control connection broke: the server
            // died or cut us off, maybe before the end of the file.
            let err = io_error(e, &format!("{what}: after the data"));
            Some(Error::new(ErrorKind::Truncated, err.message().to_owned()).with_source(err))
        }
        Ok(Err(e)) => Some(crate::error::ftp_error(e, &what)),
        Err(_) => Some(timeout_error(
            timeout,
            &format!("{what}: waiting for the final reply"),
        )),
    }
}

/// Closes a transfer the engine no longer wants and pools its session once
/// the server has answered for it.
async fn drain(live: Live, timeout: Duration, draining: Draining) {
    let _draining = draining;
    let Live {
        transfer,
        session: Some(mut session),
    } = live
    else {
        return;
    };
    match tokio::time::timeout(timeout, transfer.finish(&mut session)).await {
        Ok(Ok(())) => session.release(),
        Ok(Err(e)) if keeps_session(&e) => session.release(),
        Ok(Err(e)) => tracing::debug!(error = %e, "closing a session after a cut transfer"),
        Err(_) => tracing::debug!("no reply after a cut transfer; closing the session"),
    }
}

impl Stream for Body {
    type Item = pymatris_core::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(fut) = this.finishing.as_mut() {
                let outcome = std::task::ready!(fut.as_mut().poll(cx));
                this.finishing = None;
                this.done = true;
                return Poll::Ready(outcome.map(Err));
            }
            let Some(live) = this.live.as_mut() else {
                this.done = true;
                continue;
            };
            if this.buf.capacity() - this.buf.len() < MIN_ROOM {
                // Reuses the last allocation when the engine has let go of
                // the chunks cut from it.
                this.buf.reserve(CHUNK);
            }
            let allowed = match this.tail.as_mut() {
                // A part that reaches the end of a file whose size came from
                // its listing ends with its data, whose last bytes are
                // checked against that size (`exact_left`): the part's end
                // stops nothing there.
                Some(t) if this.exact_left.is_some_and(|left| t.left() >= left) => None,
                Some(t) => Some(t.allowed(live.transfer.socket())),
                None => None,
            };
            let read = match allowed {
                Some(0) => {
                    // The part ends here: the transfer is let go, and the
                    // server's answer for it read in the background.
                    this.done = true;
                    let live = this.live.take().expect("live transfer");
                    let_go(live, this.timeout);
                    return Poll::Ready(None);
                }
                // Up to where the window must shrink or the part ends, and
                // no further.
                Some(n) if n < CHUNK as u64 => {
                    let mut upto = (&mut live.transfer).take(n);
                    tokio_util::io::poll_read_buf(Pin::new(&mut upto), cx, &mut this.buf)
                }
                _ => tokio_util::io::poll_read_buf(Pin::new(&mut live.transfer), cx, &mut this.buf),
            };
            if let (Some(tail), Poll::Ready(Ok(n))) = (this.tail.as_mut(), &read) {
                tail.read(*n);
            }
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if !this.buf.is_empty() => {
                    // The last bytes, held until the data ended. The
                    // transfer stays live: the engine, which now has every
                    // byte, drops the body, and the drop pools the session
                    // (the next poll would see the end again).
                    return Poll::Ready(Some(Ok(this.buf.split().freeze())));
                }
                Poll::Ready(Ok(0)) => {
                    let live = this.live.take().expect("live transfer");
                    this.finishing = Some(Box::pin(finish(live, this.timeout, this.what.clone())));
                }
                Poll::Ready(Ok(n)) => match this.exact_left.as_mut() {
                    None => return Poll::Ready(Some(Ok(this.buf.split().freeze()))),
                    Some(left) if (n as u64) > *left => {
                        this.done = true;
                        // Closed, not pooled: the server is still sending.
                        this.live = None;
                        return Poll::Ready(Some(Err(Error::new(
                            ErrorKind::Changed,
                            format!("{}: longer than its listing said", this.what),
                        ))));
                    }
                    Some(left) => {
                        *left -= n as u64;
                        if *left > 0 {
                            return Poll::Ready(Some(Ok(this.buf.split().freeze())));
                        }
                        // Held until the data ends, or goes on.
                    }
                },
                Poll::Ready(Err(e)) => {
                    // The data connection broke: so may have the control
                    // connection; it is closed rather than pooled.
                    this.live = None;
                    this.done = true;
                    let err = io_error(e, &format!("{}: reading the data", this.what));
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            let_go(live, self.timeout);
        }
    }
}

/// Closes a transfer before its end, and pools its session once the
/// server has answered for it.
fn let_go(live: Live, timeout: Duration) {
    let Some(session) = &live.session else {
        // Only the data connection: its session's next user reads the
        // server's answer.
        return;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            // Counted before the task runs, so that the next transfer
            // (often asked for right away) waits for this session rather
            // than log in anew.
            let draining = Draining::new(session);
            rt.spawn(drain(live, timeout, draining));
        }
        // No runtime to finish it on: the connection is just closed.
        Err(_) => drop(live),
    }
}
