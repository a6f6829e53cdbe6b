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

    /// Takes exactly `path`, unless another download of the batch has it.
    pub(crate) fn claim(&self, path: &Utf8Path) -> bool {
        self.taken
            .lock()
            .expect("name table poisoned")
            .insert(path.to_owned())
    }
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
