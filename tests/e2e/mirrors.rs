//! Several URLs of one file (`Request::mirrors`, `--mirror`, TAB-separated
//! URLs in `-i`): parts spread over the mirrors, a mirror that dies in the
//! middle of the file left to the others, a mirror serving another
//! version refused, a first URL that fails at once replaced by a mirror,
//! every URL failing in one error that names each; each byte fetched
//! about once.

use std::path::Path;
use std::time::{Duration, SystemTime};

use pymatris_core::{Config, Downloader, Request, Results};
use pymatris_harness::{Server, Servers, Shape, Which};
use pymatris_tests::fault_server::{Behaviour, FaultServer, LAST_MODIFIED_UNIX, RequestLog, Route};
use pymatris_tests::{random_bytes, run_pymatris};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn config() -> Config {
    Config::default()
        .max_tries(3)
        .max_splits(4)
        .min_split_size(256 * KIB as u64)
        .timeout(Duration::from_secs(5))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
}

async fn download(config: Config, request: Request) -> Results {
    let mut dl = Downloader::new(config);
    dl.enqueue(request);
    dl.download().await
}

fn dir_of(tmp: &tempfile::TempDir) -> String {
    tmp.path().to_str().expect("UTF-8 temp dir").to_owned()
}

/// Gives a file on a real server the modification time the fault server
/// announces: the same version, as a mirror kept by rsync would have it.
fn same_time_as_fault_server(path: &Path) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED_UNIX);
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(time).expect("set mtime");
}

fn show(log: &[RequestLog]) -> String {
    (log.iter())
        .map(|r| {
            format!(
                "\n  conn {} range={:?} -> {} ({} bytes)",
                r.connection, r.range, r.status, r.body_bytes
            )
        })
        .collect()
}

/// The one success of `results`, its bytes `body`, and its URL the
/// request's first.
fn assert_landed(results: &Results, tmp: &tempfile::TempDir, name: &str, body: &[u8], url: &str) {
    assert!(
        results.errors.is_empty() && results.success.len() == 1,
        "{results}"
    );
    assert_eq!(results.success[0].url, url);
    let got = std::fs::read(tmp.path().join(name)).expect("the file");
    assert!(got == body, "wrong bytes in {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_dies_mid_file_leaves_the_rest_to_the_others() {
    const SIZE: usize = 8 * MIB;
    const DIES_AFTER: u64 = 3 * MIB as u64 / 2;
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let body = random_bytes(SIZE, 71);
    let path = servers.write_file("mirror/big.bin", &body);
    same_time_as_fault_server(&path);
    let dying = FaultServer::start([(
        "/big.bin",
        Route::new(body.clone()).behaviour(Behaviour::DieAfter { bytes: DIES_AFTER }),
    )]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = dying.url("/big.bin");
    let nginx = servers.http_url("mirror/big.bin");
    let request = Request::new(&first)
        .dir(dir_of(&tmp))
        .mirrors([nginx.clone()]);
    let results = download(config(), request).await;
    let log = dying.requests("/big.bin");
    assert_landed(&results, &tmp, "big.bin", &body, &first);
    // The dying server served its share, then nothing.
    let from_dying = dying.body_bytes("/big.bin");
    assert_eq!(from_dying, DIES_AFTER, "{}", show(&log));
    assert!(log.iter().any(|r| r.status == 0), "{}", show(&log));
    // The other served the rest, about once.
    let from_nginx = servers.bytes_sent(Server::Nginx, "mirror/big.bin", SIZE as u64 - DIES_AFTER);
    assert!(
        from_nginx >= SIZE as u64 - DIES_AFTER && from_dying + from_nginx < SIZE as u64 * 5 / 4,
        "{from_dying} + {from_nginx} bytes served for a file of {SIZE}{}",
        show(&log)
    );
    assert_eq!(results.success[0].served_by, [first, nginx]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_spread_over_the_mirrors_each_byte_fetched_about_once() {
    const SIZE: usize = 4 * MIB;
    let body = random_bytes(SIZE, 72);
    let a = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let b = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let request = Request::new(a.url("/f.bin"))
        .dir(dir_of(&tmp))
        .mirrors([b.url("/f.bin")]);
    let results = download(config(), request).await;
    assert_landed(&results, &tmp, "f.bin", &body, &a.url("/f.bin"));
    let (from_a, from_b) = (a.body_bytes("/f.bin"), b.body_bytes("/f.bin"));
    let log = format!(
        "{}\n---{}",
        show(&a.requests("/f.bin")),
        show(&b.requests("/f.bin"))
    );
    assert!(from_a > 0 && from_b > 0, "{from_a} and {from_b}:{log}");
    assert!(
        from_a + from_b < SIZE as u64 * 9 / 8,
        "{from_a} + {from_b} bytes served for a file of {SIZE}:{log}"
    );
    assert_eq!(results.success[0].served_by.len(), 2, "{log}");
}

/// Another size, or another modification time (the same bytes copied
/// without their time), is another version: never used, and the file
/// comes whole from the good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serving_another_version_is_refused() {
    const SIZE: usize = 4 * MIB;
    let body = random_bytes(SIZE, 73);
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    // Same bytes, but the time of this test run.
    servers.write_file("mirror/f.bin", &body);
    let good = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let bigger = FaultServer::start([("/f.bin", Route::new(random_bytes(SIZE + 1, 74)))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = good.url("/f.bin");
    let request = Request::new(&first)
        .dir(dir_of(&tmp))
        .mirrors([bigger.url("/f.bin"), servers.http_url("mirror/f.bin")]);
    let results = download(config(), request).await;
    assert_landed(&results, &tmp, "f.bin", &body, &first);
    // Asked once (or once per connection that picked it at the same
    // moment), then never again.
    let asked = bigger.hits("/f.bin");
    assert!(
        (1..=3).contains(&asked),
        "{asked}:{}",
        show(&bigger.requests("/f.bin"))
    );
    // The file came from the good one alone (a request cut short when a
    // connection moves on may have sent some bytes twice).
    let from_good = good.body_bytes("/f.bin");
    let log = show(&good.requests("/f.bin"));
    assert!(
        (SIZE as u64..SIZE as u64 * 5 / 4).contains(&from_good),
        "{from_good}:{log}"
    );
    assert_eq!(results.success[0].served_by, [first]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_url_that_fails_at_once_leaves_the_file_to_a_mirror() {
    let body = random_bytes(MIB, 75);
    let mirror = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let missing = FaultServer::start([("/other", Route::new(&b"x"[..]))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = missing.url("/f.bin");
    let request = Request::new(&first)
        .dir(dir_of(&tmp))
        .mirrors(["not a url".to_owned(), mirror.url("/f.bin")]);
    let results = download(config(), request).await;
    // Results name the file by the URL it was asked for, and say which
    // served it.
    assert_landed(&results, &tmp, "f.bin", &body, &first);
    assert_eq!(results.success[0].served_by, [mirror.url("/f.bin")]);
    assert_eq!(missing.hits("/f.bin"), 1, "a 404 is not retried");
}

/// A first URL that answers with an error worth retrying (a 503) is not
/// retried while a mirror is left to ask: the mirror is asked at once,
/// as aria2 does; the last URL left gets every try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_is_asked_before_the_first_url_is_retried() {
    let body = random_bytes(MIB, 82);
    let busy = FaultServer::start([("/f.bin", Route::status(503))]);
    let mirror = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = busy.url("/f.bin");
    let request = Request::new(&first)
        .dir(dir_of(&tmp))
        .mirrors([mirror.url("/f.bin")]);
    let results = download(config(), request).await;
    assert_landed(&results, &tmp, "f.bin", &body, &first);
    assert_eq!(busy.hits("/f.bin"), 1, "{}", show(&busy.requests("/f.bin")));

    let request = Request::new(mirror.url("/gone.bin"))
        .dir(dir_of(&tmp))
        .mirrors([busy.url("/f.bin")]);
    let results = download(config(), request).await;
    assert_eq!(results.errors.len(), 1, "{results}");
    assert_eq!(busy.hits("/f.bin"), 1 + 3, "the last URL has its tries");
}

/// When every URL fails, at once or in the middle of the file, the one
/// error of the file says what each did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mirror_down_is_one_error_naming_each() {
    let missing = FaultServer::start([("/other", Route::new(&b"x"[..]))]);
    let refusing = FaultServer::start([("/f.bin", Route::status(503))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (missing.url("/f.bin"), refusing.url("/f.bin"));
    let request = Request::new(&a).dir(dir_of(&tmp)).mirrors([b.clone()]);
    let results = download(config(), request).await;
    assert_eq!(results.errors.len(), 1, "{results}");
    assert_eq!(results.errors[0].url, a);
    let error = results.errors[0].error.chain();
    assert!(error.contains(&a) && error.contains("404"), "{error}");
    assert!(error.contains(&b) && error.contains("503"), "{error}");

    const SIZE: usize = 4 * MIB;
    let body = random_bytes(SIZE, 78);
    let die = |bytes| Route::new(body.clone()).behaviour(Behaviour::DieAfter { bytes });
    let x = FaultServer::start([("/g.bin", die(MIB as u64))]);
    let y = FaultServer::start([("/g.bin", die(MIB as u64 / 2))]);
    let (x_url, y_url) = (x.url("/g.bin"), y.url("/g.bin"));
    let request = Request::new(&x_url)
        .dir(dir_of(&tmp))
        .mirrors([y_url.clone()]);
    let results = download(config(), request).await;
    assert_eq!(results.errors.len(), 1, "{results}");
    let error = results.errors[0].error.chain();
    assert!(error.contains(&x_url) && error.contains(&y_url), "{error}");
    assert!(!tmp.path().join("g.bin").exists());
}

/// A mirror may speak another protocol: an FTP or an SFTP copy of an HTTP
/// file (the same file, one data directory, its time told by
/// `Last-Modified` and `MDTM` alike) serves some of its parts. The first
/// URL is nginx behind a link of 1 MB/s per connection, so the file cannot
/// end before the mirror has logged in, whatever the machine's load.
#[test]
fn ftp_and_sftp_mirrors_of_an_http_file_serve_their_parts() {
    const SIZE: usize = 8 * MIB;
    let servers = Servers::start(Which::all()).expect("start nginx, vsftpd and sshd");
    let body = random_bytes(SIZE, 79);
    servers.write_file("mixed/f.bin", &body);
    let slow = servers
        .shaped(servers.http_port(), Shape::new().rate(Some(1_000_000)))
        .expect("shaping proxy");
    let first = servers.http_url("mixed/f.bin").replace(
        &format!(":{}/", servers.http_port()),
        &format!(":{}/", slow.port()),
    );
    let key = servers.ssh_client_key().to_str().unwrap().to_owned();
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    for (scheme, mirror) in [
        ("ftp", servers.ftp_url("mixed/f.bin")),
        ("sftp", servers.sftp_url("mixed/f.bin")),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = dir_of(&tmp);
        let before = slow.counters();
        let out = run_pymatris([
            "--json",
            "--max-splits",
            "4",
            "--min-split-size",
            "256K",
            "--identity",
            &key,
            "--known-hosts",
            &kh,
            "--dir",
            &dir,
            "--mirror",
            &mirror,
            &first,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{scheme}: {stderr}");
        assert!(
            std::fs::read(tmp.path().join("f.bin")).unwrap() == body,
            "{scheme}: wrong bytes"
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
        let served_by = &json["success"][0]["served_by"];
        assert_eq!(served_by[0], first.as_str(), "{scheme}: {json}");
        assert!(
            served_by[1]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{scheme}://"))),
            "{scheme}: {json}"
        );
        // What nginx put on the link was less than the file: the rest of
        // its exact bytes came from the mirror.
        let from_nginx = slow.counters().since(&before).to_client;
        assert!(
            from_nginx < SIZE as u64,
            "{scheme}: nginx sent {from_nginx} bytes of {SIZE}"
        );
    }
}

/// `-c` resumes a file from its mirrors: a run that stopped with part of
/// the file on disk, its first URL gone since, ends from the mirror,
/// which sends about the missing bytes alone.
#[test]
fn continue_resumes_from_a_mirror_when_the_first_url_is_gone() {
    const SIZE: usize = 8 * MIB;
    const DIES_AFTER: u64 = 3 * MIB as u64;
    let body = random_bytes(SIZE, 83);
    let dying = FaultServer::start([(
        "/f.bin",
        Route::new(body.clone()).behaviour(Behaviour::DieAfter { bytes: DIES_AFTER }),
    )]);
    let mirror = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = dir_of(&tmp);
    let first = dying.url("/f.bin");
    let split = ["--max-splits", "4", "--min-split-size", "256K"];
    let stopped = run_pymatris(
        [
            &["-c", "--max-tries", "1", "--dir", &dir][..],
            &split,
            &[&first],
        ]
        .concat(),
    );
    assert_eq!(
        stopped.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let part = tmp.path().join("f.bin.pymatris-part");
    assert!(part.exists(), "the first run kept no part");
    // What the first run kept (the server sent more into the sockets
    // than was read before the run gave up).
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("f.bin.pymatris-part.state")).unwrap(),
    )
    .unwrap();
    let have: u64 = (state["spans"].as_array().unwrap().iter())
        .map(|s| s[1].as_u64().unwrap() - s[0].as_u64().unwrap())
        .sum();
    assert!(have > 0 && have < SIZE as u64, "{state}");
    assert!(!tmp.path().join("f.bin").exists());

    let resumed = run_pymatris(
        [
            &["-c", "--json", "--dir", &dir][..],
            &split,
            &["--mirror", &mirror.url("/f.bin"), &first],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        std::fs::read(tmp.path().join("f.bin")).unwrap() == body,
        "wrong bytes"
    );
    let json: serde_json::Value = serde_json::from_slice(&resumed.stdout).expect("--json");
    assert_eq!(json["success"][0]["url"], first.as_str(), "{json}");
    assert_eq!(
        json["success"][0]["served_by"],
        serde_json::json!([mirror.url("/f.bin")]),
        "{json}"
    );
    // The mirror sends about the missing bytes, not the file.
    let from_mirror = mirror.body_bytes("/f.bin");
    let missing = SIZE as u64 - have;
    assert!(
        from_mirror >= missing && from_mirror <= missing + missing / 20 + 256 * KIB as u64,
        "the mirror sent {from_mirror} bytes of the {missing} missing:{}",
        show(&mirror.requests("/f.bin"))
    );
}

#[test]
fn the_cli_takes_mirrors_and_says_which_it_refused() {
    let body = random_bytes(2 * MIB, 76);
    let good = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let other = FaultServer::start([("/f.bin", Route::new(random_bytes(MIB, 77)))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run_pymatris([
        "--verbose",
        "--json",
        "--max-splits",
        "4",
        "--min-split-size",
        "256K",
        "--dir",
        &dir_of(&tmp),
        "--mirror",
        &other.url("/f.bin"),
        &good.url("/f.bin"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read(tmp.path().join("f.bin")).unwrap(), body);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json");
    let served_by = &json["success"][0]["served_by"];
    assert_eq!(served_by, &serde_json::json!([good.url("/f.bin")]));
    // Refused on its first answer, whichever part asked: another size in
    // the answer, or a range past its end.
    if other.hits("/f.bin") > 0 {
        let warned = (stderr.lines()).find(|l| l.contains("no longer used as a mirror"));
        assert!(
            warned.is_some_and(|l| l.contains(&other.url("/f.bin"))),
            "{stderr}"
        );
    }
    // Without --verbose too, as it happens: on a line of its own, or as an
    // event of --progress json.
    for progress in ["none", "json"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = run_pymatris([
            "--progress",
            progress,
            "--max-splits",
            "4",
            "--min-split-size",
            "256K",
            "--dir",
            &dir_of(&tmp),
            "--mirror",
            &other.url("/f.bin"),
            &good.url("/f.bin"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let said = match progress {
            "none" => (stderr.lines())
                .any(|l| l.starts_with("pymatris: ") && l.contains("no longer used as a mirror")),
            _ => (stderr.lines())
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|e| e["event"] == "mirror_dropped" && e["url"] == other.url("/f.bin")),
        };
        // The second connection goes to the mirror with the fewest, which
        // is then refused.
        assert!(said, "{progress}: {stderr}");
    }
    // A mirror needs the one URL it is a mirror of.
    let out = run_pymatris(["--mirror", &other.url("/f.bin"), "http://a/1", "http://a/2"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_pymatris(["--mirror", "gopher://a/1", "http://a/1"]);
    assert_eq!(out.status.code(), Some(2));
}

/// aria2's list format: a file's URLs on one line, TAB-separated, with
/// its option lines under them; `--jsonl` names the URLs that served it.
#[test]
fn an_input_list_line_with_tabs_is_one_file_from_its_mirrors() {
    const SIZE: usize = 4 * MIB;
    let body = random_bytes(SIZE, 80);
    let plain = random_bytes(KIB, 81);
    let a = FaultServer::start([
        ("/f.bin", Route::new(body.clone())),
        ("/plain.bin", Route::new(plain.clone())),
    ]);
    let b = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let list = tmp.path().join("list.txt");
    let text = format!(
        "{}\t{}\n  out=named.bin\n{}\n",
        a.url("/f.bin"),
        b.url("/f.bin"),
        a.url("/plain.bin")
    );
    std::fs::write(&list, text).unwrap();
    let out_dir = tmp.path().join("out");
    let out = run_pymatris([
        "--max-splits",
        "4",
        "--min-split-size",
        "256K",
        "--dir",
        out_dir.to_str().unwrap(),
        "--jsonl",
        "-",
        "-i",
        list.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read(out_dir.join("named.bin")).unwrap(), body);
    assert_eq!(std::fs::read(out_dir.join("plain.bin")).unwrap(), plain);
    assert!(a.body_bytes("/f.bin") > 0 && b.body_bytes("/f.bin") > 0);
    let lines: Vec<serde_json::Value> = (String::from_utf8_lossy(&out.stdout).lines())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mirrored = lines.iter().find(|l| l["line"] == 1).expect("line 1");
    assert_eq!(mirrored["url"], a.url("/f.bin"));
    assert_eq!(mirrored["served_by"].as_array().map(Vec::len), Some(2));
    let single = lines.iter().find(|l| l["line"] == 3).expect("line 3");
    assert!(single.get("served_by").is_none(), "{single}");
}
