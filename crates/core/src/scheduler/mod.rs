//! The scheduler: files at once, parts of a file at once, retries from the
//! last byte written, work stealing at the tail, and the atomic rename that
//! makes a download visible only when it is complete.
//!
//! This module holds the public face ([`Downloader`], [`Request`]) and the
//! batch loop; the rules live in small modules beside it: `batch` (what
//! the files of a batch share, how many connections a file gets now),
//! `file_job` (one file from its first answer to its rename), `workers`
//! and `pump` (the connections of a file and the bytes they carry),
//! `parts` (the part table: how a file is cut, and which span an idle
//! connection takes; pure, so its rules are tested without a server),
//! `checkpoint`, `retry`, `host_slots`, `finish`, and `version` (the one
//! check that every answer is of the version being downloaded).

mod batch;
mod checkpoint;
mod file_job;
mod finish;
mod host_slots;
mod parts;
mod pump;
mod retry;
mod tree_jobs;
mod version;
mod workers;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::naming::{self, NameTable};
use crate::netrc::Netrc;
use crate::redact::redact_url_str;
use crate::registry::Protocols;
use crate::reporter::{NoReporter, Reporter};
use crate::results::{Failed, Results, Succeeded};
use crate::throttle::Throttle;
use crate::tree::{TreeOptions, TreeRequest};

use batch::Batch;
use host_slots::HostSlots;

/// How long the end of a batch waits for the protocols to close their
/// idle connections politely.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One file to download and where to put it.
#[derive(Debug, Clone)]
pub struct Request {
    url: String,
    dir: Utf8PathBuf,
    filename: Option<String>,
    sha256: Option<String>,
    /// Where a file of a tree learns the remote time of what it got.
    remote_time: Option<Arc<OnceLock<String>>>,
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
            remote_time: None,
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
    trees: Vec<TreeRequest>,
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
            trees: Vec::new(),
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
    pub fn enqueue_file(&mut self, url: &str, dir: impl AsRef<Utf8Path>) {
        self.enqueue(Request::new(url).dir(dir.as_ref()));
    }

    /// Queues a request with per-file options.
    pub fn enqueue(&mut self, request: Request) {
        self.queue.push(request);
    }

    /// Queues the directory tree at `url` (FTP, SFTP, an HTTP index
    /// page), to be reproduced under `dir`: its directories are listed in
    /// parallel while its files download, files already there with the
    /// remote size and time are kept, and a changed one is replaced once
    /// its new version is complete. Names and links from the server never
    /// lead outside `dir`. Files and listing failures come in the results
    /// after those of the other requests, ordered by path.
    pub fn enqueue_tree(&mut self, url: &str, dir: impl AsRef<Utf8Path>, options: TreeOptions) {
        self.trees.push(TreeRequest {
            url: url.to_owned(),
            dir: dir.as_ref().to_owned(),
            options,
        });
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
        let trees = std::mem::take(&mut self.trees);
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
        // costs no wakeup of this task and no cross-thread spawn, which
        // count in a batch of many small files.
        let pending = Arc::new(Mutex::new(requests.into_iter().enumerate()));
        let outcomes: Arc<Mutex<Vec<Option<Outcome>>>> =
            Arc::new(Mutex::new((0..total).map(|_| None).collect()));
        let mut running = JoinSet::new();
        let tree = tree_jobs::TreeFeed::start(&batch, trees);
        let slots = match tree {
            Some(_) => self.config.max_parallel.max(1),
            None => self.config.max_parallel.clamp(1, total.max(1)),
        };
        for _ in 0..slots {
            let (batch, pending, outcomes) = (batch.clone(), pending.clone(), outcomes.clone());
            let tree = tree.clone();
            running.spawn(async move {
                loop {
                    let next = pending.lock().expect("queue poisoned").next();
                    let Some((index, request)) = next else {
                        if let Some(tree) = tree {
                            tree.run(&batch).await;
                        }
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
                    // the server wakes once for several (with many small
                    // files, half as often).
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
        if let Some(tree) = tree {
            tree.finish(&mut results);
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

pub(super) type Outcome = std::result::Result<Succeeded, Failed>;

pub(super) fn internal_error() -> Error {
    Error::new(ErrorKind::Protocol, "internal error (a bug in pymatris)")
}

/// A failure before the file's name is known.
pub(super) fn failed_early(request: &Request, error: Error) -> Failed {
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
