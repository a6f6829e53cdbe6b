//! Paths of a tree, remote and local: which names a listing may give, the
//! URL of an entry, where a link points, and the local directories, made
//! so that no name a server gives and no link planted on the local disk
//! leads a write outside the download directory.

use std::io;

use camino::{Utf8Path, Utf8PathBuf};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, percent_encode};
use url::Url;

use crate::naming::sanitize_filename;

/// What is encoded in a name put into a URL path: everything that would
/// end the segment or the path, or be read as an escape.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b';');

/// Why a name from a listing is refused, or `None` when it is one plain
/// path component: not empty, not `.` or `..`, without `/` or NUL (such a
/// name would be a path on the server, and could name a file outside the
/// tree).
pub(crate) fn refuse_name(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("an empty name"),
        b"." | b".." => Some("a name that is . or .."),
        _ if name.contains(&b'/') => Some("a name with /"),
        _ if name.contains(&0) => Some("a name with NUL"),
        _ => None,
    }
}

/// The local name of a remote entry: sanitised as every name a server
/// gives (control characters replaced, leading dots removed, ...).
pub(crate) fn local_name(name: &[u8]) -> Option<String> {
    sanitize_filename(&String::from_utf8_lossy(name))
}

/// The URL of the entry `name` of the directory at `dir` (whose path ends
/// in `/`), itself ending in `/` for a directory.
pub(crate) fn child_url(dir: &Url, name: &[u8], is_dir: bool) -> Url {
    let mut url = dir.clone();
    let mut path = dir.path().to_owned();
    if !path.ends_with('/') {
        path.push('/');
    }
    path.extend(percent_encode(name, SEGMENT));
    if is_dir {
        path.push('/');
    }
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The start URL of a walk, its path ending in `/`.
pub(crate) fn as_dir_url(url: &Url) -> Url {
    let mut url = url.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// The path components of the URL's path, percent-decoded.
pub(crate) fn url_segments(url: &Url) -> Vec<Vec<u8>> {
    url.path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).collect())
        .collect()
}

/// Where the link `target`, found in the directory `dir` (components
/// relative to the start directory), points, as components relative to
/// the start directory; `None` when it points outside the tree. `root` is
/// the start directory's path on the server, for absolute targets. Only
/// the words of the path are read: a target through another link is
/// checked by the caller against the directories the listings showed.
pub(crate) fn resolve_link(
    root: &[Vec<u8>],
    dir: &[Vec<u8>],
    target: &[u8],
) -> Option<Vec<Vec<u8>>> {
    let (mut out, rest): (Vec<Vec<u8>>, &[u8]) = match target.strip_prefix(b"/") {
        Some(rest) => (Vec::new(), rest),
        None => {
            let mut full = root.to_vec();
            full.extend(dir.iter().cloned());
            (full, target)
        }
    };
    for part in rest.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            _ if part.contains(&0) => return None,
            _ => out.push(part.to_vec()),
        }
    }
    let rel = out.strip_prefix(root)?;
    (!rel.is_empty()).then(|| rel.to_vec())
}

/// Makes the directory `root/rel...` (each part one sanitised name),
/// refusing to go through anything under `root` that is not a directory,
/// a link above all: a link planted there by someone else would have the
/// files below it written wherever it points. `root`, the user's choice,
/// may be a link.
pub(crate) fn make_dirs(root: &Utf8Path, rel: &[String]) -> io::Result<Utf8PathBuf> {
    std::fs::create_dir_all(root)?;
    let mut path = root.to_owned();
    for part in rel {
        path.push(part);
        match std::fs::create_dir(&path) {
            Ok(()) => continue,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{path} exists and is not a directory (a link is not followed)"),
            ));
        }
    }
    Ok(path)
}

/// [`make_dirs`] for a dry run: checks the directories of `root/rel...`
/// that exist, by the same rule, and creates none.
pub(crate) fn check_dirs(root: &Utf8Path, rel: &[String]) -> io::Result<Utf8PathBuf> {
    let mut path = root.to_owned();
    let mut exists = true;
    for part in rel {
        path.push(part);
        if !exists {
            continue;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{path} exists and is not a directory (a link is not followed)"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => exists = false,
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        for bad in [&b""[..], b".", b"..", b"../x", b"a/b", b"/etc", b"a\0b"] {
            assert!(refuse_name(bad).is_some(), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"a\\b", b"\xff"] {
            assert!(refuse_name(good).is_none(), "{good:?}");
        }
        assert_eq!(local_name(b".bashrc").as_deref(), Some("bashrc"));
        assert_eq!(local_name(b"a\nb").as_deref(), Some("a_b"));
        assert_eq!(local_name(b"...").as_deref(), None);
    }

    #[test]
    fn child_urls_encode_the_name() {
        let dir = Url::parse("ftp://h/pub/tree/").unwrap();
        let url = child_url(&dir, b"a b?#%2F\xff", false);
        assert_eq!(url.as_str(), "ftp://h/pub/tree/a%20b%3F%23%252F%FF");
        assert_eq!(url_segments(&url).last().unwrap(), b"a b?#%2F\xff");
        assert_eq!(
            child_url(&dir, b"sub", true).as_str(),
            "ftp://h/pub/tree/sub/"
        );
        let dir = Url::parse("http://h/x/?C=N;O=D").unwrap();
        assert_eq!(child_url(&dir, b"y", false).as_str(), "http://h/x/y");
    }

    #[test]
    fn links_resolve_within_the_tree_only() {
        let root = parts(&["pub", "tree"]);
        let dir = parts(&["a"]);
        let at = |t: &str| resolve_link(&root, &dir, t.as_bytes());
        assert_eq!(at("f"), Some(parts(&["a", "f"])));
        assert_eq!(at("../b/./f"), Some(parts(&["b", "f"])));
        assert_eq!(at("/pub/tree/c"), Some(parts(&["c"])));
        assert_eq!(at(".."), None, "the start directory itself");
        assert_eq!(at("../.."), None);
        assert_eq!(at("../../tree2/x"), None);
        assert_eq!(at("../../../../../etc/passwd"), None);
        assert_eq!(at("/etc/passwd"), None);
        assert_eq!(at("/pub/treex/f"), None);
    }

    #[test]
    fn a_planted_link_is_not_a_directory_to_write_into() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(tmp.path()).unwrap().join("dl");
        let outside = Utf8Path::from_path(tmp.path()).unwrap().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        let err = make_dirs(&root, &["sub".into(), "deeper".into()]).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(!outside.join("deeper").exists());
        let made = make_dirs(&root, &["ok".into(), "deeper".into()]).unwrap();
        assert!(made.is_dir() && made.starts_with(&root));
        // Checked alike, and nothing made.
        let err = check_dirs(&root, &["sub".into(), "deeper".into()]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let absent = check_dirs(&root, &["new".into(), "deeper".into()]).unwrap();
        assert_eq!(absent, root.join("new/deeper"));
        assert!(!root.join("new").exists());
    }
}
