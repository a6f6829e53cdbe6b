//! The connections of one file: a worker fills its span, retrying from the
//! last byte received, then helps with the others (splitting, taking over a
//! stalled span) until nothing is left; free connections of the batch may
//! join a running file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::file_job::FileJob;
use super::parts::{SharedSpan, Span, TAIL_POLL, lock};
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
        span: SharedSpan,
        body: Option<ByteStream>,
    ) -> Result<()> {
        let filled = self.fill(&file, &span, body).await;
        self.span_done.notify_waiters();
        if filled? == Filled::Left {
            return Ok(());
        }
        loop {
            if let Some(next) = self.steal() {
                let filled = self.fill(&file, &next, None).await;
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
        if self.size.is_none() || self.single.load(Ordering::SeqCst) {
            return false;
        }
        let spans = self.spans.lock().expect("spans poisoned");
        spans.iter().any(|span| {
            let s = lock(span);
            s.active && s.pos < s.end
        })
    }

    pub(super) fn cancel_token(&self) -> CancellationToken {
        self.cancel.lock().expect("cancel poisoned").clone()
    }

    /// Replaces every span by one covering the whole file, with a fresh
    /// cancellation token, and takes back the progress reported so far.
    pub(super) fn restart_as_one_stream(&self) -> SharedSpan {
        self.rewound.store(true, Ordering::SeqCst);
        *self.cancel.lock().expect("cancel poisoned") = self.batch.cancel.child_token();
        self.batch.reporter.on_rewind(self.id, self.received());
        let span = Span::new(0, 0, self.size.unwrap_or(u64::MAX));
        *self.spans.lock().expect("spans poisoned") = vec![span.clone()];
        span
    }

    /// Whether parts of the file could ever be fetched at once: its size
    /// is known, ranges work, and it holds at least two minimum parts.
    pub(super) fn splittable(&self) -> bool {
        let min = self.batch.config.min_split_size.max(1);
        !self.single.load(Ordering::SeqCst)
            && self.batch.config.max_splits > 1
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
                || own >= self.batch.config.max_splits
                || self.batch.spare(own) == 0
                || self.batch.short_of_handles()
                || self.cancel_token().is_cancelled()
            {
                return;
            }
            let Ok(slot) = self.batch.slot(&self.url, false).await else {
                return;
            };
            let Some(span) = self.steal() else {
                return;
            };
            tracing::debug!(url = %redact_url(&self.url), "a free connection joins the file");
            self.spawn_worker(workers, file, span, None, slot);
        }
    }

    pub(super) fn spawn_worker(
        self: &Arc<Self>,
        workers: &mut JoinSet<Result<()>>,
        file: &PartFile,
        span: SharedSpan,
        body: Option<ByteStream>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        // Counted now, not when the task first runs, so that this file's
        // loop and the other files see it at once.
        let counted = self.count_in();
        let job = self.clone();
        let file = file.clone();
        workers.spawn(async move { job.run_worker(file, span, body, slot, counted).await });
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
        span: SharedSpan,
        body: Option<ByteStream>,
        slot: Option<OwnedSemaphorePermit>,
        _counted: Counted,
    ) -> Result<()> {
        let result = self.worker(file, span, body).await;
        // The host slot is given back when the worker is done.
        drop(slot);
        result
    }

    /// A span no worker fills, taken whole.
    pub(super) fn steal_orphan(&self) -> Option<SharedSpan> {
        let spans = self.spans.lock().expect("spans poisoned");
        spans
            .iter()
            .find(|span| {
                let mut s = lock(span);
                let orphan = !s.active && s.pos < s.end;
                if orphan {
                    s.active = true;
                }
                orphan
            })
            .cloned()
    }

    /// Takes a span no worker fills, or splits the span with the most bytes
    /// left of those worth splitting (see [`Span::worth_splitting`]) and
    /// returns its second half; or takes over a stalled one.
    pub(super) fn steal(&self) -> Option<SharedSpan> {
        if self.cancel_token().is_cancelled() {
            return None;
        }
        if let Some(orphan) = self.steal_orphan() {
            return Some(orphan);
        }
        // Without a known size, or when ranges failed, there is no range
        // to split.
        self.size?;
        if self.single.load(Ordering::SeqCst) {
            return None;
        }
        let min = self.batch.config.min_split_size.max(1);
        let mut spans = self.spans.lock().expect("spans poisoned");
        let victim = spans
            .iter()
            .filter(|s| {
                let s = lock(s);
                s.active && s.end.saturating_sub(s.pos) >= 2 * min && s.worth_splitting()
            })
            .max_by_key(|s| {
                let s = lock(s);
                s.end.saturating_sub(s.pos)
            })
            .cloned();
        let Some(victim) = victim else {
            return self.take_over_stalled(&mut spans);
        };
        let mut v = lock(&victim);
        let left = v.end.saturating_sub(v.pos);
        let mid = v.pos + left / 2;
        let stolen = Span::new(mid, mid, v.end);
        v.end = mid;
        drop(v);
        tracing::debug!(url = %redact_url(&self.url), from = mid, "taking over the rest of a part");
        spans.push(stolen.clone());
        Some(stolen)
    }

    /// Extends `span`, which is full, over the untouched span without a
    /// worker that starts where it ends. Returns whether it did.
    pub(super) fn absorb_next(&self, span: &SharedSpan) -> bool {
        let spans = self.spans.lock().expect("spans poisoned");
        let end = lock(span).end;
        for other in spans.iter().filter(|o| !Arc::ptr_eq(o, span)) {
            let mut o = lock(other);
            if !o.active && o.start == end && o.pos == o.start && o.end > o.start {
                let new_end = o.end;
                o.end = o.start;
                drop(o);
                lock(span).end = new_end;
                return true;
            }
        }
        false
    }

    /// Takes the whole rest of a span that has received nothing for
    /// `Config::takeover_after`, and stops its worker: a connection that
    /// stalled near the end must not hold the file until the idle timeout.
    pub(super) fn take_over_stalled(&self, spans: &mut Vec<SharedSpan>) -> Option<SharedSpan> {
        let after = self.batch.config.takeover_after;
        let victim = spans
            .iter()
            .find(|span| {
                let s = lock(span);
                s.active
                    && !s.waiting
                    && s.pos < s.end
                    && s.takeovers < self.batch.config.max_tries
                    && s.progressed.elapsed() >= after
            })?
            .clone();
        let mut v = lock(&victim);
        let rest = Span::new(v.pos, v.pos, v.end);
        lock(&rest).takeovers = v.takeovers + 1;
        tracing::debug!(url = %redact_url(&self.url), from = v.pos, to = v.end, "a part stalled: taking over its rest");
        v.end = v.pos;
        v.taken.cancel();
        drop(v);
        spans.push(rest.clone());
        Some(rest)
    }

    /// Fills one span, retrying from the last byte received.
    pub(super) async fn fill(
        &self,
        file: &PartFile,
        span: &SharedSpan,
        mut body: Option<ByteStream>,
    ) -> Result<Filled> {
        let mut tries = Tries::new(self.batch.config.max_tries).of_worker();
        // The furthest the span got: bytes received again after a restart
        // from zero (a server without ranges) are no progress.
        let mut reached = lock(span).pos;
        loop {
            let taken = lock(span).taken.clone();
            let result = async {
                let body = match body.take() {
                    Some(body) => body,
                    None => {
                        // Nothing is received yet, so nothing is lost if the
                        // request is dropped when another worker takes over.
                        lock(span).waiting = true;
                        let next = tokio::select! {
                            () = taken.cancelled() => None,
                            next = self.refetch(span) => Some(next),
                        };
                        {
                            // The stall clock starts with the transfer.
                            let mut s = lock(span);
                            s.waiting = false;
                            s.progressed = Instant::now();
                        }
                        let Some(next) = next else {
                            return Ok(());
                        };
                        let next = next?;
                        match next {
                            Some(body) => body,
                            None => return Ok(()),
                        }
                    }
                };
                self.pump(file, span, body).await
            }
            .await;
            match result {
                Ok(()) => return Ok(Filled::Done),
                Err(e)
                    if (e.kind() == ErrorKind::Busy || e.is_out_of_handles())
                        && self.workers.load(Ordering::SeqCst) > 1 =>
                {
                    // The server will not give this file another
                    // connection: leave the span to the ones it has.
                    tracing::debug!(url = %redact_url(&self.url), error = %e, "server busy, leaving the part to other connections");
                    lock(span).active = false;
                    return Ok(Filled::Left);
                }
                Err(e) => {
                    let pos = lock(span).pos;
                    let gained = pos.saturating_sub(reached);
                    reached = reached.max(pos);
                    (self.batch)
                        .before_retry(Some(self.id), &mut tries, gained, e)
                        .await?;
                }
            }
        }
    }

    /// Requests the rest of `span`. Returns `None` when nothing is left.
    pub(super) async fn refetch(&self, span: &SharedSpan) -> Result<Option<ByteStream>> {
        let (pos, end) = {
            // After a failed write, from the first byte not on disk.
            let mut s = lock(span);
            s.pos = s.on_disk;
            s.began = Instant::now();
            s.began_pos = s.pos;
            (s.pos, s.end)
        };
        if pos >= end {
            return Ok(None);
        }
        let range = match self.size {
            Some(_) => ByteRange::new(pos, end),
            None => ByteRange::from(pos),
        };
        let fetched = self
            .batch
            .fetch(&self.protocol, &self.url, range, self.validator.as_ref())
            .await?;
        if let Some(ours) = &self.validator
            && !ours.matches(&fetched.meta.validator)
        {
            return Err(Error::new(
                ErrorKind::Changed,
                "the file changed on the server during the download",
            )
            .retryable(false));
        }
        if let (Some(ours), Some(theirs)) = (self.size, fetched.meta.size)
            && ours != theirs
        {
            return Err(Error::new(
                ErrorKind::Changed,
                format!("the file's size changed from {ours} to {theirs} bytes"),
            )
            .retryable(false));
        }
        if fetched.offset != pos {
            let single = self.spans.lock().expect("spans poisoned").len() == 1;
            if fetched.offset == 0 && single {
                // The server no longer serves ranges (or never did): start
                // the one stream again from the beginning.
                self.batch.reporter.on_rewind(self.id, pos);
                self.rewound.store(true, Ordering::SeqCst);
                let mut s = lock(span);
                s.start = 0;
                s.pos = 0;
                s.on_disk = 0;
            } else {
                return Err(Error::new(
                    ErrorKind::RangeUnsupported,
                    format!(
                        "asked for bytes from {pos}, the server sent bytes from {}",
                        fetched.offset
                    ),
                )
                .retryable(false));
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
