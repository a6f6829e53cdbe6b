//! The scheduler: files at once, parts of a file at once, retries from the
//! last byte written, work stealing at the tail, and the atomic rename that
//! makes a download visible only when it is complete.
//!
//! This module holds the public face ([`Downloader`], [`Request`]) and the
//! batch loop; the rules live in small modules beside it: `batch` (what
//! the files of a batch share, how many connections a file gets now),
//! `adapt` and `growth` (how many it may get: the rule, and its inputs),
//! `file_job` (one file from its first answer to its rename), `workers`
//! and `pump` (the connections of a file and the bytes they carry),
//! `parts` (the part table: how a file is cut, and which span an idle
//! connection takes; pure, so its rules are tested without a server),
//! `checkpoint`, `retry`, `host_slots`, `finish`, `version` (the one
//! check that every answer is of the version being downloaded) and
//! `stream` (the slots that take requests as they come and hand results
//! over as they finish, which `download` is built on).

mod adapt;
mod batch;
mod checkpoint;
mod dry_run;
mod file_job;
mod finish;
mod fresh;
mod growth;
mod host_slots;
mod mirrors;
mod parts;
mod pump;
mod retry;
mod stream;
mod tree_jobs;
mod version;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use tokio_util::sync::CancellationToken;
use url::Url;

pub use self::dry_run::{Planned, PlannedAction};
use crate::checksum::Checksum;
use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::naming;
use crate::redact::redact_url_str;
use crate::reporter::{NoReporter, Reporter};
use crate::results::{Failed, Results, Succeeded};
use crate::tree::{TreeOptions, TreeRequest};

/// How long the end of a batch waits for the protocols to close their
/// idle connections politely.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One file to download and where to put it, with the settings of the
/// batch it may override for itself.
#[derive(Clone)]
pub struct Request {
    url: String,
    dir: Utf8PathBuf,
    filename: Option<String>,
    checksum: Option<Checksum>,
    /// A file of a tree that has a local copy: the copy is checked again
    /// by the tree's rule ([`LocalCopy::is_current`](crate::LocalCopy)),
    /// and under --continue never kept for its size alone.
    mirror: bool,
    /// A file of a tree: its size as the listing gave it.
    listed_size: Option<u64>,
    max_splits: Option<usize>,
    max_tries: Option<u32>,
    overwrite: Option<bool>,
    headers: Vec<(String, String)>,
    /// Boxed: most requests have none.
    alternates: Option<Box<Alternates>>,
}

/// The other URLs of a request's file.
#[derive(Clone, Default)]
struct Alternates {
    mirrors: Vec<String>,
    /// The URL as enqueued, once the request moved on to one of its
    /// mirrors because that one failed at once.
    origin: Option<String>,
    /// The URLs that failed at once, and why (redacted), in order.
    failed: Vec<(String, String)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold tokens, URLs passwords: names and
        // redacted URLs only.
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        let mirrors: Vec<String> = (self.mirror_urls().iter())
            .map(|m| redact_url_str(m))
            .collect();
        f.debug_struct("Request")
            .field("url", &redact_url_str(&self.url))
            .field("dir", &self.dir)
            .field("filename", &self.filename)
            .field("checksum", &self.checksum)
            .field("max_splits", &self.max_splits)
            .field("max_tries", &self.max_tries)
            .field("overwrite", &self.overwrite)
            .field("headers", &headers)
            .field("mirror", &self.mirror)
            .field("mirrors", &mirrors)
            .finish()
    }
}

impl Request {
    /// A request for `url`, saved in the current directory under the name
    /// the server or URL suggests.
    pub fn new(url: impl Into<String>) -> Self {
        Request {
            url: url.into(),
            dir: Utf8PathBuf::from("."),
            filename: None,
            checksum: None,
            mirror: false,
            listed_size: None,
            max_splits: None,
            max_tries: None,
            overwrite: None,
            headers: Vec::new(),
            alternates: None,
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
    /// download and the file is not kept. (Shorthand for
    /// [`checksum`](Self::checksum), which checks the hex when built.)
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.checksum = Some(Checksum::sha256_unchecked(&hex.into()));
        self
    }

    /// The expected checksum of the file (`"sha512=…".parse()`); a
    /// mismatch fails the download with
    /// [`ErrorKind::Checksum`](crate::ErrorKind::Checksum) and the file is
    /// not kept. It replaces any given before.
    pub fn checksum(mut self, checksum: Checksum) -> Self {
        self.checksum = Some(checksum);
        self
    }

    /// Parts of this file fetched at once, in place of
    /// [`Config::max_splits`] (at least 1). The batch's budget of
    /// connections still applies: a file gets more than one only when
    /// connections are to spare.
    pub fn max_splits(mut self, n: usize) -> Self {
        self.max_splits = Some(n.max(1));
        self
    }

    /// Attempts in a row without progress, per part of this file, in
    /// place of [`Config::max_tries`] (1: no retry).
    pub fn max_tries(mut self, n: u32) -> Self {
        self.max_tries = Some(n.max(1));
        self
    }

    /// Whether this file replaces an existing one, in place of
    /// [`Config::overwrite`].
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = Some(overwrite);
        self
    }

    /// An extra request header for this file, for the protocols that send
    /// headers (HTTP). It replaces a header of the same name the protocol
    /// is configured with; several of one name are all sent. Like the
    /// protocol's own, it goes only to the origin of the URL it is sent
    /// to, not after a redirect to another one, unless the protocol is
    /// told to trust redirects.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The checksum the file is verified against, when one was given.
    pub fn expected_checksum(&self) -> Option<&Checksum> {
        self.checksum.as_ref()
    }

    /// Other URLs of the same file, of any protocol: the file's parts are
    /// spread over the URL and its mirrors that serve the same version (the
    /// same size and, where both tell one, the same modification time to
    /// the second; entity tags are not compared across servers), and a
    /// mirror that fails or serves another version is dropped, with a
    /// warning, while the others finish the file. The URL given to
    /// [`Request::new`] is asked first, then the next if it fails at once;
    /// the name comes from whichever answers first, results show the
    /// first URL, and [`Succeeded::served_by`](crate::Succeeded) the URLs
    /// used. The file fails only when every URL failed, its error naming
    /// each. Mirrors whose URL does not parse, or whose scheme no protocol
    /// serves, are dropped with a warning.
    pub fn mirrors<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let alternates = self.alternates.get_or_insert_with(Default::default);
        alternates.mirrors.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        self.origin()
    }

    /// The other URLs of the same file (see [`Request::mirrors`]).
    pub fn mirror_urls(&self) -> &[String] {
        self.alternates.as_ref().map_or(&[], |a| &a.mirrors)
    }

    /// The URL as enqueued.
    pub(super) fn origin(&self) -> &str {
        let origin = self.alternates.as_ref().and_then(|a| a.origin.as_deref());
        origin.unwrap_or(&self.url)
    }

    /// This request moved on to its next mirror, when it has one, after
    /// its URL failed with `error`.
    pub(super) fn next_mirror(&self, error: &Error) -> Option<Request> {
        if self.mirror_urls().is_empty() {
            return None;
        }
        let mut next = self.clone();
        let alternates = next.alternates.get_or_insert_with(Default::default);
        alternates.origin = Some(self.origin().to_owned());
        let failed = (redact_url_str(&self.url), error.chain());
        alternates.failed.push(failed);
        next.url = alternates.mirrors.remove(0);
        Some(next)
    }

    /// The URLs that failed before this one, and why.
    pub(super) fn failed_urls(&self) -> &[(String, String)] {
        self.alternates.as_ref().map_or(&[], |a| &a.failed)
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
    /// once, in the order it was enqueued; then the files of the trees
    /// queued with [`enqueue_tree`](Self::enqueue_tree) (and their
    /// listings' failures), ordered by path.
    pub async fn download(&mut self) -> Results {
        let requests = std::mem::take(&mut self.queue);
        let trees = std::mem::take(&mut self.trees);
        let mut outcomes: Vec<Option<Outcome>> = (0..requests.len()).map(|_| None).collect();
        let mut in_trees = Vec::new();
        let requests = futures_util::stream::iter(requests);
        self.run_slots(requests, trees, |index, outcome| match index {
            stream::TREE_FILE => in_trees.push(outcome),
            _ => outcomes[index] = Some(outcome),
        })
        .await;
        in_trees.sort_by(|a, b| tree_jobs::path_of(a).cmp(tree_jobs::path_of(b)));
        let mut results = Results::default();
        for outcome in outcomes {
            match outcome {
                Some(Ok(ok)) => results.success.push(ok),
                Some(Err(failed)) => results.errors.push(failed),
                // A slot's task never ends before its request does; this
                // is a bug, but one that loses no request.
                None => results.errors.push(Failed {
                    filepath_partial: Utf8PathBuf::new(),
                    url: String::new(),
                    error: internal_error(),
                }),
            }
        }
        for outcome in in_trees {
            match outcome {
                Ok(ok) => results.success.push(ok),
                Err(failed) => results.errors.push(failed),
            }
        }
        results
    }

    /// Walks the trees queued with [`enqueue_tree`](Self::enqueue_tree),
    /// downloads their files, and calls `on_result` with what came of each
    /// file (and of each listing that failed) as soon as it is known, in
    /// the order they end. Nothing is kept for the end: the memory used is
    /// that of the files in flight and the directories being listed,
    /// whatever the size of the trees. Plain requests queued with
    /// [`enqueue`](Self::enqueue) stay queued.
    pub async fn download_trees_each<F>(&mut self, mut on_result: F)
    where
        F: FnMut(std::result::Result<Succeeded, Failed>),
    {
        let trees = std::mem::take(&mut self.trees);
        self.run_slots(futures_util::stream::empty(), trees, |_, outcome| {
            on_result(outcome);
        })
        .await;
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
            Url::parse(request.origin())
                .ok()
                .and_then(|u| naming::filename_from_url(&u))
        })
        .unwrap_or_default();
    Failed {
        filepath_partial: request.dir.join(name),
        url: redact_url_str(request.origin()),
        error,
    }
}
