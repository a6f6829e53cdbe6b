//! [`Downloader::dry_run`]: what a download would do with each request,
//! learned with the protocols' `stat` alone (no body is asked for) and the
//! file system's metadata, touching no file: no directory is created, no
//! lock, part or state file is written. The name each file would get, its
//! size, and whether it would be downloaded, resumed, replaced or skipped.

use std::result::Result as StdResult;
use std::sync::Arc;

use camino::Utf8PathBuf;
use futures_util::StreamExt as _;
use url::Url;

use super::batch::Batch;
use super::tree_jobs::{self, Step, TreeFeed};
use super::{CLOSE_WAIT, Downloader, Request, failed_early};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::RemoteMeta;
use crate::redact::redact_url_str;
use crate::registry::Protocols;
use crate::results::Failed;
use crate::tree::Item;
use crate::{naming, resume};

/// What [`Downloader::download`] would do with one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Planned {
    /// The URL, passwords redacted.
    pub url: String,
    /// Where the file would be written.
    pub path: Utf8PathBuf,
    /// The remote size, when the server tells it.
    pub size: Option<u64>,
    /// What would be done.
    pub action: PlannedAction,
}

/// What would be done with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum PlannedAction {
    /// Downloaded to a name no file has.
    Download,
    /// Downloaded, then put in place of the file already there.
    Replace,
    /// Resumed from an earlier run's part, which holds `have` bytes.
    Resume {
        /// Bytes already on disk.
        have: u64,
    },
    /// Skipped: the file on disk is complete (resume: of the remote
    /// size).
    Complete,
    /// Skipped: the file on disk is up to date (timestamping).
    UpToDate,
}

impl Downloader {
    /// What [`download`](Self::download) would do with each queued request,
    /// in the order they were enqueued, and empties the queue: the names
    /// and sizes the servers give (a `stat` of each URL, no body), and
    /// whether each file would be downloaded, replaced, resumed or skipped
    /// as complete or up to date. No file or directory is created or
    /// changed. Trees enqueued with [`enqueue_tree`](Self::enqueue_tree)
    /// are walked (their listings are read) and their files planned after
    /// the requests, ordered by path: a file up to date by its listing is
    /// not asked about again; a listing that fails is an error.
    pub async fn dry_run(&mut self) -> Vec<StdResult<Planned, Failed>> {
        let requests = std::mem::take(&mut self.queue);
        let trees = std::mem::take(&mut self.trees);
        let mut batch = self.batch(requests.len(), !trees.is_empty());
        batch.config.protocol.read_only = true;
        batch.protocols = Protocols::new(batch.config.protocol.clone());
        let batch = Arc::new(batch);
        let parallel = self.config.max_parallel.max(1);
        let mut planned: Vec<_> = futures_util::stream::iter(requests)
            .map(|request| batch.clone().plan_one(request))
            .buffered(parallel)
            .collect()
            .await;
        if let Some(feed) = TreeFeed::start(&batch, trees) {
            let found = futures_util::stream::unfold(feed, |feed| async move {
                let item = feed.next().await?;
                Some((item, feed))
            });
            let mut in_trees: Vec<_> = found
                .map(|item| batch.clone().plan_found(item))
                .buffer_unordered(parallel)
                .collect()
                .await;
            in_trees.sort_by(|a, b| planned_path(a).cmp(planned_path(b)));
            planned.extend(in_trees);
        }
        // Bounded: a server that does not answer a goodbye holds no run.
        let _ = tokio::time::timeout(CLOSE_WAIT, batch.protocols.close()).await;
        planned
    }
}

fn planned_path(outcome: &StdResult<Planned, Failed>) -> &camino::Utf8Path {
    match outcome {
        Ok(planned) => &planned.path,
        Err(failed) => &failed.filepath_partial,
    }
}

impl Batch {
    /// What a download would do with a file a walk found (or the failure
    /// it found instead).
    async fn plan_found(self: Arc<Self>, item: Item) -> StdResult<Planned, Failed> {
        match item {
            Item::Failed(failed) => Err(failed),
            Item::File(file) => {
                let size = file.size;
                match tree_jobs::step(&self, file) {
                    Step::Current { target, shown, .. } => Ok(Planned {
                        url: shown,
                        path: target,
                        size,
                        action: PlannedAction::UpToDate,
                    }),
                    Step::Fetch(request) => self.plan_one(request).await,
                }
            }
        }
    }

    async fn plan_one(self: Arc<Self>, request: Request) -> StdResult<Planned, Failed> {
        // A URL that fails hands the request to its next mirror, as in a
        // download.
        let mut request = request;
        let (url, meta) = loop {
            match self.resolve(&request).await {
                Ok(found) => break found,
                Err(e) => match request.next_mirror(&e) {
                    Some(next) => request = next,
                    None => return Err(failed_early(&request, e)),
                },
            }
        };
        let settings = self.settings_of(&request);
        let name = file_name(&request, &meta, &url);
        let shown = redact_url_str(request.origin());
        let planned = |path: Utf8PathBuf, action| Planned {
            url: shown.clone(),
            path,
            size: meta.size,
            action,
        };
        if let Some((path, copy)) = self.local_copy(&request, &url)
            && path.file_name() == Some(name.as_str())
            && copy.is_current(&meta)
        {
            return Ok(planned(path, PlannedAction::UpToDate));
        }
        let path = request.dir.join(&name);
        let on_disk = std::fs::symlink_metadata(&path).ok();
        // Complete: of the remote size, and of the checksum when one is
        // given (the file is read, not written).
        if self.config.resume
            && let Some(done) = self.already_complete(&request, &name, &meta, &shown).await
        {
            return Ok(planned(done.path, PlannedAction::Complete));
        }
        // The name table is memory only: two requests of one name get the
        // names they would get in a download.
        let target = self.names.reserve(&request.dir, &name, settings.overwrite);
        if self.config.resume
            && let Some(spans) = resume::load(&naming::part_path(&target), &meta)
        {
            let have = spans.iter().map(|[start, pos, _]| pos - start).sum();
            return Ok(planned(target, PlannedAction::Resume { have }));
        }
        let action = if target == path && on_disk.is_some() {
            PlannedAction::Replace
        } else {
            PlannedAction::Download
        };
        Ok(planned(target, action))
    }
}

impl Batch {
    /// The URL of `request` (credentials of netrc applied) and what its
    /// server says of the file.
    async fn resolve(&self, request: &Request) -> Result<(Url, RemoteMeta)> {
        let mut url = Url::parse(&request.url)
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, e.to_string()))?;
        if let Some(netrc) = &self.netrc {
            netrc.apply(&mut url);
        }
        let protocol = self.protocols.get(url.scheme())?;
        let settings = self.settings_of(request);
        let _slot = self.slot(&url, true).await?;
        let meta = (self.attempts(settings.max_tries, None, || {
            self.stat(&protocol, &url, &settings.options)
        }))
        .await?;
        Ok((url, meta))
    }
}

/// The name a file gets: the request's, else the server's
/// (`Content-Disposition`), else the last segment of the URL after
/// redirects, else of the URL, else a fallback; each made safe.
pub(super) fn file_name(request: &Request, meta: &RemoteMeta, url: &Url) -> String {
    request
        .filename
        .as_deref()
        .and_then(naming::sanitize_user_filename)
        .or_else(|| meta.filename.as_deref().and_then(naming::sanitize_filename))
        .or_else(|| meta.final_url.as_ref().and_then(naming::filename_from_url))
        .or_else(|| naming::filename_from_url(url))
        .unwrap_or_else(|| naming::fallback_name(url))
}
