//! `pymatris -r` against the harness's real servers: nginx's autoindex
//! pages, vsftpd (`LIST` only, no `MLSD`) and OpenSSH's sftp-server. A
//! tree of a few hundred files in nested directories must arrive byte for
//! byte; a second run must fetch nothing (no transfer in the server's log,
//! no file replaced: same inode); a changed file must be fetched again,
//! alone.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use pymatris_harness::{Server, Servers, Which};
use pymatris_tests::{random_bytes, run_pymatris};
use serde_json::Value;

/// Files of the tree: how many, in how many directories.
const FILES: usize = 240;

/// Writes the tree under `mirror/` of the servers' data: nested
/// directories, sizes from empty to a few hundred KiB.
pub(crate) fn write_tree(servers: &Servers) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..FILES {
        let rel = match i % 5 {
            0 => format!("top-{i}.dat"),
            1 => format!("a/f{i}.txt"),
            2 => format!("a/b{}/c/f{i}.bin", i % 3),
            3 => format!("d{}/f {i}.nc", i % 7),
            _ => format!("d{}/e/g/h/f{i}", i % 2),
        };
        let size = match i % 11 {
            0 => 0,
            1 => 300 * 1024 + i,
            _ => (i * 137) % 9000,
        };
        let data = random_bytes(size, i as u64);
        servers.write_file(&format!("mirror/{rel}"), &data);
        files.insert(rel, data);
    }
    files
}

/// Every file under `dir`, relative, with its contents.
pub(crate) fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let kind = e.file_type().unwrap();
            let path = e.path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy();
            if kind.is_dir() {
                todo.push(e.path());
            } else if kind.is_symlink() {
                out.insert(rel.into_owned(), b"<link>".to_vec());
            } else {
                out.insert(rel.into_owned(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// The inode of every file under `dir`: a file downloaded again is a new
/// file.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    read_tree(dir)
        .into_keys()
        .map(|rel| {
            let ino = std::fs::symlink_metadata(dir.join(&rel)).unwrap().ino();
            (rel, ino)
        })
        .collect()
}

pub(crate) fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `pymatris -r` and checks that it succeeded for every file.
pub(crate) fn mirror(extra: &[&str], url: &str, dir: &Path) -> Value {
    let mut args = vec!["-r", "--json", "--quiet", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run_pymatris(&args);
    let v = json(&out);
    assert!(
        out.status.success(),
        "{v:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["success"].as_array().unwrap().len(), FILES, "{v:#}");
    v
}

/// Replaces one file on the server with other bytes of the same size and
/// a time an hour later (or earlier: a version put back): only the time
/// tells it changed.
fn change_one(servers: &Servers, rel: &str, old: &[u8], later: bool) -> Vec<u8> {
    let new: Vec<u8> = old.iter().map(|b| b ^ 0x5a).collect();
    let path = servers.write_file(&format!("mirror/{rel}"), &new);
    let hour = Duration::from_secs(3600);
    let time = if later {
        SystemTime::now() + hour
    } else {
        SystemTime::now() - hour
    };
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
    new
}

/// Whole runs, then a rerun and a change, for one server.
fn round_trip(servers: &Servers, url: &str, extra: &[&str], transfers: Option<&dyn Fn() -> usize>) {
    let counted = transfers.is_some();
    let transfers = || transfers.map_or(0, |count| count());
    let files = write_tree(servers);
    let out = tempfile::tempdir().unwrap();
    mirror(extra, url, out.path());
    assert!(read_tree(out.path()) == files, "the tree differs");
    let before = transfers();
    assert!(
        !counted || before >= FILES,
        "{before} transfers for {FILES} files"
    );

    let ids = inodes(out.path());
    mirror(extra, url, out.path());
    assert_eq!(transfers(), before, "a rerun fetched files");
    assert!(inodes(out.path()) == ids, "a rerun replaced files");

    // Newer, then older than the copy (an old version put back): without
    // -N a copy is up to date only at the remote size and time.
    let mut want = files;
    for (n, (changed, later)) in [("a/b1/c/f7.bin", true), ("a/f1.txt", false)]
        .into_iter()
        .enumerate()
    {
        let new = change_one(servers, changed, &want[changed], later);
        mirror(extra, url, out.path());
        assert_eq!(
            transfers(),
            before + (n + 1) * usize::from(counted),
            "only the changed file is fetched"
        );
        want.insert(changed.to_owned(), new);
        assert!(
            read_tree(out.path()) == want,
            "the changed file {changed} was not replaced"
        );
        let now = inodes(out.path());
        let replaced: Vec<_> = now.iter().filter(|(k, v)| ids[*k] != **v).collect();
        assert_eq!(replaced.len(), n + 1, "{replaced:?}");
    }
}

/// Lines of a server's log that record a transfer of a file of the tree.
pub(crate) fn log_count(
    servers: &Servers,
    server: Server,
    is_transfer: impl Fn(&str) -> bool,
) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(servers.root_dir().join(server.log())).unwrap_or_default();
    text.lines().filter(|l| is_transfer(l)).count()
}

#[test]
fn http_autoindex_tree() {
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let url = servers.http_url("mirror/");
    // GETs of files that sent a body (an index page's path ends in `/`; a
    // rerun asks with If-Modified-Since and is answered 304).
    let gets = || {
        log_count(&servers, Server::Nginx, |l| {
            l.contains("\"GET /mirror/")
                && !l.contains("/ HTTP/")
                && (l.contains("\" 200 ") || l.contains("\" 206 "))
        })
    };
    round_trip(&servers, &url, &[], Some(&gets));
}

#[test]
fn ftp_tree_over_list() {
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    let url = servers.ftp_url("mirror/");
    let retrs = || log_count(&servers, Server::Vsftpd, |l| l.contains("OK DOWNLOAD: "));
    round_trip(&servers, &url, &[], Some(&retrs));
}

#[test]
fn sftp_tree() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let url = servers.sftp_url("mirror/");
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    // sftp-server logs no transfer: the files' inodes tell what was
    // fetched again.
    let args = ["--identity", &key, "--known-hosts", &kh];
    round_trip(&servers, &url, &args, None);
}

/// Copies that keep their download time (`--no-remote-time`) cannot be at
/// the remote time: a rerun keeps every copy not older than its remote
/// file, and fetches only a file changed since.
#[test]
fn a_tree_without_remote_times_is_not_fetched_again() {
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    let url = servers.ftp_url("mirror/");
    let retrs = || log_count(&servers, Server::Vsftpd, |l| l.contains("OK DOWNLOAD: "));
    let files = write_tree(&servers);
    let out = tempfile::tempdir().unwrap();
    let args = ["--no-remote-time"];
    mirror(&args, &url, out.path());
    let before = retrs();
    assert!(before >= FILES, "{before} transfers for {FILES} files");
    let ids = inodes(out.path());
    mirror(&args, &url, out.path());
    assert_eq!(retrs(), before, "a rerun fetched files");
    assert!(inodes(out.path()) == ids, "a rerun replaced files");
    let changed = "a/b1/c/f7.bin";
    let new = change_one(&servers, changed, &files[changed], true);
    mirror(&args, &url, out.path());
    assert_eq!(retrs(), before + 1, "only the changed file is fetched");
    assert_eq!(std::fs::read(out.path().join(changed)).unwrap(), new);
}

/// `-r` hands each file's outcome on as it ends: one `--jsonl` line a
/// file; `--json` still lists a tree's files by path.
#[test]
fn a_tree_writes_a_jsonl_line_a_file_and_json_by_path() {
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let files = write_tree(&servers);
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let jsonl = root.path().join("log.jsonl");
    let v = mirror(
        &["--jsonl", jsonl.to_str().unwrap()],
        &servers.http_url("mirror/"),
        &out,
    );
    let paths: Vec<&str> = (v["success"].as_array().unwrap().iter())
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert!(paths.is_sorted(), "{paths:?}");
    let lines: Vec<Value> = (std::fs::read_to_string(&jsonl).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    assert!(lines.iter().all(|l| l["ok"] == true), "{lines:?}");
}

/// `--dry-run -r` walks the tree and plans each file, writing nothing and
/// fetching no body: into an empty directory every file is a download;
/// after a mirror and one change, the changed file alone is a replace.
#[test]
fn a_dry_run_of_a_tree_plans_each_file_and_fetches_nothing() {
    let servers = Servers::start(Which::all()).expect("start the servers");
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    let sftp_args = ["--identity", key.as_str(), "--known-hosts", kh.as_str()];
    let mut files = write_tree(&servers);
    let get = |l: &str| {
        l.contains("\"GET /mirror/")
            && !l.contains("/ HTTP/")
            && (l.contains("\" 200 ") || l.contains("\" 206 "))
    };
    let transfers = |scheme: &str| match scheme {
        "http" => log_count(&servers, Server::Nginx, get),
        "ftp" => log_count(&servers, Server::Vsftpd, |l| l.contains("OK DOWNLOAD: ")),
        _ => 0,
    };
    let dry = |extra: &[&str], url: &str, dir: &Path| {
        let mut args = vec!["-r", "--dry-run", "--json", "--dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(url);
        let out = run_pymatris(&args);
        let v = json(&out);
        assert!(out.status.success(), "{v:#}");
        let planned = v["planned"].as_array().unwrap().clone();
        assert_eq!(planned.len(), FILES, "{v:#}");
        let kinds: BTreeMap<String, String> = (planned.iter())
            .map(|p| {
                let path = Path::new(p["path"].as_str().unwrap());
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (rel, p["action"]["kind"].as_str().unwrap().to_owned())
            })
            .collect();
        kinds
    };
    for (n, (scheme, url, extra)) in [
        ("http", servers.http_url("mirror/"), &[][..]),
        ("ftp", servers.ftp_url("mirror/"), &[][..]),
        ("sftp", servers.sftp_url("mirror/"), &sftp_args[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let before = transfers(scheme);
        let kinds = dry(extra, &url, &out);
        assert!(kinds.keys().eq(files.keys()), "{scheme}: {kinds:?}");
        assert!(
            kinds.values().all(|k| k == "download"),
            "{scheme}: {kinds:?}"
        );
        assert!(!out.exists(), "{scheme}: a dry run made the directory");
        assert_eq!(
            transfers(scheme),
            before,
            "{scheme}: a dry run fetched files"
        );

        mirror(extra, &url, &out);
        let changed = ["a/b1/c/f7.bin", "a/f1.txt", "top-0.dat"][n];
        let new = change_one(&servers, changed, &files[changed], true);
        files.insert(changed.to_owned(), new);
        let ids = inodes(&out);
        let before = transfers(scheme);
        let kinds = dry(extra, &url, &out);
        let (replace, current): (Vec<_>, Vec<_>) =
            kinds.iter().partition(|(rel, _)| *rel == changed);
        assert_eq!(replace[0].1, "replace", "{scheme}: {kinds:?}");
        assert!(
            current.iter().all(|(_, k)| *k == "up_to_date"),
            "{scheme}: {kinds:?}"
        );
        assert_eq!(
            transfers(scheme),
            before,
            "{scheme}: a dry run fetched files"
        );
        assert!(inodes(&out) == ids, "{scheme}: a dry run replaced files");
    }
}

// Under -c a file of the remote size is still out of date when its time
// differs: -c resumes partial files, it does not keep changed ones.
#[test]
fn http_tree_under_continue() {
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    round_trip(&servers, &servers.http_url("mirror/"), &["-c"], None);
}

#[test]
fn ftp_tree_under_continue() {
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    round_trip(&servers, &servers.ftp_url("mirror/"), &["-c"], None);
}

#[test]
fn sftp_tree_under_continue() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    let args = ["-c", "--identity", &key, "--known-hosts", &kh];
    round_trip(&servers, &servers.sftp_url("mirror/"), &args, None);
}

/// A crafted index page: links out of the directory in every spelling,
/// names that decode to paths, a hidden name; and on the local disk a link
/// planted where a directory of the tree goes. Only the tree's own files
/// are requested, nothing is written outside `--dir`, and each refused
/// name and the planted link are reported.
#[test]
fn a_hostile_index_page_stays_inside() {
    use pymatris_tests::fault_server::{FaultServer, Route};

    let page = |links: &[&str]| {
        let body: String = links
            .iter()
            .map(|l| format!("<a href=\"{l}\">x</a>\n"))
            .collect();
        Route::new(format!("<html><body><pre>{body}</pre></body></html>"))
            .header("Content-Type", "text/html")
    };
    let outside_links = [
        "../secret",
        "/secret",
        "%2e%2e/secret",
        "sub/../../secret",
        "HTTP://127.0.0.1:1/idx/ok.txt",
        "?C=N;O=D",
    ];
    let mut root_links = vec![
        "ok.txt",
        ".bashrc",
        "sub/",
        "kept/",
        "..%2Fsecret",
        "%2Fetc%2Fpasswd",
    ];
    root_links.extend(outside_links);
    let server = FaultServer::start([
        ("/idx/", page(&root_links)),
        ("/idx/sub/", page(&["deep.txt", "../../secret"])),
        ("/idx/kept/", page(&["k.txt"])),
        ("/idx/ok.txt", Route::new("ok")),
        ("/idx/.bashrc", Route::new("rc")),
        ("/idx/sub/deep.txt", Route::new("deep")),
        ("/idx/kept/k.txt", Route::new("k")),
        ("/secret", Route::new("secret")),
    ]);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("sub")).unwrap();

    let out = run_pymatris([
        "-r",
        "--json",
        "--quiet",
        "--dir",
        dir.to_str().unwrap(),
        &server.url("/idx/"),
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside --dir"
    );
    let got: Vec<String> = read_tree(&dir).into_keys().collect();
    assert_eq!(got, ["bashrc", "kept/k.txt", "ok.txt", "sub"], "{v:#}");
    assert!(
        std::fs::symlink_metadata(dir.join("sub"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        server.hits("/secret"),
        0,
        "a link out of the tree was followed"
    );
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.contains("a name with /"))
            .count(),
        2,
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("not a directory")),
        "{errors:#?}"
    );
}

/// A fake FTP server's `MLSD` lists names that are paths, a hidden name,
/// links out of the tree and one to a file inside it: only the tree's own
/// files are asked for, each refused name is reported, and a link inside
/// the tree becomes a copy.
#[test]
fn a_hostile_ftp_listing_stays_inside() {
    use pymatris_tests::fake_ftp::{FakeFtp, FakeFtpTree};

    let mut tree = FakeFtpTree::default();
    let facts = "type=file;size=2;modify=20260101000000;";
    tree.dirs.insert(
        "idx".into(),
        [
            "type=cdir; .".to_owned(),
            "type=pdir; ..".to_owned(),
            format!("{facts} ok.txt"),
            format!("{facts} ../../escape"),
            format!("{facts} a/b"),
            "type=dir; ..".to_owned(),
            "type=dir; sub".to_owned(),
            format!("{facts} .profile"),
            "type=OS.unix=slink:/etc/passwd; passwd".to_owned(),
            "type=OS.unix=slink:../../etc/shadow; shadow".to_owned(),
            "type=OS.unix=slink:sub/f.txt; good-link".to_owned(),
            "type=OS.unix=slink:sub; dir-link".to_owned(),
        ]
        .join("\n"),
    );
    tree.dirs.insert(
        "idx/sub".into(),
        [
            "type=file;size=3;modify=20260101000000; f.txt",
            "type=OS.unix=slink:..; loop",
            "type=dir; ../../outside",
        ]
        .join("\n"),
    );
    for (path, body) in [
        ("idx/ok.txt", &b"ok"[..]),
        ("idx/.profile", b"pr"),
        ("idx/sub/f.txt", b"fff"),
        ("escape", b"no"),
        ("etc/passwd", b"no"),
    ] {
        tree.files.insert(path.into(), body.to_vec());
    }
    let server = FakeFtp::start(tree);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dl");
    let out = run_pymatris([
        "-r",
        "--json",
        "--quiet",
        "--dir",
        dir.to_str().unwrap(),
        &server.url("idx/"),
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let got: Vec<(String, Vec<u8>)> = read_tree(&dir).into_iter().collect();
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["good-link", "ok.txt", "profile", "sub/f.txt"],
        "{v:#}"
    );
    assert_eq!(got[0].1, b"fff");
    let root_entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(root_entries.len(), 1, "written outside --dir");
    let mut retrs = server.retrs();
    retrs.sort();
    assert_eq!(
        retrs,
        [
            "idx/.profile",
            "idx/ok.txt",
            "idx/sub/f.txt",
            "idx/sub/f.txt"
        ]
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 4, "{v:#}");
    assert!(
        errors
            .iter()
            .all(|e| e["error"].as_str().unwrap().contains("not downloaded")),
        "{v:#}"
    );
}
