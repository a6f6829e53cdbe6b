//! `--dry-run`: each URL's name, size and what a run would do with it
//! (download, replace, resume, skip as complete), with the directory tree
//! left byte for byte and time for time as it was, and no body asked of
//! the server. Against the real servers (nginx, vsftpd, sshd) for a new, a
//! partial and a complete file, and the fault server where bodies are
//! counted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pymatris_harness::{Servers, Which};
use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, run_pymatris, sha256_hex};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// Every entry under `root` (directories too), with its type, size,
/// modification time and, for files, content.
fn snapshot(root: &Path) -> Vec<(PathBuf, bool, u64, SystemTime, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let sum = if meta.is_file() {
            sha256_hex(&std::fs::read(&path).unwrap())
        } else {
            String::new()
        };
        if meta.is_dir() {
            stack.extend(list_dir(&path).into_iter().map(|n| path.join(n)));
        }
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        out.push((
            rel,
            meta.is_dir(),
            meta.len(),
            meta.modified().unwrap(),
            sum,
        ));
    }
    out.sort();
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The planned entry for the URL ending in `name`.
fn plan_of<'a>(v: &'a Value, name: &str) -> &'a Value {
    let planned = v["planned"].as_array().unwrap();
    (planned.iter())
        .find(|p| p["url"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no plan for {name}: {v:#}"))
}

/// Leaves an interrupted `-c` download of `url` in `dir`: started under a
/// speed cap, stopped by SIGTERM once some bytes are on disk.
fn interrupted(url: &str, dir: &Path, auth: &[&str]) {
    let mut args = vec!["-c", "--max-splits", "1", "--max-speed", "300K", "--quiet"];
    args.extend(auth);
    args.extend(["--dir", dir.to_str().unwrap(), url]);
    let mut child: Child = Command::new(pymatris_bin())
        .args(&args)
        .env("PYMATRIS_NO_CONFIG", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = dir.join("partial.bin.pymatris-part");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 200_000 {
        assert!(child.try_wait().unwrap().is_none(), "{url} ended early");
        assert!(Instant::now() < deadline, "{url}: no part file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(child.wait().unwrap().code(), Some(143), "{url}");
    assert!(
        dir.join("partial.bin.pymatris-part.state").exists(),
        "{url}"
    );
}

#[test]
fn a_dry_run_over_http_ftp_and_sftp_touches_no_file() {
    let servers = Servers::start(Which::all()).expect("start the servers");
    let sizes = [
        ("new.bin", MIB),
        ("partial.bin", 4 * MIB),
        ("done.bin", 300_000),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        servers.write_random(&format!("dry/{name}"), *size as u64, 60 + i as u64);
    }
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    let sftp_auth = ["--identity", key.as_str(), "--known-hosts", kh.as_str()];
    type UrlOf<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let protocols: [(&str, UrlOf, &[&str]); 3] = [
        ("http", Box::new(|r| servers.http_url(r)), &[]),
        ("ftp", Box::new(|r| servers.ftp_url(r)), &[]),
        ("sftp", Box::new(|r| servers.sftp_url(r)), &sftp_auth),
    ];
    for (scheme, url_of, auth) in protocols {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let d = dir.to_str().unwrap();
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/keep.txt"), "unrelated").unwrap();
        let [new, partial, done, missing] = ["new.bin", "partial.bin", "done.bin", "missing.bin"]
            .map(|n| url_of(&format!("dry/{n}")));

        // An earlier run under --continue: one file complete, one stopped.
        let first = run_pymatris([&["-c", "--quiet", "--dir", d][..], auth, &[&done]].concat());
        assert!(first.status.success(), "{scheme}: {}", text(&first));
        interrupted(&partial, &dir, auth);
        let before = snapshot(root.path());

        let args = [&["--dry-run", "-c", "--json", "--dir", d][..], auth];
        let urls = [new.as_str(), &partial, &done, &missing];
        let out = run_pymatris([&args.concat()[..], &urls].concat());
        assert_eq!(out.status.code(), Some(1), "{scheme}: {}", text(&out));
        assert_eq!(snapshot(root.path()), before, "{scheme}: the tree changed");
        let v = json(&out);
        let p = plan_of(&v, "new.bin");
        assert_eq!(p["action"]["kind"], "download", "{scheme}: {v:#}");
        assert_eq!(p["size"], MIB, "{scheme}");
        assert_eq!(p["path"], dir.join("new.bin").to_str().unwrap());
        let p = plan_of(&v, "partial.bin");
        assert_eq!(p["action"]["kind"], "resume", "{scheme}: {v:#}");
        let have = p["action"]["have"].as_u64().unwrap();
        let on_disk = std::fs::metadata(dir.join("partial.bin.pymatris-part")).unwrap();
        assert!(have >= 200_000 && have <= on_disk.len(), "{scheme}: {have}");
        let p = plan_of(&v, "done.bin");
        assert_eq!(p["action"]["kind"], "complete", "{scheme}: {v:#}");
        assert_eq!(p["size"], 300_000, "{scheme}");
        assert_eq!(v["errors"][0]["kind"], "NotFound", "{scheme}: {v:#}");
        let (_, ftp_password) = servers.ftp_user();
        assert!(
            !text(&out).contains(ftp_password),
            "{scheme}: {}",
            text(&out)
        );

        // Without -c the complete file is kept and a new one would get the
        // next name; with --overwrite it would be replaced. Plain text.
        let out = run_pymatris([&["--dry-run", "--dir", d][..], auth, &[&done]].concat());
        assert!(out.status.success(), "{scheme}: {}", text(&out));
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(shown.starts_with("download "), "{scheme}: {shown}");
        assert!(
            shown.contains("done.1.bin (300000 bytes)"),
            "{scheme}: {shown}"
        );
        let args = [
            &["--dry-run", "--overwrite", "--dir", d][..],
            auth,
            &[&done],
        ];
        let out = run_pymatris(args.concat());
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(shown.starts_with("replace "), "{scheme}: {shown}");
        assert_eq!(snapshot(root.path()), before, "{scheme}: the tree changed");

        // A directory that does not exist is not created.
        let absent = root.path().join("absent").join("deeper");
        let args = [
            &["--dry-run", "--dir", absent.to_str().unwrap()][..],
            auth,
            &[&new],
        ];
        let out = run_pymatris(args.concat());
        assert!(out.status.success(), "{scheme}: {}", text(&out));
        assert!(!root.path().join("absent").exists(), "{scheme}");
    }
}

#[test]
fn a_dry_run_asks_for_no_body_and_refuses_what_would_write() {
    let server = FaultServer::start([
        ("/new.bin", Route::new(random_bytes(MIB, 41))),
        ("/gone.bin", Route::status(404)),
    ]);
    let root = tempfile::tempdir().unwrap();
    let d = root.path().to_str().unwrap();
    let (new, gone) = (server.url("/new.bin"), server.url("/gone.bin"));
    let out = run_pymatris(["--dry-run", "--dir", d, &new, &gone]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(server.body_bytes("/new.bin"), 0, "a body was fetched");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("download  {new} -> ")), "{shown}");
    assert!(shown.contains(&format!("({MIB} bytes)")), "{shown}");
    assert!(shown.contains(&format!("fail      {gone}: ")), "{shown}");
    assert!(list_dir(root.path()).is_empty());

    // A URL that fails hands the file to its mirror, as a run would.
    let out = run_pymatris(["--dry-run", "--json", "--dir", d, &gone, "--mirror", &new]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["planned"][0]["url"], gone.as_str(), "{v:#}");
    assert_eq!(v["planned"][0]["size"], MIB, "{v:#}");
    assert_eq!(server.body_bytes("/new.bin"), 0, "a body was fetched");

    // What would write a file is a usage error.
    let jsonl = root.path().join("log.jsonl");
    let out = run_pymatris(["--dry-run", "--jsonl", jsonl.to_str().unwrap(), &new]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--dry-run"), "{}", text(&out));
    assert!(list_dir(root.path()).is_empty());
}
