//! A response body as a stream of `Bytes`. It drives its connection as it
//! is read, and returns the connection to the pool at its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http::Response;
use hyper::body::{Body, Incoming};
use pymatris_core::{ByteStream, Error, Url};

use crate::pool::Lease;

/// Response bodies of at most this size (redirects, errors, the one byte
/// of a probe) are read to their end so their connection can be reused;
/// larger ones are dropped, which closes the connection.
pub(crate) const DRAIN_LIMIT: u64 = 64 * 1024;

/// A response, the URL it came from and its connection.
pub(crate) struct Exchange {
    pub(crate) response: Response<Incoming>,
    pub(crate) url: Url,
    pub(crate) lease: Lease,
}

impl Exchange {
    /// The body; the connection goes back to the pool when it has been
    /// read to its end.
    pub(crate) fn into_stream(self, shown: String) -> ByteStream {
        Box::pin(BodyStream::new(
            self.response.into_body(),
            self.lease,
            shown,
        ))
    }
}

/// Reads a short body to its end (bounded in size and time).
pub(crate) async fn drain(mut body: ByteStream, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let mut total = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            total += chunk.len() as u64;
            if total > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

pub(crate) struct BodyStream {
    body: Incoming,
    /// The connection the body arrives on; dropped (closed) with the
    /// stream unless the body was read to its end.
    lease: Option<Lease>,
    /// The URL, redacted, for error messages.
    shown: String,
    done: bool,
}

impl BodyStream {
    pub(crate) fn new(body: Incoming, lease: Lease, shown: String) -> Self {
        BodyStream {
            body,
            lease: Some(lease),
            shown,
            done: false,
        }
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        // The scheduler stops reading once it has the bytes it asked for,
        // often before the end of the body has been polled for.
        if let Some(lease) = self.lease.take()
            && self.body.is_end_stream()
        {
            lease.release();
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // Whether the connection was polled in this call: it reads from the
        // socket and hands the body what it read.
        let mut driven = false;
        loop {
            let frame = match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending if driven => return Poll::Pending,
                Poll::Pending => {
                    driven = true;
                    if let Some(lease) = &mut this.lease {
                        lease.drive(cx);
                    }
                    continue;
                }
            };
            match frame {
                None => {
                    this.done = true;
                    if let Some(lease) = this.lease.take() {
                        lease.release();
                    }
                    return Poll::Ready(None);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                    // Empty chunks and trailers: keep reading.
                    _ => continue,
                },
                Some(Err(err)) => {
                    this.done = true;
                    let context = format!("reading the body of {}", this.shown);
                    return Poll::Ready(Some(Err(crate::error::body_error(err, &context))));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, None)
    }
}
