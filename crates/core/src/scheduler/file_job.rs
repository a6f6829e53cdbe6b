//! One file, from the first answer of its server to its rename: the part
//! file, the plan of its parts, the loop that runs their workers and falls
//! back to one stream, and the resume state kept under `--continue`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::batch::Batch;
use super::internal_error;
use super::parts::{SharedSpan, Span, TAIL_POLL, lock, plan_parts};
use super::retry::HandleWait;
use crate::error::{Error, ErrorKind, Result};
use crate::naming;
use crate::protocol::{ByteStream, Protocol, Validator};
use crate::redact::redact_url;
use crate::reporter::ReportId;
use crate::resume;
use crate::writer::PartFile;

/// How often, under `--continue`, the resume state of a file is written
/// while it downloads, so that a process killed outright (which writes
/// nothing on its way out) loses at most this much of its work.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How a file's transfer begins.
pub(super) struct Start {
    /// The body of the first response, streaming from byte 0.
    pub(super) body: Option<ByteStream>,
    /// Whether the server serves ranges of the file.
    pub(super) ranges: bool,
    /// `[start, pos, end]` of the parts of an earlier run (`--continue`).
    pub(super) resumed: Option<Vec<[u64; 3]>>,
    /// The first transfer's slot on the host (`--max-per-host`).
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

/// The download of one file, shared by its workers.
pub(super) struct FileJob {
    pub(super) batch: Arc<Batch>,
    pub(super) protocol: Arc<dyn Protocol>,
    pub(super) url: Url,
    pub(super) temp: Utf8PathBuf,
    /// Set when the download went to an unnamed file rather than to
    /// `temp` (see [`NameTable::unnamed_file`]).
    pub(super) unnamed: AtomicBool,
    pub(super) id: ReportId,
    /// The size of the file, when known.
    pub(super) size: Option<u64>,
    /// The version of the file the first response described.
    pub(super) validator: Option<Validator>,
    pub(super) spans: Mutex<Vec<SharedSpan>>,
    /// Workers running.
    pub(super) workers: AtomicUsize,
    /// Told whenever a worker is done with a span, so that workers waiting
    /// at the tail leave as soon as nothing is left to watch.
    pub(super) span_done: Notify,
    /// Cancels this file's workers (a child of the batch's token); a new
    /// one replaces it when the file starts over as one stream.
    pub(super) cancel: Mutex<CancellationToken>,
    /// Set when the server stopped honouring ranges: the file is fetched as
    /// one stream from then on.
    pub(super) single: AtomicBool,
    /// Set when the one stream started over from byte 0 (the file on disk
    /// may then be longer than what this attempt wrote).
    pub(super) rewound: AtomicBool,
    /// Set, under its lock, once the download's outcome decides what
    /// becomes of its resume state: checkpoints (written under the same
    /// lock) stop then, and never undo that decision.
    pub(super) state_final: Mutex<bool>,
    /// The part file, kept under `--continue` with `fsync`: a state is
    /// written only after the bytes it claims are synced.
    pub(super) durable_part: std::sync::OnceLock<PartFile>,
}

impl FileJob {
    pub(super) async fn run(
        self,
        start: Start,
        target: &Utf8Path,
        sha256: Option<&str>,
    ) -> Result<(Utf8PathBuf, u64)> {
        let temp = self.temp.clone();
        let keep_partial = self.batch.config.resume;
        let job = Arc::new(self);
        let checkpoints =
            keep_partial.then(|| AbortOnDrop(tokio::spawn(job.clone().checkpoints())));
        let result = job.clone().transfer(start, target, sha256).await;
        drop(checkpoints);
        *job.state_final.lock().expect("state lock poisoned") = true;
        match &result {
            // A state file exists only where --continue left one.
            Ok(_) if keep_partial => resume::remove(&temp),
            Ok(_) => {}
            // Under --continue, what may be resumed is kept with its state.
            Err(e)
                if keep_partial
                    && (e.is_retryable() || e.kind() == ErrorKind::Cancelled)
                    && tokio::fs::symlink_metadata(&temp).await.is_ok() =>
            {
                let state = job.state();
                let synced = job.sync_part().await;
                if let Err(io) = synced.and_then(|()| resume::save(&temp, &state)) {
                    tracing::warn!("cannot save the state of {temp}: {io}");
                    let _ = tokio::fs::remove_file(&temp).await;
                }
            }
            // An unnamed file vanishes with its last descriptor.
            Err(_) if job.unnamed.load(Ordering::Relaxed) => {}
            // The temp file holds an incomplete or unverified download:
            // never leave it behind, and never rename it.
            Err(_) => {
                let _ = tokio::fs::remove_file(&temp).await;
                if keep_partial {
                    resume::remove(&temp);
                }
            }
        }
        result
    }

    /// The resume state of the file as it is on disk now.
    pub(super) fn state(&self) -> resume::State {
        resume::State {
            url: redact_url(&self.url),
            size: self.size,
            validator: self.validator.clone().unwrap_or_default(),
            spans: self.span_list(),
        }
    }

    /// Writes the resume state every [`CHECKPOINT_EVERY`] while bytes
    /// arrive, until the download's outcome is known.
    pub(super) async fn checkpoints(self: Arc<Self>) {
        let mut saved = Vec::new();
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            let state = self.state();
            if state.spans.is_empty() || state.spans == saved {
                continue;
            }
            if let Err(e) = self.sync_part().await {
                tracing::debug!("cannot sync {}: {e}", self.temp);
                continue;
            }
            let done = self.state_final.lock().expect("state lock poisoned");
            if *done {
                return;
            }
            // A few small writes: not worth a trip to the blocking pool.
            match resume::save(&self.temp, &state) {
                Ok(()) => saved = state.spans,
                Err(e) => tracing::debug!("cannot checkpoint {}: {e}", self.temp),
            }
            drop(done);
        }
    }

    /// With `fsync`, makes what the part file holds durable, so that a
    /// state taken before survives a power cut as well as a killed process.
    pub(super) async fn sync_part(&self) -> std::io::Result<()> {
        match self.durable_part.get() {
            Some(part) => part.with(|f| f.sync_data()).await,
            None => Ok(()),
        }
    }

    /// `[start, pos, end]` of every span, `pos` what is on disk: at any
    /// moment (the spans are read under one lock, so they tile the file)
    /// a true statement of which bytes of the file are good.
    pub(super) fn span_list(&self) -> Vec<[u64; 3]> {
        let spans = self.spans.lock().expect("spans poisoned");
        spans
            .iter()
            .map(|span| {
                let s = lock(span);
                [s.start, s.on_disk.min(s.end).max(s.start), s.end]
            })
            .collect()
    }

    pub(super) async fn transfer(
        self: Arc<Self>,
        start: Start,
        target: &Utf8Path,
        sha256: Option<&str>,
    ) -> Result<(Utf8PathBuf, u64)> {
        // When another file of the batch finishes, the connections it
        // leaves may take parts of this one (a big file that started while
        // many small ones waited). Registered before the plan reads how
        // many files are left, and again before each `help` looks, so that
        // no file finishing in between goes unseen.
        let batch = self.batch.clone();
        let mut file_done = std::pin::pin!(batch.file_done.notified());
        let truncate = start.resumed.is_none();
        // The create and the naming below run here, on the async thread:
        // both are single metadata operations, like the small writes
        // `WriteBehind` does inline, and a handoff to the blocking pool and
        // back cost more than the operation (2000 small files: two thread
        // wakeups per file, a quarter of the CPU with the wakeups of the
        // batch's tasks). Nor are they serialised here: the kernel does
        // that per directory, and a lock of ours made the second worker
        // thread sleep and wake for each (15 % slower on 2000 files).
        //
        // Without --continue (nothing needs to find the file again), the
        // file has no name until it is complete: nothing is left of it if
        // the process dies, however it dies; one directory operation per
        // file instead of two, and less time for the two worker threads to
        // spin on the directory's lock (2000 small files: 18 % less CPU).
        //
        // Out of file handles, the connection of the first response is
        // given back (the first part asks again) and the file waits for
        // a handle, so that files holding a connection never wait on
        // each other for the handle of their part file.
        let mut body = start.body;
        let mut handles = HandleWait::default();
        let file = loop {
            let unnamed = (!self.batch.config.resume)
                .then(|| {
                    let dir = target.parent().unwrap_or(Utf8Path::new("."));
                    self.batch.names.unnamed_file(dir)
                })
                .flatten();
            self.unnamed.store(unnamed.is_some(), Ordering::Relaxed);
            let opened = match unnamed {
                Some(file) => Ok(file),
                // What `resume::load` found resumable is reopened, never
                // through a link; anything else at the name is replaced.
                None if !truncate => crate::files::open_regular(&self.temp, true)
                    .and_then(|f| f.ok_or_else(|| std::io::Error::other("not a file of its own")))
                    .map_err(|e| Error::io(format_args!("cannot open {}", self.temp), e)),
                None => crate::files::create_replacing(&self.temp)
                    .map_err(|e| Error::io(format_args!("cannot create {}", self.temp), e)),
            };
            match opened {
                Ok(file) => break file,
                Err(e) if e.is_out_of_handles() => {
                    body = None;
                    self.batch.wait_for_handles(&mut handles, e).await?;
                }
                Err(e) => return Err(e),
            }
        };
        let file = PartFile::new(file);
        if self.batch.config.resume && self.batch.config.fsync {
            let _ = self.durable_part.set(file.clone());
        }
        let config = &self.batch.config;
        let resumed = start.resumed.is_some();
        let plan: Vec<[u64; 3]> = match start.resumed {
            Some(spans) => spans,
            None => plan_parts(
                self.size,
                start.ranges,
                self.batch.splits_now(),
                config.min_split_size,
            )
            .into_iter()
            .map(|(start, end)| [start, start, end])
            .collect(),
        };
        let spans: Vec<SharedSpan> = plan
            .iter()
            .map(|&[start, pos, end]| Span::new(start, pos, end))
            .collect();
        *self.spans.lock().expect("spans poisoned") = spans.clone();
        if !start.ranges && !resumed {
            // The server does not serve ranges of this file: one stream,
            // which no other worker may split. (Resumed parts ask for
            // ranges anyway, and fall back to one stream if refused.)
            self.single.store(true, Ordering::SeqCst);
        }

        let job = self;
        let mut workers = JoinSet::new();
        let mut spans = spans.into_iter();
        let first_span = spans.next().expect("a plan has at least one part");
        let mut failure: Option<Error> = None;
        if spans.len() == 0 && !job.splittable() {
            // One part that will stay one (most small files): it runs here,
            // not in a task of its own.
            let counted = job.count_in();
            let outcome = job
                .clone()
                .run_worker(file.clone(), first_span, body, start.slot, counted)
                .await;
            failure = outcome.err();
        } else {
            job.spawn_worker(&mut workers, &file, first_span, body, start.slot);
        }
        for span in spans {
            match job.batch.slot(&job.url, false).await {
                Ok(slot) => job.spawn_worker(&mut workers, &file, span, None, slot),
                // The host has no slot free: the file goes on with the
                // connections it has, which take this span when idle.
                Err(_) => lock(&span).active = false,
            }
        }
        // Connections left free by files that finished may find nothing
        // worth splitting at that moment (every part on course to finish
        // soon): they look again while the file runs.
        let mut look_again = tokio::time::interval(TAIL_POLL);
        look_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            loop {
                let joined = tokio::select! {
                    joined = workers.join_next() => joined,
                    () = &mut file_done => {
                        file_done.set(batch.file_done.notified());
                        if failure.is_none() {
                            job.help(&mut workers, &file).await;
                        }
                        continue;
                    }
                    _ = look_again.tick(), if failure.is_none() && !workers.is_empty() => {
                        job.help(&mut workers, &file).await;
                        continue;
                    }
                };
                let Some(joined) = joined else {
                    break;
                };
                let outcome = joined.unwrap_or_else(|_| Err(internal_error()));
                if let Err(e) = outcome {
                    // The first failure decides; the others are its echoes
                    // (mostly `Cancelled`).
                    if failure.is_none() {
                        job.cancel_token().cancel();
                        failure = Some(e);
                    }
                }
            }
            if let Some(e) = &failure
                && e.kind() == ErrorKind::RangeUnsupported
                && !job.single.swap(true, Ordering::SeqCst)
            {
                // The server answered a part's range with something else
                // (a 200, a wrong Content-Range): trust no more ranges and
                // fetch the file again as one stream from byte 0.
                tracing::debug!(url = %redact_url(&job.url), error = %e, "ranges failed, falling back to one stream");
                let span = job.restart_as_one_stream();
                failure = None;
                let slot = job.batch.slot(&job.url, true).await?;
                job.spawn_worker(&mut workers, &file, span, None, slot);
                continue;
            }
            if failure.is_some() {
                break;
            }
            // A worker that the server refused may have left its span as
            // the others were finishing: give it a worker of its own.
            match job.steal_orphan() {
                Some(span) => {
                    let slot = job.batch.slot(&job.url, true).await?;
                    job.spawn_worker(&mut workers, &file, span, None, slot);
                }
                None => break,
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }

        job.finish(file, target, sha256, resumed).await
    }

    /// The part file, for messages.
    pub(super) fn part(&self) -> String {
        if self.unnamed.load(Ordering::Relaxed) {
            let target = self.temp.as_str().strip_suffix(naming::PART_SUFFIX);
            format!(
                "the unnamed file of {}",
                target.unwrap_or(self.temp.as_str())
            )
        } else {
            self.temp.to_string()
        }
    }

    /// Bytes received over all spans (they tile the file).
    pub(super) fn received(&self) -> u64 {
        let spans = self.spans.lock().expect("spans poisoned");
        spans
            .iter()
            .map(|span| {
                let s = lock(span);
                s.pos.min(s.end).saturating_sub(s.start)
            })
            .sum()
    }
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
