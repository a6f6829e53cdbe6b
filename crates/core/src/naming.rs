//! Chooses the local name of a download: from the request, the server's
//! suggestion or the URL, always reduced to one safe path component, and
//! never the name of a file that exists (without `--overwrite`) or that
//! another download of the batch took.

use std::collections::HashSet;
use std::sync::Mutex;

use camino::{Utf8Path, Utf8PathBuf};
use percent_encoding::percent_decode_str;
use url::Url;

/// The suffix of the temporary file a download is written to.
pub(crate) const PART_SUFFIX: &str = ".pymatris-part";

/// Longest file name, in bytes, that common file systems accept.
const MAX_NAME_BYTES: usize = 255 - PART_SUFFIX.len() - 8;

/// Reduces a name a server or user gave to one harmless path component, or
/// `None` when nothing usable is left.
///
/// Only the last component of a path survives (so `../../x` gives `x` and
/// `/etc/passwd` gives `passwd`); NUL, control characters and characters
/// that Windows forbids are replaced by `_`; `.` and `..` and names of only
/// dots are refused.
pub fn sanitize_filename(raw: &str) -> Option<String> {
    let last = raw
        .rsplit(['/', '\\'])
        .find(|c| !c.trim().is_empty())
        .unwrap_or("");
    let mut name: String = last
        .chars()
        .map(|c| match c {
            c if c.is_control() => '_',
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    name = name.trim().trim_end_matches('.').to_owned();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        return None;
    }
    if name.len() > MAX_NAME_BYTES {
        name = shorten(&name, MAX_NAME_BYTES);
    }
    Some(name)
}

/// Cuts a name to at most `max` bytes on a character boundary, keeping a
/// short extension.
fn shorten(name: &str, max: usize) -> String {
    let (stem, ext) = split_ext(name);
    let ext = if ext.len() <= 16 { ext } else { "" };
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

/// The names taken by the downloads of one batch.
#[derive(Debug, Default)]
pub(crate) struct NameTable {
    taken: Mutex<HashSet<Utf8PathBuf>>,
}

impl NameTable {
    /// Takes `dir/name`, or the first free `dir/NAME.n.EXT`. A name is
    /// free when no other download of the batch took it and, unless
    /// `overwrite`, no file of that name exists.
    pub(crate) fn reserve(&self, dir: &Utf8Path, name: &str, overwrite: bool) -> Utf8PathBuf {
        let mut taken = self.taken.lock().expect("name table poisoned");
        for n in 0.. {
            let candidate = if n == 0 {
                dir.join(name)
            } else {
                dir.join(numbered(name, n))
            };
            let exists = || candidate.symlink_metadata().is_ok();
            if !taken.contains(&candidate) && (overwrite || !exists()) {
                taken.insert(candidate.clone());
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
        let mut target = target.to_owned();
        loop {
            match rename_noreplace(temp, &target) {
                Ok(()) => return Ok(target),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let dir = target.parent().unwrap_or(Utf8Path::new("."));
                    let name = target.file_name().unwrap_or("download");
                    target = self.reserve(dir, name, false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes exactly `path`, unless another download of the batch has it.
    pub(crate) fn claim(&self, path: &Utf8Path) -> bool {
        self.taken
            .lock()
            .expect("name table poisoned")
            .insert(path.to_owned())
    }
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

/// The temporary file beside `target`.
pub(crate) fn part_path(target: &Utf8Path) -> Utf8PathBuf {
    let mut s = target.as_str().to_owned();
    s.push_str(PART_SUFFIX);
    Utf8PathBuf::from(s)
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
}
