//! Directory listings over HTTP: the index pages that nginx, Apache and
//! lighttpd generate (`autoindex`, `mod_autoindex`, `dir-listing`), read
//! for their links. Only a link to an entry right below the page's own URL
//! counts (`name` or `name/`, same scheme, host and port, no query): the
//! parent, sort links (`?C=N;O=D`), icons elsewhere, absolute links to
//! other places are not entries.
//!
//! The links are found by a small scanner of `<a ... href=...>` tags
//! rather than an HTML parser crate (html5ever and its tree builder are
//! many crates and much code for one attribute): index pages are
//! machine-written, every link found is checked as above, and a page that
//! fools the scanner can at worst name another entry of the same
//! directory, never a path elsewhere. Sizes and times on these pages are
//! rounded and in each server's own format, so none is taken from them:
//! the engine asks `HEAD` for what it needs.

use std::collections::HashSet;

use futures_util::StreamExt;
use http::{HeaderMap, Method};
use pymatris_core::{DirEntry, EntryKind, Error, ErrorKind, Url, redact_url};

use crate::HttpProtocol;

/// The largest index page read: a directory of about a million entries.
const MAX_PAGE: usize = 256 << 20;

impl HttpProtocol {
    /// The entries of the index page at `url`.
    pub(crate) async fn list_dir(&self, url: &Url) -> Result<Vec<DirEntry>, Error> {
        let exchange = (self.send(&Method::GET, url, &HeaderMap::new(), &[], false)).await?;
        let status = exchange.response.status();
        if !status.is_success() {
            let err = crate::error::status_error(status, exchange.response.headers());
            self.discard(exchange).await;
            return Err(err);
        }
        let base = exchange.url.clone();
        let shown = redact_url(&base);
        let mut body = exchange.into_stream(shown.clone());
        let mut page = Vec::new();
        loop {
            let next = tokio::time::timeout(self.timeout, body.next()).await;
            match next {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("{shown}: the index page stalled"),
                    ));
                }
                Ok(None) => break,
                Ok(Some(chunk)) => page.extend_from_slice(&chunk?),
            }
            if page.len() > MAX_PAGE {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{shown}: an index page of more than {MAX_PAGE} bytes"),
                )
                .retryable(false));
            }
        }
        Ok(entries_of(&base, &String::from_utf8_lossy(&page)))
    }
}

/// The entries an index page at `base` links to.
pub(crate) fn entries_of(base: &Url, page: &str) -> Vec<DirEntry> {
    let mut dir = base.clone();
    dir.set_query(None);
    dir.set_fragment(None);
    if !dir.path().ends_with('/') {
        // A page at `/d` is the index of `/d/` only after a redirect
        // nobody made: its links resolve against `/`.
        let path = format!("{}/", dir.path());
        dir.set_path(&path);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for href in hrefs(page) {
        let Some((name, is_dir)) = child_of(&dir, base, &href) else {
            continue;
        };
        if seen.insert(name.clone()) {
            out.push(DirEntry {
                name,
                kind: if is_dir {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
                size: None,
                modified: None,
                link_target: None,
            });
        }
    }
    out
}

/// The name (percent-decoded) of the entry of `dir` that `href` on the page
/// at `base` links to, and whether it is a directory.
fn child_of(dir: &Url, base: &Url, href: &str) -> Option<(Vec<u8>, bool)> {
    let url = base.join(href.trim()).ok()?;
    if url.scheme() != dir.scheme()
        || url.host_str() != dir.host_str()
        || url.port_or_known_default() != dir.port_or_known_default()
        || url.query().is_some()
    {
        return None;
    }
    let rest = url.path().strip_prefix(dir.path())?;
    let (segment, is_dir) = match rest.strip_suffix('/') {
        Some(segment) => (segment, true),
        None => (rest, false),
    };
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let name: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    Some((name, is_dir))
}

/// The `href` values of the `<a>` tags of `page`, entities decoded.
fn hrefs(page: &str) -> Vec<String> {
    let bytes = page.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find_tag(bytes, i) {
        i = at + 2;
        // Attributes up to the end of the tag.
        loop {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] == b'>' {
                break;
            }
            let name_start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !b"=>".contains(&bytes[i]) {
                i += 1;
            }
            let name = &page[name_start..i];
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() || bytes[i] != b'=' {
                if name.is_empty() {
                    i += 1;
                }
                continue;
            }
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = match bytes.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let start = i + 1;
                    let end = page[start..]
                        .find(q as char)
                        .map_or(bytes.len(), |e| start + e);
                    i = (end + 1).min(bytes.len());
                    &page[start..end]
                }
                _ => {
                    let start = i;
                    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
                        i += 1;
                    }
                    &page[start..i]
                }
            };
            if name.eq_ignore_ascii_case("href") {
                out.push(decode_entities(value));
            }
        }
    }
    out
}

/// Where the next `<a` tag (followed by white space) starts, from `from`.
fn find_tag(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(2)).find(|&i| {
        bytes[i] == b'<'
            && bytes[i + 1].eq_ignore_ascii_case(&b'a')
            && bytes[i + 2].is_ascii_whitespace()
    })
}

/// `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#39;` and `&#x27;`
/// decoded; what index pages write in an attribute.
fn decode_entities(value: &str) -> String {
    if !value.contains('&') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(base: &str, page: &str) -> Vec<(String, EntryKind)> {
        entries_of(&Url::parse(base).unwrap(), page)
            .into_iter()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.kind))
            .collect()
    }

    #[test]
    fn nginx_apache_and_lighttpd_pages() {
        let nginx = r#"<html><head><title>Index of /d/</title></head><body><h1>Index of /d/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                                               01-Dec-2026 21:06       -
<a href="a%20b.txt">a b.txt</a>                                     01-Dec-2026 21:06    1234
<a href="x&amp;y">x&amp;y</a>                                      01-Dec-2026 21:06       1
</pre><hr></body></html>"#;
        assert_eq!(
            names("http://h/d/", nginx),
            [
                ("sub".into(), EntryKind::Dir),
                ("a b.txt".into(), EntryKind::File),
                ("x&y".into(), EntryKind::File)
            ]
        );
        let apache = r#"<table><tr><th><a href="?C=N;O=D">Name</a></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/pub/">Parent Directory</a></td></tr>
<tr><td><a href='data.nc'><img src="/icons/unknown.gif"></a></td><td><A HREF='data.nc'>data.nc</A></td><td align="right">2026-12-01 21:06  </td><td align="right">1.2K</td></tr>
<tr><td><a href="more/">more/</a></td></tr></table>"#;
        assert_eq!(
            names("http://h/pub/d/", apache),
            [
                ("data.nc".into(), EntryKind::File),
                ("more".into(), EntryKind::Dir)
            ]
        );
        let lighttpd = r#"<tr class="d"><td class="n"><a href="../">..</a>/</td></tr>
<tr><td class="n"><a href="z.bin">z.bin</a></td><td class="m">2026-Dec-01 21:06:00</td><td class="s">1.2K</td></tr>"#;
        assert_eq!(
            names("https://h/x/", lighttpd),
            [("z.bin".into(), EntryKind::File)]
        );
    }

    #[test]
    fn links_out_of_the_directory_are_not_entries() {
        let page = r#"<a href="../escape">x</a> <a href="/etc/passwd">x</a>
<a href="http://other/d/f">x</a> <a href="https://h/d/f">x</a> <a href="http://h:81/d/f">x</a>
<a href="a/b">x</a> <a href="%2e%2e/up">x</a> <a href="./">x</a> <a href="?C=M">x</a>
<a href=plain>x</a> <a href="%2Fslash">x</a> <a href="%00nul">x</a> <a href="..%2Fdots">x</a>
<a href="http://h/d/abs">x</a> <ab href="notatag">x</ab>"#;
        let got = names("http://h/d/", page);
        let got: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        // `%2F` and `%00` decode to names the engine refuses; `..%2F` too.
        assert_eq!(got, ["plain", "/slash", "\0nul", "../dots", "abs"]);
    }
}
