//! The CLI against a real nginx on loopback (HTTP and HTTPS with a CA the
//! harness generates): whole batches byte for byte, parts, TLS trust, a bad
//! URL among good ones, and bounded memory on a 1 GiB file.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pymatris_harness::{Servers, Which};
use pymatris_tests::{list_dir, pymatris_bin, run_pymatris, sha256_hex};

fn nginx() -> Servers {
    Servers::start(Which::http_only()).expect("start nginx (apt-get install nginx-light)")
}

fn access_log(servers: &Servers) -> String {
    std::fs::read_to_string(servers.root_dir().join("nginx/access.log")).unwrap_or_default()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_mixed_batch_lands_byte_for_byte_and_large_files_come_in_parts() {
    let servers = nginx();
    let big = std::fs::read(servers.write_random("big.bin", 24 << 20, 1)).unwrap();
    // The big files come last: they start as the small ones finish, with
    // connections to spare. (Started first, they would run on one
    // connection each while the small files kept the others busy, and get
    // more only if still running when those were done.)
    let mut urls = Vec::new();
    let mut expected = Vec::new();
    for i in 0..40 {
        let name = format!("small-{i:02}.txt");
        let bytes = format!("file {i}\n").repeat(i * 10 + 1);
        servers.write_file(&format!("sub/{name}"), bytes.as_bytes());
        urls.push(servers.http_url(&format!("sub/{name}")));
        expected.push((name, sha256_hex(bytes.as_bytes())));
    }
    servers.write_file("empty.bin", b"");
    urls.push(servers.http_url("empty.bin"));
    expected.push(("empty.bin".to_owned(), sha256_hex(b"")));
    urls.extend([servers.http_url("big.bin"), servers.https_url("big.bin")]);
    expected.extend([
        ("big.bin".to_owned(), sha256_hex(&big)),
        ("big.1.bin".to_owned(), sha256_hex(&big)),
    ]);

    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out");
    let ca = servers.ca_cert().to_str().unwrap().to_owned();
    let mut args = vec![
        "--dir".to_owned(),
        out.to_str().unwrap().to_owned(),
        "--max-splits".into(),
        "4".into(),
        "--min-split-size".into(),
        "1M".into(),
        "--ca-cert".into(),
        ca,
        "--json".into(),
    ];
    args.extend(urls.iter().cloned());
    let result = run_pymatris(&args);
    assert_eq!(result.status.code(), Some(0), "stderr: {}", stderr(&result));

    expected.sort();
    let mut got: Vec<(String, String)> = list_dir(&out)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            (name, sha256_hex(&bytes))
        })
        .collect();
    got.sort();
    assert_eq!(
        got, expected,
        "every file, and nothing else (no temp files)"
    );

    // stderr is a pipe here, not a terminal: no progress bars on it.
    let err = stderr(&result);
    assert!(
        !err.contains("ETA") && !err.contains('█'),
        "progress bars on a pipe: {err}"
    );

    let json: serde_json::Value = serde_json::from_slice(&result.stdout).expect("--json output");
    assert_eq!(json["success"].as_array().unwrap().len(), urls.len());
    assert!(json["errors"].as_array().unwrap().is_empty());

    // The big file came over HTTP in ranged parts: several 206 answers.
    let ranged = access_log(&servers)
        .lines()
        .filter(|l| l.contains("GET /big.bin") && l.contains("\" 206 "))
        .count();
    assert!(
        ranged >= 4,
        "expected >= 4 ranged requests for big.bin over http+https, log:\n{}",
        access_log(&servers)
    );
}

#[test]
fn a_bad_url_fails_alone_with_its_cause_and_exit_status_1() {
    let servers = nginx();
    servers.write_file("a.txt", b"aaa");
    servers.write_file("b.txt", b"bbb");
    let out = tempfile::tempdir().unwrap();
    let result = run_pymatris([
        "--quiet",
        "--dir",
        out.path().to_str().unwrap(),
        &servers.http_url("a.txt"),
        &servers.http_url("missing.txt"),
        &servers.http_url("b.txt"),
    ]);
    assert_eq!(result.status.code(), Some(1));
    assert_eq!(list_dir(out.path()), ["a.txt", "b.txt"]);
    let err = stderr(&result);
    assert!(
        err.contains(&servers.http_url("missing.txt")),
        "stderr names the URL: {err}"
    );
    assert!(err.contains("404"), "stderr names the cause: {err}");
}

#[test]
fn https_needs_a_trusted_certificate() {
    let servers = nginx();
    servers.write_file("t.txt", b"tls");
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let url = servers.https_url("t.txt");

    let untrusted = run_pymatris(["--quiet", "--max-tries", "3", "--dir", dir, &url]);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        stderr(&untrusted).contains("TLS"),
        "stderr: {}",
        stderr(&untrusted)
    );
    // The error says what to do about it.
    assert!(
        stderr(&untrusted).contains("--ca-cert"),
        "stderr: {}",
        stderr(&untrusted)
    );
    assert!(
        list_dir(out.path()).is_empty(),
        "nothing written: {:?}",
        list_dir(out.path())
    );

    let insecure = run_pymatris(["--quiet", "--insecure", "--dir", dir, &url]);
    assert_eq!(
        insecure.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&insecure)
    );
    assert_eq!(std::fs::read(out.path().join("t.txt")).unwrap(), b"tls");
}

#[test]
fn input_file_from_stdin_with_checksums() {
    let servers = nginx();
    servers.write_file("x.bin", b"x-bytes");
    servers.write_file("y.bin", b"y-bytes");
    let out = tempfile::tempdir().unwrap();
    let list = format!(
        "# two files\n{} sha256={}\n\n{} {}\n",
        servers.http_url("x.bin"),
        sha256_hex(b"x-bytes"),
        servers.http_url("y.bin"),
        sha256_hex(b"not y"),
    );
    let mut child = Command::new(pymatris_bin())
        .args(["--quiet", "-i", "-", "--dir", out.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert_eq!(result.status.code(), Some(1));
    assert_eq!(
        list_dir(out.path()),
        ["x.bin"],
        "the file with the wrong checksum is not kept"
    );
    assert!(
        stderr(&result).contains("checksum"),
        "stderr: {}",
        stderr(&result)
    );
}

/// Peak resident memory of a running process, in KiB (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn same_contents(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

#[test]
fn a_1_gib_download_keeps_peak_memory_under_64_mib() {
    let servers = nginx();
    let source = servers.write_random("huge.bin", 1 << 30, 7);
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(pymatris_bin())
        .args([
            "--quiet",
            "--dir",
            out.path().to_str().unwrap(),
            &servers.http_url("huge.bin"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "stderr: {err}");
    assert!(peak > 0, "could not read the peak RSS");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(same_contents(&source, &out.path().join("huge.bin")));
}

#[test]
fn max_speed_caps_the_whole_batch() {
    let servers = nginx();
    servers.write_random("a.bin", 1536 << 10, 3);
    servers.write_random("b.bin", 1536 << 10, 4);
    let out = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let result = run_pymatris([
        "--quiet",
        "--max-speed",
        "1M",
        "--dir",
        out.path().to_str().unwrap(),
        &servers.http_url("a.bin"),
        &servers.http_url("b.bin"),
    ]);
    let took = started.elapsed();
    assert_eq!(result.status.code(), Some(0), "stderr: {}", stderr(&result));
    assert_eq!(list_dir(out.path()), ["a.bin", "b.bin"]);
    // 3 MiB at 1 MiB/s, both files together: about 3 s. Only a lower bound
    // is asserted; a busy machine can only make it slower.
    assert!(
        took >= Duration::from_millis(2500),
        "3 MiB took {took:?} under a 1 MiB/s cap"
    );
}

/// The headers of the request `server` received for `path`, by name.
fn header_of(
    server: &pymatris_tests::fault_server::FaultServer,
    path: &str,
    name: &str,
) -> Vec<String> {
    server
        .requests(path)
        .iter()
        .flat_map(|r| r.headers.iter())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

// After a redirect to another origin (here another port), neither the
// user's -H headers nor the URL's credentials nor a Cookie follow, unless
// --location-trusted says they may; on the same origin they all do.
#[test]
fn secret_headers_stay_with_their_origin_unless_location_trusted() {
    use pymatris_tests::fault_server::{FaultServer, Route};
    let body = pymatris_tests::random_bytes(5_000, 41);
    for trusted in [false, true] {
        let other = FaultServer::start([("/file.bin", Route::new(body.clone()))]);
        let origin = FaultServer::start([
            ("/away", Route::redirect(302, other.url("/file.bin"))),
            ("/here", Route::redirect(301, "/same.bin")),
            ("/same.bin", Route::new(body.clone())),
        ]);
        let out = tempfile::tempdir().unwrap();
        let with_user = |url: String| url.replace("http://", "http://bob:s3cret@");
        let mut args = vec![
            "--quiet".to_owned(),
            "--dir".into(),
            out.path().to_str().unwrap().into(),
            "-H".into(),
            "X-Api-Key: k3y-SECRET".into(),
            "-H".into(),
            "Cookie: session=c00kie".into(),
            with_user(origin.url("/away")),
            with_user(origin.url("/here")),
        ];
        if trusted {
            args.push("--location-trusted".into());
        }
        let run = run_pymatris(&args);
        assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));

        // The same origin gets everything, trusted or not.
        assert!(!header_of(&origin, "/same.bin", "x-api-key").is_empty());
        assert!(!header_of(&origin, "/same.bin", "cookie").is_empty());
        assert!(!header_of(&origin, "/same.bin", "authorization").is_empty());
        assert!(!header_of(&origin, "/away", "x-api-key").is_empty());

        for name in ["x-api-key", "cookie", "authorization"] {
            let seen = header_of(&other, "/file.bin", name);
            assert!(!other.requests("/file.bin").is_empty());
            if trusted {
                assert!(!seen.is_empty(), "--location-trusted: no {name} sent");
            } else {
                assert!(seen.is_empty(), "{name} went to another origin: {seen:?}");
            }
        }
    }
}
