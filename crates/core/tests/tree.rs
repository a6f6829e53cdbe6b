//! Whole trees (`enqueue_tree`) through `mem://`, a protocol whose
//! listings the test writes, hostile ones included: names that are paths,
//! links out of the tree and through links, a link planted on the local
//! disk. Nothing may be written outside the download directory, every
//! refused name must be reported, a second run must fetch nothing and a
//! changed file must be fetched again.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use camino::{Utf8Path, Utf8PathBuf};
use pymatris_core::{
    ByteRange, Config, DirEntry, Downloader, EntryKind, ErrorKind, Fetched, Protocol,
    ProtocolPlugin, RemoteMeta, Result, TreeOptions, Url, Validator,
};

/// One host's files and listings.
#[derive(Default)]
struct Server {
    /// Listings by directory path (ending in `/`).
    dirs: HashMap<String, Vec<DirEntry>>,
    /// Files by path: contents and time.
    files: HashMap<String, (Vec<u8>, SystemTime)>,
    /// The paths fetched, in order.
    fetched: Vec<String>,
}

static SERVERS: LazyLock<Mutex<HashMap<String, Server>>> = LazyLock::new(Mutex::default);

#[derive(Debug)]
struct Mem;

fn key(url: &Url) -> (String, String) {
    let path = percent_encoding::percent_decode_str(url.path())
        .decode_utf8_lossy()
        .into_owned();
    (url.host_str().unwrap_or_default().to_owned(), path)
}

fn not_found(path: &str) -> pymatris_core::Error {
    pymatris_core::Error::new(ErrorKind::NotFound, format!("{path}: no such file"))
}

fn meta_of(data: &[u8], time: SystemTime) -> RemoteMeta {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    RemoteMeta {
        size: Some(data.len() as u64),
        modified: Some(time),
        ranges: true,
        validator: Validator {
            etag: None,
            modified: Some(secs.to_string()),
        },
        ..RemoteMeta::default()
    }
}

#[pymatris_core::async_trait]
impl Protocol for Mem {
    async fn stat(&self, url: &Url) -> Result<RemoteMeta> {
        let (host, path) = key(url);
        let servers = SERVERS.lock().unwrap();
        let (data, time) = servers[&host]
            .files
            .get(&path)
            .ok_or_else(|| not_found(&path))?;
        Ok(meta_of(data, *time))
    }

    async fn fetch(&self, url: &Url, range: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
        let (host, path) = key(url);
        let mut servers = SERVERS.lock().unwrap();
        let server = servers.get_mut(&host).unwrap();
        server.fetched.push(path.clone());
        let (data, time) = server.files.get(&path).ok_or_else(|| not_found(&path))?;
        let end = range.end.map_or(data.len(), |e| data.len().min(e as usize));
        let start = (range.start as usize).min(end);
        let body = Bytes::copy_from_slice(&data[start..end]);
        Ok(Fetched {
            meta: meta_of(data, *time),
            offset: range.start,
            carrier: None,
            answer: None,
            body: Box::pin(futures_util::stream::iter([Ok(body)])),
        })
    }

    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>> {
        let (host, path) = key(url);
        let servers = SERVERS.lock().unwrap();
        servers[&host]
            .dirs
            .get(&path)
            .cloned()
            .ok_or_else(|| not_found(&path))
    }
}

const PLUGIN: ProtocolPlugin = ProtocolPlugin {
    schemes: &["mem"],
    build: |_| Ok(Arc::new(Mem)),
};

fn time(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Builds a server from `(path, contents)` files: directories and their
/// listings follow from the paths.
fn server(host: &str, files: &[(&str, &[u8])]) {
    let mut s = Server::default();
    for (path, data) in files {
        let t = time(1_700_000_000 + data.len() as u64);
        s.files.insert(format!("/{path}"), (data.to_vec(), t));
        let mut dir = String::from("/");
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let entry = DirEntry {
                name: part.as_bytes().to_vec(),
                kind: if last {
                    EntryKind::File
                } else {
                    EntryKind::Dir
                },
                size: last.then_some(data.len() as u64),
                modified: last.then_some(t),
                link_target: None,
            };
            let listing = s.dirs.entry(dir.clone()).or_default();
            if !listing.contains(&entry) {
                listing.push(entry);
            }
            dir = format!("{dir}{part}/");
        }
    }
    SERVERS.lock().unwrap().insert(host.to_owned(), s);
}

/// Adds a hostile entry to the listing of `dir`.
fn add_entry(host: &str, dir: &str, entry: DirEntry) {
    let mut servers = SERVERS.lock().unwrap();
    servers
        .get_mut(host)
        .unwrap()
        .dirs
        .get_mut(dir)
        .unwrap()
        .push(entry);
}

fn named(name: &[u8], kind: EntryKind) -> DirEntry {
    DirEntry {
        name: name.to_vec(),
        kind,
        size: Some(4),
        modified: Some(time(1_700_000_000)),
        link_target: None,
    }
}

fn link(name: &str, target: &str, kind: EntryKind) -> DirEntry {
    DirEntry {
        link_target: Some(target.as_bytes().to_vec()),
        ..named(name.as_bytes(), kind)
    }
}

fn fetched(host: &str) -> Vec<String> {
    let mut f = SERVERS.lock().unwrap()[host].fetched.clone();
    f.sort();
    f
}

fn run(host: &str, dir: &Utf8Path, options: TreeOptions) -> pymatris_core::Results {
    let mut dl = Downloader::builder(Config::default().max_parallel(4))
        .protocol(PLUGIN)
        .build();
    dl.enqueue_tree(&format!("mem://{host}/"), dir, options);
    dl.download_blocking()
}

/// Every file under `dir`, relative, with its contents.
fn tree_of(dir: &Utf8Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in d.read_dir_utf8().unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path().to_owned());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_string();
                let data = if ft.is_symlink() {
                    b"<link>".to_vec()
                } else {
                    std::fs::read(e.path()).unwrap()
                };
                out.push((rel, data));
            }
        }
    }
    out.sort();
    out
}

fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(t.path()).unwrap().join("dl");
    (t, dir)
}

#[test]
fn a_tree_is_reproduced_and_a_rerun_fetches_only_what_changed() {
    let files: &[(&str, &[u8])] = &[
        ("a.txt", b"alpha"),
        ("sub/b.bin", b"bravo!"),
        ("sub/deeper/c", b"charlie-c"),
        ("sub/deeper/d.nc", b"delta"),
        ("other/e", b"echo"),
    ];
    server("plain", files);
    let (_t, dir) = tmp();
    let results = run("plain", &dir, TreeOptions::default());
    assert!(results.is_ok(), "{results}");
    let want: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(tree_of(&dir), want);
    assert_eq!(results.success.len(), files.len());
    assert_eq!(fetched("plain").len(), files.len());

    // The same run again: nothing fetched, every file reported.
    SERVERS
        .lock()
        .unwrap()
        .get_mut("plain")
        .unwrap()
        .fetched
        .clear();
    let results = run("plain", &dir, TreeOptions::default());
    assert!(results.is_ok(), "{results}");
    assert_eq!(results.success.len(), files.len());
    assert_eq!(fetched("plain"), Vec::<String>::new());

    // One file changes (same size, another time): only it is fetched, and
    // it replaces the old one.
    {
        let mut servers = SERVERS.lock().unwrap();
        let s = servers.get_mut("plain").unwrap();
        s.files.insert(
            "/sub/b.bin".into(),
            (b"BRAVO?".to_vec(), time(1_800_000_000)),
        );
        for e in s.dirs.get_mut("/sub/").unwrap() {
            if e.name == b"b.bin" {
                e.modified = Some(time(1_800_000_000));
            }
        }
        s.fetched.clear();
    }
    let results = run("plain", &dir, TreeOptions::default());
    assert!(results.is_ok(), "{results}");
    assert_eq!(fetched("plain"), vec!["/sub/b.bin".to_owned()]);
    assert_eq!(std::fs::read(dir.join("sub/b.bin")).unwrap(), b"BRAVO?");
    assert_eq!(tree_of(&dir).len(), files.len(), "no numbered copy left");
}

#[test]
fn include_exclude_and_depth_choose_the_files() {
    server(
        "filtered",
        &[
            ("a.nc", b"1"),
            ("a.txt", b"2"),
            ("x/b.nc", b"3"),
            ("x/y/c.nc", b"4"),
            ("tmp/d.nc", b"5"),
        ],
    );
    let (_t, dir) = tmp();
    let options = TreeOptions::default()
        .include("*.nc")
        .unwrap()
        .exclude("tmp")
        .unwrap()
        .max_depth(1);
    let results = run("filtered", &dir, options);
    assert!(results.is_ok(), "{results}");
    let got: Vec<String> = tree_of(&dir).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, ["a.nc", "x/b.nc"]);
    let mut listed = fetched("filtered");
    listed.dedup();
    assert_eq!(listed, ["/a.nc", "/x/b.nc"]);
}

#[test]
fn hostile_names_and_links_never_lead_outside_the_directory() {
    server(
        "hostile",
        &[("ok", b"fine"), ("sub/f", b"in sub"), ("real/g", b"real g")],
    );
    // What the server may claim: names that are paths, a hidden name, a
    // control character, links out of the tree, through a link, to a
    // directory (a loop), and to a file in the tree.
    for bad in [
        &b"../escape"[..],
        b"..",
        b".",
        b"a/b",
        b"/etc/passwd",
        b"nul\0x",
        b"",
    ] {
        add_entry("hostile", "/", named(bad, EntryKind::File));
    }
    add_entry("hostile", "/", named(b"..", EntryKind::Dir));
    add_entry("hostile", "/sub/", named(b"../../escape", EntryKind::Dir));
    add_entry("hostile", "/", named(b".bashrc", EntryKind::File));
    add_entry("hostile", "/", named(b"line\nbreak", EntryKind::File));
    add_entry(
        "hostile",
        "/",
        link("passwd", "/etc/passwd", EntryKind::File),
    );
    add_entry(
        "hostile",
        "/sub/",
        link("up", "../../../outside/victim", EntryKind::File),
    );
    add_entry("hostile", "/sub/", link("loop", "..", EntryKind::Dir));
    add_entry(
        "hostile",
        "/sub/",
        link("also-real", "../real", EntryKind::Dir),
    );
    add_entry(
        "hostile",
        "/",
        link("via-link", "sub/loop/ok", EntryKind::Other),
    );
    add_entry("hostile", "/", link("latest", "real/g", EntryKind::File));
    {
        let mut servers = SERVERS.lock().unwrap();
        let s = servers.get_mut("hostile").unwrap();
        for name in ["/.bashrc", "/line\nbreak"] {
            s.files
                .insert(name.into(), (b"data".to_vec(), time(1_700_000_000)));
        }
    }

    let (t, dir) = tmp();
    let outside = Utf8Path::from_path(t.path()).unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    // A neighbour's link where the tree's `real` directory will go.
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("real")).unwrap();

    let results = run("hostile", &dir, TreeOptions::default());

    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
    let outside_files: Vec<_> = outside.read_dir_utf8().unwrap().collect();
    assert_eq!(outside_files.len(), 1, "nothing new outside --dir");
    let got = tree_of(&dir);
    let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["bashrc", "latest", "line_break", "ok", "real", "sub/f"],
        "{results}"
    );
    assert_eq!(
        got[1].1, b"real g",
        "a link to a file in the tree is a copy"
    );
    assert_eq!(got[4].1, b"<link>", "the planted link is left alone");
    // Each refused name, and the directory behind the planted link, is
    // reported; the run fails.
    let refused = results
        .errors
        .iter()
        .filter(|f| f.error.to_string().contains("not downloaded"))
        .count();
    assert_eq!(refused, 9, "{results}");
    assert!(
        results
            .errors
            .iter()
            .any(|f| f.error.to_string().contains("not a directory")),
        "{results}"
    );
    assert!(!results.is_ok());
}

#[test]
fn a_listing_that_fails_is_reported_and_the_rest_downloaded() {
    server("broken", &[("a", b"1"), ("d/b", b"2")]);
    add_entry("broken", "/", named(b"gone", EntryKind::Dir));
    let (_t, dir) = tmp();
    let results = run("broken", &dir, TreeOptions::default());
    assert_eq!(results.success.len(), 2, "{results}");
    assert_eq!(results.errors.len(), 1, "{results}");
    assert_eq!(results.errors[0].error.kind(), ErrorKind::NotFound);
    assert!(results.errors[0].url.ends_with("/gone/"), "{results}");
}

#[test]
fn a_protocol_without_listings_says_so() {
    #[derive(Debug)]
    struct NoList;
    #[pymatris_core::async_trait]
    impl Protocol for NoList {
        async fn stat(&self, _: &Url) -> Result<RemoteMeta> {
            unimplemented!()
        }
        async fn fetch(&self, _: &Url, _: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
            unimplemented!()
        }
    }
    let (_t, dir) = tmp();
    let mut dl = Downloader::builder(Config::default())
        .protocol(ProtocolPlugin {
            schemes: &["nolist"],
            build: |_| Ok(Arc::new(NoList)),
        })
        .build();
    dl.enqueue_tree("nolist://h/d/", &dir, TreeOptions::default());
    let results = dl.download_blocking();
    assert_eq!(results.errors.len(), 1, "{results}");
    assert!(
        results.errors[0]
            .error
            .to_string()
            .contains("not supported")
    );
}
