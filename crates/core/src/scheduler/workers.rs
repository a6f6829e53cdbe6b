//! The connections of one file: a worker fills its span, retrying from the
//! last byte received, then helps with the others (splitting, taking over a
//! stalled span) until nothing is left; free connections of the batch may
//! join a running file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::file_job::FileJob;
use super::mirrors::Conn;
use super::parts::{Given, SpanId, TAIL_POLL};
use super::pump::Pumped;
use super::retry::Tries;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{ByteRange, ByteStream};
use crate::redact::redact_url;
use crate::writer::PartFile;

/// How a worker stopped filling a span.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Filled {
    /// The span is complete.
    Done,
    /// The server refused the connection; the span is left to others.
    Left,
}

impl FileJob {
    /// Fills `span`, then helps with the others until nothing is left
    /// worth splitting.
    pub(super) async fn worker(
        self: Arc<Self>,
        file: PartFile,
        span: SpanId,
        body: Option<ByteStream>,
        conn: &mut Conn,
    ) -> Result<()> {
        let filled = self.fill(&file, span, body, conn).await;
        self.span_done.notify_waiters();
        if filled? == Filled::Left {
            return Ok(());
        }
        loop {
            // The batch took back transfers that did not pay: this one
            // goes, as its part is done, if others of the file remain.
            if self.batch.over_budget() && self.workers.load(Ordering::SeqCst) > 1 {
                return Ok(());
            }
            if let Some(next) = self.steal() {
                let filled = self.fill(&file, next, None, conn).await;
                self.span_done.notify_waiters();
                if filled? == Filled::Left {
                    return Ok(());
                }
                continue;
            }
            // Nothing worth splitting: stay near the tail while other parts
            // run, to take over one that stalls; leave as soon as the last
            // of them is done.
            let span_done = self.span_done.notified();
            tokio::pin!(span_done);
            span_done.as_mut().enable();
            if !self.others_running() {
                return Ok(());
            }
            let cancel = self.cancel_token();
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = span_done => {}
                () = tokio::time::sleep(TAIL_POLL) => {}
            }
        }
    }

    /// Whether some span is still being filled and could stall.
    pub(super) fn others_running(&self) -> bool {
        self.parts().others_running()
    }

    pub(super) fn cancel_token(&self) -> CancellationToken {
        self.cancel.lock().expect("cancel poisoned").clone()
    }

    /// Replaces every span by one covering the whole file, with a fresh
    /// cancellation token, and takes back the progress reported so far.
    pub(super) fn restart_as_one_stream(&self) -> SpanId {
        *self.cancel.lock().expect("cancel poisoned") = self.batch.cancel.child_token();
        self.batch.reporter.on_rewind(self.id, self.received());
        self.parts().restart_as_one_stream(Instant::now())
    }

    /// Whether parts of the file could ever be fetched at once: its size
    /// is known, ranges work, and it holds at least two minimum parts.
    pub(super) fn splittable(&self) -> bool {
        let min = self.batch.config.min_split_size.max(1);
        !self.parts().one_stream()
            && self.batch.splits_allowed(&self.settings) > 1
            && self.size.is_some_and(|size| size >= min.saturating_mul(2))
    }

    /// Adds workers while the batch has connections to spare (at the end
    /// of a batch, as other files finish), each taking half of the
    /// largest part left; at most `max_splits` workers per file.
    pub(super) async fn help(self: &Arc<Self>, workers: &mut JoinSet<Result<()>>, file: &PartFile) {
        if !self.splittable() {
            return;
        }
        loop {
            let own = self.workers.load(Ordering::SeqCst);
            if own == 0
                || own >= self.batch.splits_allowed(&self.settings)
                || self
                    .batch
                    .spare(own, self.batch.splits_allowed(&self.settings))
                    == 0
                || self.batch.short_of_handles()
                || self.cancel_token().is_cancelled()
            {
                return;
            }
            let Ok(conn) = self.connect(false).await else {
                return;
            };
            let Some(span) = self.steal() else {
                return;
            };
            tracing::debug!(url = %redact_url(&self.url), "a free connection joins the file");
            self.spawn_worker(workers, file, span, None, conn);
        }
    }

    pub(super) fn spawn_worker(
        self: &Arc<Self>,
        workers: &mut JoinSet<Result<()>>,
        file: &PartFile,
        span: SpanId,
        body: Option<ByteStream>,
        conn: Conn,
    ) {
        // Counted now, not when the task first runs, so that this file's
        // loop and the other files see it at once.
        let counted = self.count_in();
        let job = self.clone();
        let file = file.clone();
        workers.spawn(async move { job.run_worker(file, span, body, conn, counted).await });
    }

    /// Counts one more worker of this file and transfer of the batch,
    /// until the returned guard is dropped.
    pub(super) fn count_in(self: &Arc<Self>) -> Counted {
        self.workers.fetch_add(1, Ordering::SeqCst);
        self.batch.transfers.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }

    /// Runs one worker, counted (by `_counted`) among the file's workers and
    /// the batch's transfers while it runs.
    pub(super) async fn run_worker(
        self: Arc<Self>,
        file: PartFile,
        span: SpanId,
        body: Option<ByteStream>,
        mut conn: Conn,
        _counted: Counted,
    ) -> Result<()> {
        // The host slot is given back when the worker is done.
        self.worker(file, span, body, &mut conn).await
    }

    /// What an idle worker of this file does next (see
    /// [`PartTable::next_for_idle`](super::parts::PartTable::next_for_idle)):
    /// the span it is to fill. The worker of
    /// a span taken over is told to stop.
    pub(super) fn steal(&self) -> Option<SpanId> {
        if self.cancel_token().is_cancelled() {
            return None;
        }
        let mut parts = self.parts();
        let given = parts.next_for_idle(Instant::now())?;
        match given {
            Given::Orphan(_) => {}
            Given::Split { at, .. } => {
                tracing::debug!(url = %redact_url(&self.url), from = at, "taking over the rest of a part");
            }
            Given::TakeOver { span, stalled } => {
                tracing::debug!(url = %redact_url(&self.url), from = parts.pos(span), to = parts.end(span), "a part stalled: taking over its rest");
                parts.stop(stalled).cancel();
            }
        }
        Some(given.span())
    }

    /// Fills one span, retrying from the last byte received.
    pub(super) async fn fill(
        &self,
        file: &PartFile,
        span: SpanId,
        mut body: Option<ByteStream>,
        conn: &mut Conn,
    ) -> Result<Filled> {
        let mut tries = Tries::new(self.settings.max_tries).of_worker();
        // The furthest the span got: bytes received again after a restart
        // from zero (a server without ranges) are no progress.
        let mut reached = self.parts().pos(span);
        loop {
            let taken = self.parts().stop(span).clone();
            if body.is_none() && conn.mirror.dropped() {
                self.switch_mirror(conn).await?;
            }
            let before = self.parts().pos(span);
            let result = async {
                let body = match body.take() {
                    Some(body) => body,
                    None => {
                        // Nothing is received yet, so nothing is lost if the
                        // request is dropped when another worker takes over.
                        self.parts().waiting(span);
                        let next = tokio::select! {
                            () = taken.cancelled() => None,
                            next = self.refetch(span, conn) => Some(next),
                        };
                        // The stall clock and the pace start with the
                        // transfer.
                        self.parts().answered(span, Instant::now());
                        let Some(next) = next else {
                            return Ok(Pumped::Done);
                        };
                        let next = next?;
                        match next {
                            Some(body) => body,
                            None => return Ok(Pumped::Done),
                        }
                    }
                };
                self.pump(file, span, body).await
            }
            .await;
            let after = self.parts().pos(span);
            conn.mirror.served(after.saturating_sub(before));
            match result {
                Ok(Pumped::Done) => return Ok(Filled::Done),
                // The request gave what it asked: the next asks for the
                // rest, on the same connection, with no try used.
                Ok(Pumped::More) => {}
                Err(e)
                    if (e.kind() == ErrorKind::Busy || e.is_out_of_handles())
                        && self.workers.load(Ordering::SeqCst) > 1 =>
                {
                    // The server will not give this file another
                    // connection: leave the span to the ones it has.
                    tracing::debug!(url = %redact_url(&self.url), error = %e, "server busy, leaving the part to other connections");
                    self.parts().leave(span);
                    return Ok(Filled::Left);
                }
                Err(e) => {
                    let pos = self.parts().pos(span);
                    let gained = pos.saturating_sub(reached);
                    reached = reached.max(pos);
                    if self.leave_mirror(conn, &e, gained).await? {
                        // Another server: its tries are its own.
                        tries = Tries::new(self.settings.max_tries).of_worker();
                        continue;
                    }
                    (self.batch)
                        .before_retry(Some(self.id), &mut tries, gained, e)
                        .await?;
                }
            }
        }
    }

    /// Requests the rest of `span`. Returns `None` when nothing is left.
    pub(super) async fn refetch(&self, span: SpanId, conn: &Conn) -> Result<Option<ByteStream>> {
        let mirror = &conn.mirror;
        let stops = mirror.protocol.stops_at_range_end();
        let (pos, end) = self.parts().begin_request(span, stops, Instant::now());
        if pos >= end {
            return Ok(None);
        }
        let range = match self.size {
            Some(_) => ByteRange::new(pos, end),
            None => ByteRange::from(pos),
        };
        // The protocol is told where the part ends as it is cut: a server
        // that would not stop at the range's end is stopped there, and
        // SFTP asks no read past it.
        let end = self.parts().part_end(span);
        let told = self.settings.options.clone().with_part_end(end);
        let options = &told;
        let fetched = self
            .batch
            .fetch(
                &mirror.protocol,
                &mirror.url,
                range,
                mirror.validator(),
                options,
            )
            .await?;
        self.same_version_at(mirror, &fetched.meta)?;
        let cheap = mirror.protocol.cuts_cheaply();
        let mut parts = self.parts();
        parts.carried_by(span, fetched.carrier);
        parts.cut_cheaply(span, cheap, fetched.answer);
        drop(parts);
        if fetched.offset != pos {
            // The server no longer serves ranges (or never did): the one
            // stream starts again from the beginning.
            let rewound = fetched.offset == 0 && self.parts().rewind(span);
            if rewound {
                self.parts().asked_up_to(span, u64::MAX);
                self.batch.reporter.on_rewind(self.id, pos);
            } else {
                return Err(Error::new(
                    ErrorKind::RangeUnsupported,
                    format!(
                        "asked for bytes from {pos}, the server sent bytes from {}",
                        fetched.offset
                    ),
                ));
            }
        }
        Ok(Some(fetched.body))
    }
}

/// A running worker as counted by [`FileJob::count_in`]; uncounted when
/// dropped, also when its task is aborted.
pub(super) struct Counted(Arc<FileJob>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::SeqCst);
        self.0.batch.transfers.fetch_sub(1, Ordering::SeqCst);
    }
}
