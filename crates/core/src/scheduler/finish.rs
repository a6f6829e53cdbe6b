//! The end of a file's download: its length and checksums checked, its
//! modification time set, its bytes made durable when asked, and the file
//! given its name, so that a download is visible only when it is complete.

use std::sync::Arc;
use std::time::SystemTime;

use camino::{Utf8Path, Utf8PathBuf};

use super::file_job::FileJob;
use crate::checksum::Checksum;
use crate::error::{Error, ErrorKind, Result};
use crate::writer::PartFile;

/// A checksum the file must have, and who said so.
#[derive(Debug)]
pub(super) struct Expected {
    pub(super) sum: Checksum,
    /// Sent by the server (a digest header), rather than given by the
    /// user.
    pub(super) from_server: bool,
}

/// What the end of a download checks and sets.
#[derive(Debug, Default)]
pub(super) struct Finish {
    /// The checksums the file must have.
    pub(super) expected: Vec<Expected>,
    /// The remote modification time, to give the file.
    pub(super) modified: Option<SystemTime>,
}

impl FileJob {
    pub(super) async fn finish(
        self: &Arc<Self>,
        file: PartFile,
        target: &Utf8Path,
        finish: Finish,
        resumed: bool,
    ) -> Result<(Utf8PathBuf, u64)> {
        let job = self;
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
        let truncate = job.parts().rewound() || resumed;
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

        verify(&file, &finish.expected).await.map_err(|e| {
            e.unwrap_or_else(|e| Error::io(format_args!("cannot read {}", job.part()), e))
        })?;
        if let Some(modified) = finish.modified {
            // Set on the file itself before it has its name: whoever sees
            // the name sees the time. A file system that keeps no times is
            // no reason to fail the download.
            // On this thread, as the small writes are (`writer.rs`): one
            // metadata call, where a trip to the blocking pool costs two
            // thread wake-ups (2,000 small files took 30 % more CPU).
            let times = std::fs::FileTimes::new().set_modified(modified);
            if let Err(e) = file.raw().set_times(times) {
                tracing::debug!("cannot set the time of {}: {e}", job.part());
            }
        }
        // The next timestamping run asks by tag too (If-None-Match).
        let etag = job.validator.as_ref().and_then(|v| v.etag.clone());
        if let Some(etag) = etag.filter(|_| job.batch.config.timestamping) {
            let remember = move |f: &std::fs::File| {
                crate::local::remember_etag(f, &etag);
                Ok(())
            };
            let _ = file.with(remember).await;
        }
        let modified = finish.modified;
        let mut copied = false;
        if job.unnamed() {
            let named = (job.batch.names)
                .publish_unnamed(file.raw(), target, job.settings.overwrite)
                .map_err(|e| Error::io(format_args!("cannot create {target}"), e))?;
            if let Some(target) = named {
                return Ok((target, received));
            }
            // The system would not name it: a named part file after all.
            let temp = job.temp.clone();
            file.with(move |f| copy_to_named(f, &temp, fsync, modified))
                .await
                .map_err(|e| Error::io(format_args!("cannot copy to {}", job.temp), e))?;
            copied = true;
        } else if !crate::files::is_at(file.raw(), &job.temp) {
            // The part file was swapped for something else (a link) while
            // we wrote to it: that is not ours to rename into place. Our
            // bytes go to a new part file first.
            tracing::warn!("{} was replaced during the download", job.temp);
            let temp = job.temp.clone();
            file.with(move |f| copy_to_named(f, &temp, fsync, modified))
                .await
                .map_err(|e| Error::io(format_args!("cannot copy to {}", job.temp), e))?;
        }
        drop(file);
        let target = job
            .batch
            .names
            .publish(&job.temp, target, job.settings.overwrite)
            .map_err(|e| Error::io(format_args!("cannot rename {} to {target}", job.temp), e));
        // The copy is a named file, which the end of a failed download
        // (that saw an unnamed one) does not remove.
        if copied && target.is_err() {
            let _ = tokio::fs::remove_file(&job.temp).await;
        }
        let target = target?;
        Ok((target, received))
    }
}

/// Checks the file against every expected checksum, each algorithm
/// computed once. `Err(Ok(e))`: a mismatch; `Err(Err(io))`: the file could
/// not be read.
async fn verify(
    file: &PartFile,
    expected: &[Expected],
) -> std::result::Result<(), std::result::Result<Error, std::io::Error>> {
    if expected.is_empty() {
        return Ok(());
    }
    let mut algos: Vec<_> = expected.iter().map(|e| e.sum.algo()).collect();
    algos.sort();
    algos.dedup();
    let actual = file.checksums(algos).await.map_err(Err)?;
    for want in expected {
        let Some(got) = actual.iter().find(|a| a.algo() == want.sum.algo()) else {
            continue;
        };
        if got != &want.sum {
            let algo = want.sum.algo();
            let said = if want.from_server {
                "the server's digest says"
            } else {
                "expected"
            };
            return Err(Ok(Error::new(
                ErrorKind::Checksum,
                format!("{algo} is {}, {said} {}", got.hex(), want.sum.hex()),
            )));
        }
    }
    Ok(())
}

/// Copies the whole of `from` into a new file at `to` (replacing any, never
/// writing through a link), for an unnamed file the system would not name.
pub(super) fn copy_to_named(
    from: &std::fs::File,
    to: &Utf8Path,
    fsync: bool,
    modified: Option<SystemTime>,
) -> std::io::Result<()> {
    use std::io::Seek;
    let mut named = crate::files::create_replacing(to)?;
    let mut from = from;
    let copied = (from.rewind())
        .and_then(|()| std::io::copy(&mut from, &mut named))
        .and_then(|_| match modified {
            Some(t) => named.set_modified(t),
            None => Ok(()),
        })
        .and_then(|()| if fsync { named.sync_all() } else { Ok(()) });
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied
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
        copy_to_named(&source, &named, true, None).unwrap();
        assert!(std::fs::read(&named).unwrap() == bytes);
    }
}
