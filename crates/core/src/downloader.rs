//! The scheduler: files at once, parts of a file at once, retries from the
//! last byte written, work stealing at the tail, and the atomic rename that
//! makes a download visible only when it is complete.
//!
//! A file's download starts with one request for the whole file (`0..`):
//! its answer tells the size and whether ranges work, so a small file costs
//! one round trip. When the file is large enough, the first response keeps
//! streaming the first part while the other parts are requested. Each part
//! is a [`Span`] whose end other workers may pull in: a worker that finishes
//! early splits the largest remaining span and takes its second half.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::naming::{self, NameTable};
use crate::netrc::Netrc;
use crate::protocol::{ByteRange, ByteStream, Fetched, Protocol, RemoteMeta, Validator};
use crate::redact::{redact_url, redact_url_str};
use crate::registry::Protocols;
use crate::reporter::{NoReporter, ReportId, Reporter};
use crate::results::{Failed, Results, Succeeded};
use crate::resume;
use crate::throttle::Throttle;
use crate::writer::{PartFile, WriteBehind};

/// How many bytes a part gathers before writing them (in the background,
/// while it gathers the next as many). Small enough that the bytes are
/// still in the CPU's cache when they are copied into the page cache: with
/// 1 MiB, 1 GiB over HTTPS took 1.6-2.5 s and 56k page faults; with
/// 256 KiB, 0.8 s.
const WRITE_BUF: usize = 256 * 1024;

/// How often, under `--continue`, the resume state of a file is written
/// while it downloads, so that a process killed outright (which writes
/// nothing on its way out) loses at most this much of its work.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How often a worker with nothing left to split looks for a stalled part.
const TAIL_POLL: Duration = Duration::from_millis(250);

/// A part whose request is answered and whose bytes arrive is split only if,
/// at its own pace, it would not be done within this long. Splitting it
/// costs the bytes the server has already sent past the cut (its request
/// ends at the old end, and the kernel's buffers hold megabytes), and
/// saves at most half of this.
const SPLIT_HORIZON: Duration = Duration::from_secs(1);

/// How long a part's request runs before its pace says anything.
const PACE_SEEN_AFTER: Duration = TAIL_POLL;

/// How long the end of a batch waits for the protocols to close their
/// idle connections politely.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The longest `Retry-After` honoured; a server asking for more is waited
/// on for this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One file to download and where to put it.
#[derive(Debug, Clone)]
pub struct Request {
    url: String,
    dir: Utf8PathBuf,
    filename: Option<String>,
    sha256: Option<String>,
}

impl Request {
    /// A request for `url`, saved in the current directory under the name
    /// the server or URL suggests.
    pub fn new(url: impl Into<String>) -> Self {
        Request {
            url: url.into(),
            dir: Utf8PathBuf::from("."),
            filename: None,
            sha256: None,
        }
    }

    /// The directory to save into (created if missing).
    pub fn dir(mut self, dir: impl Into<Utf8PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// The file name to save under, taken as given (a leading dot
    /// included) but reduced to one path component; names from a server
    /// are stricter (see [`sanitize_filename`](crate::sanitize_filename)).
    pub fn filename(mut self, name: impl Into<String>) -> Self {
        self.filename = Some(name.into());
        self
    }

    /// The expected SHA-256 of the file, in hex; a mismatch fails the
    /// download and the file is not kept.
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into().trim().to_ascii_lowercase());
        self
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// Downloads batches of files. See the [crate documentation](crate).
pub struct Downloader {
    config: Config,
    queue: Vec<Request>,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("config", &self.config)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    /// A downloader with these settings and no reporter.
    pub fn new(config: Config) -> Self {
        Downloader {
            config,
            queue: Vec::new(),
            reporter: Arc::new(NoReporter),
            cancel: CancellationToken::new(),
        }
    }

    /// Reports progress to `reporter`.
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The token that cancels the batch (the CLI cancels it on Ctrl-C).
    /// Cancelled downloads end as errors of kind
    /// [`ErrorKind::Cancelled`], and leave no temporary file behind.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Queues `url`, to be saved in `dir`. Any URL is accepted here: one
    /// that does not parse, or whose scheme no protocol serves, ends up in
    /// the errors of the results.
    pub fn enqueue_file(&mut self, url: &str, dir: impl AsRef<Utf8Path>) -> Result<()> {
        self.enqueue(Request::new(url).dir(dir.as_ref()))
    }

    /// Queues a request with per-file options.
    pub fn enqueue(&mut self, request: Request) -> Result<()> {
        self.queue.push(request);
        Ok(())
    }

    /// How many requests wait for the next [`download`](Self::download).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Downloads every queued request and empties the queue. Never panics
    /// on a bad URL or a bad server: every request ends in the results,
    /// once, in the order it was enqueued.
    pub async fn download(&mut self) -> Results {
        let requests = std::mem::take(&mut self.queue);
        let netrc = self.config.protocol.netrc.as_deref().and_then(|path| {
            Netrc::load(path)
                .inspect_err(|e| tracing::warn!("cannot read {}: {e}", path.display()))
                .ok()
        });
        let batch = Arc::new(Batch {
            config: self.config.clone(),
            netrc,
            throttle: self.config.max_speed.map(Throttle::new),
            hosts: self.config.protocol.max_per_host.map(HostSlots::new),
            dirs: Mutex::new(HashSet::new()),
            transfers: AtomicUsize::new(0),
            files_left: AtomicUsize::new(requests.len()),
            file_done: Notify::new(),
            started: Instant::now(),
            last_progress: AtomicU64::new(0),
            out_of_handles: AtomicU64::new(0),
            protocols: Protocols::new(self.config.protocol.clone()),
            names: NameTable::default(),
            reporter: self.reporter.clone(),
            cancel: self.cancel.clone(),
        });
        let total = requests.len();
        // `max_parallel` tasks each take the next request when done with
        // one, rather than a task per file spawned from here: a file then
        // costs no wakeup of this task and no cross-thread spawn (2000
        // small files: a fifth less CPU).
        let pending = Arc::new(Mutex::new(requests.into_iter().enumerate()));
        let outcomes: Arc<Mutex<Vec<Option<Outcome>>>> =
            Arc::new(Mutex::new((0..total).map(|_| None).collect()));
        let mut running = JoinSet::new();
        for _ in 0..self.config.max_parallel.clamp(1, total.max(1)) {
            let (batch, pending, outcomes) = (batch.clone(), pending.clone(), outcomes.clone());
            running.spawn(async move {
                loop {
                    let next = pending.lock().expect("queue poisoned").next();
                    let Some((index, request)) = next else {
                        break;
                    };
                    let fallback = failed_early(&request, internal_error());
                    let outcome = AssertUnwindSafe(batch.clone().download_one(request))
                        .catch_unwind()
                        .await
                        .unwrap_or(Err(fallback));
                    outcomes.lock().expect("outcomes poisoned")[index] = Some(outcome);
                    batch.files_left.fetch_sub(1, Ordering::SeqCst);
                    batch.progressed();
                    batch.file_done.notify_waiters();
                    // Let the other slots whose files just arrived finish
                    // them first: the next requests then leave together and
                    // the server wakes once for several. 2000 files of 16
                    // KiB from nginx: it slept and woke 550 times instead of
                    // 1100, for half the CPU.
                    tokio::task::yield_now().await;
                }
            });
        }
        // The tasks catch the panics of their requests and are never
        // aborted; a request whose outcome is missing is reported below.
        while running.join_next().await.is_some() {}
        // Bounded: a server that does not answer a goodbye holds no batch.
        let _ = tokio::time::timeout(CLOSE_WAIT, batch.protocols.close()).await;
        let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes poisoned"));
        let mut results = Results::default();
        for outcome in outcomes {
            match outcome {
                Some(Ok(ok)) => results.success.push(ok),
                Some(Err(failed)) => results.errors.push(failed),
                None => results.errors.push(Failed {
                    filepath_partial: Utf8PathBuf::new(),
                    url: String::new(),
                    error: internal_error(),
                }),
            }
        }
        results
    }

    /// [`download`](Self::download) for callers without a tokio runtime.
    ///
    /// # Panics
    /// When called from within a tokio runtime, or when no runtime can be
    /// built (out of threads or file descriptors).
    pub fn download_blocking(&mut self) -> Results {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime");
        runtime.block_on(self.download())
    }
}

type Outcome = std::result::Result<Succeeded, Failed>;

fn internal_error() -> Error {
    Error::new(ErrorKind::Protocol, "internal error (a bug in pymatris)").retryable(false)
}

/// A failure before the file's name is known.
fn failed_early(request: &Request, error: Error) -> Failed {
    let name = request
        .filename
        .as_deref()
        .and_then(naming::sanitize_user_filename)
        .or_else(|| {
            Url::parse(&request.url)
                .ok()
                .and_then(|u| naming::filename_from_url(&u))
        })
        .unwrap_or_default();
    Failed {
        filepath_partial: request.dir.join(name),
        url: redact_url_str(&request.url),
        error,
    }
}

/// What the files of one batch share.
struct Batch {
    config: Config,
    /// Credentials for URLs without any (`--netrc`), read once per batch.
    netrc: Option<Netrc>,
    /// The bandwidth cap shared by every transfer (`--max-speed`).
    throttle: Option<Throttle>,
    /// Transfers to one host at once (`--max-per-host`).
    hosts: Option<HostSlots>,
    /// The directories made so far.
    dirs: Mutex<HashSet<Utf8PathBuf>>,
    /// Transfers running, all files together.
    transfers: AtomicUsize,
    /// Files not finished yet, running or waiting for a slot.
    files_left: AtomicUsize,
    /// Notified when a file finishes: running files may then take the
    /// connections it leaves (see [`FileJob::help`]).
    file_done: Notify,
    /// When the batch started: the clock of the two fields below.
    started: Instant,
    /// When a byte last arrived, or a file last finished, in the batch
    /// (milliseconds since `started`).
    last_progress: AtomicU64,
    /// When the process last ran out of file handles (milliseconds since
    /// `started`, plus one; 0: never).
    out_of_handles: AtomicU64,
    protocols: Protocols,
    names: NameTable,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
}

impl Batch {
    async fn download_one(
        self: Arc<Self>,
        request: Request,
    ) -> std::result::Result<Succeeded, Failed> {
        if self.cancel.is_cancelled() {
            return Err(failed_early(&request, Error::cancelled()));
        }
        let url = match Url::parse(&request.url) {
            Ok(mut url) => {
                if let Some(netrc) = &self.netrc {
                    netrc.apply(&mut url);
                }
                url
            }
            Err(e) => {
                let err = Error::new(ErrorKind::InvalidUrl, e.to_string()).retryable(false);
                return Err(failed_early(&request, err));
            }
        };
        let protocol = match self.protocols.get(url.scheme()) {
            Ok(p) => p,
            Err(e) => return Err(failed_early(&request, e)),
        };
        if let Err(e) = self.create_dir(&request.dir).await {
            let err = Error::io(format_args!("cannot create directory {}", request.dir), e);
            return Err(failed_early(&request, err));
        }
        let shown = redact_url(&url);
        tracing::debug!(url = %shown, "starting");

        // The file's first transfer waits for a slot on its host; its other
        // parts take one only if one is free.
        let slot = match self.slot(&url, true).await {
            Ok(slot) => slot,
            Err(e) => return Err(failed_early(&request, e)),
        };
        // With --continue, a HEAD-like `stat` tells whether a file on disk
        // is complete or resumable before any body is asked for; otherwise
        // the first GET both describes the file and starts its transfer.
        let first = if self.config.resume {
            self.attempts(None, || self.stat(&protocol, &url))
                .await
                .map(|meta| (meta, None))
        } else {
            self.attempts(None, || {
                self.fetch(&protocol, &url, ByteRange::from(0), None)
            })
            .await
            .and_then(|f| {
                if f.offset != 0 {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "asked for the file from byte 0, got bytes from {}",
                            f.offset
                        ),
                    )
                    .retryable(false));
                }
                Ok((f.meta, Some(f.body)))
            })
        };
        let (meta, body) = match first {
            Ok(first) => first,
            Err(e) => return Err(failed_early(&request, e)),
        };
        let name = request
            .filename
            .as_deref()
            .and_then(naming::sanitize_user_filename)
            .or_else(|| meta.filename.as_deref().and_then(naming::sanitize_filename))
            .or_else(|| meta.final_url.as_ref().and_then(naming::filename_from_url))
            .or_else(|| naming::filename_from_url(&url))
            .unwrap_or_else(|| naming::fallback_name(&url));

        if self.config.resume
            && let Some(done) = self.already_complete(&request, &name, &meta, &shown).await
        {
            return Ok(done);
        }
        let target = self
            .names
            .reserve(&request.dir, &name, self.config.overwrite);
        let temp = naming::part_path(&target);
        let resumed = if self.config.resume {
            resume::load(&temp, &meta)
        } else {
            None
        };
        let id = self.reporter.on_start(&shown, &name, meta.size);
        if let Some(spans) = &resumed {
            let have: u64 = spans.iter().map(|[start, pos, _]| pos - start).sum();
            tracing::debug!(url = %shown, have, "resuming");
            self.reporter.on_progress(id, have);
        }

        let job = FileJob {
            batch: self.clone(),
            protocol,
            url,
            temp,
            unnamed: AtomicBool::new(false),
            id,
            size: meta.size,
            validator: Some(meta.validator.clone()).filter(|v| !v.is_empty()),
            spans: Mutex::new(Vec::new()),
            workers: AtomicUsize::new(0),
            span_done: Notify::new(),
            cancel: Mutex::new(self.cancel.child_token()),
            single: AtomicBool::new(false),
            rewound: AtomicBool::new(false),
            state_final: Mutex::new(false),
            durable_part: std::sync::OnceLock::new(),
        };
        let start = Start {
            body,
            ranges: meta.ranges,
            resumed,
            slot,
        };
        let result = job.run(start, &target, request.sha256.as_deref()).await;
        self.reporter.on_finish(id, result.as_ref().err());
        match result {
            Ok((path, size)) => Ok(Succeeded {
                path,
                url: shown,
                size,
            }),
            Err(error) => Err(Failed {
                filepath_partial: target,
                url: shown,
                error,
            }),
        }
    }

    /// With `--continue`: the file is already on disk, of the remote size
    /// (and checksum, when given), so it is kept as it is.
    async fn already_complete(
        &self,
        request: &Request,
        name: &str,
        meta: &RemoteMeta,
        shown: &str,
    ) -> Option<Succeeded> {
        let path = request.dir.join(name);
        let size = meta.size?;
        // A link is not a complete file, whatever it points to.
        let on_disk = tokio::fs::symlink_metadata(&path).await.ok()?;
        if !on_disk.is_file() || on_disk.len() != size {
            return None;
        }
        if let Some(expected) = request.sha256.as_deref() {
            let file = crate::files::open_regular(&path, false).ok()??;
            let actual = PartFile::new(file).sha256().await.ok()?;
            if actual != expected {
                return None;
            }
        }
        if !self.names.claim(&path) {
            return None;
        }
        tracing::debug!(url = %shown, %path, "already complete");
        let id = self.reporter.on_start(shown, name, Some(size));
        self.reporter.on_finish(id, None);
        Some(Succeeded {
            path,
            url: shown.to_owned(),
            size,
        })
    }

    /// Into how many parts a file starting now may be cut: parts pay when
    /// connections are to spare, not when `max_parallel` files already
    /// keep as many busy (32 x 16 MiB over HTTP: 0.37 s cut into parts,
    /// 0.31 s whole; over FTP, where a part is a login, 2.8x slower). The
    /// batch aims at about `max(max_parallel, max_splits)` transfers, and
    /// counts the other files that hold or are about to take a slot, not
    /// only the transfers already running: at the start of a batch the
    /// other slots have not begun theirs yet (the first file of 32 x 16 MiB
    /// over FTP went in 5 parts, 9 logins where 5 do; 0.48 s, 0.40 s
    /// without).
    fn splits_now(&self) -> usize {
        if self.short_of_handles() {
            return 1;
        }
        self.config.max_splits.min(self.spare(0)).max(1)
    }

    /// Notes that a byte arrived or a file finished.
    fn progressed(&self) {
        self.progressed_at(Instant::now());
    }

    /// [`Batch::progressed`] with the time already read: it runs for every
    /// chunk received, which has read the clock once already.
    fn progressed_at(&self, now: Instant) {
        let now = now.saturating_duration_since(self.started).as_millis() as u64;
        self.last_progress.fetch_max(now, Ordering::Relaxed);
    }

    /// How long the batch has gone without a byte or a finished file.
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the process ran out of file handles lately: no file is
    /// then cut into parts, and no part added, until it has not for a
    /// while.
    fn short_of_handles(&self) -> bool {
        match self.out_of_handles.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let at = Duration::from_millis(at - 1);
                self.started.elapsed().saturating_sub(at) < HANDLES_CALM
            }
        }
    }

    /// A short, growing, jittered wait after a server refused one more
    /// connection, which spends no try.
    async fn wait_busy(&self, wait: &mut HandleWait, error: &Error) -> Result<()> {
        wait.waits += 1;
        let pause = pause_after(wait.waits);
        tracing::debug!(waits = wait.waits, ?pause, error = %error, "the server is busy, waiting for a connection to free");
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Waits for file handles to free after an attempt ran out of them,
    /// without spending a try: other transfers of the batch hold them and
    /// will give them back. Fails (with `error`, explained) only when
    /// nothing in the batch progressed for the idle timeout while this
    /// waited: then nothing is about to free a handle.
    async fn wait_for_handles(&self, wait: &mut HandleWait, error: Error) -> Result<()> {
        let now = self.started.elapsed().as_millis() as u64;
        self.out_of_handles.fetch_max(now + 1, Ordering::Relaxed);
        let since = *wait.since.get_or_insert_with(Instant::now);
        let idle = self.config.protocol.timeout;
        if since.elapsed() >= idle && self.idle_for() >= idle {
            return Err(error
                .context(format_args!(
                    "out of file handles, and none was freed for {}s",
                    idle.as_secs_f32()
                ))
                .retryable(false));
        }
        wait.waits += 1;
        let pause = pause_after(wait.waits);
        tracing::debug!(waits = wait.waits, ?pause, error = %error, "out of file handles, waiting for some to free");
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Transfers a file that has `own` running may still add: the batch
    /// aims at `max(max_parallel, max_splits)`, less the larger of the
    /// transfers running (the file's own included) and the file's own plus
    /// one for each other file that holds or is about to take one of the
    /// `max_parallel` slots.
    fn spare(&self, own: usize) -> usize {
        let max_parallel = self.config.max_parallel.max(1);
        let budget = max_parallel.max(self.config.max_splits);
        let running = self.transfers.load(Ordering::SeqCst);
        let other_files = self
            .files_left
            .load(Ordering::SeqCst)
            .saturating_sub(1)
            .min(max_parallel - 1);
        budget.saturating_sub(running.max(other_files + own))
    }

    /// Creates `dir` (and its parents) once per batch.
    async fn create_dir(&self, dir: &Utf8Path) -> std::io::Result<()> {
        if self.dirs.lock().expect("dirs poisoned").contains(dir) {
            return Ok(());
        }
        tokio::fs::create_dir_all(dir).await?;
        self.dirs
            .lock()
            .expect("dirs poisoned")
            .insert(dir.to_owned());
        Ok(())
    }

    /// A slot for one more transfer to the URL's host, under
    /// `--max-per-host` (`None` without a cap). With `wait`, waits for one;
    /// without, fails with [`ErrorKind::Busy`] when none is free.
    async fn slot(&self, url: &Url, wait: bool) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(hosts) = &self.hosts else {
            return Ok(None);
        };
        let semaphore = hosts.semaphore(url);
        if !wait {
            return semaphore
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Error::new(ErrorKind::Busy, "no free connection slot for this host"));
        }
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            permit = semaphore.acquire_owned() => Ok(permit.ok()),
        }
    }

    /// `Protocol::stat`, bounded by the batch's cancellation.
    async fn stat(&self, protocol: &Arc<dyn Protocol>, url: &Url) -> Result<RemoteMeta> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            r = protocol.stat(url) => r,
        }
    }

    /// One call to the protocol, bounded by the batch's cancellation. The
    /// protocol bounds connecting and waiting for an answer by the timeout
    /// itself: only it can tell waiting for a connection slot (which may
    /// rightly take long under `max_per_host`) from waiting on the network.
    async fn fetch(
        &self,
        protocol: &Arc<dyn Protocol>,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> Result<Fetched> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            r = protocol.fetch(url, range, validator) => r,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of
    /// attempts, waiting between attempts. `op` brings no bytes of the
    /// file, so every failure is an attempt without progress.
    async fn attempts<T, F, Fut>(&self, id: Option<ReportId>, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = Tries::new(self.config.max_tries);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => self.before_retry(id, &mut tries, 0, e).await?,
            }
        }
    }

    /// Decides whether a failed attempt that brought `gained` new bytes
    /// may be followed by another (see [`Tries`]), and waits before it.
    /// Returns the error when not.
    async fn before_retry(
        &self,
        id: Option<ReportId>,
        tries: &mut Tries,
        gained: u64,
        error: Error,
    ) -> Result<()> {
        if error.is_out_of_handles() {
            return self.wait_for_handles(&mut tries.handles, error).await;
        }
        let others = self.transfers.load(Ordering::SeqCst) > usize::from(tries.worker);
        if error.kind() == ErrorKind::Busy
            && others
            && self.idle_for() < self.config.protocol.timeout
        {
            // The server takes no more connections while others of the
            // batch transfer: one of theirs will come free, and the
            // protocol (which lowered the host's limit) waits for it. A
            // server busy with nothing of ours spends tries as before.
            return self.wait_busy(&mut tries.handles, &error).await;
        }
        tries.handles = HandleWait::default();
        if !error.is_retryable() || !tries.fail(gained) {
            return Err(error);
        }
        // An attempt that advanced the part is followed at once: the
        // server is serving, only in pieces (capped ranges, connections
        // that close every so often).
        let wait = match tries.misses {
            0 => error
                .retry_after()
                .map_or(Duration::ZERO, |asked| asked.min(MAX_RETRY_AFTER)),
            misses => backoff(
                self.config.backoff_base,
                self.config.backoff_max,
                misses,
                error.retry_after(),
                fastrand::f64(),
            ),
        };
        tracing::debug!(misses = tries.misses, gained, ?wait, error = %error.chain(), "retrying");
        if let Some(id) = id
            && tries.misses > 0
        {
            self.reporter.on_retry(id, tries.misses, &error);
        }
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }
}

/// The wait after `waits` attempts in a row that found no connection or
/// handle free: from 20 ms to about a second, jittered so the waiting
/// transfers do not all try again at once.
fn pause_after(waits: u32) -> Duration {
    let step = Duration::from_millis(10 << waits.min(7)).min(Duration::from_secs(1));
    step.mul_f64(0.5 + 0.5 * fastrand::f64())
}

/// How long after running out of file handles the batch adds no parts.
const HANDLES_CALM: Duration = Duration::from_secs(2);

/// One transfer's wait for file handles (see [`Batch::wait_for_handles`]).
#[derive(Debug, Default)]
struct HandleWait {
    /// When this wait began.
    since: Option<Instant>,
    /// Attempts that ran out of handles in a row.
    waits: u32,
}

/// A failed attempt that brought fewer new bytes than this made no
/// progress. Small beside any range a server caps its answers at, large
/// beside what a server that trickles a few bytes per connection sends.
const PROGRESS_MIN: u64 = 64 * 1024;

/// The failed attempts of a part (or of a file's first request), and
/// whether another may follow: `Config::max_tries` counts the attempts in
/// a row that made no progress (brought less than [`PROGRESS_MIN`] new
/// bytes), so a part that advances with every attempt finishes. The bound
/// on a server that alternates a little progress with failures: all
/// failed attempts together may not outnumber `max_tries` plus one for
/// each `PROGRESS_MIN` bytes the attempts brought. One try means no retry
/// at all, progress or not, as it always has.
#[derive(Debug)]
struct Tries {
    /// Waiting for file handles, which spends no try.
    handles: HandleWait,
    /// Whether the attempts are a worker's, counted among the batch's
    /// transfers.
    worker: bool,
    max: u32,
    /// Failed attempts in a row without progress.
    misses: u32,
    /// Failed attempts, all told.
    failed: u64,
    /// New bytes the attempts brought, all told.
    gained: u64,
}

impl Tries {
    fn new(max_tries: u32) -> Self {
        Tries {
            handles: HandleWait::default(),
            worker: false,
            max: max_tries.max(1),
            misses: 0,
            failed: 0,
            gained: 0,
        }
    }

    /// The attempts of a worker (see [`Tries::worker`]).
    fn of_worker(mut self) -> Self {
        self.worker = true;
        self
    }

    /// Records a failed attempt that brought `gained` new bytes; returns
    /// whether another attempt may follow.
    fn fail(&mut self, gained: u64) -> bool {
        self.failed += 1;
        self.gained = self.gained.saturating_add(gained);
        if gained >= PROGRESS_MIN {
            self.misses = 0;
        } else {
            self.misses += 1;
        }
        self.max > 1
            && self.misses < self.max
            && self.failed <= u64::from(self.max) + self.gained / PROGRESS_MIN
    }
}

/// One semaphore per host (and port) for `--max-per-host`.
struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSlots {
    fn new(per_host: usize) -> Self {
        HostSlots {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn semaphore(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default().unwrap_or(0)
        );
        let mut hosts = self.hosts.lock().expect("host slots poisoned");
        hosts
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

/// The wait before attempt `attempt + 1`: exponential from `base`, capped at
/// `max`, with "equal jitter" (half fixed, half random, from `unit` in
/// 0..1) so parts that failed together do not retry together; never shorter
/// than what the server asked for.
fn backoff(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(16)).min(max);
    let jittered = exp.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
    match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// A range of the file that one worker fills: `pos` is the next byte to
/// receive, `end` one past the last, and other workers may lower `end` to
/// take over the rest.
#[derive(Debug)]
struct Span {
    start: u64,
    pos: u64,
    end: u64,
    /// Bytes `start..on_disk` are written to the file; `pos` runs ahead
    /// by what is still gathered for writing. Resume state claims no more.
    on_disk: u64,
    /// Whether a worker is filling it; a span left by a worker that the
    /// server refused is taken over whole by the next idle worker.
    active: bool,
    /// When a byte last arrived (or the span was made, or its request
    /// was answered).
    progressed: Instant,
    /// When its current request was made, and `pos` then: its pace.
    began: Instant,
    began_pos: u64,
    /// Whether its worker is in a wait that is no stall: asking for its
    /// bytes (connecting, logging in, waiting for a connection the server
    /// will take; a stall is of a transfer that started, and the protocol
    /// bounds the request by the timeout), or held back by the bandwidth
    /// cap.
    waiting: bool,
    /// Cancelled when an idle worker takes over the rest of this span
    /// because it stalled: its own worker then stops.
    taken: CancellationToken,
    /// How many stalled spans this one continues: bounded, so a server that
    /// stalls every connection fails by the idle timeout rather than being
    /// asked again every few seconds forever.
    takeovers: u32,
}

impl Span {
    fn new(start: u64, pos: u64, end: u64) -> SharedSpan {
        Arc::new(Mutex::new(Span {
            start,
            pos,
            end,
            on_disk: pos,
            active: true,
            progressed: Instant::now(),
            began: Instant::now(),
            began_pos: pos,
            waiting: false,
            taken: CancellationToken::new(),
            takeovers: 0,
        }))
    }

    /// Whether an idle connection gains by taking the back half of this
    /// span now. Its request asks up to `end`: a cut wastes whatever the
    /// server has sent past it (and SFTP reads already asked for), so a
    /// part on course to finish soon is left to its connection; one that
    /// is slow, or stuck asking for its bytes, is split.
    fn worth_splitting(&self) -> bool {
        let elapsed = self.began.elapsed();
        if self.waiting {
            return elapsed >= SPLIT_HORIZON;
        }
        if elapsed < PACE_SEEN_AFTER {
            return false;
        }
        let received = self.pos.saturating_sub(self.began_pos);
        if received == 0 {
            return true;
        }
        let left = self.end.saturating_sub(self.pos);
        elapsed.mul_f64(left as f64 / received as f64) >= SPLIT_HORIZON
    }
}

type SharedSpan = Arc<Mutex<Span>>;

/// How a file's transfer begins.
struct Start {
    /// The body of the first response, streaming from byte 0.
    body: Option<ByteStream>,
    /// Whether the server serves ranges of the file.
    ranges: bool,
    /// `[start, pos, end]` of the parts of an earlier run (`--continue`).
    resumed: Option<Vec<[u64; 3]>>,
    /// The first transfer's slot on the host (`--max-per-host`).
    slot: Option<OwnedSemaphorePermit>,
}

/// How a worker stopped filling a span.
#[derive(Debug, PartialEq, Eq)]
enum Filled {
    /// The span is complete.
    Done,
    /// The server refused the connection; the span is left to others.
    Left,
}

fn lock(span: &SharedSpan) -> std::sync::MutexGuard<'_, Span> {
    span.lock().expect("span poisoned")
}

/// The download of one file, shared by its workers.
struct FileJob {
    batch: Arc<Batch>,
    protocol: Arc<dyn Protocol>,
    url: Url,
    temp: Utf8PathBuf,
    /// Set when the download went to an unnamed file rather than to
    /// `temp` (see [`NameTable::unnamed_file`]).
    unnamed: AtomicBool,
    id: ReportId,
    /// The size of the file, when known.
    size: Option<u64>,
    /// The version of the file the first response described.
    validator: Option<Validator>,
    spans: Mutex<Vec<SharedSpan>>,
    /// Workers running.
    workers: AtomicUsize,
    /// Told whenever a worker is done with a span, so that workers waiting
    /// at the tail leave as soon as nothing is left to watch.
    span_done: Notify,
    /// Cancels this file's workers (a child of the batch's token); a new
    /// one replaces it when the file starts over as one stream.
    cancel: Mutex<CancellationToken>,
    /// Set when the server stopped honouring ranges: the file is fetched as
    /// one stream from then on.
    single: AtomicBool,
    /// Set when the one stream started over from byte 0 (the file on disk
    /// may then be longer than what this attempt wrote).
    rewound: AtomicBool,
    /// Set, under its lock, once the download's outcome decides what
    /// becomes of its resume state: checkpoints (written under the same
    /// lock) stop then, and never undo that decision.
    state_final: Mutex<bool>,
    /// The part file, kept under `--continue` with `fsync`: a state is
    /// written only after the bytes it claims are synced.
    durable_part: std::sync::OnceLock<PartFile>,
}

impl FileJob {
    async fn run(
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
    fn state(&self) -> resume::State {
        resume::State {
            url: redact_url(&self.url),
            size: self.size,
            validator: self.validator.clone().unwrap_or_default(),
            spans: self.span_list(),
        }
    }

    /// Writes the resume state every [`CHECKPOINT_EVERY`] while bytes
    /// arrive, until the download's outcome is known.
    async fn checkpoints(self: Arc<Self>) {
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
    async fn sync_part(&self) -> std::io::Result<()> {
        match self.durable_part.get() {
            Some(part) => part.with(|f| f.sync_data()).await,
            None => Ok(()),
        }
    }

    /// `[start, pos, end]` of every span, `pos` what is on disk: at any
    /// moment (the spans are read under one lock, so they tile the file)
    /// a true statement of which bytes of the file are good.
    fn span_list(&self) -> Vec<[u64; 3]> {
        let spans = self.spans.lock().expect("spans poisoned");
        spans
            .iter()
            .map(|span| {
                let s = lock(span);
                [s.start, s.on_disk.min(s.end).max(s.start), s.end]
            })
            .collect()
    }

    async fn transfer(
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

        let received = job.received();
        if let Some(size) = job.size
            && received != size
        {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!("received {received} of {size} bytes"),
            ));
        }
        let fsync = job.batch.config.fsync;
        // The parts tile 0..received, so the file is that long unless a
        // restart from zero or an earlier run left more behind.
        let truncate = job.rewound.load(Ordering::SeqCst) || resumed;
        if fsync || truncate {
            file.with(move |f| {
                if truncate {
                    f.set_len(received)?;
                }
                if fsync {
                    f.sync_all()?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Error::io(format_args!("cannot finish {}", job.part()), e))?;
        }

        if let Some(expected) = sha256 {
            let actual = file
                .sha256()
                .await
                .map_err(|e| Error::io(format_args!("cannot read {}", job.part()), e))?;
            if actual != expected {
                return Err(Error::new(
                    ErrorKind::Checksum,
                    format!("sha256 is {actual}, expected {expected}"),
                )
                .retryable(false));
            }
        }
        if job.unnamed.load(Ordering::Relaxed) {
            let named = (job.batch.names)
                .publish_unnamed(file.raw(), target, job.batch.config.overwrite)
                .map_err(|e| Error::io(format_args!("cannot create {target}"), e))?;
            if let Some(target) = named {
                return Ok((target, received));
            }
            // The system would not name it: a named part file after all.
            let temp = job.temp.clone();
            file.with(move |f| copy_to_named(f, &temp, fsync))
                .await
                .map_err(|e| Error::io(format_args!("cannot copy to {}", job.temp), e))?;
            job.unnamed.store(false, Ordering::Relaxed);
        } else if !crate::files::is_at(file.raw(), &job.temp) {
            // The part file was swapped for something else (a link) while
            // we wrote to it: that is not ours to rename into place. Our
            // bytes go to a new part file first.
            tracing::warn!("{} was replaced during the download", job.temp);
            let temp = job.temp.clone();
            file.with(move |f| copy_to_named(f, &temp, fsync))
                .await
                .map_err(|e| Error::io(format_args!("cannot copy to {}", job.temp), e))?;
        }
        drop(file);
        let target = job
            .batch
            .names
            .publish(&job.temp, target, job.batch.config.overwrite)
            .map_err(|e| Error::io(format_args!("cannot rename {} to {target}", job.temp), e))?;
        Ok((target, received))
    }

    /// The part file, for messages.
    fn part(&self) -> String {
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
    fn received(&self) -> u64 {
        let spans = self.spans.lock().expect("spans poisoned");
        spans
            .iter()
            .map(|span| {
                let s = lock(span);
                s.pos.min(s.end).saturating_sub(s.start)
            })
            .sum()
    }

    /// Fills `span`, then helps with the others until nothing is left
    /// worth splitting.
    async fn worker(
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
    fn others_running(&self) -> bool {
        if self.size.is_none() || self.single.load(Ordering::SeqCst) {
            return false;
        }
        let spans = self.spans.lock().expect("spans poisoned");
        spans.iter().any(|span| {
            let s = lock(span);
            s.active && s.pos < s.end
        })
    }

    fn cancel_token(&self) -> CancellationToken {
        self.cancel.lock().expect("cancel poisoned").clone()
    }

    /// Replaces every span by one covering the whole file, with a fresh
    /// cancellation token, and takes back the progress reported so far.
    fn restart_as_one_stream(&self) -> SharedSpan {
        self.rewound.store(true, Ordering::SeqCst);
        *self.cancel.lock().expect("cancel poisoned") = self.batch.cancel.child_token();
        self.batch.reporter.on_rewind(self.id, self.received());
        let span = Span::new(0, 0, self.size.unwrap_or(u64::MAX));
        *self.spans.lock().expect("spans poisoned") = vec![span.clone()];
        span
    }

    /// Whether parts of the file could ever be fetched at once: its size
    /// is known, ranges work, and it holds at least two minimum parts.
    fn splittable(&self) -> bool {
        let min = self.batch.config.min_split_size.max(1);
        !self.single.load(Ordering::SeqCst)
            && self.batch.config.max_splits > 1
            && self.size.is_some_and(|size| size >= min.saturating_mul(2))
    }

    /// Adds workers while the batch has connections to spare (at the end
    /// of a batch, as other files finish), each taking half of the
    /// largest part left; at most `max_splits` workers per file.
    async fn help(self: &Arc<Self>, workers: &mut JoinSet<Result<()>>, file: &PartFile) {
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

    fn spawn_worker(
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
    fn count_in(self: &Arc<Self>) -> Counted {
        self.workers.fetch_add(1, Ordering::SeqCst);
        self.batch.transfers.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone())
    }

    /// Runs one worker, counted (by `_counted`) among the file's workers and
    /// the batch's transfers while it runs.
    async fn run_worker(
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
    fn steal_orphan(&self) -> Option<SharedSpan> {
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
    fn steal(&self) -> Option<SharedSpan> {
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
    fn absorb_next(&self, span: &SharedSpan) -> bool {
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
    fn take_over_stalled(&self, spans: &mut Vec<SharedSpan>) -> Option<SharedSpan> {
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
    async fn fill(
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
    async fn refetch(&self, span: &SharedSpan) -> Result<Option<ByteStream>> {
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

    /// Copies a body into the span until the span is full or the body ends.
    async fn pump(&self, file: &PartFile, span: &SharedSpan, mut body: ByteStream) -> Result<()> {
        let timeout = self.batch.config.protocol.timeout;
        let cancel = self.cancel_token();
        let (start, taken) = {
            let s = lock(span);
            (s.pos, s.taken.clone())
        };
        let mut out = WriteBehind::new(file.clone(), start, WRITE_BUF);
        let outcome: Result<()> = 'pump: loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => break Err(Error::cancelled()),
                // Another worker took over the rest: what was received is
                // written below, and the span is complete up to its new end.
                () = taken.cancelled() => break Ok(()),
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
                    let s = lock(span);
                    break match self.size {
                        Some(_) if s.pos < s.end => Err(Error::new(
                            ErrorKind::Truncated,
                            format!("the server closed the body at byte {} of {}", s.pos, s.end),
                        )),
                        _ => Ok(()),
                    };
                }
                Ok(Some(Err(e))) => break Err(e),
                Ok(Some(Ok(mut chunk))) => {
                    // A chunk may run past the span's end: the rest goes to
                    // the next span when this one can absorb it.
                    while !chunk.is_empty() {
                        let (take, full, past_file_end) = {
                            let mut s = lock(span);
                            let room = s.end.saturating_sub(s.pos);
                            let take = (chunk.len() as u64).min(room) as usize;
                            s.pos += take as u64;
                            let now = Instant::now();
                            s.progressed = now;
                            self.batch.progressed_at(now);
                            let full = s.pos >= s.end;
                            let past = take < chunk.len() && Some(s.end) == self.size;
                            (take, full, past)
                        };
                        let written = out.push(chunk.split_to(take)).await.map_err(|e| {
                            Error::io(format_args!("cannot write {}", self.part()), e)
                        })?;
                        lock(span).on_disk += written;
                        self.batch.reporter.on_progress(self.id, written);
                        if let Some(throttle) = &self.batch.throttle {
                            // The wait is ours, not the server's.
                            lock(span).waiting = true;
                            throttle.take(take as u64).await;
                            let mut s = lock(span);
                            s.waiting = false;
                            s.progressed = Instant::now();
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
                        if full && !self.absorb_next(span) {
                            break 'pump Ok(());
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
        lock(span).on_disk += written;
        self.batch.reporter.on_progress(self.id, written);
        outcome
    }
}

/// Copies the whole of `from` into a new file at `to` (replacing any, never
/// writing through a link), for an unnamed file the system would not name.
fn copy_to_named(from: &std::fs::File, to: &Utf8Path, fsync: bool) -> std::io::Result<()> {
    use std::io::Seek;
    let mut named = crate::files::create_replacing(to)?;
    let mut from = from;
    let copied = (from.rewind())
        .and_then(|()| std::io::copy(&mut from, &mut named))
        .and_then(|_| if fsync { named.sync_all() } else { Ok(()) });
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running worker as counted by [`FileJob::count_in`]; uncounted when
/// dropped, also when its task is aborted.
struct Counted(Arc<FileJob>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.workers.fetch_sub(1, Ordering::SeqCst);
        self.0.batch.transfers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cuts `0..size` into at most `max_splits` parts of at least `min_split`
/// bytes when ranges work; otherwise one part (open-ended when the size is
/// unknown).
fn plan_parts(
    size: Option<u64>,
    ranges: bool,
    max_splits: usize,
    min_split: u64,
) -> Vec<(u64, u64)> {
    let Some(size) = size else {
        return vec![(0, u64::MAX)];
    };
    let parts = if ranges {
        (size / min_split.max(1)).clamp(1, max_splits.max(1) as u64)
    } else {
        1
    };
    let base = size / parts;
    let extra = size % parts;
    let mut out = Vec::with_capacity(parts as usize);
    let mut start = 0;
    for i in 0..parts {
        let len = base + u64::from(i < extra);
        out.push((start, start + len));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The way out when the system will not name an unnamed file.
    #[cfg(unix)]
    #[test]
    fn a_copy_to_a_named_file_holds_every_byte() {
        use std::os::unix::fs::FileExt as _;
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let source = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("source"))
            .unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        // Written the way parts are: at offsets, the cursor left at 0...
        source.write_all_at(&bytes[1000..], 1000).unwrap();
        source.write_all_at(&bytes[..1000], 0).unwrap();
        // ...or anywhere.
        std::io::Seek::seek(&mut &source, std::io::SeekFrom::Start(5)).unwrap();
        let named = dir.join("named");
        std::fs::write(&named, b"stale, longer than nothing").unwrap();
        copy_to_named(&source, &named, true).unwrap();
        assert!(std::fs::read(&named).unwrap() == bytes);
    }

    #[test]
    fn parts_tile_the_file_and_respect_the_minimum() {
        assert_eq!(plan_parts(Some(0), true, 5, 10), vec![(0, 0)]);
        assert_eq!(plan_parts(Some(10), true, 5, 10), vec![(0, 10)]);
        assert_eq!(plan_parts(Some(25), true, 5, 10), vec![(0, 13), (13, 25)]);
        assert_eq!(plan_parts(Some(100), false, 5, 10), vec![(0, 100)]);
        assert_eq!(plan_parts(None, true, 5, 10), vec![(0, u64::MAX)]);
        let plan = plan_parts(Some(1003), true, 5, 1);
        assert_eq!(plan.len(), 5);
        assert_eq!(plan.first().unwrap().0, 0);
        assert_eq!(plan.last().unwrap().1, 1003);
        assert!(plan.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(plan_parts(Some(100), true, 0, 0), vec![(0, 100)]);
    }

    #[test]
    fn attempts_that_advance_use_up_no_try() {
        const K: u64 = 1024;
        // Nothing received: max_tries attempts in all.
        let mut tries = Tries::new(3);
        assert!(tries.fail(0) && tries.fail(PROGRESS_MIN - 1));
        assert!(!tries.fail(10));
        // 256 KiB at a time, forever: never runs out.
        let mut tries = Tries::new(2);
        assert!((0..10_000).all(|_| tries.fail(256 * K)));
        // One try is no retry, progress or not.
        assert!(!Tries::new(1).fail(256 * K));
        // Progress resets the count of misses in a row...
        let mut tries = Tries::new(2);
        assert!(tries.fail(512 * K) && tries.fail(0) && tries.fail(512 * K) && tries.fail(0));
        assert!(!tries.fail(0));
        // ...but a little progress between many misses runs out: failures
        // may not outnumber max_tries plus one per PROGRESS_MIN received.
        let mut tries = Tries::new(5);
        let mut attempts = 0;
        while tries.fail(if attempts % 4 == 0 { PROGRESS_MIN } else { 0 }) {
            attempts += 1;
            assert!(attempts < 100, "never ran out");
        }
        // Zero tries means one.
        assert!(!Tries::new(0).fail(0));
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff(base, max, 1, None, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 1, None, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, max, 3, None, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 30, None, 1.0), max);
        assert_eq!(
            backoff(base, max, 1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(base, max, 1, Some(Duration::from_secs(9999)), 0.5),
            MAX_RETRY_AFTER
        );
    }
}
