//! Trees in a batch: starts the walk of each tree queued with
//! `Downloader::enqueue_tree`, and has the batch's download slots take
//! the files the walks find, once the plain requests are all taken. A file
//! already there that is up to date ([`LocalCopy::is_current`]: the remote
//! size and time, or with `-N` not older) is kept without a request for
//! its body; a changed one is downloaded beside it and renamed over it
//! only when complete, and gets the remote time, so that the next run
//! finds it up to date. Under `-c` a changed file is never kept for its
//! size: only a partial download whose validator still holds resumes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use url::Url;

use super::batch::Batch;
use super::stream::{Done, TREE_FILE};
use super::{Outcome, Request, internal_error};
use crate::error::{Error, ErrorKind, Result};
use crate::local::LocalCopy;
use crate::protocol::{DirEntry, RemoteMeta};
use crate::redact::{redact_url, redact_url_str};
use crate::results::Failed;
use crate::tree::{self, Item, Lister, TreeFile, TreeRequest};

/// The files found and not yet taken, per download slot: enough that a
/// slot never waits on a listing that is already done, few enough that a
/// tree of a million files costs no memory.
const QUEUED_PER_SLOT: usize = 4;

/// The trees of a batch: what their walks found, and what came of it.
#[derive(Clone)]
pub(super) struct TreeFeed {
    found: Arc<tokio::sync::Mutex<mpsc::Receiver<Item>>>,
}

/// The batch as a walk sees it: listings and `stat`s under the per-host
/// limit, retried like any request, ended by cancellation.
struct BatchLister(Arc<Batch>);

#[async_trait::async_trait]
impl Lister for BatchLister {
    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>> {
        let batch = &self.0;
        let protocol = batch.protocols.get(url.scheme())?;
        batch
            .attempts(batch.config.max_tries, None, || async {
                let _slot = batch.slot(url, true).await?;
                tokio::select! {
                    biased;
                    () = batch.cancel.cancelled() => Err(Error::cancelled()),
                    r = protocol.list(url) => r,
                }
            })
            .await
    }

    async fn stat(&self, url: &Url) -> Result<RemoteMeta> {
        remote_stat(&self.0, url).await
    }
}

async fn remote_stat(batch: &Batch, url: &Url) -> Result<RemoteMeta> {
    let protocol = batch.protocols.get(url.scheme())?;
    batch
        .attempts(batch.config.max_tries, None, || async {
            let _slot = batch.slot(url, true).await?;
            batch.stat(&protocol, url, &Default::default()).await
        })
        .await
}

impl TreeFeed {
    /// Starts a walk for each tree; `None` without trees.
    pub(super) fn start(batch: &Arc<Batch>, trees: Vec<TreeRequest>) -> Option<TreeFeed> {
        if trees.is_empty() {
            return None;
        }
        let slots = batch.config.max_parallel.max(1);
        let (tx, rx) = mpsc::channel(slots * QUEUED_PER_SLOT);
        let lister: Arc<dyn Lister> = Arc::new(BatchLister(batch.clone()));
        for request in trees {
            let tx = tx.clone();
            let url = match Url::parse(&request.url) {
                Ok(mut url) => {
                    if let Some(netrc) = &batch.netrc {
                        netrc.apply(&mut url);
                    }
                    url
                }
                Err(e) => {
                    let failed = Failed {
                        filepath_partial: request.dir,
                        url: redact_url_str(&request.url),
                        error: Error::new(ErrorKind::InvalidUrl, e.to_string()),
                    };
                    tokio::spawn(async move { tx.send(Item::Failed(failed)).await });
                    continue;
                }
            };
            let filter = request.options.filter();
            tokio::spawn(tree::walk(
                lister.clone(),
                url,
                request.dir,
                filter,
                slots,
                tx,
                !batch.config.protocol.read_only,
            ));
        }
        Some(TreeFeed {
            found: Arc::new(tokio::sync::Mutex::new(rx)),
        })
    }

    /// The next file (or failure) a walk found; `None` once every walk is
    /// over and everything found was taken.
    pub(super) async fn next(&self) -> Option<Item> {
        self.found.lock().await.recv().await
    }

    /// Takes the files the walks find, one at a time, until every walk is
    /// over and every file taken, and sends what came of each to `done`
    /// as it ends (position [`TREE_FILE`]): nothing of a tree is kept, so
    /// a tree of millions of files costs the memory of those in flight.
    pub(super) async fn run(&self, batch: &Arc<Batch>, done: &Done) {
        loop {
            let item = self.next().await;
            let outcome = match item {
                None => return,
                Some(Item::Failed(failed)) => Err(failed),
                Some(Item::File(file)) => {
                    batch.files_left.fetch_add(1, Ordering::SeqCst);
                    let fallback = Failed {
                        filepath_partial: file.dir.join(&file.name),
                        url: redact_url(&file.url),
                        error: internal_error(),
                    };
                    batch
                        .run_file(download(batch.clone(), file), fallback)
                        .await
                }
            };
            if done.send((TREE_FILE, outcome)).await.is_err() {
                return;
            }
        }
    }
}

/// Where a tree's outcome leaves a file (or would have): the order of a
/// tree's results.
pub(super) fn path_of(outcome: &Outcome) -> &camino::Utf8Path {
    match outcome {
        Ok(ok) => &ok.path,
        Err(failed) => &failed.filepath_partial,
    }
}

/// What a file of a tree needs, judged before any request for its body.
pub(super) enum Step {
    /// Kept: up to date by what its listing said.
    Current {
        target: camino::Utf8PathBuf,
        size: u64,
        shown: String,
    },
    /// Downloaded by this request: over the old copy (if any) once
    /// complete.
    Fetch(Request),
}

/// One file of a tree: kept when up to date ([`LocalCopy::is_current`]),
/// else downloaded, over the old one only once complete (as under
/// `--overwrite`). With the size and time from the listing, an up-to-date
/// file costs no request; without (FTP `LIST`, HTTP index pages), the
/// download asks as under timestamping (HTTP: a conditional GET).
pub(super) fn step(batch: &Batch, file: TreeFile) -> Step {
    let target = file.dir.join(&file.name);
    // A link or anything else but a file is never replaced: the download
    // takes the next free name, as any download does.
    let same_time = batch.config.mirrors_same_time();
    let copy = LocalCopy::of(&target).map(|copy| copy.with_same_time(same_time));
    let listed = file.size.is_some() && file.modified.is_some();
    if let Some(copy) = &copy
        && listed
    {
        let remote = RemoteMeta {
            size: file.size,
            modified: file.modified,
            ..RemoteMeta::default()
        };
        if copy.is_current(&remote) {
            return Step::Current {
                target,
                size: copy.size,
                shown: redact_url(&file.url),
            };
        }
    }
    let mut request = Request::new(file.url.as_str())
        .dir(file.dir.clone())
        .filename(file.name.clone());
    if copy.is_some() {
        // Replaced once the new version is complete, never before.
        request = request.overwrite(true);
    }
    // The engine judges the copy again by the same rule (a listing can be
    // stale), and under -c does not keep it for its size.
    request.mirror = copy.is_some();
    // FTP then asks no `SIZE`, and checks the bytes against it.
    request.listed_size = file.size;
    Step::Fetch(request)
}

async fn download(batch: Arc<Batch>, file: TreeFile) -> Outcome {
    match step(&batch, file) {
        Step::Current {
            target,
            size,
            shown,
        } => Ok(batch.up_to_date(target, size, &shown)),
        Step::Fetch(request) => batch.download_one(request).await,
    }
}
