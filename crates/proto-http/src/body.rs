//! A response body as a stream of `Bytes`, holding the per-host permit of
//! its connection until it is dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::{Body, Incoming};
use pymatris_core::Error;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) struct BodyStream {
    body: Incoming,
    /// Released when the stream is dropped, read to its end or not.
    _permit: Option<OwnedSemaphorePermit>,
    /// The URL, redacted, for error messages.
    shown: String,
    done: bool,
}

impl BodyStream {
    pub(crate) fn new(body: Incoming, permit: Option<OwnedSemaphorePermit>, shown: String) -> Self {
        BodyStream {
            body,
            _permit: permit,
            shown,
            done: false,
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
        loop {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                None => {
                    this.done = true;
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
