//! The input file (`-i FILE`), read lazily so that a list of any length
//! costs the memory of a line: a URL a line (several TAB-separated URLs
//! are mirrors of one file), an optional sha256 column, and aria2's
//! indented option lines under it (`out=`, `dir=`, `checksum=ALGO=HEX`
//! with md5, sha1, sha256 or sha512). Each
//! entry is a download or a line that fails on its own.

use std::io::BufRead;

use pymatris_core::{Checksum, ErrorKind, Url, redact_url_str};

/// A URL to download, from the command line or a line of the input file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its line in the input file (from 1).
    pub(crate) line: Option<usize>,
    pub(crate) url: String,
    /// Further URLs of the same file (TAB-separated on its line).
    pub(crate) mirrors: Vec<String>,
    pub(crate) sha256: Option<String>,
    /// `checksum=ALGO=HEX` (or `--checksum`), which wins over `sha256`.
    pub(crate) checksum: Option<Checksum>,
    /// `out=`: the name to save under, a relative path (checked).
    pub(crate) out: Option<String>,
    /// `dir=`: a directory under `--dir` (checked).
    pub(crate) dir: Option<String>,
}

impl Entry {
    /// A plain URL with an optional checksum.
    pub(crate) fn new(line: Option<usize>, url: &str, sha256: Option<&str>) -> Entry {
        Entry {
            line,
            url: url.to_owned(),
            sha256: sha256.map(str::to_owned),
            ..Entry::default()
        }
    }
}

/// A line of the input file that is not a download: it fails on its own,
/// and the other lines are still downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// From 1.
    pub(crate) line: usize,
    /// The line's URL (or first column), passwords hidden.
    pub(crate) shown: String,
    pub(crate) kind: ErrorKind,
    /// Why it is refused.
    pub(crate) reason: String,
}

/// What one entry of the list gives.
pub(crate) type Item = Result<Entry, BadLine>;

/// The entries of an input file, read one line at a time: `URL [TAB
/// MIRROR...] [sha256=HEX]` lines, each followed by any indented option
/// lines, blank lines and `#` comments skipped. Only a failure to read
/// the file is an error.
pub(crate) struct Lines<R> {
    reader: R,
    schemes: Vec<&'static str>,
    /// Lines read so far.
    number: usize,
    /// The entry whose option lines may still follow.
    pending: Option<Item>,
    raw: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    /// `schemes` are the URL schemes this build downloads: a line with
    /// another one is bad.
    pub(crate) fn new(reader: R, schemes: Vec<&'static str>) -> Self {
        Lines {
            reader,
            schemes,
            number: 0,
            pending: None,
            raw: Vec::new(),
        }
    }

    /// The line of the input file read last (from 1).
    pub(crate) fn position(&self) -> usize {
        self.number
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.raw.clear();
            match self.reader.read_until(b'\n', &mut self.raw) {
                Err(e) => return Some(Err(e)),
                Ok(0) => return self.pending.take().map(Ok),
                Ok(_) => {}
            }
            self.number += 1;
            match parse_line(&self.raw, self.number, &self.schemes) {
                Line::Skip => {}
                Line::Option(name, value) => match &mut self.pending {
                    Some(Ok(entry)) => {
                        if let Err(reason) = apply_option(entry, name, value) {
                            let bad = BadLine {
                                line: self.number,
                                shown: redact_url_str(&entry.url),
                                kind: ErrorKind::InvalidUrl,
                                reason,
                            };
                            self.pending = Some(Err(bad));
                        }
                    }
                    // The options of a bad line fail with it.
                    Some(Err(_)) => {}
                    None => {
                        let bad = BadLine {
                            line: self.number,
                            shown: String::new(),
                            kind: ErrorKind::InvalidUrl,
                            reason: format!("option {name}= with no URL line above it"),
                        };
                        return Some(Ok(Err(bad)));
                    }
                },
                Line::Entry(item) => {
                    if let Some(done) = self.pending.replace(item) {
                        return Some(Ok(done));
                    }
                }
            }
        }
    }
}

/// Reads a whole input file (see [`Lines`]).
#[cfg(test)]
pub(crate) fn parse_input(
    reader: impl BufRead,
    schemes: &[&'static str],
) -> std::io::Result<Vec<Item>> {
    Lines::new(reader, schemes.to_vec()).collect()
}

/// What a line of the input file is.
enum Line<'a> {
    Skip,
    Entry(Item),
    /// An indented `name=value` line: an option of the entry above.
    Option(&'a str, &'a str),
}

/// One line of an input file (see [`Lines`]).
fn parse_line<'a>(raw: &'a [u8], number: usize, schemes: &[&str]) -> Line<'a> {
    let Ok(text) = std::str::from_utf8(raw) else {
        let lossy = String::from_utf8_lossy(raw);
        let first = lossy.split_whitespace().next().unwrap_or_default();
        return Line::Entry(Err(BadLine {
            line: number,
            shown: redact_url_str(first),
            kind: ErrorKind::InvalidUrl,
            reason: "not UTF-8 text".to_owned(),
        }));
    };
    // A byte-order mark, as some editors write, is not part of the URL.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line = text.trim();
    if line.is_empty() || line.starts_with('#') {
        return Line::Skip;
    }
    if text.starts_with([' ', '\t'])
        && let Some((name, value)) = line.split_once('=')
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Line::Option(name, value);
    }
    Line::Entry(parse_entry(line, number, schemes))
}

/// A URL line: the URL, then mirrors (columns with `://`) and at most one
/// checksum column.
fn parse_entry(line: &str, number: usize, schemes: &[&str]) -> Item {
    let mut cols = line.split_whitespace();
    let url = cols.next().unwrap_or_default();
    let bad = |kind, reason: String| {
        Err(BadLine {
            line: number,
            shown: redact_url_str(url),
            kind,
            reason,
        })
    };
    let mut entry = Entry {
        line: Some(number),
        url: url.to_owned(),
        ..Entry::default()
    };
    for col in cols {
        if col.contains("://") {
            entry.mirrors.push(col.to_owned());
            continue;
        }
        if entry.sha256.is_some() {
            return bad(
                ErrorKind::InvalidUrl,
                format!(
                    "unexpected {:?} after the URL and checksum; a space inside a URL is written %20",
                    redact_url_str(col)
                ),
            );
        }
        match parse_checksum(col) {
            Ok(sha) => entry.sha256 = Some(sha),
            Err(e) => {
                return bad(
                    ErrorKind::InvalidUrl,
                    format!("{e}; a space inside a URL is written %20"),
                );
            }
        }
    }
    for (i, url) in std::iter::once(&entry.url)
        .chain(&entry.mirrors)
        .enumerate()
    {
        // A mirror's fault is said to be the mirror's.
        let which = match i {
            0 => String::new(),
            _ => format!("mirror {}: ", redact_url_str(url)),
        };
        match Url::parse(url) {
            Err(e) => {
                let reason = format!("invalid URL {}: {e}", redact_url_str(url));
                return bad(ErrorKind::InvalidUrl, reason);
            }
            Ok(parsed) if !schemes.contains(&parsed.scheme()) => {
                return bad(
                    ErrorKind::UnsupportedScheme,
                    format!(
                        "{which}{}:// is not supported by this build (it supports: {})",
                        parsed.scheme(),
                        schemes.join(", ")
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    Ok(entry)
}

/// Applies an option line (`out=`, `dir=`, `checksum=`) to `entry`.
fn apply_option(entry: &mut Entry, name: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    match name {
        "out" => {
            check_relative(value).map_err(|e| format!("out={value}: {e}"))?;
            entry.out = Some(value.to_owned());
        }
        "dir" => {
            check_relative(value).map_err(|e| format!("dir={value}: {e}"))?;
            entry.dir = Some(value.to_owned());
        }
        "checksum" => {
            let sum = value
                .parse()
                .map_err(|e| format!("checksum={value}: {e}"))?;
            entry.checksum = Some(sum);
        }
        _ => {
            return Err(format!(
                "unsupported option {name}= (known: out, dir, checksum)"
            ));
        }
    }
    Ok(())
}

/// A path from the list or `-o`, to be joined to `--dir`: relative, with
/// no `..`, and naming something (not empty, not only `.`).
pub(crate) fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty".to_owned());
    }
    if path.starts_with(['/', '\\']) || path.as_bytes().get(1) == Some(&b':') {
        return Err("not a relative path (it stays inside --dir)".to_owned());
    }
    if path.contains('\0') || path.chars().any(char::is_control) {
        return Err("holds a control character".to_owned());
    }
    if path.split(['/', '\\']).any(|c| c == "..") {
        return Err("holds `..` (it stays inside --dir)".to_owned());
    }
    if path.split(['/', '\\']).all(|c| c.is_empty() || c == ".") {
        return Err("names no file or directory".to_owned());
    }
    Ok(())
}

/// The checksum column: `sha256=HEX` (also `sha-256=`) or a bare
/// 64-digit hex string.
pub(crate) fn parse_checksum(text: &str) -> Result<String, String> {
    let hex = match text.split_once('=') {
        Some((algo, hex))
            if algo.eq_ignore_ascii_case("sha256") || algo.eq_ignore_ascii_case("sha-256") =>
        {
            hex
        }
        Some((algo, _)) => {
            return Err(format!(
                "unsupported checksum algorithm {algo:?} (this build checks sha256 only)"
            ));
        }
        None => text,
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a sha256 checksum (64 hex digits)"));
    }
    Ok(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMES: [&str; 2] = ["http", "https"];

    /// aria2's format: options under their URL, in any order, indented by
    /// spaces or a TAB; an indented URL is still a URL line.
    #[test]
    fn option_lines_belong_to_the_url_above() {
        let hex = "cd".repeat(20);
        let text = format!(
            "http://a/x\n  out=x.bin\n\tdir=sub/dir\n  checksum=sha-1={hex}\n  http://a/y\n # c\n\thttp://a/z\n out=z\n"
        );
        let got = parse_input(text.as_bytes(), &SCHEMES).unwrap();
        let x = Entry {
            line: Some(1),
            url: "http://a/x".to_owned(),
            checksum: Some(format!("sha1={hex}").parse().unwrap()),
            out: Some("x.bin".to_owned()),
            dir: Some("sub/dir".to_owned()),
            ..Entry::default()
        };
        let z = Entry {
            out: Some("z".to_owned()),
            ..Entry::new(Some(7), "http://a/z", None)
        };
        assert_eq!(
            got,
            vec![Ok(x), Ok(Entry::new(Some(5), "http://a/y", None)), Ok(z)]
        );
    }

    /// Names and directories stay inside --dir; an option this build does
    /// not know, or a checksum it cannot check, fails its entry alone,
    /// reported at the option's line.
    #[test]
    fn bad_options_fail_their_entry_alone() {
        for (option, why) in [
            ("out=../x", ".."),
            ("out=/etc/x", "relative"),
            ("dir=a/../../b", ".."),
            ("dir=/tmp", "relative"),
            ("out=", "empty"),
            ("dir=./.", "names no"),
            ("checksum=md5=00", "checksum="),
            ("checksum=crc32=00000000", "checksum="),
            ("max-connection-per-server=4", "unsupported option"),
        ] {
            let text = format!("http://u:pw@a/x\n {option}\n out=fine\nhttp://a/ok\n");
            let got = parse_input(text.as_bytes(), &SCHEMES).unwrap();
            assert_eq!(got.len(), 2, "{option}");
            let bad = got[0].as_ref().unwrap_err();
            assert_eq!(bad.line, 2, "{option}");
            assert!(bad.reason.contains(why), "{option}: {}", bad.reason);
            assert!(!bad.shown.contains("pw"), "{bad:?}");
            assert_eq!(got[1], Ok(Entry::new(Some(4), "http://a/ok", None)));
        }
        let got = parse_input(&b" out=x\nhttp://a/ok\n"[..], &SCHEMES).unwrap();
        assert_eq!(got[0].as_ref().unwrap_err().line, 1);
        assert_eq!(got[1], Ok(Entry::new(Some(2), "http://a/ok", None)));
    }

    /// aria2's format: a file's URLs on one line, TAB-separated (spaces
    /// do as well), the checksum column and option lines still its own.
    #[test]
    fn urls_on_one_line_are_mirrors_of_one_file() {
        let sha = "ab".repeat(32);
        let text = format!(
            "http://a/x\thttps://b/x\thttp://c/x\n  out=x.bin\nhttp://a/y http://b/y sha256={sha}\nhttp://a/z\n"
        );
        let got = parse_input(text.as_bytes(), &SCHEMES).unwrap();
        let x = Entry {
            mirrors: vec!["https://b/x".to_owned(), "http://c/x".to_owned()],
            out: Some("x.bin".to_owned()),
            ..Entry::new(Some(1), "http://a/x", None)
        };
        let y = Entry {
            mirrors: vec!["http://b/y".to_owned()],
            ..Entry::new(Some(3), "http://a/y", Some(&sha))
        };
        assert_eq!(
            got,
            vec![Ok(x), Ok(y), Ok(Entry::new(Some(4), "http://a/z", None))]
        );
    }

    /// A mirror that does not parse, or that this build cannot fetch,
    /// fails its line (naming it, password hidden), not the others.
    #[test]
    fn a_bad_mirror_fails_its_line_alone() {
        let text = "http://a/x\tgopher://u:pw@b/x\nhttp://a/y\thttp://[b/y\nhttp://a/z\n";
        let got = parse_input(text.as_bytes(), &SCHEMES).unwrap();
        let bad = got[0].as_ref().unwrap_err();
        assert_eq!(bad.kind, ErrorKind::UnsupportedScheme, "{bad:?}");
        assert!(bad.reason.contains("gopher"), "{bad:?}");
        assert!(
            !bad.reason.contains("pw") && !bad.shown.contains("pw"),
            "{bad:?}"
        );
        let bad = got[1].as_ref().unwrap_err();
        assert_eq!((bad.kind, bad.line), (ErrorKind::InvalidUrl, 2), "{bad:?}");
        assert!(bad.reason.contains("http://[b/y"), "{bad:?}");
        assert_eq!(got[2], Ok(Entry::new(Some(3), "http://a/z", None)));
    }

    /// The reader is asked for a line only when the entry before it is
    /// wanted, so a list of any length costs the memory of an entry.
    #[test]
    fn lines_are_read_as_entries_are_wanted() {
        let text = "http://a/1\nhttp://a/2\n out=two\nhttp://a/3\n".repeat(1000);
        let mut lines = Lines::new(text.as_bytes(), SCHEMES.to_vec());
        assert_eq!(lines.next().unwrap().unwrap().unwrap().url, "http://a/1");
        // The entry and the line after it, which ended it.
        assert_eq!(lines.position(), 2);
        assert_eq!(
            lines.next().unwrap().unwrap().unwrap().out.as_deref(),
            Some("two")
        );
        assert_eq!(lines.position(), 4);
        assert_eq!(lines.count(), 2998);
    }
}
