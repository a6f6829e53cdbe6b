//! Bytes from a protocol's stream to the part file: chunks go to the span
//! they belong to, are written behind while the next arrive, and count as
//! progress; a body that runs past its span carries on into the next.

use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;

use super::file_job::FileJob;
use super::parts::{Recorded, SpanId};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::ByteStream;

use crate::writer::{PartFile, WriteBehind};

/// How many bytes a part gathers before writing them (in the background,
/// while it gathers the next as many). Small enough that the bytes are
/// still in the CPU's cache when they are copied into the page cache
/// (larger batches cost page faults and time: see `docs/benchmarks.md`).
pub(super) const WRITE_BUF: usize = 256 * 1024;

/// How a body left its span.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pumped {
    /// The span is complete (or taken over from where it got to).
    Done,
    /// The body gave all its request asked for, short of the span's end:
    /// the rest is to be asked for.
    More,
}

impl FileJob {
    /// Copies a body into the span until the span is full or the body ends.
    pub(super) async fn pump(
        &self,
        file: &PartFile,
        span: SpanId,
        mut body: ByteStream,
    ) -> Result<Pumped> {
        let timeout = self.batch.config.protocol.timeout;
        let cancel = self.cancel_token();
        let (start, taken) = {
            let parts = self.parts();
            (parts.pos(span), parts.stop(span).clone())
        };
        let mut out = WriteBehind::new(file.clone(), start, WRITE_BUF);
        let outcome: Result<Pumped> = 'pump: loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(Error::cancelled()),
                // Another worker took over the rest: what was received is
                // written below, and the span is complete up to its new end.
                () = taken.cancelled() => break Ok(Pumped::Done),
                next = tokio::time::timeout(timeout, body.next()) => next,
            };
            match next {
                Err(_) => {
                    break Err(Error::new(
                        ErrorKind::Timeout,
                        format!("no data for {}s", timeout.as_secs_f32()),
                    ));
                }
                Ok(None) => {
                    let (pos, end, more) = {
                        let parts = self.parts();
                        (
                            parts.pos(span),
                            parts.end(span),
                            parts.ended_where_asked(span),
                        )
                    };
                    if more {
                        break Ok(Pumped::More);
                    }
                    break match self.size {
                        Some(_) if pos < end => Err(Error::new(
                            ErrorKind::Truncated,
                            format!("the server closed the body at byte {pos} of {end}"),
                        )),
                        _ => Ok(Pumped::Done),
                    };
                }
                Ok(Some(Err(e))) => break Err(e),
                Ok(Some(Ok(mut chunk))) => {
                    // A chunk may run past the span's end: the rest goes to
                    // the next span when this one can absorb it.
                    while !chunk.is_empty() {
                        let now = Instant::now();
                        let Recorded {
                            take,
                            full,
                            past_file_end,
                        } = self.parts().record(span, chunk.len(), now);
                        self.batch.progressed_at(now);
                        (self.batch.received).fetch_add(take as u64, Ordering::Relaxed);
                        let written = out.push(chunk.split_to(take)).await.map_err(|e| {
                            Error::io(format_args!("cannot write {}", self.part()), e)
                        })?;
                        self.parts().written(span, written);
                        self.batch.reporter.on_progress(self.id, written);
                        if let Some(throttle) = &self.batch.throttle {
                            // The wait is ours, not the server's.
                            self.parts().waiting(span);
                            throttle.take(take as u64).await;
                            self.parts().done_waiting(span, Instant::now());
                        }
                        if past_file_end {
                            break 'pump Err(Error::new(
                                ErrorKind::Protocol,
                                "the server sent more bytes than the file's announced size",
                            )
                            .retryable(true));
                        }
                        // The body may go on past this span (an open-ended
                        // first request): rather than drop the connection,
                        // carry on into the next span if no worker has it.
                        if full && !self.parts().absorb_next(span) {
                            break 'pump Ok(Pumped::Done);
                        }
                    }
                }
            }
        };
        // Whatever happened, what was received is written, so a retry
        // resumes after it.
        let written = out
            .finish()
            .await
            .map_err(|e| Error::io(format_args!("cannot write {}", self.part()), e))?;
        self.parts().written(span, written);
        self.batch.reporter.on_progress(self.id, written);
        outcome
    }
}
