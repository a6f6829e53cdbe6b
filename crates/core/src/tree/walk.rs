//! The walk of one tree: up to `lanes` directories listed at once, each
//! file handed on as soon as its directory is listed (the channel's bound
//! holds the walk back while the downloads catch up), links handled last,
//! when the listings have shown which directories are real.

use std::collections::HashSet;
use std::sync::Arc;

use camino::Utf8PathBuf;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;
use url::Url;

use super::path::{
    as_dir_url, check_dirs, child_url, local_name, make_dirs, refuse_name, resolve_link,
    url_segments,
};
use super::{Filter, Item, Lister, TreeFile};
use crate::error::{Error, ErrorKind};
use crate::protocol::{DirEntry, EntryKind};
use crate::redact::redact_url;
use crate::results::Failed;

/// A directory to list.
struct Dir {
    url: Url,
    /// Its remote names, from the start directory down.
    remote: Vec<Vec<u8>>,
    /// Its local names (sanitised), from the download directory down.
    local: Vec<String>,
}

impl Dir {
    fn rel(&self, name: &[u8]) -> String {
        let mut rel = String::new();
        for part in self.remote.iter().map(Vec::as_slice).chain([name]) {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(&String::from_utf8_lossy(part));
        }
        rel
    }
}

/// A link seen in a listing, handled once the walk is over.
struct Link {
    dir: Utf8PathBuf,
    dir_remote: Vec<Vec<u8>>,
    name: String,
    rel: String,
    entry: DirEntry,
}

/// What the walk of one tree shares with its items.
struct Walk<'a> {
    root_url: Url,
    root_dir: Utf8PathBuf,
    filter: &'a Filter,
    tx: &'a Sender<Item>,
}

impl Walk<'_> {
    /// Reports a failure; `false` when nobody listens any more.
    async fn fail(&self, path: Utf8PathBuf, url: &Url, error: Error) -> bool {
        let failed = Failed {
            filepath_partial: path,
            url: redact_url(url),
            error,
        };
        self.tx.send(Item::Failed(failed)).await.is_ok()
    }

    async fn file(&self, file: TreeFile) -> bool {
        self.tx.send(Item::File(file)).await.is_ok()
    }
}

/// Walks the tree at `url` into `dir`, sending its files and failures to
/// `tx`, at most `lanes` listings at once. Each directory listed is made
/// locally, or with `create` false (a dry run) only checked where it
/// exists.
pub(crate) async fn walk(
    lister: Arc<dyn Lister>,
    url: Url,
    dir: Utf8PathBuf,
    filter: Filter,
    lanes: usize,
    tx: Sender<Item>,
    create: bool,
) {
    let root_url = as_dir_url(&url);
    let walk = Walk {
        root_url: root_url.clone(),
        root_dir: dir,
        filter: &filter,
        tx: &tx,
    };
    let root_segments = url_segments(&root_url);
    let mut todo = vec![(
        Dir {
            url: root_url.clone(),
            remote: Vec::new(),
            local: Vec::new(),
        },
        0usize,
    )];
    // The directories the listings showed (not links), by their remote
    // path below the start: what a link may point through.
    let mut real_dirs: HashSet<Vec<Vec<u8>>> = HashSet::from([Vec::new()]);
    let mut links = Vec::new();
    let mut listing = JoinSet::new();
    loop {
        while listing.len() < lanes.max(1)
            && let Some((dir, depth)) = todo.pop()
        {
            let lister = lister.clone();
            listing.spawn(async move {
                let entries = lister.list(&dir.url).await;
                (dir, depth, entries)
            });
        }
        let Some(done) = listing.join_next().await else {
            break;
        };
        let Ok((dir, depth, entries)) = done else {
            continue;
        };
        let local_dir = walk.root_dir.join(dir.local.join("/"));
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                let cancelled = e.kind() == ErrorKind::Cancelled;
                if !walk.fail(local_dir, &dir.url, e).await || cancelled {
                    return;
                }
                continue;
            }
        };
        let made = if create {
            make_dirs(&walk.root_dir, &dir.local)
        } else {
            check_dirs(&walk.root_dir, &dir.local)
        };
        let local_dir = match made {
            Ok(path) => path,
            Err(e) => {
                let err = Error::io(format_args!("cannot create directory {local_dir}"), e);
                if !walk.fail(local_dir, &dir.url, err).await {
                    return;
                }
                continue;
            }
        };
        for entry in entries {
            let url = child_url(&dir.url, &entry.name, entry.kind == EntryKind::Dir);
            if let Some(why) = refuse_name(&entry.name) {
                let err = Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "the listing of {} has {why}: not downloaded",
                        redact_url(&dir.url)
                    ),
                )
                .retryable(false);
                if !walk.fail(local_dir.clone(), &dir.url, err).await {
                    return;
                }
                continue;
            }
            let Some(name) = local_name(&entry.name) else {
                let shown = String::from_utf8_lossy(&entry.name).into_owned();
                let err = Error::new(
                    ErrorKind::Protocol,
                    format!("no usable local name for {shown:?}: not downloaded"),
                )
                .retryable(false);
                if !walk.fail(local_dir.clone(), &url, err).await {
                    return;
                }
                continue;
            };
            let rel = dir.rel(&entry.name);
            if entry.link_target.is_some() {
                links.push(Link {
                    dir: local_dir.clone(),
                    dir_remote: dir.remote.clone(),
                    name,
                    rel,
                    entry,
                });
                continue;
            }
            match entry.kind {
                EntryKind::Dir => {
                    let mut remote = dir.remote.clone();
                    remote.push(entry.name);
                    real_dirs.insert(remote.clone());
                    if walk.filter.enters_dir(&rel, depth + 1) {
                        let mut local = dir.local.clone();
                        local.push(name);
                        todo.push((Dir { url, remote, local }, depth + 1));
                    }
                }
                EntryKind::File => {
                    if walk.filter.wants_file(&rel) {
                        let file = TreeFile {
                            url,
                            dir: local_dir.clone(),
                            name,
                            size: entry.size,
                            modified: entry.modified,
                        };
                        if !walk.file(file).await {
                            return;
                        }
                    }
                }
                EntryKind::Other => {
                    tracing::debug!(%rel, "neither a file nor a directory: skipped");
                }
            }
        }
    }
    for link in links {
        if !follow_link(&walk, &*lister, &root_segments, &real_dirs, link).await {
            return;
        }
    }
}

/// A link whose target is a file inside the tree is downloaded under the
/// link's name; a link to a directory is not followed (the directory is
/// mirrored where it is, and no loop can form); a link out of the tree, or
/// through a directory the listings did not show as one (another link,
/// maybe out of the tree), is skipped. `false` when nobody listens.
async fn follow_link(
    walk: &Walk<'_>,
    lister: &dyn Lister,
    root: &[Vec<u8>],
    real_dirs: &HashSet<Vec<Vec<u8>>>,
    link: Link,
) -> bool {
    let target = link.entry.link_target.as_deref().unwrap_or_default();
    let shown = String::from_utf8_lossy(target);
    let resolved = resolve_link(root, &link.dir_remote, target).filter(|parts| {
        (1..parts.len()).all(|n| real_dirs.contains(&parts[..n]))
            && !real_dirs.contains(parts.as_slice())
    });
    let Some(parts) = resolved else {
        tracing::warn!(path = %link.rel, target = %shown, "a link out of the tree, or to a directory: not followed");
        return true;
    };
    if link.entry.kind == EntryKind::Dir || !walk.filter.wants_file(&link.rel) {
        return true;
    }
    let mut url = walk.root_url.clone();
    for (i, part) in parts.iter().enumerate() {
        url = child_url(&url, part, i + 1 < parts.len());
    }
    let (size, modified) = match link.entry.kind {
        EntryKind::File => (link.entry.size, link.entry.modified),
        _ => match lister.stat(&url).await {
            Ok(meta) if meta.size.is_some() => (meta.size, None),
            _ => {
                tracing::debug!(path = %link.rel, "a link to something other than a file: skipped");
                return true;
            }
        },
    };
    walk.file(TreeFile {
        url,
        dir: link.dir,
        name: link.name,
        size,
        modified,
    })
    .await
}
