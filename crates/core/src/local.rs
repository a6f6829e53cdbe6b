//! What a file already on disk says of itself, and the one rule of when
//! it is as new as the remote file: the same size, and the same time
//! (a mirror, lftp's and rsync's rule: a version put back on the server is
//! older, and still a change) or, with timestamping (wget's `-N`), not
//! older. Timestamping, trees and the engine's own checks all ask it, so
//! that a file skipped by one is skipped by the others.

use std::time::SystemTime;

use camino::Utf8Path;

use crate::protocol::RemoteMeta;

/// A local copy of a remote file: its size, modification time and, when
/// the caller knows it, the entity tag of the version it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCopy {
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (the remote one, when it was downloaded with
    /// [`Config::remote_time`](crate::Config::remote_time)).
    pub modified: SystemTime,
    /// The HTTP entity tag of the version it holds, when known: a server
    /// then answers "not modified" by tag rather than by date.
    pub etag: Option<String>,
    /// Current only at the remote time itself (to the second), not at any
    /// later one: the rule of a tree mirrored without timestamping.
    pub same_time: bool,
}

impl LocalCopy {
    /// The regular file at `path` (never what a link points to), or
    /// `None` when there is none.
    pub fn of(path: &Utf8Path) -> Option<LocalCopy> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let (size, modified) = (meta.len(), meta.modified().ok()?);
        Some(LocalCopy {
            size,
            modified,
            etag: remembered_etag(path, size, modified),
            same_time: false,
        })
    }

    /// This copy, current only at the remote time itself when `same_time`
    /// ([`LocalCopy::same_time`]).
    #[must_use]
    pub fn with_same_time(self, same_time: bool) -> LocalCopy {
        LocalCopy { same_time, ..self }
    }

    /// Whether this copy is as new as the remote file `remote` describes:
    /// of its size, and not older than it (of its time, to the second,
    /// under [`LocalCopy::same_time`]). A remote file whose size or time is
    /// unknown is never current (it is fetched again).
    pub fn is_current(&self, remote: &RemoteMeta) -> bool {
        remote.size == Some(self.size)
            && remote.modified.is_some_and(|remote| {
                if self.same_time {
                    secs(self.modified) == secs(remote)
                } else {
                    secs(self.modified) >= secs(remote)
                }
            })
    }
}

/// The extended attribute that keeps, on a file downloaded with
/// timestamping, the entity tag of the version it holds together with the
/// size and time the file had then (`SIZE SECS.NANOS ETAG`): the tag is
/// sent again only while both still hold, so a file changed locally is
/// never taken for the server's version.
#[cfg(target_os = "linux")]
const ETAG_ATTR: &str = "user.pymatris.etag";

/// Remembers `etag` on `file` (as it is now) for the next
/// [`LocalCopy::of`]. A file system without user attributes keeps none,
/// and timestamping then compares times alone.
pub(crate) fn remember_etag(file: &std::fs::File, etag: &str) {
    #[cfg(target_os = "linux")]
    {
        let Ok(meta) = file.metadata() else { return };
        let Ok(modified) = meta.modified() else {
            return;
        };
        let value = format!("{} {} {etag}", meta.len(), stamp(modified));
        let flags = rustix::fs::XattrFlags::empty();
        if let Err(e) = rustix::fs::fsetxattr(file, ETAG_ATTR, value.as_bytes(), flags) {
            tracing::debug!("cannot keep the ETag in an extended attribute: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, etag);
}

#[cfg(target_os = "linux")]
fn remembered_etag(path: &Utf8Path, size: u64, modified: SystemTime) -> Option<String> {
    let mut buf = [0u8; 1024];
    let n = rustix::fs::lgetxattr(path.as_std_path(), ETAG_ATTR, &mut buf[..]).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut fields = text.splitn(3, ' ');
    let same = fields.next()? == size.to_string() && fields.next()? == stamp(modified);
    same.then(|| fields.next().map(str::to_owned)).flatten()
}

#[cfg(not(target_os = "linux"))]
fn remembered_etag(_: &Utf8Path, _: u64, _: SystemTime) -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
fn stamp(t: SystemTime) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(_) => "-".to_owned(),
    }
}

/// A time in whole seconds, the grain of the comparison: servers tell
/// whole seconds (HTTP dates, most `MDTM`s), and a file given the remote
/// time by a file system of coarser grain is not older for it.
fn secs(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i128,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i128),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn remote(size: Option<u64>, modified: Option<SystemTime>) -> RemoteMeta {
        RemoteMeta {
            size,
            modified,
            ..RemoteMeta::default()
        }
    }

    #[test]
    fn a_copy_is_current_when_of_the_same_size_and_not_older() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let local = LocalCopy {
            size: 10,
            modified: t + Duration::from_millis(300),
            etag: None,
            same_time: false,
        };
        assert!(local.is_current(&remote(Some(10), Some(t))));
        assert!(local.is_current(&remote(Some(10), Some(t - Duration::from_secs(5)))));
        // Newer remotely, another size, or nothing known: fetched again.
        assert!(!local.is_current(&remote(Some(10), Some(t + Duration::from_secs(1)))));
        assert!(!local.is_current(&remote(Some(11), Some(t))));
        assert!(!local.is_current(&remote(None, Some(t))));
        assert!(!local.is_current(&remote(Some(10), None)));

        // A mirror's rule: the same second, neither newer nor older.
        let local = local.with_same_time(true);
        assert!(local.is_current(&remote(Some(10), Some(t))));
        assert!(!local.is_current(&remote(Some(10), Some(t - Duration::from_secs(5)))));
        assert!(!local.is_current(&remote(Some(10), Some(t + Duration::from_secs(1)))));
        assert!(!local.is_current(&remote(Some(11), Some(t))));
    }
}
