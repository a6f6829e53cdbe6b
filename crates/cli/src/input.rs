//! The input file (`-i FILE`): a URL a line, with an optional checksum;
//! each line is a download or a line that fails on its own.

use std::io::BufRead;

use anyhow::bail;
use pymatris_core::{ErrorKind, Url, redact_url_str};

/// A URL to download, from the command line or a line of the input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its line in the input file (from 1).
    pub(crate) line: Option<usize>,
    pub(crate) url: String,
    pub(crate) sha256: Option<String>,
}

/// A line of the input file that is not a download: it fails on its own,
/// and the other lines are still downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// From 1.
    pub(crate) line: usize,
    /// The line's first column, passwords hidden.
    pub(crate) shown: String,
    pub(crate) kind: ErrorKind,
    /// Why it is refused.
    pub(crate) reason: String,
}

/// The lines of an input file: `URL [sha256=HEX]`, blank lines and `#`
/// comments skipped. Each other line is an entry or a [`BadLine`]; only a
/// failure to read the file is an error.
///
/// `schemes` are the URL schemes this build downloads: a line with another
/// one is bad.
pub(crate) fn parse_input(
    mut reader: impl BufRead,
    schemes: &[&str],
) -> std::io::Result<Vec<Result<Entry, BadLine>>> {
    let mut out = Vec::new();
    let mut raw = Vec::new();
    let mut number = 0;
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        number += 1;
        if let Some(line) = parse_line(&raw, number, schemes) {
            out.push(line);
        }
    }
    Ok(out)
}

/// One line of an input file (see [`parse_input`]); `None` for a blank
/// line or a comment.
pub(crate) fn parse_line(
    raw: &[u8],
    number: usize,
    schemes: &[&str],
) -> Option<Result<Entry, BadLine>> {
    let text = String::from_utf8_lossy(raw);
    // A byte-order mark, as some editors write, is not part of the URL.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let line = text.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut cols = line.split_whitespace();
    let url = cols.next().unwrap_or_default();
    let bad = |kind, reason: String| {
        Some(Err(BadLine {
            line: number,
            shown: redact_url_str(url),
            kind,
            reason,
        }))
    };
    if std::str::from_utf8(raw).is_err() {
        return bad(ErrorKind::InvalidUrl, "not UTF-8 text".to_owned());
    }
    let sha256 = match cols.next().map(parse_checksum) {
        None => None,
        Some(Ok(sha)) => Some(sha),
        Some(Err(e)) => {
            return bad(
                ErrorKind::InvalidUrl,
                format!("{e:#}; a space inside a URL is written %20"),
            );
        }
    };
    if let Some(extra) = cols.next() {
        return bad(
            ErrorKind::InvalidUrl,
            format!(
                "unexpected {:?} after the URL and checksum; a space inside a URL is written %20",
                redact_url_str(extra)
            ),
        );
    }
    match Url::parse(url) {
        Err(e) => return bad(ErrorKind::InvalidUrl, format!("invalid URL: {e}")),
        Ok(parsed) if !schemes.contains(&parsed.scheme()) => {
            return bad(
                ErrorKind::UnsupportedScheme,
                format!(
                    "{}:// is not supported by this build (it supports: {})",
                    parsed.scheme(),
                    schemes.join(", ")
                ),
            );
        }
        Ok(_) => {}
    }
    Some(Ok(Entry {
        line: Some(number),
        url: url.to_owned(),
        sha256,
    }))
}

/// `sha256=HEX` or a bare 64-digit hex string.
pub(crate) fn parse_checksum(text: &str) -> anyhow::Result<String> {
    let hex = match text.split_once('=') {
        Some((algo, hex)) if algo.eq_ignore_ascii_case("sha256") => hex,
        Some((algo, _)) => bail!("unsupported checksum algorithm {algo:?} (only sha256)"),
        None => text,
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{text:?} is not a sha256 checksum (64 hex digits)");
    }
    Ok(hex.to_ascii_lowercase())
}
