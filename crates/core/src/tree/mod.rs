//! Whole directories (`Downloader::enqueue_tree`): a walk lists the
//! directories of a remote tree in parallel and hands each file to the
//! batch as soon as its directory is listed, through a bounded channel, so
//! that downloads start while listing goes on and memory does not grow
//! with the tree. `filter` says which entries are wanted, `path` keeps
//! every name a server gives, and every link, inside the download
//! directory, `walk` is the walk itself.

mod filter;
mod path;
mod walk;

use std::fmt;
use std::time::SystemTime;

use camino::Utf8PathBuf;
use globset::Glob;
use url::Url;

use crate::error::Result;
use crate::protocol::{DirEntry, RemoteMeta};
use crate::results::Failed;

pub(crate) use filter::Filter;
pub(crate) use walk::walk;

/// What to take of a tree: globs on the path relative to the start
/// directory (`*` also matches `/`, so `*.nc` matches at any depth), and
/// how deep to go.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
    max_depth: Option<usize>,
}

/// A glob that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError(String);

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GlobError {}

fn glob(pattern: &str) -> std::result::Result<Glob, GlobError> {
    Glob::new(pattern).map_err(|e| GlobError(e.to_string()))
}

impl TreeOptions {
    /// Takes only files whose relative path matches one of the include
    /// globs (any file when there are none).
    pub fn include(mut self, pattern: &str) -> std::result::Result<Self, GlobError> {
        self.include.push(glob(pattern)?);
        Ok(self)
    }

    /// Leaves out files, and directories with all below them, whose
    /// relative path matches.
    pub fn exclude(mut self, pattern: &str) -> std::result::Result<Self, GlobError> {
        self.exclude.push(glob(pattern)?);
        Ok(self)
    }

    /// Lists directories at most `depth` levels below the start (0: the
    /// files of the start directory only). Without it, 64 levels.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = Some(depth);
        self
    }

    pub(crate) fn filter(&self) -> Filter {
        Filter::new(&self.include, &self.exclude, self.max_depth)
    }
}

/// A tree queued with `Downloader::enqueue_tree`.
#[derive(Debug, Clone)]
pub(crate) struct TreeRequest {
    pub(crate) url: String,
    pub(crate) dir: Utf8PathBuf,
    pub(crate) options: TreeOptions,
}

/// A file of a tree, to download to `dir/name`.
#[derive(Debug)]
pub(crate) struct TreeFile {
    pub(crate) url: Url,
    pub(crate) dir: Utf8PathBuf,
    pub(crate) name: String,
    /// What the listing said, when it said it exactly.
    pub(crate) size: Option<u64>,
    pub(crate) modified: Option<SystemTime>,
}

/// What a walk hands the batch: a file, or a failure to report.
#[derive(Debug)]
pub(crate) enum Item {
    File(TreeFile),
    Failed(Failed),
}

/// What a walk asks of the batch: a listing, or what a file is, each under
/// the batch's per-host limit and cancellation.
#[async_trait::async_trait]
pub(crate) trait Lister: Send + Sync {
    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>>;
    async fn stat(&self, url: &Url) -> Result<RemoteMeta>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_globs_are_refused() {
        assert!(TreeOptions::default().include("a[").is_err());
        assert!(TreeOptions::default().exclude("**/*.tmp").is_ok());
    }
}
