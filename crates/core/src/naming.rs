//! Chooses the local name of a download: from the request, the server's
//! suggestion or the URL, always reduced to one safe path component, and
//! never the name of a file that exists (without `--overwrite`) or that
//! another download of the batch took.

use std::collections::HashSet;
use std::fs::File;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use camino::{Utf8Path, Utf8PathBuf};
use percent_encoding::percent_decode_str;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use url::Url;

/// The suffix of the temporary file a download is written to.
pub(crate) const PART_SUFFIX: &str = ".pymatris-part";

/// What pymatris appends to a final name for its own files: the part file,
/// its resume state (see `resume`) and the state's temporary. A download's
/// final name and all of these are reserved together in a [`NameTable`].
const WORKING_SUFFIXES: [&str; 3] = [
    PART_SUFFIX,
    ".pymatris-part.state",
    ".pymatris-part.state.tmp",
];

/// Longest file name, in bytes, that common file systems accept, less room
/// for the longest working suffix and a number (`NAME.12.EXT`).
const MAX_NAME_BYTES: usize = 255 - WORKING_SUFFIXES[2].len() - 8;

/// Reduces a name a server gave (`Content-Disposition`, the URL's path) to
/// one harmless path component, or `None` when nothing usable is left.
///
/// Only the last component of a path survives (so `../../x` gives `x` and
/// `/etc/passwd` gives `passwd`); NUL, control characters and characters
/// that Windows forbids are replaced by `_`; invisible format characters
/// (Unicode category Cf, such as the bidi override that shows
/// `invoice\u{202E}fdp.exe` as `invoiceexe.pdf`) are removed; leading dots
/// are removed, so that no server makes a hidden file (`.bash_login`);
/// a name that contains pymatris's own working suffix (`x.pymatris-part`)
/// is cut before it, so that it can never be taken for a working file;
/// `.` and `..` and names of only dots are refused.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let name: String = last_component(raw)
        .chars()
        .filter(|&c| c.general_category() != GeneralCategory::Format)
        .map(|c| match c {
            c if c.is_control() => '_',
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    let name = match find_ignore_ascii_case(&name, PART_SUFFIX) {
        Some(i) => &name[..i],
        None => &name,
    };
    // Shortened before the ends are trimmed, so that a cut cannot leave a
    // trailing dot or space.
    let name = if name.len() > MAX_NAME_BYTES {
        shorten(name, MAX_NAME_BYTES)
    } else {
        name.to_owned()
    };
    let name = name
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    finish(name)
}

/// Reduces a name the user gave (`Request::filename`) to one path
/// component, or `None` when nothing usable is left. The user's name is
/// taken as given (a leading dot makes the hidden file asked for), except
/// that only its last component is kept, NUL and control characters become
/// `_`, `.` and `..` are refused and a name too long for a file system is
/// shortened.
pub fn sanitize_user_filename(raw: &str) -> Option<String> {
    let name: String = last_component(raw)
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    finish(&name)
}

/// The last non-blank component of `raw`, split at `/` and `\`.
fn last_component(raw: &str) -> &str {
    raw.rsplit(['/', '\\'])
        .find(|c| !c.trim().is_empty())
        .unwrap_or("")
}

/// Refuses names of only dots, and shortens long names.
fn finish(name: &str) -> Option<String> {
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return None;
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(shorten(name, MAX_NAME_BYTES));
    }
    Some(name.to_owned())
}

/// Where `needle` (ASCII) first occurs in `haystack`, ignoring ASCII case:
/// a file system that ignores case would take `X.PYMATRIS-PART` for ours.
fn find_ignore_ascii_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Cuts a name to at most `max` bytes on a character boundary, keeping a
/// short extension.
fn shorten(name: &str, max: usize) -> String {
    let (stem, ext) = match split_ext(name) {
        (stem, ext) if ext.len() <= 16 => (stem, ext),
        _ => (name, ""),
    };
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &stem[..cut], ext)
}

/// `("a.tar", ".gz")` for `a.tar.gz`; a leading dot is not an extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// The name the last non-empty segment of the URL's path suggests,
/// percent-decoded and sanitised.
pub fn filename_from_url(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    sanitize_filename(&decoded)
}

/// The name to use when neither the request, the server nor the URL path
/// gives one.
pub(crate) fn fallback_name(url: &Url) -> String {
    match url.scheme() {
        "http" | "https" => "index.html".to_owned(),
        _ => url
            .host_str()
            .and_then(sanitize_filename)
            .unwrap_or_else(|| "download".to_owned()),
    }
}

/// `NAME.n.EXT` for `NAME.EXT`.
fn numbered(name: &str, n: u32) -> String {
    let (stem, ext) = split_ext(name);
    format!("{stem}.{n}{ext}")
}

/// How many finished downloads' names a [`NameTable`] remembers.
const RECENT_NAMES: usize = 1 << 17;

/// The names taken by the downloads of one batch: those in flight, with
/// their working names, until [`NameTable::release`]; then only a hash of
/// the final name, for the last [`RECENT_NAMES`] finished. So its memory
/// does not grow with the batch: past that, the file system (a name that
/// exists is not taken, unless overwriting) is the record of what was
/// done.
#[derive(Debug, Default)]
pub(crate) struct NameTable {
    /// One lock for both, so that a name moving from in flight to recent
    /// is never seen in neither.
    taken: Mutex<Taken>,
    /// Set when an unnamed file could not be given a name: the rest of the
    /// batch uses named part files.
    no_unnamed: AtomicBool,
}

impl NameTable {
    /// Takes `dir/name`, or the first free `dir/NAME.n.EXT`, together with
    /// its working names (`NAME.pymatris-part`...). A name is free when no
    /// other download of the batch took it or uses it as a working name,
    /// none of its own working names is taken and, unless `overwrite`, no
    /// file of that name exists. So no two downloads of a batch ever share
    /// a file, whatever names a server gives.
    pub(crate) fn reserve(&self, dir: &Utf8Path, name: &str, overwrite: bool) -> Utf8PathBuf {
        for n in 0.. {
            let candidate = if n == 0 {
                dir.join(name)
            } else {
                dir.join(numbered(name, n))
            };
            // The file system is asked outside the lock, which the other
            // worker thread would otherwise wait on for the length of a
            // system call. A file that appears after the check is caught
            // when the download is published, which never replaces one.
            if !overwrite && candidate.symlink_metadata().is_ok() {
                continue;
            }
            let names = with_working_names(&candidate);
            let mut taken = self.taken.lock().expect("name table poisoned");
            if !taken.recent.contains(hash_path(&candidate))
                && names.iter().all(|name| !taken.in_flight.contains(name))
            {
                taken.in_flight.extend(names);
                return candidate;
            }
        }
        unreachable!("names are unbounded")
    }

    /// Moves the finished `temp` to `target` and returns where it landed.
    /// With `overwrite`, an existing `target` is replaced. Without it, an
    /// existing file is never replaced, even one created after `target` was
    /// reserved: the download then takes the next free numbered name.
    pub(crate) fn publish(
        &self,
        temp: &Utf8Path,
        target: &Utf8Path,
        overwrite: bool,
    ) -> std::io::Result<Utf8PathBuf> {
        if overwrite {
            std::fs::rename(temp, target)?;
            return Ok(target.to_owned());
        }
        let (target, ()) = self.place_without_replacing(target, |to| rename_noreplace(temp, to))?;
        Ok(target)
    }

    /// A new file in `dir` that has no name yet (Linux's `O_TMPFILE`), to
    /// download into when nothing needs to find it again (no `--continue`).
    /// Nothing of it is left if the process dies, however it dies, and
    /// [`NameTable::publish_unnamed`] names it in one step: one directory
    /// operation per file instead of a create and a rename.
    ///
    /// `None` where the system or file system has no unnamed files, or an
    /// earlier one of the batch could not be named; the caller then uses a
    /// named part file, whose creation also reports any real error (a
    /// missing directory, no permission).
    pub(crate) fn unnamed_file(&self, dir: &Utf8Path) -> Option<File> {
        if self.no_unnamed.load(Ordering::Relaxed) {
            return None;
        }
        open_unnamed(dir)
    }

    /// Gives the unnamed `file` the name `target`, and returns where it
    /// landed. Without `overwrite`, a file that has appeared there
    /// meanwhile is never replaced: the download takes the next free
    /// numbered name. With `overwrite`, the file is named
    /// `NAME.pymatris-part` (its reserved working name, cleared of whatever
    /// is there: removing a link removes the link, not its target), then
    /// renamed over `target`, which replaces a file or link there, never
    /// what a link points to. Only between these two steps does the
    /// download have a name other than its final one.
    ///
    /// `Ok(None)` when the system will not name it (see [`link_unnamed`]):
    /// the caller copies it to a named part file instead, and the rest of
    /// the batch uses named part files.
    pub(crate) fn publish_unnamed(
        &self,
        file: &File,
        target: &Utf8Path,
        overwrite: bool,
    ) -> std::io::Result<Option<Utf8PathBuf>> {
        let linked = if overwrite {
            let part = part_path(target);
            let linked = crate::files::clearing(&part, || link_unnamed(file, &part))?;
            if linked && let Err(e) = std::fs::rename(&part, target) {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            (target.to_owned(), linked)
        } else {
            self.place_without_replacing(target, |to| link_unnamed(file, to))?
        };
        if !linked.1 {
            self.no_unnamed.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(linked.0))
    }

    /// Runs `place` (which fails with `AlreadyExists` rather than replace
    /// a file) at `target`, then at the next free numbered names while a
    /// file is in the way. Returns where it succeeded.
    fn place_without_replacing<T>(
        &self,
        target: &Utf8Path,
        mut place: impl FnMut(&Utf8Path) -> std::io::Result<T>,
    ) -> std::io::Result<(Utf8PathBuf, T)> {
        let mut target = target.to_owned();
        loop {
            match place(&target) {
                Ok(placed) => return Ok((target, placed)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let dir = target.parent().unwrap_or(Utf8Path::new("."));
                    let name = target.file_name().unwrap_or("download");
                    target = self.reserve(dir, name, false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes exactly `path`, unless another download of the batch has it
    /// or finished there lately.
    pub(crate) fn claim(&self, path: &Utf8Path) -> bool {
        let mut taken = self.taken.lock().expect("name table poisoned");
        !taken.recent.contains(hash_path(path)) && taken.in_flight.insert(path.to_owned())
    }

    /// Gives back the names a finished download took (`target` as
    /// reserved or claimed, with its working names) and notes where it
    /// landed (`landed`, when it did), which no later download of the
    /// batch then takes while it is among the recent ones.
    pub(crate) fn release(&self, target: &Utf8Path, landed: Option<&Utf8Path>) {
        let mut taken = self.taken.lock().expect("name table poisoned");
        for name in with_working_names(target)
            .iter()
            .chain(landed.map(with_working_names).iter().flatten())
        {
            taken.in_flight.remove(name);
        }
        if let Some(landed) = landed {
            taken.recent.insert(hash_path(landed));
        }
    }
}

/// The names of a [`NameTable`].
#[derive(Debug, Default)]
struct Taken {
    /// The names of downloads in flight, with their working names.
    in_flight: HashSet<Utf8PathBuf>,
    recent: Recent,
}

/// The hashes of the last [`RECENT_NAMES`] names, oldest first out.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl Recent {
    fn insert(&mut self, hash: u64) {
        if self.set.insert(hash) {
            self.order.push_back(hash);
        }
        while self.order.len() > RECENT_NAMES {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.set.contains(&hash)
    }
}

/// A path's hash: equal paths have equal hashes within a process, and two
/// paths sharing one (a chance of one in 2^64) only cost a numbered name.
fn hash_path(path: &Utf8Path) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path)
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists` then). On
/// Linux the check and the rename are one step (`RENAME_NOREPLACE`), so a
/// file that appears at `to` meanwhile is never replaced; where the file
/// system or the system lacks it, a check before the rename is the best
/// there is.
fn rename_noreplace(from: &Utf8Path, to: &Utf8Path) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(
            CWD,
            from.as_std_path(),
            CWD,
            to.as_std_path(),
            RenameFlags::NOREPLACE,
        ) {
            // Not supported by this file system (EINVAL) or kernel (ENOSYS).
            Err(Errno::INVAL | Errno::NOSYS) => {}
            other => return other.map_err(Into::into),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Err(std::io::ErrorKind::AlreadyExists.into());
    }
    std::fs::rename(from, to)
}

/// See [`NameTable::unnamed_file`].
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_unnamed(dir: &Utf8Path) -> Option<File> {
    use rustix::fs::{CWD, Mode, OFlags, openat};
    let dir = if dir.as_str().is_empty() {
        Utf8Path::new(".")
    } else {
        dir
    };
    // The mode of any new file (the umask applies), as `File::create`.
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match openat(CWD, dir.as_std_path(), flags, Mode::from_raw_mode(0o666)) {
        Ok(fd) => Some(File::from(fd)),
        Err(e) => {
            tracing::debug!("no unnamed file in {dir}: {e}");
            None
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn open_unnamed(_dir: &Utf8Path) -> Option<File> {
    None
}

/// Links the unnamed `file` as `to`. `AlreadyExists` if `to` exists;
/// `Ok(false)` if the system refuses to name it at all.
///
/// `AT_EMPTY_PATH` names the file itself, but before Linux 6.10 only with
/// `CAP_DAC_READ_SEARCH`; `/proc/self/fd` works for anyone where `/proc`
/// is mounted.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn link_unnamed(file: &File, to: &Utf8Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;

    use rustix::fs::{AtFlags, CWD, linkat};
    use rustix::io::Errno;
    match linkat(file, "", CWD, to.as_std_path(), AtFlags::EMPTY_PATH) {
        Ok(()) => return Ok(true),
        Err(Errno::EXIST) => return Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(e) => tracing::debug!("cannot link an unnamed file as {to}: {e}"),
    }
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match linkat(
        CWD,
        by_proc.as_str(),
        CWD,
        to.as_std_path(),
        AtFlags::SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EXIST) => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(e) => {
            tracing::debug!("cannot link {by_proc} as {to}: {e}");
            Ok(false)
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn link_unnamed(_file: &File, _to: &Utf8Path) -> std::io::Result<bool> {
    Ok(false)
}

/// `target` and the names of the working files of its download.
fn with_working_names(target: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut names = vec![target.to_owned()];
    names.extend(
        WORKING_SUFFIXES
            .iter()
            .map(|suffix| Utf8PathBuf::from(format!("{target}{suffix}"))),
    );
    names
}

/// The temporary file beside `target`.
pub(crate) fn part_path(target: &Utf8Path) -> Utf8PathBuf {
    let mut s = target.as_str().to_owned();
    s.push_str(PART_SUFFIX);
    Utf8PathBuf::from(s)
}

/// The lock file beside `target` (see `files::TargetLock`).
pub(crate) fn lock_path(target: &Utf8Path) -> Utf8PathBuf {
    Utf8PathBuf::from(format!("{target}{PART_SUFFIX}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_component() {
        assert_eq!(sanitize_filename("../../x").as_deref(), Some("x"));
        assert_eq!(sanitize_filename("/etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            sanitize_filename("..\\..\\win.ini").as_deref(),
            Some("win.ini")
        );
        assert_eq!(sanitize_filename("a/b/"), Some("b".to_owned()));
        assert_eq!(sanitize_filename(".."), None);
        assert_eq!(sanitize_filename("."), None);
        assert_eq!(sanitize_filename("..."), None);
        assert_eq!(sanitize_filename(""), None);
        assert_eq!(sanitize_filename("a\0b\nc").as_deref(), Some("a_b_c"));
        assert_eq!(sanitize_filename("C:evil").as_deref(), Some("C_evil"));
        assert_eq!(
            sanitize_filename("résumé.pdf").as_deref(),
            Some("résumé.pdf")
        );
        let long = "é".repeat(300) + ".parquet";
        let short = sanitize_filename(&long).unwrap();
        assert!(short.len() <= MAX_NAME_BYTES && short.ends_with(".parquet"));
    }

    #[test]
    fn a_server_makes_no_hidden_or_disguised_name() {
        assert_eq!(
            sanitize_filename(".bash_login").as_deref(),
            Some("bash_login")
        );
        assert_eq!(sanitize_filename("../.ssh").as_deref(), Some("ssh"));
        assert_eq!(
            sanitize_filename(". .. .profile").as_deref(),
            Some("profile")
        );
        assert_eq!(
            sanitize_filename("invoice\u{202E}fdp.exe").as_deref(),
            Some("invoicefdp.exe")
        );
        assert_eq!(
            sanitize_filename("\u{200B}\u{FEFF}.bashrc\u{2066}").as_deref(),
            Some("bashrc")
        );
        assert_eq!(sanitize_filename("\u{202E}"), None);
        assert_eq!(sanitize_filename("a.tar.gz").as_deref(), Some("a.tar.gz"));
    }

    #[test]
    fn a_server_name_is_never_a_working_name() {
        for raw in [
            "bigx.pymatris-part",
            "bigx.pymatris-part.state",
            "bigx.pymatris-part.state.tmp",
            "bigx.PYMATRIS-PART.1",
        ] {
            assert_eq!(sanitize_filename(raw).as_deref(), Some("bigx"), "{raw}");
        }
        assert_eq!(sanitize_filename(".pymatris-part"), None);
    }

    #[test]
    fn a_user_name_is_taken_as_given_in_one_component() {
        assert_eq!(
            sanitize_user_filename(".hidden").as_deref(),
            Some(".hidden")
        );
        assert_eq!(
            sanitize_user_filename("a:b?.txt").as_deref(),
            Some("a:b?.txt")
        );
        assert_eq!(sanitize_user_filename("../../x").as_deref(), Some("x"));
        assert_eq!(sanitize_user_filename("a\0b").as_deref(), Some("a_b"));
        assert_eq!(sanitize_user_filename(".."), None);
        assert_eq!(sanitize_user_filename("/"), None);
    }

    /// Two downloads of a batch never share a file: not a final name, not a
    /// working file, whichever asks first.
    #[test]
    fn working_names_are_reserved_with_the_final_name() {
        let dir = Utf8Path::new("d");
        for overwrite in [false, true] {
            let table = NameTable::default();
            assert_eq!(table.reserve(dir, "bigx", overwrite), dir.join("bigx"));
            let other = table.reserve(dir, "bigx.pymatris-part", overwrite);
            assert_eq!(other, dir.join("bigx.1.pymatris-part"));
            let table = NameTable::default();
            let first = table.reserve(dir, "bigx.pymatris-part", overwrite);
            assert_eq!(first, dir.join("bigx.pymatris-part"));
            assert_eq!(table.reserve(dir, "bigx", overwrite), dir.join("bigx.1"));
            let state = crate::resume::state_path(&part_path(&dir.join("x")));
            assert_eq!(table.reserve(dir, "x", overwrite), dir.join("x"));
            assert_ne!(
                table.reserve(dir, state.file_name().unwrap(), overwrite),
                state
            );
        }
    }

    #[test]
    fn names_from_urls_are_decoded() {
        let url = Url::parse("https://h/data/a%20b%2Fc.txt?x=1").unwrap();
        assert_eq!(filename_from_url(&url).as_deref(), Some("c.txt"));
        let url = Url::parse("https://h/data/report%20final.csv").unwrap();
        assert_eq!(filename_from_url(&url).as_deref(), Some("report final.csv"));
        let url = Url::parse("https://h/").unwrap();
        assert_eq!(filename_from_url(&url), None);
        assert_eq!(fallback_name(&url), "index.html");
        let url = Url::parse("ftp://files.example.org/").unwrap();
        assert_eq!(fallback_name(&url), "files.example.org");
        let url = Url::parse("https://h/dir/").unwrap();
        assert_eq!(filename_from_url(&url).as_deref(), Some("dir"));
    }

    /// Another program creates the name while the download finishes: its
    /// file must survive, and the download land beside it.
    #[test]
    fn publishing_never_replaces_a_file_created_meanwhile() {
        use std::io::Write as _;
        use std::sync::{Arc, Barrier};
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let table = NameTable::default();
        let mut replaced = 0;
        for i in 0..500 {
            let target = dir.join(format!("f{i}"));
            let temp = part_path(&target);
            std::fs::write(&temp, b"ours").unwrap();
            let theirs = target.clone();
            let start = Arc::new(Barrier::new(2));
            let go = start.clone();
            let other = std::thread::spawn(move || {
                // Somewhere within the time a publish takes.
                let delay = Duration::from_nanos(fastrand::u64(0..30_000));
                go.wait();
                let t = Instant::now();
                while t.elapsed() < delay {
                    std::hint::spin_loop();
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&theirs)
                    .and_then(|mut f| f.write_all(b"theirs"))
                    .is_ok()
            });
            start.wait();
            let landed = table.publish(&temp, &target, false).unwrap();
            let created = other.join().unwrap();
            assert_eq!(std::fs::read(&landed).unwrap(), b"ours");
            if created && std::fs::read(&target).unwrap() != b"theirs" {
                replaced += 1;
            }
        }
        assert_eq!(replaced, 0, "files created meanwhile were replaced");
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn an_unnamed_file_is_named_whole_and_never_over_another() {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let table = NameTable::default();
        let target = table.reserve(dir, "a.bin", false);

        let mut file = table.unnamed_file(dir).expect("unnamed files on this disk");
        file.write_all(b"ours").unwrap();
        // Until it is published, nothing is in the directory.
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
        std::fs::write(&target, b"theirs").unwrap();
        let landed = table
            .publish_unnamed(&file, &target, false)
            .unwrap()
            .unwrap();
        assert_eq!(landed, dir.join("a.1.bin"));
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&landed).unwrap(), b"ours");
        // The mode any new file gets (the umask applied).
        let created = dir.join("created");
        std::fs::File::create(&created).unwrap();
        let mode = |p: &Utf8Path| p.metadata().unwrap().permissions().mode();
        assert_eq!(mode(&landed), mode(&created));
    }

    /// A finished download's names are given back: the table keeps no
    /// more than the recent finished names' hashes, however many finish,
    /// and these still keep an overwriting batch off its own files.
    #[test]
    fn names_are_held_only_in_flight() {
        let dir = Utf8Path::new("d");
        let table = NameTable::default();
        let first = table.reserve(dir, "a", true);
        table.release(&first, Some(&first));
        assert!(table.taken.lock().unwrap().in_flight.is_empty());
        assert_eq!(table.reserve(dir, "a", true), dir.join("a.1"));
        assert!(!table.claim(&first));
        let failed = table.reserve(dir, "b", true);
        table.release(&failed, None);
        assert_eq!(table.reserve(dir, "b", true), dir.join("b"));
        for i in 0..RECENT_NAMES + 10 {
            let name = table.reserve(dir, &format!("n{i}"), true);
            table.release(&name, Some(&name));
        }
        // `a.1` and `b`, each with its three working names.
        assert_eq!(table.taken.lock().unwrap().in_flight.len(), 8);
        assert_eq!(table.taken.lock().unwrap().recent.set.len(), RECENT_NAMES);
        // The oldest are forgotten: the file system is the record then.
        assert_eq!(table.reserve(dir, "a", true), dir.join("a"));
    }

    #[test]
    fn clashes_get_numbered_names() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        std::fs::write(dir.join("a.tar.gz"), b"old").unwrap();
        let table = NameTable::default();
        assert_eq!(
            table.reserve(dir, "a.tar.gz", false),
            dir.join("a.tar.1.gz")
        );
        assert_eq!(
            table.reserve(dir, "a.tar.gz", false),
            dir.join("a.tar.2.gz")
        );
        let table = NameTable::default();
        assert_eq!(table.reserve(dir, "a.tar.gz", true), dir.join("a.tar.gz"));
        assert_eq!(table.reserve(dir, "a.tar.gz", true), dir.join("a.tar.1.gz"));
        assert_eq!(table.reserve(dir, ".hidden", false), dir.join(".hidden"));
        assert_eq!(table.reserve(dir, ".hidden", false), dir.join(".hidden.1"));
    }

    /// Names built to be hostile: separators, dots, our suffix, Cf and
    /// control characters, long runs, and any character at all.
    fn hostile() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just("\\".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(" ".to_owned()),
            Just("\0".to_owned()),
            Just("\u{202E}".to_owned()),
            Just("\u{FEFF}".to_owned()),
            Just(".pymatris-part".to_owned()),
            Just(".State".to_owned()),
            "[a-zé]{1,8}",
            "é{40,90}",
            any::<char>().prop_map(String::from),
        ];
        prop_oneof![
            proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat()),
            any::<String>(),
        ]
    }

    /// What holds of every name, from a server or the user: one normal
    /// component of `dir`, whose working files are too, within the byte
    /// limit of file systems.
    fn one_component(name: &str) {
        use std::path::{Component, Path};
        assert!(!name.is_empty() && name != "." && name != "..", "{name:?}");
        assert!(!name.contains(['/', '\\', '\0']), "{name:?}");
        let dir = Path::new("/base/dir");
        let table = NameTable::default();
        let utf8_dir = Utf8Path::new("/base/dir");
        // The first name, and a numbered one, as a batch would use them.
        for _ in 0..2 {
            let target = table.reserve(utf8_dir, name, true);
            for path in with_working_names(&target) {
                let joined = dir.join(path.file_name().unwrap());
                assert_eq!(joined.parent(), Some(dir), "{name:?}");
                assert!(
                    matches!(joined.components().next_back(), Some(Component::Normal(_))),
                    "{name:?}"
                );
                assert!(path.file_name().unwrap().len() <= 255, "{name:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn server_names_are_one_plain_visible_component(raw in hostile()) {
            if let Some(name) = sanitize_filename(&raw) {
                one_component(&name);
                proptest::prop_assert!(!name.starts_with('.'), "{:?}", name);
                proptest::prop_assert!(
                    name.chars().all(|c| !c.is_control()
                        && c.general_category() != GeneralCategory::Format),
                    "{:?}", name
                );
                proptest::prop_assert!(
                    find_ignore_ascii_case(&name, PART_SUFFIX).is_none(),
                    "{:?}", name
                );
                // Sanitising is stable: a name is kept as it is.
                proptest::prop_assert_eq!(sanitize_filename(&name), Some(name.clone()));
            }
        }

        #[test]
        fn user_names_are_one_component(raw in hostile()) {
            if let Some(name) = sanitize_user_filename(&raw) {
                one_component(&name);
                proptest::prop_assert!(name.chars().all(|c| !c.is_control()), "{:?}", name);
            }
        }

        #[test]
        fn url_names_are_one_plain_component(segment in hostile()) {
            let encoded: String =
                percent_encoding::utf8_percent_encode(&segment, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            if let Ok(url) = Url::parse(&format!("https://h/d/{encoded}"))
                && let Some(name) = filename_from_url(&url)
            {
                one_component(&name);
                proptest::prop_assert!(!name.starts_with('.'), "{:?}", name);
                proptest::prop_assert!(
                    find_ignore_ascii_case(&name, PART_SUFFIX).is_none(),
                    "{:?}", name
                );
            }
        }
    }
}
