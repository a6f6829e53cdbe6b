//! Checksums and timestamps: digests servers send (the in-process fault
//! server, which can lie), `--checksum` of every algorithm and
//! `--checksum-file` against nginx, remote modification times from nginx,
//! vsftpd and sshd, and `-N` (a 304 from nginx, a stat over FTP and SFTP).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use pymatris_core::{Algo, Checksum, Config, Downloader, ErrorKind, Request, Results};
use pymatris_harness::{Servers, Which, random_bytes};
use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, run_pymatris, sha256_hex};

const KIB: usize = 1024;

/// 2001-09-09T01:46:40Z: a time no test run happens at.
fn long_ago() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
}

fn set_mtime(path: &Path, at: SystemTime) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(at).unwrap();
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn sha256_b64(bytes: &[u8]) -> String {
    let raw = hex::decode(sha256_hex(bytes)).unwrap();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

fn config() -> Config {
    Config::default()
        .max_tries(2)
        .max_splits(4)
        .min_split_size(256 * KIB as u64)
        .timeout(Duration::from_secs(5))
        .backoff_base(Duration::from_millis(10))
}

async fn download(config: Config, url: String, dir: &Path) -> Results {
    let mut dl = Downloader::new(config);
    dl.enqueue(Request::new(url).dir(dir.to_str().unwrap()));
    dl.download().await
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}):\n{stdout}\nstderr:\n{}", stderr(out)))
}

// A server's Repr-Digest is checked, for a file fetched in parts too: a
// lying one fails the download (not retried) and leaves nothing; a true
// one lands the file; the check can be turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_repr_digest_fails_and_a_true_one_passes_in_parts() {
    let body = random_bytes(3 << 20, 71);
    let lie = format!("sha-256=:{}:", sha256_b64(b"other bytes"));
    let truth = format!("sha-512=:AAAA:, sha-256=:{}:", sha256_b64(&body));
    let server = FaultServer::start([
        (
            "/lie.bin",
            Route::new(body.clone()).header("Repr-Digest", lie),
        ),
        (
            "/true.bin",
            Route::new(body.clone()).header("Repr-Digest", truth),
        ),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let results = download(config(), server.url("/lie.bin"), dir.path()).await;
    assert_eq!(results.errors.len(), 1, "{results}");
    let error = &results.errors[0].error;
    assert_eq!(error.kind(), ErrorKind::Checksum, "{error}");
    assert!(error.to_string().contains("digest"), "{error}");
    assert!(
        list_dir(dir.path()).is_empty(),
        "{:?}",
        list_dir(dir.path())
    );
    // Parts of the file, none twice: the mismatch was not retried.
    let asked: u64 = server
        .requests("/lie.bin")
        .iter()
        .map(|r| r.body_bytes)
        .sum();
    assert!(asked <= body.len() as u64 + 512 * KIB as u64, "{asked}");

    let results = download(config(), server.url("/true.bin"), dir.path()).await;
    assert!(results.is_ok(), "{results}");
    assert!(
        server.requests("/true.bin").len() > 1,
        "not fetched in parts"
    );
    assert!(std::fs::read(dir.path().join("true.bin")).unwrap() == body);

    let off = tempfile::tempdir().unwrap();
    let unchecked = config().verify_server_digests(false);
    let results = download(unchecked, server.url("/lie.bin"), off.path()).await;
    assert!(results.is_ok(), "{results}");
}

// Under --continue a file of the remote size is kept only if it also has
// the digest the server sends with the size: other bytes of that size are
// fetched again, the server's kept without a body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_keeps_a_complete_file_only_with_the_servers_digest() {
    let body = random_bytes(300 * KIB, 77);
    let truth = format!("sha-256=:{}:", sha256_b64(&body));
    let server = FaultServer::start([(
        "/c.bin",
        Route::new(body.clone()).header("Repr-Digest", truth),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let on_disk = dir.path().join("c.bin");
    std::fs::write(&on_disk, random_bytes(body.len(), 78)).unwrap();

    let results = download(config().resume(true), server.url("/c.bin"), dir.path()).await;
    assert!(results.is_ok(), "{results}");
    assert!(
        server.body_bytes("/c.bin") >= body.len() as u64,
        "the wrong file was kept"
    );
    let landed = &results.success[0].path;
    assert!(std::fs::read(landed).unwrap() == body, "{landed}");

    // Now the server's bytes are there: kept, no body asked for.
    std::fs::write(&on_disk, &body).unwrap();
    let before = server.body_bytes("/c.bin");
    let results = download(config().resume(true), server.url("/c.bin"), dir.path()).await;
    assert!(results.is_ok(), "{results}");
    assert_eq!(
        server.body_bytes("/c.bin"),
        before,
        "a complete file fetched again"
    );
    assert_eq!(results.success[0].path.as_std_path(), on_disk);
}

// Content-Digest, Digest and x-amz-checksum-sha256 describe the body
// they come with: taken for a whole file, ignored on a part of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_body_digests_are_checked_and_partial_ones_ignored() {
    let small = random_bytes(100 * KIB, 72);
    let big = random_bytes(3 << 20, 73);
    let wrong = sha256_b64(b"other bytes");
    let server = FaultServer::start([
        (
            "/amz.bin",
            Route::new(small.clone()).header("x-amz-checksum-sha256", wrong.clone()),
        ),
        (
            "/legacy.bin",
            Route::new(small.clone()).header("Digest", format!("SHA-256={wrong}")),
        ),
        (
            "/content.bin",
            Route::new(small.clone()).header("Content-Digest", format!("sha-256=:{wrong}:")),
        ),
        (
            "/part.bin",
            Route::new(big.clone()).header("Content-Digest", format!("sha-256=:{wrong}:")),
        ),
    ]);
    for path in ["/amz.bin", "/legacy.bin", "/content.bin"] {
        let dir = tempfile::tempdir().unwrap();
        let results = download(config(), server.url(path), dir.path()).await;
        assert_eq!(results.errors.len(), 1, "{path}: {results}");
        assert_eq!(
            results.errors[0].error.kind(),
            ErrorKind::Checksum,
            "{path}"
        );
        assert!(list_dir(dir.path()).is_empty(), "{path}");
    }
    // Every answer of this one is a part of the file: its Content-Digest
    // could only be of that part, so it proves nothing either way.
    let dir = tempfile::tempdir().unwrap();
    let results = download(config(), server.url("/part.bin"), dir.path()).await;
    assert!(results.is_ok(), "{results}");
    assert!(std::fs::read(dir.path().join("part.bin")).unwrap() == big);
}

// The library's checksums of every algorithm, and the time of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_verifies_and_the_file_gets_the_remote_time() {
    let body = b"abc".to_vec();
    let server = FaultServer::start([("/abc.txt", Route::new(body))]);
    let sums = [
        "md5=900150983cd24fb0d6963f7d28e17f72",
        "sha1=a9993e364706816aba3e25717850c26c9cd0d89d",
        "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sha512=ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ];
    for sum in sums {
        let sum: Checksum = sum.parse().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut dl = Downloader::new(config());
        let req = Request::new(server.url("/abc.txt")).dir(dir.path().to_str().unwrap());
        dl.enqueue(req.clone().checksum(sum.clone()));
        let results = dl.download().await;
        assert!(results.is_ok(), "{sum}: {results}");
        // The fault server's Last-Modified: Wed, 21 Oct 2015 07:28:00 GMT.
        let t = mtime(&dir.path().join("abc.txt"));
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(t, want, "{sum}");

        // One hex digit off.
        let mut hex = sum.hex().to_owned();
        let last = if hex.ends_with('0') { "1" } else { "0" };
        hex.replace_range(hex.len() - 1.., last);
        let wrong = Checksum::new(sum.algo(), &hex).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut dl = Downloader::new(config());
        dl.enqueue(req.dir(dir.path().to_str().unwrap()).checksum(wrong));
        let results = dl.download().await;
        assert_eq!(results.errors.len(), 1, "{sum}: {results}");
        assert_eq!(results.errors[0].error.kind(), ErrorKind::Checksum);
        assert!(list_dir(dir.path()).is_empty());
    }
    assert_eq!(Algo::of_hex_len(128), Some(Algo::Sha512));
}

fn nginx() -> Servers {
    Servers::start(Which::http_only()).expect("start nginx (apt-get install nginx-light)")
}

fn access_log(servers: &Servers) -> Vec<String> {
    let text = std::fs::read_to_string(servers.root_dir().join("nginx/access.log"));
    text.unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

// --checksum ALGO=HEX, and --checksum-file read locally (GNU lines) or
// fetched from the server (BSD lines): matched by name, a mismatch fails
// that file alone.
#[test]
fn checksum_flags_against_nginx() {
    let servers = nginx();
    let a = random_bytes(200_000, 74);
    let b = random_bytes(3 << 20, 75);
    servers.write_file("rel/a.bin", &a);
    servers.write_file("rel/b.bin", &b);
    let (ua, ub) = (servers.http_url("rel/a.bin"), servers.http_url("rel/b.bin"));

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let md5_of_b = "--checksum=md5=00000000000000000000000000000000";
    let result = run_pymatris(["--quiet", "--dir", dir, md5_of_b, &ub]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(stderr(&result).contains("md5 is"), "{}", stderr(&result));
    assert!(list_dir(out.path()).is_empty());

    // GNU format, local: b's entry is wrong.
    let list = out.path().join("SHA256SUMS");
    let gnu = format!(
        "{}  ./rel/a.bin\n{} *b.bin\n",
        sha256_hex(&a),
        sha256_hex(b"not b")
    );
    std::fs::write(&list, gnu).unwrap();
    let dl = out.path().join("gnu");
    let sums = format!("--checksum-file={}", list.display());
    let result = run_pymatris([
        "--quiet",
        "--json",
        "--dir",
        dl.to_str().unwrap(),
        &sums,
        &ua,
        &ub,
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let json = json(&result);
    assert_eq!(json["errors"][0]["kind"], "Checksum", "{json:#}");
    assert_eq!(list_dir(&dl), ["a.bin"]);

    // BSD format, fetched first; a URL it does not name gets a warning.
    servers.write_file("rel/c.bin", b"c");
    let bsd = format!(
        "SHA256 (a.bin) = {}\nSHA256 (b.bin) = {}\n",
        sha256_hex(&a),
        sha256_hex(&b)
    );
    servers.write_file("rel/SHA256SUMS", bsd.as_bytes());
    let dl = out.path().join("bsd");
    let sums = format!("--checksum-file={}", servers.http_url("rel/SHA256SUMS"));
    let uc = servers.http_url("rel/c.bin");
    let result = run_pymatris([
        "--quiet",
        "--dir",
        dl.to_str().unwrap(),
        &sums,
        &ua,
        &ub,
        &uc,
    ]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(list_dir(&dl), ["a.bin", "b.bin", "c.bin"]);
    assert!(
        stderr(&result).contains("for 1 file, not verified: c.bin"),
        "{}",
        stderr(&result)
    );

    let missing = format!("--checksum-file={}", servers.http_url("rel/NOSUMS"));
    let result = run_pymatris(["--quiet", "--dir", dl.to_str().unwrap(), &missing, &ua]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("checksum file"),
        "{}",
        stderr(&result)
    );
}

// A long list of URLs the checksum file does not name: one warning line
// with the count and the first names, not one per URL; --verbose tells
// each.
#[test]
fn urls_without_a_checksum_make_one_warning() {
    let names: Vec<String> = (0..40).map(|i| format!("/u{i:02}.bin")).collect();
    let server = FaultServer::start(
        names
            .iter()
            .map(|n| (n.as_str(), Route::new(n.as_bytes().to_vec()))),
    );
    let dir = tempfile::tempdir().unwrap();
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{}  u00.bin\n", sha256_hex(b"/u00.bin"))).unwrap();
    let list = dir.path().join("urls");
    let urls: Vec<String> = names.iter().map(|n| server.url(n)).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = dir.path().join("out");
    let sums = format!("--checksum-file={}", sums.display());
    let args = [
        "--dir",
        out.to_str().unwrap(),
        &sums,
        "-i",
        list.to_str().unwrap(),
    ];

    let result = run_pymatris([&["--quiet"][..], &args[..]].concat());
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let text = stderr(&result);
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("checksum")).collect();
    assert_eq!(
        warnings,
        [format!(
            "pymatris: warning: no checksum in {} for 39 files, not verified: \
             u01.bin, u02.bin, u03.bin, u04.bin, u05.bin and 34 more",
            &sums["--checksum-file=".len()..]
        )],
        "{text}"
    );
    assert_eq!(list_dir(&out).len(), 40);

    let out = dir.path().join("verbose");
    let args = [
        "--dir",
        out.to_str().unwrap(),
        &sums,
        "-i",
        list.to_str().unwrap(),
    ];
    let result = run_pymatris([&["--verbose"][..], &args[..]].concat());
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let text = stderr(&result);
    let each = text
        .lines()
        .filter(|l| l.contains("no checksum for u"))
        .count();
    assert_eq!(each, 39, "{text}");
}

// The file gets nginx's Last-Modified; -N then costs one request and no
// body (a 304) while the file is unchanged, and replaces it (no numbered
// copy) once the server's is newer.
#[test]
fn remote_time_and_timestamping_against_nginx() {
    let servers = nginx();
    let body = random_bytes(3 << 20, 76);
    let path = servers.write_file("ts/t.bin", &body);
    set_mtime(&path, long_ago());
    let url = servers.http_url("ts/t.bin");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();

    let result = run_pymatris(["--quiet", "--dir", dir, &url]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let local = out.path().join("t.bin");
    assert_eq!(mtime(&local), long_ago());

    let before = access_log(&servers).len();
    let result = run_pymatris(["--json", "-N", "--dir", dir, &url]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let json = json(&result);
    assert_eq!(json["success"][0]["up_to_date"], true, "{json:#}");
    assert!(
        stderr(&result).contains("1 file(s) up to date"),
        "{}",
        stderr(&result)
    );
    let log = access_log(&servers)[before..].to_vec();
    assert_eq!(log.len(), 1, "{log:#?}");
    assert!(log[0].contains("\" 304 "), "{log:#?}");
    assert_eq!(list_dir(out.path()), ["t.bin"]);

    // Newer on the server: fetched again, over the old copy.
    let newer = random_bytes(1 << 20, 77);
    std::fs::write(&path, &newer).unwrap();
    let t = long_ago() + Duration::from_secs(86_400);
    set_mtime(&path, t);
    let result = run_pymatris(["--quiet", "-N", "--dir", dir, &url]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(list_dir(out.path()), ["t.bin"]);
    assert!(std::fs::read(&local).unwrap() == newer);
    assert_eq!(mtime(&local), t);

    // --no-remote-time: the time of the download.
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().to_str().unwrap();
    let result = run_pymatris(["--quiet", "--no-remote-time", "--dir", dir, &url]);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let age = SystemTime::now().duration_since(mtime(&fresh.path().join("t.bin")));
    assert!(age.unwrap_or_default() < Duration::from_secs(600));
}

/// Over FTP and SFTP the time comes from MDTM and the file's attributes,
/// and -N compares size and time from a stat before any transfer.
fn remote_time_and_timestamping(servers: &Servers, url: &str, rel: &str, extra: &[&str]) {
    let body = random_bytes(300_000, 78);
    let path = servers.write_file(rel, &body);
    set_mtime(&path, long_ago());
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let mut args = vec!["--quiet", "--json", "--dir", dir];
    args.extend_from_slice(extra);
    args.push(url);
    let result = run_pymatris(&args);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let name = rel.rsplit('/').next().unwrap();
    let local = out.path().join(name);
    assert_eq!(mtime(&local), long_ago());

    // Marked so that a download would show: -N leaves it alone.
    std::fs::write(&local, vec![b'x'; body.len()]).unwrap();
    set_mtime(&local, long_ago());
    args.insert(0, "-N");
    let result = run_pymatris(&args);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(json(&result)["success"][0]["up_to_date"], true);
    assert!(std::fs::read(&local).unwrap() == vec![b'x'; body.len()]);

    // Older locally: fetched again, over it.
    set_mtime(&local, long_ago() - Duration::from_secs(60));
    let result = run_pymatris(&args);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    assert_eq!(json(&result)["success"][0]["up_to_date"], false);
    assert!(std::fs::read(&local).unwrap() == body);
    assert_eq!(list_dir(out.path()), [name]);
}

#[test]
fn remote_time_and_timestamping_against_vsftpd() {
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    let url = servers.ftp_url("ts/f.bin");
    remote_time_and_timestamping(&servers, &url, "ts/f.bin", &[]);
}

#[test]
fn remote_time_and_timestamping_against_sshd() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let url = servers.sftp_url("ts/s.bin");
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    let extra = ["--identity", &key, "--known-hosts", &kh];
    remote_time_and_timestamping(&servers, &url, "ts/s.bin", &extra);
}

// The ETag of a file fetched with timestamping is kept with it: the next
// run asks by tag too (If-None-Match) while the file is as it was left,
// and never once it changed locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamping_asks_by_the_etag_it_kept() {
    let body = random_bytes(50 * KIB, 79);
    let server = FaultServer::start([("/e.bin", Route::new(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let stamping = || config().timestamping(true);
    let results = download(stamping(), server.url("/e.bin"), dir.path()).await;
    assert!(
        results.is_ok() && !results.success[0].up_to_date,
        "{results}"
    );

    let results = download(stamping(), server.url("/e.bin"), dir.path()).await;
    assert!(
        results.is_ok() && results.success[0].up_to_date,
        "{results}"
    );
    let header = |i: usize, name: &str| {
        let log = server.requests("/e.bin");
        let found = log[i].headers.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.clone())
    };
    let etag = format!("\"{}-{}\"", body.len(), &sha256_hex(&body)[..16]);
    assert_eq!(
        header(1, "if-none-match"),
        Some(etag),
        "{:?}",
        server.requests("/e.bin")[1]
    );
    assert!(header(1, "if-modified-since").is_some());

    // Changed here, kept as new: no tag sent, and fetched again (the size
    // differs).
    let local = dir.path().join("e.bin");
    std::fs::write(&local, b"edited").unwrap();
    let results = download(stamping(), server.url("/e.bin"), dir.path()).await;
    assert!(
        results.is_ok() && !results.success[0].up_to_date,
        "{results}"
    );
    assert_eq!(header(2, "if-none-match"), None);
    assert!(std::fs::read(&local).unwrap() == body);
}
