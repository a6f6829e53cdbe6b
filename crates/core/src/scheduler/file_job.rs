//! One file, from the first answer of its server to its rename: the part
//! file, the plan of its parts, the loop that runs their workers and falls
//! back to one stream, and the resume state kept under `--continue`.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use std::pin::Pin;

use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::Request;
use super::batch::Batch;
use super::checkpoint::AbortOnDrop;
use super::finish::Finish;
use super::internal_error;
use super::parts::{PartTable, Rules, TAIL_POLL, plan_parts};
use super::retry::HandleWait;
use crate::error::{Error, ErrorKind, Result};
use crate::link::Carrier;
use crate::naming;
use crate::protocol::{ByteStream, FileOptions, PartEnd, Validator};
use crate::redact::redact_url;
use crate::reporter::ReportId;
use crate::resume;
use crate::writer::PartFile;

/// How a file's transfer begins.
pub(super) struct Start {
    /// The body of the first response, streaming from byte 0.
    pub(super) body: Option<ByteStream>,
    /// The connection that carries it, when shared with other fetches.
    pub(super) carrier: Option<Carrier>,
    /// One past the last byte the first request asked for (`u64::MAX`
    /// when its answer is the whole file).
    pub(super) asked: u64,
    /// Where the first request's transfer stops, where its protocol's
    /// ranges have no end (FTP's `REST`): it runs on past `asked` until
    /// the first part's end, told once the file is cut.
    pub(super) told: Option<PartEnd>,
    /// Whether the server serves ranges of the file.
    pub(super) ranges: bool,
    /// `[start, pos, end]` of the parts of an earlier run (`--continue`).
    pub(super) resumed: Option<Vec<[u64; 3]>>,
    /// The first transfer's slot on the host (`--max-per-host`).
    pub(super) slot: Option<OwnedSemaphorePermit>,
    /// When the first request was made.
    pub(super) sent: Instant,
}

/// The settings of one file: the batch's, where its request sets none.
#[derive(Debug)]
pub(super) struct FileSettings {
    pub(super) max_splits: usize,
    /// Whether the file may run more parts than `max_splits` when the
    /// batch grew (neither the request nor the user set them).
    pub(super) grow_splits: bool,
    pub(super) max_tries: u32,
    pub(super) overwrite: bool,
    /// What the protocol is told of this file (its extra headers).
    pub(super) options: FileOptions,
}

impl Batch {
    pub(super) fn settings_of(&self, request: &Request) -> FileSettings {
        FileSettings {
            max_splits: request.max_splits.unwrap_or(self.config.max_splits),
            grow_splits: request.max_splits.is_none() && self.config.grow_splits,
            max_tries: request.max_tries.unwrap_or(self.config.max_tries),
            // Timestamping replaces an out-of-date copy whatever the file
            // says (see `stream.rs`).
            overwrite: request.overwrite.unwrap_or(self.config.overwrite)
                || self.config.timestamping,
            options: FileOptions::with_headers(request.headers.clone())
                .with_listed_size(request.listed_size),
        }
    }
}

/// The download of one file, shared by its workers.
pub(super) struct FileJob {
    pub(super) batch: Arc<Batch>,
    pub(super) url: Url,
    pub(super) temp: Utf8PathBuf,
    pub(super) id: ReportId,
    /// The size of the file, when known.
    pub(super) size: Option<u64>,
    /// The version of the file the first response described.
    pub(super) validator: Option<Validator>,
    /// The file's spans, under the one lock all its workers share (each
    /// span keeps the token that stops its worker when it is taken over).
    pub(super) parts: Mutex<PartTable<CancellationToken>>,
    /// The part file, once open.
    pub(super) opened: OnceLock<Opened>,
    /// Workers running.
    pub(super) workers: AtomicUsize,
    /// Told whenever a worker is done with a span, so that workers waiting
    /// at the tail leave as soon as nothing is left to watch.
    pub(super) span_done: Notify,
    /// Cancels this file's workers (a child of the batch's token); a new
    /// one replaces it when the file starts over as one stream.
    pub(super) cancel: Mutex<CancellationToken>,
    /// Set, under its lock, once the download's outcome decides what
    /// becomes of its resume state: checkpoints (written under the same
    /// lock) stop then, and never undo that decision.
    pub(super) state_final: Mutex<bool>,
    pub(super) settings: FileSettings,
    /// The file's URL and its mirrors.
    pub(super) mirrors: Arc<super::mirrors::Mirrors>,
}

/// The part file of a download.
pub(super) struct Opened {
    /// Kept under `--continue` with `fsync`: a state is written only after
    /// the bytes it claims are synced. (Otherwise not kept, so that the
    /// part file is closed before its rename.)
    pub(super) durable: Option<PartFile>,
    /// Whether it is an unnamed file rather than `temp` (see
    /// [`NameTable::unnamed_file`](crate::naming::NameTable::unnamed_file)):
    /// it then vanishes with its last descriptor.
    unnamed: bool,
}

impl FileJob {
    pub(super) async fn run(
        self,
        start: Start,
        target: &Utf8Path,
        finish: Finish,
    ) -> Result<(Utf8PathBuf, u64)> {
        let temp = self.temp.clone();
        let keep_partial = self.batch.config.resume;
        let job = Arc::new(self);
        let checkpoints =
            keep_partial.then(|| AbortOnDrop(tokio::spawn(job.clone().checkpoints())));
        let result = job.clone().transfer(start, target, finish).await;
        drop(checkpoints);
        *job.state_final.lock().expect("state lock poisoned") = true;
        match &result {
            // A state file exists only where --continue left one. Whether
            // this run resumed that part, replaced it (a named part file) or
            // cleared its name (--overwrite), the state describes a part
            // that is gone. (An unnamed file without --overwrite never
            // touched the part: its state is left with it.)
            Ok(_) if keep_partial || !job.unnamed() || job.settings.overwrite => {
                resume::remove(&temp);
            }
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
            Err(_) if job.unnamed() => {}
            // The temp file holds an incomplete or unverified download:
            // never leave it behind, and never rename it.
            // Its state, if an earlier --continue left one, describes the
            // part this run replaced.
            Err(_) => {
                let _ = tokio::fs::remove_file(&temp).await;
                resume::remove(&temp);
            }
        }
        result
    }

    /// Whether the download goes to an unnamed file.
    pub(super) fn unnamed(&self) -> bool {
        self.opened.get().is_some_and(|o| o.unnamed)
    }

    /// The file's spans, locked.
    pub(super) fn parts(&self) -> MutexGuard<'_, PartTable<CancellationToken>> {
        self.parts.lock().expect("parts poisoned")
    }

    /// An empty table, until the plan is made.
    pub(super) fn no_parts(size: Option<u64>) -> Mutex<PartTable<CancellationToken>> {
        let rules = Rules {
            min_split: 1,
            takeover_after: Duration::MAX,
            max_takeovers: 0,
        };
        Mutex::new(PartTable::new(size, &[], rules, false, Instant::now()))
    }

    /// Downloads the file into its part file, then checks and names it.
    pub(super) async fn transfer(
        self: Arc<Self>,
        start: Start,
        target: &Utf8Path,
        finish: Finish,
    ) -> Result<(Utf8PathBuf, u64)> {
        // When another file of the batch finishes, the connections it
        // leaves may take parts of this one (a big file that started while
        // many small ones waited). Registered before the plan reads how
        // many files are left, and again before each `help` looks, so that
        // no file finishing in between goes unseen.
        let batch = self.batch.clone();
        let file_done = std::pin::pin!(batch.file_done.notified());
        let mut body = start.body;
        let (file, _regain) = self
            .open_part(target, start.resumed.is_none(), &mut body)
            .await?;
        let resumed = start.resumed.is_some();
        let asked = body.as_ref().map(|_| (start.asked, start.told));
        let parts = self.plan(start.resumed, start.ranges, asked);
        if body.is_some() {
            let mut parts = self.parts();
            parts.carried_by(0, start.carrier);
            parts.asked_at(0, start.sent);
        }
        self.clone()
            .run_workers(&batch, &file, parts, body, start.slot, file_done)
            .await?;
        self.finish(file, target, finish, resumed).await
    }

    /// Opens the part file: an unnamed one without `--continue`, the one
    /// `--continue` found resumable when not `truncate`, a new one
    /// otherwise. Gives back the first response's `body` while it waits for
    /// a file handle; then the file opens only under the batch's `regain`
    /// permit, which it keeps until it ends.
    async fn open_part(
        &self,
        target: &Utf8Path,
        truncate: bool,
        body: &mut Option<ByteStream>,
    ) -> Result<(PartFile, Option<OwnedSemaphorePermit>)> {
        // The create and the naming below run here, on the async thread:
        // both are single metadata operations, like the small writes
        // `WriteBehind` does inline, and a handoff to the blocking pool and
        // back costs more than the operation (two thread wakeups per file,
        // which dominate a batch of small files). Nor are they serialised
        // here: the kernel does that per directory, and a lock of ours made
        // the second worker thread sleep and wake for each.
        //
        // Without --continue (nothing needs to find the file again), the
        // file has no name until it is complete: nothing is left of it if
        // the process dies, however it dies; one directory operation per
        // file instead of two, and less time for the worker threads to spin
        // on the directory's lock.
        //
        // Out of file handles, the connection of the first response is
        // given back (the first part asks again) and the file waits for
        // a handle, so that files holding a connection never wait on
        // each other for the handle of their part file. Such a file then
        // holds its part file while it asks again, with no connection: one
        // at a time (`regain`), or they could take every handle left and
        // wait for a connection for good, each holding one.
        let mut handles = HandleWait::default();
        let mut regain = None;
        let file = loop {
            if body.is_none() && handles.waits > 0 && regain.is_none() {
                regain = Some(self.batch.regain_permit().await?);
            }
            let unnamed = (!self.batch.config.resume)
                .then(|| {
                    let dir = target.parent().unwrap_or(Utf8Path::new("."));
                    self.batch.names.unnamed_file(dir)
                })
                .flatten();
            let is_unnamed = unnamed.is_some();
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
                Ok(file) => break (file, is_unnamed),
                Err(e) if e.is_out_of_handles() => {
                    *body = None;
                    self.batch.wait_for_handles(&mut handles, e).await?;
                }
                Err(e) => return Err(e),
            }
        };
        let (file, unnamed) = file;
        let file = PartFile::new(file);
        let config = &self.batch.config;
        let _ = self.opened.set(Opened {
            durable: (config.resume && config.fsync).then(|| file.clone()),
            unnamed,
        });
        Ok((file, regain))
    }

    /// Cuts the file into parts (or takes those of an earlier run) and
    /// sets up its part table; returns how many parts. `asked`: how far
    /// the first response's body, when there is one, goes.
    fn plan(
        &self,
        resumed: Option<Vec<[u64; 3]>>,
        ranges: bool,
        asked: Option<(u64, Option<PartEnd>)>,
    ) -> usize {
        let config = &self.batch.config;
        // Without ranges the file is one stream, which no other worker may
        // split. (Resumed parts ask for ranges anyway, and fall back to one
        // stream if refused.)
        let one_stream = !ranges && resumed.is_none();
        let plan: Vec<[u64; 3]> = match resumed {
            Some(spans) => spans,
            None => plan_parts(
                self.size,
                ranges,
                self.batch
                    .splits_now(self.batch.splits_allowed(&self.settings)),
                config.min_split_size,
                asked.as_ref().map_or(0, |(end, _)| *end),
            )
            .into_iter()
            .map(|(start, end)| [start, start, end])
            .collect(),
        };
        let rules = Rules {
            min_split: config.min_split_size,
            takeover_after: config.takeover_after,
            max_takeovers: self.settings.max_tries,
        };
        let mut parts = PartTable::new(self.size, &plan, rules, one_stream, Instant::now());
        match asked {
            Some((_, Some(told))) => parts.runs_on_to_its_end(0, told),
            Some((asked, None)) => parts.asked_up_to(0, asked),
            None => {}
        }
        *self.parts() = parts;
        plan.len()
    }

    /// Runs the workers of the file's `parts` parts (the first on the first
    /// response's `body`, with its host `slot`, on the primary URL), adds
    /// free connections of
    /// the batch as other files finish, falls back to one stream when
    /// ranges fail, until every part is done or one failed for good.
    async fn run_workers<'b>(
        self: Arc<Self>,
        batch: &'b Batch,
        file: &PartFile,
        parts: usize,
        body: Option<ByteStream>,
        slot: Option<OwnedSemaphorePermit>,
        mut file_done: Pin<&mut Notified<'b>>,
    ) -> Result<()> {
        let job = self;
        let mut workers = JoinSet::new();
        let first_span = 0;
        let spans = 1..parts;
        let conn = job.mirrors.first_conn(slot);
        let mut failure: Option<Error> = None;
        let _splittable = job.splittable().then(|| batch.splittable());
        if spans.is_empty() && !job.splittable() {
            // One part that will stay one (most small files): it runs here,
            // not in a task of its own.
            let counted = job.count_in();
            let outcome = job
                .clone()
                .run_worker(file.clone(), first_span, body, conn, counted)
                .await;
            failure = outcome.err();
        } else {
            job.spawn_worker(&mut workers, file, first_span, body, conn);
        }
        for span in spans {
            match job.connect(false).await {
                Ok(conn) => job.spawn_worker(&mut workers, file, span, None, conn),
                // The host has no slot free: the file goes on with the
                // connections it has, which take this span when idle.
                Err(_) => job.parts().leave(span),
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
                            job.help(&mut workers, file).await;
                        }
                        continue;
                    }
                    _ = look_again.tick(), if failure.is_none() && !workers.is_empty() => {
                        job.help(&mut workers, file).await;
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
                && job.parts().fall_back_to_one_stream()
            {
                // The server answered a part's range with something else
                // (a 200, a wrong Content-Range): trust no more ranges and
                // fetch the file again as one stream from byte 0.
                tracing::debug!(url = %redact_url(&job.url), error = %e, "ranges failed, falling back to one stream");
                let span = job.restart_as_one_stream();
                failure = None;
                let conn = job.connect(true).await?;
                job.spawn_worker(&mut workers, file, span, None, conn);
                continue;
            }
            if failure.is_some() {
                break;
            }
            // A worker that the server refused may have left its span as
            // the others were finishing: give it a worker of its own.
            let orphan = job.parts().take_orphan(Instant::now());
            match orphan {
                Some(span) => {
                    let conn = job.connect(true).await?;
                    job.spawn_worker(&mut workers, file, span, None, conn);
                }
                None => break,
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The part file, for messages.
    pub(super) fn part(&self) -> String {
        if self.unnamed() {
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
        self.parts().received()
    }
}
