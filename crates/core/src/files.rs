//! Creates and opens the files pymatris writes in a download's directory
//! (part files, resume state and its temporary, copies) so that nothing
//! found under their names is ever written through or waited on: a
//! symbolic link planted there (by another user of a shared directory, say)
//! pointing at a file elsewhere, a FIFO, a device. A name we create is
//! created with `O_EXCL`, which never follows a link, after removing what
//! was there (removing a link removes the link, not its target); a file we
//! reopen (`--continue`) is opened with `O_NOFOLLOW` and must be a regular
//! file. The directory itself is the user's choice and may be a link.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};

use camino::Utf8Path;

/// How often a name found taken is cleared before giving up: something
/// keeps putting a file there.
const CLEAR_TRIES: usize = 5;

/// Runs `create`, which fails with `AlreadyExists` rather than replace what
/// is at `path`; while it does, removes what is at `path` and tries again.
pub(crate) fn clearing<T>(
    path: &Utf8Path,
    mut create: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    for _ in 0..CLEAR_TRIES {
        match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // A directory, or no permission: refused.
                    Err(e) => return Err(e),
                }
            }
            other => return other,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{path} is re-created as fast as it is removed"),
    ))
}

/// A new, empty file at `path`, open for reading and writing, replacing
/// whatever is there (see the module documentation).
pub(crate) fn create_replacing(path: &Utf8Path) -> io::Result<File> {
    clearing(path, || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    })
}

/// Writes `bytes` to a new file `tmp`, created as by [`create_replacing`],
/// then renames it to `path`: a reader (or the next run, after a crash)
/// sees the old contents or the new, never a torn mix. The rename replaces
/// a link at `path` itself, never what it points to.
pub(crate) fn write_replacing(path: &Utf8Path, tmp: &Utf8Path, bytes: &[u8]) -> io::Result<()> {
    let written = create_replacing(tmp).and_then(|mut file| file.write_all(bytes));
    let renamed = written.and_then(|()| std::fs::rename(tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    renamed
}

/// The regular file at `path`, opened for reading (and writing, with
/// `write`) without following a link and without waiting on a FIFO or a
/// device. `Ok(None)` when nothing is there, it is not a regular file, or
/// (with `write`) it has other names: a hard link planted in its place
/// would have us write into someone else's file.
pub(crate) fn open_regular(path: &Utf8Path, write: bool) -> io::Result<Option<File>> {
    // A look first, so that a device is not even opened (opening some has
    // effects); the checks on the open file below close the race.
    match path.symlink_metadata() {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    open_nofollow(path, write)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_nofollow(path: &Utf8Path, write: bool) -> io::Result<Option<File>> {
    use rustix::fs::{CWD, FileType, Mode, OFlags, fcntl_getfl, fcntl_setfl, fstat, openat};
    use rustix::io::Errno;
    let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
    // NONBLOCK: a FIFO put there since the look opens at once rather than
    // wait for a writer; NOCTTY: a terminal does not become ours.
    let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match openat(CWD, path.as_std_path(), flags, Mode::empty()) {
        Ok(fd) => fd,
        // A link (ELOOP), gone, or a FIFO without a reader (ENXIO).
        Err(Errno::LOOP | Errno::NOENT | Errno::NXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stat = fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
        || (write && stat.st_nlink != 1)
    {
        return Ok(None);
    }
    // Reads and writes of a regular file never block anyway; cleared so
    // that the file behaves as any other.
    fcntl_setfl(&fd, fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    Ok(Some(File::from(fd)))
}

/// Whether `meta` (of `symlink_metadata`) is of a regular file with no
/// other name, which [`open_regular`] will open for writing.
pub(crate) fn is_sole_regular(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        meta.file_type().is_file() && meta.nlink() == 1
    }
    #[cfg(not(unix))]
    {
        meta.file_type().is_file()
    }
}

/// Whether `path` names the open `file` (and is not a link to it): the
/// part file was not swapped for something else while we wrote to it.
pub(crate) fn is_at(file: &File, path: &Utf8Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        match (file.metadata(), path.symlink_metadata()) {
            (Ok(ours), Ok(there)) => {
                there.file_type().is_file()
                    && ours.dev() == there.dev()
                    && ours.ino() == there.ino()
            }
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file())
    }
}

/// An advisory lock on one download's target, held by one process (and
/// one download within it) at a time: two runs of the same list in one
/// directory (an engine's speculative retry of a job-array task) must not
/// both write a file, or the loser leaves a second copy under another name.
///
/// The lock is on a file of its own, `NAME.pymatris-part.lock`, rather than
/// on the part file, which a download removes and re-creates. Its holder
/// removes it before unlocking; whoever was waiting on the removed file
/// finds, once it has the lock, that the name no longer leads to it, and
/// starts over with the file now there. A process that dies loses its
/// lock with it (the kernel releases it) and leaves the empty file to the
/// next run.
#[derive(Debug)]
pub(crate) struct TargetLock {
    file: File,
    path: camino::Utf8PathBuf,
}

impl TargetLock {
    /// The lock at `path`, if no one else holds it (`Ok(None)`: someone
    /// does). Never blocks.
    pub(crate) fn try_acquire(path: &Utf8Path) -> io::Result<Option<TargetLock>> {
        for _ in 0..CLEAR_TRIES {
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match open_regular(path, true)? {
                        Some(file) => file,
                        // Not a regular file of ours (a link planted
                        // there): replaced, never followed.
                        None => {
                            match std::fs::remove_file(path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                Err(e) => return Err(e),
                            }
                            continue;
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            if is_at(&file, path) {
                return Ok(Some(TargetLock {
                    file,
                    path: path.to_owned(),
                }));
            }
            // Its holder removed it on the way out: try the one there now.
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{path} is re-created as fast as it is removed"),
        ))
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Removed while still locked, so no one locks a file that is gone
        // (see the type's documentation); closing `file` then unlocks.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_nofollow(path: &Utf8Path, write: bool) -> io::Result<Option<File>> {
    // The best std offers: the look in `open_regular`, then a check that
    // the opened file is a regular file.
    let file = OpenOptions::new().read(true).write(write).open(path)?;
    Ok(file.metadata()?.is_file().then_some(file))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    struct Dir {
        _tmp: tempfile::TempDir,
        path: camino::Utf8PathBuf,
    }

    fn dir() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(tmp.path().to_owned()).unwrap();
        Dir { _tmp: tmp, path }
    }

    #[test]
    fn a_link_in_place_is_replaced_never_written_through() {
        let d = dir();
        let victim = d.path.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let ours = d.path.join("x.pymatris-part");
        std::os::unix::fs::symlink(&victim, &ours).unwrap();
        let mut file = create_replacing(&ours).unwrap();
        file.write_all(b"download").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(ours.symlink_metadata().unwrap().is_file());
        assert_eq!(std::fs::read(&ours).unwrap(), b"download");

        // A dangling link too (O_CREAT alone would create its target).
        let elsewhere = d.path.join("elsewhere");
        let state = d.path.join("x.state");
        let tmp = d.path.join("x.state.tmp");
        std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
        std::os::unix::fs::symlink(&victim, &state).unwrap();
        write_replacing(&state, &tmp, b"{}").unwrap();
        assert!(!elsewhere.exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(state.symlink_metadata().unwrap().is_file());
        assert!(tmp.symlink_metadata().is_err());
    }

    #[test]
    fn one_holder_of_a_target_lock_at_a_time() {
        let d = dir();
        let path = d.path.join("x.bin.pymatris-part.lock");
        let first = TargetLock::try_acquire(&path).unwrap().unwrap();
        // Another open file description: as another process would hold.
        assert!(TargetLock::try_acquire(&path).unwrap().is_none());
        // A waiter holding the file its holder removes on the way out.
        let waiting = File::open(&path).unwrap();
        drop(first);
        assert!(path.symlink_metadata().is_err(), "removed on release");
        assert!(!is_at(&waiting, &path));
        let second = TargetLock::try_acquire(&path).unwrap().unwrap();
        assert!(TargetLock::try_acquire(&path).unwrap().is_none());
        drop(second);
        // A link planted in its place is replaced, not followed.
        let victim = d.path.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let third = TargetLock::try_acquire(&path).unwrap().unwrap();
        assert!(path.symlink_metadata().unwrap().is_file());
        drop(third);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn only_regular_files_are_reopened() {
        let d = dir();
        let victim = d.path.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = d.path.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(open_regular(&link, true).unwrap().is_none());
        let fifo = d.path.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // Would wait for a writer forever if opened read-only.
        assert!(open_regular(&fifo, false).unwrap().is_none());
        assert!(open_regular(&fifo, true).unwrap().is_none());
        assert!(open_regular(&d.path, true).unwrap().is_none());
        assert!(
            open_regular(&d.path.join("missing"), true)
                .unwrap()
                .is_none()
        );
        assert!(open_regular(&victim, true).unwrap().is_some());
        // A hard link: read, but never written into.
        let hard = d.path.join("hard");
        std::fs::hard_link(&victim, &hard).unwrap();
        assert!(open_regular(&hard, true).unwrap().is_none());
        assert!(open_regular(&hard, false).unwrap().is_some());
        // Something that cannot be removed is refused, not written into.
        let sub = d.path.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(create_replacing(&sub).is_err());
    }
}
