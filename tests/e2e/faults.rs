//! Faults a real server will not produce on demand, served by the
//! in-process [`FaultServer`]: broken and stalled transfers, `503`s,
//! servers that ignore or break ranges or lie about lengths, redirects,
//! hostile names, and the outcomes users see (names on disk, errors and
//! their kinds, exit statuses, redacted passwords).
//!
//! Each test uses a fresh directory `ROOT/outer/dl` and checks, besides the
//! bytes and the outcome, that nothing was left or written outside `dl`
//! (no `*.pymatris-part`, nothing in `ROOT` or `ROOT/outer` but the
//! directories themselves).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pymatris_core::{Config, Downloader, ErrorKind, Request, Results};
use pymatris_tests::fault_server::{Behaviour, FaultServer, RequestLog, Route};
use pymatris_tests::{list_dir, random_bytes, run_pymatris, sha256_hex};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A fresh `ROOT/outer/dl`.
struct Sandbox {
    _root: tempfile::TempDir,
    root: PathBuf,
    outer: PathBuf,
    dir: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        let outer = root.path().join("outer");
        let dir = outer.join("dl");
        std::fs::create_dir_all(&dir).expect("create dl");
        Sandbox {
            root: root.path().to_owned(),
            outer,
            dir,
            _root: root,
        }
    }

    /// The download directory, as the engine takes it.
    fn dir_str(&self) -> String {
        self.dir.to_str().expect("UTF-8 temp dir").to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    fn files(&self) -> Vec<String> {
        list_dir(&self.dir)
    }

    /// Nothing kept in `dl` either, as after a download that failed.
    fn assert_empty(&self) {
        assert!(self.files().is_empty(), "kept: {:?}", self.files());
        self.assert_clean();
    }

    /// Nothing outside `dl`, no temporary file inside, no directory inside.
    fn assert_clean(&self) {
        assert_eq!(
            list_dir(&self.root),
            ["outer"],
            "something was written beside outer/"
        );
        assert_eq!(
            list_dir(&self.outer),
            ["dl"],
            "something was written beside dl/"
        );
        for name in self.files() {
            assert!(
                !name.ends_with(".pymatris-part"),
                "temporary file left behind: {name} (dir holds {:?})",
                self.files()
            );
            assert!(
                self.path(&name).is_file(),
                "{name} in the download dir is not a regular file"
            );
        }
    }
}

/// Small files, short timeouts, short backoff: retries cost milliseconds.
fn config() -> Config {
    Config::default()
        .max_tries(3)
        .max_splits(4)
        .min_split_size(256 * KIB as u64)
        .timeout(Duration::from_secs(5))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(100))
}

async fn download(config: Config, requests: Vec<Request>) -> Results {
    let mut dl = Downloader::new(config);
    for r in requests {
        dl.enqueue(r);
    }
    dl.download().await
}

/// One request into the sandbox.
async fn fetch_one(sb: &Sandbox, config: Config, url: String) -> Results {
    download(config, vec![Request::new(url).dir(sb.dir_str())]).await
}

/// `path` of `server` fetched into a fresh sandbox: the sandbox, the
/// results and the requests `server` saw for `path`.
async fn fetch_path(
    server: &FaultServer,
    config: Config,
    path: &str,
) -> (Sandbox, Results, Vec<RequestLog>) {
    let sb = Sandbox::new();
    let results = fetch_one(&sb, config, server.url(path)).await;
    let log = server.requests(path);
    (sb, results, log)
}

/// The one success of `results`, with a readable failure otherwise.
fn only_success(results: &Results, log: &[RequestLog]) -> String {
    assert!(
        results.errors.is_empty() && results.success.len() == 1,
        "expected one success, got {results}\nerrors: {:#?}\nrequests: {}",
        results.errors,
        show(log)
    );
    results.success[0]
        .path
        .file_name()
        .expect("file name")
        .to_owned()
}

/// The one error of `results`.
fn only_error<'a>(results: &'a Results, log: &[RequestLog]) -> &'a pymatris_core::Failed {
    assert!(
        results.success.is_empty() && results.errors.len() == 1,
        "expected one error, got {results}\nrequests: {}",
        show(log)
    );
    &results.errors[0]
}

/// A request log, one line a request, for failure messages.
fn show(log: &[RequestLog]) -> String {
    let t0 = log.first().map(|r| r.at);
    log.iter()
        .map(|r| {
            format!(
                "\n  +{:>5}ms conn {} {} {} range={:?} if-range={:?} -> {} ({} body bytes{})",
                t0.map_or(0, |t| r.at.duration_since(t).as_millis()),
                r.connection,
                r.method,
                r.target,
                r.range,
                r.if_range,
                r.status,
                r.body_bytes,
                if r.fault { ", FAULT" } else { "" }
            )
        })
        .collect()
}

fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    assert!(
        sha256_hex(actual) == sha256_hex(expected),
        "{what}: wrong bytes (first difference at {:?})",
        actual.iter().zip(expected).position(|(a, b)| a != b)
    );
}

/// The one download of `results` succeeded, `name` holds `body`, and
/// nothing else was left behind.
fn assert_landed(sb: &Sandbox, results: &Results, log: &[RequestLog], name: &str, body: &[u8]) {
    only_success(results, log);
    assert_bytes(&sb.read(name), body, name);
    sb.assert_clean();
}

/// For the faults a download may survive or not: `None` when it
/// succeeded and `name` holds `body`, else its one error, once it is clear
/// that nothing was kept. The sandbox is clean either way.
fn error_unless_landed<'a>(
    sb: &Sandbox,
    results: &'a Results,
    log: &[RequestLog],
    name: &str,
    body: &[u8],
) -> Option<&'a pymatris_core::Failed> {
    sb.assert_clean();
    match results.success.first() {
        Some(_) => {
            assert_bytes(&sb.read(name), body, name);
            None
        }
        None => {
            let failed = only_error(results, log);
            assert!(sb.files().is_empty(), "{:?}", sb.files());
            Some(failed)
        }
    }
}

// 1. Connection dropped mid-body: the retries resume where the data stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_resume_where_the_data_stopped() {
    const CUT: u64 = 100_000;
    let body = random_bytes(3 * MIB, 1);
    let server = FaultServer::start([(
        "/big.bin",
        Route::new(body.clone()).behaviour(Behaviour::DropAfter {
            bytes: CUT,
            times: 2,
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config(), "/big.bin").await;
    let name = only_success(&results, &log);
    assert_eq!(name, "big.bin");
    assert_eq!(results.success[0].size, body.len() as u64);
    assert_bytes(&sb.read("big.bin"), &body, "big.bin");
    assert_eq!(sb.files(), ["big.bin"]);
    sb.assert_clean();

    assert_eq!(log[0].range_start(), Some(0), "{}", show(&log));
    assert!(
        log.iter().skip(1).all(|r| r.range_start() != Some(0)),
        "a later request started again from byte 0: {}",
        show(&log)
    );
    let faults: Vec<&RequestLog> = log.iter().filter(|r| r.fault).collect();
    assert_eq!(faults.len(), 2, "{}", show(&log));
    for f in &faults {
        let start = f.range_start().expect("dropped responses answered ranges");
        assert!(
            log.iter()
                .any(|r| r.at >= f.at && r.range_start() == Some(start + CUT)),
            "no retry resumed at byte {} after the drop at {start}+{CUT}: {}",
            start + CUT,
            show(&log)
        );
    }
    let served = server.body_bytes("/big.bin");
    assert!(
        served < 2 * body.len() as u64,
        "{served} bytes served for a file of {}: {}",
        body.len(),
        show(&log)
    );
}

// 2. A stall past the idle timeout is an attempt that failed: retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_past_the_idle_timeout_is_retried() {
    const CUT: u64 = 200_000;
    let body = random_bytes(600 * KIB, 2);
    let server = FaultServer::start([(
        "/slow.bin",
        Route::new(body.clone()).behaviour(Behaviour::StallAfter {
            bytes: CUT,
            times: 1,
        }),
    )]);
    let started = std::time::Instant::now();
    let (sb, results, log) = fetch_path(
        &server,
        config().timeout(Duration::from_secs(1)),
        "/slow.bin",
    )
    .await;
    assert_landed(&sb, &results, &log, "slow.bin", &body);
    assert!(log[0].fault, "{}", show(&log));
    assert!(
        log.iter().any(|r| r.range_start() == Some(CUT)),
        "no retry resumed at byte {CUT}: {}",
        show(&log)
    );
    // The stall was detected by the idle timeout (1 s), not the server
    // closing the connection (after 120 s).
    assert!(started.elapsed() < Duration::from_secs(30));
}

// 2c. A part that stalls while the others finish is taken over by an idle
// connection: with one attempt and an idle timeout of 60 s, only a takeover
// can finish the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_part_is_taken_over_by_an_idle_connection() {
    const CUT: u64 = 100_000;
    let body = random_bytes(4 * MIB, 8);
    let server = FaultServer::start([(
        "/tail.bin",
        Route::new(body.clone()).behaviour(Behaviour::StallAfter {
            bytes: CUT,
            times: 1,
        }),
    )]);
    let (sb, results, log) = fetch_path(
        &server,
        config()
            .max_tries(1)
            .max_splits(4)
            .min_split_size(256 * KIB as u64)
            .timeout(Duration::from_secs(60))
            .takeover_after(Duration::from_millis(500)),
        "/tail.bin",
    )
    .await;
    assert_landed(&sb, &results, &log, "tail.bin", &body);
    assert!(log[0].fault, "{}", show(&log));
    assert!(
        log.iter().any(|r| r.range_start() == Some(CUT)),
        "nothing took over at byte {CUT}: {}",
        show(&log)
    );
}

// 2c'. A file cut into parts with default flags: every request asks for a
// range with an end, so no server sends past the part it serves (the
// first request, made before the size is known, too), and the server
// sends no more than the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_has_an_end_and_no_byte_is_sent_twice() {
    let body = random_bytes(16 * MIB, 23);
    let server = FaultServer::start([("/parts.bin", Route::new(body.clone()))]);
    let (sb, results, log) = fetch_path(
        &server,
        Config::default().timeout(Duration::from_secs(20)),
        "/parts.bin",
    )
    .await;
    assert_landed(&sb, &results, &log, "parts.bin", &body);
    assert!(log.len() >= 2, "not cut into parts: {}", show(&log));
    for r in &log {
        let range = r.range.as_deref().unwrap_or("");
        assert!(
            range.starts_with("bytes=") && !range.ends_with('-'),
            "a request without an end: {}",
            show(&log)
        );
    }
    let sent = server.body_bytes("/parts.bin");
    assert!(
        sent as f64 <= 1.02 * body.len() as f64,
        "{sent} bytes sent for a file of {}: {}",
        body.len(),
        show(&log)
    );
}

// 2d. A server that caps every range response at 256 KiB, correctly
// labelled: each attempt advances the part, so none uses up a try, and
// the file finishes with max_tries 2 although it takes a dozen requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_range_responses_that_advance_finish_the_file() {
    let body = random_bytes(3 * MIB, 21);
    let server = FaultServer::start([(
        "/capped.bin",
        Route::new(body.clone()).behaviour(Behaviour::ShortRanges {
            max: 256 * KIB as u64,
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_tries(2), "/capped.bin").await;
    assert_landed(&sb, &results, &log, "capped.bin", &body);
    assert!(log.len() >= 12, "{}", show(&log));
    // Every byte was asked for once: each request started where the last
    // answer of its part ended.
    assert_eq!(
        server.body_bytes("/capped.bin"),
        body.len() as u64,
        "{}",
        show(&log)
    );
}

// 2e. A connection that drops every 512 KiB, every time: each attempt
// advances the part, so the file finishes with max_tries 2 (in two parts
// of 2 MiB, four attempts each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropping_every_512k_finish_the_file() {
    let body = random_bytes(4 * MIB, 22);
    let server = FaultServer::start([(
        "/flaky.bin",
        Route::new(body.clone()).behaviour(Behaviour::DropAfter {
            bytes: 512 * KIB as u64,
            times: usize::MAX,
        }),
    )]);
    let config = config()
        .max_tries(2)
        .max_splits(2)
        .min_split_size(2 * MIB as u64);
    let (sb, results, log) = fetch_path(&server, config, "/flaky.bin").await;
    assert_landed(&sb, &results, &log, "flaky.bin", &body);
    assert!(
        log.iter().filter(|r| r.fault).count() >= 4,
        "{}",
        show(&log)
    );
    assert!(
        log.iter().skip(1).all(|r| r.range_start() != Some(0)),
        "a retry started again from byte 0: {}",
        show(&log)
    );
}

// 2f. The bound: a server that sends a few bytes per attempt, forever,
// still ends the file in an error after max_tries attempts of a part in a
// row (an attempt counts as progress only with enough new bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_bytes_per_attempt_still_run_out_of_tries() {
    let body = random_bytes(MIB, 23);
    let server = FaultServer::start([(
        "/trickle.bin",
        Route::new(body.clone()).behaviour(Behaviour::DropAfter {
            bytes: 1000,
            times: usize::MAX,
        }),
    )]);
    let started = std::time::Instant::now();
    let (sb, results, log) = fetch_path(&server, config().max_tries(3), "/trickle.bin").await;
    let failed = only_error(&results, &log);
    assert!(failed.error.is_retryable(), "{}", failed.error);
    sb.assert_empty();
    // At most 4 parts, each with at most 3 attempts.
    assert!(log.len() <= 12, "{}", show(&log));
    assert!(started.elapsed() < Duration::from_secs(30));
}

// 2g. The bound on a server without ranges: each attempt starts again at
// byte 0 and breaks off at the same place, so no attempt brings a new
// byte, and the tries run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_that_repeat_old_bytes_are_no_progress() {
    let body = random_bytes(2 * MIB, 24);
    let server = FaultServer::start([(
        "/again.bin",
        Route::new(body.clone())
            .ranges(false)
            .behaviour(Behaviour::DropAfter {
                bytes: 512 * KIB as u64,
                times: usize::MAX,
            }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_tries(3), "/again.bin").await;
    let failed = only_error(&results, &log);
    assert!(failed.error.is_retryable(), "{}", failed.error);
    // The first attempt brought 512 KiB, the three after it nothing new.
    assert_eq!(log.len(), 4, "{}", show(&log));
    sb.assert_empty();
}

// 2h. A part whose request takes long to be answered (a slow login) is
// not stalled: the stall clock starts with its transfer, so no idle
// connection takes its range over and asks for the same bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_slow_to_start_is_not_taken_over() {
    let body = random_bytes(2 * MIB, 25);
    let server = FaultServer::start([(
        "/late.bin",
        Route::new(body.clone()).behaviour(Behaviour::SlowStart {
            delay: Duration::from_millis(1500),
            after: 1,
        }),
    )]);
    let config = config()
        .max_splits(2)
        .min_split_size(MIB as u64)
        .takeover_after(Duration::from_millis(300));
    let (sb, results, log) = fetch_path(&server, config, "/late.bin").await;
    assert_landed(&sb, &results, &log, "late.bin", &body);
    let mut starts: Vec<u64> = log.iter().filter_map(RequestLog::range_start).collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(
        starts.len(),
        log.len(),
        "a range was asked for twice: {}",
        show(&log)
    );
}

// 2i. A part that waits on the bandwidth cap is not stalled either: the
// server is not what holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_held_by_the_speed_cap_is_not_taken_over() {
    let body = random_bytes(2 * MIB, 26);
    let server = FaultServer::start([("/capped.bin", Route::new(body.clone()))]);
    let config = config()
        .max_splits(4)
        .min_split_size(512 * KIB as u64)
        .max_speed(Some(1024 * KIB as u64))
        .takeover_after(Duration::from_millis(300));
    let (sb, results, log) = fetch_path(&server, config, "/capped.bin").await;
    assert_landed(&sb, &results, &log, "capped.bin", &body);
    // No range was taken over and asked for again (the parts, of 512 KiB
    // and more, are too small to split).
    assert_each_byte_sent_once(&server, "/capped.bin", &log, &body);
}

// 2j. A part whose request is out and whose bytes will come soon is not
// split by an idle connection: its request already asks up to the part's
// end, and the server sends what a cut would ask for again (issue 19.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_about_to_be_served_is_not_asked_for_twice() {
    let body = random_bytes(4 * MIB, 27);
    let server = FaultServer::start([(
        "/soon.bin",
        Route::new(body.clone()).behaviour(Behaviour::SlowStart {
            delay: Duration::from_millis(300),
            after: 1,
        }),
    )]);
    let config = config().max_splits(4).min_split_size(256 * KIB as u64);
    let (sb, results, log) = fetch_path(&server, config, "/soon.bin").await;
    assert_landed(&sb, &results, &log, "soon.bin", &body);
    // The first part, done long before the others are answered, split
    // none of them.
    assert_each_byte_sent_once(&server, "/soon.bin", &log, &body);
}

/// Every byte of `path` was asked for and sent once: no request started
/// where another had, and the server sent no more than the file.
fn assert_each_byte_sent_once(server: &FaultServer, path: &str, log: &[RequestLog], body: &[u8]) {
    let mut starts: Vec<Option<u64>> = log.iter().map(RequestLog::range_start).collect();
    starts.sort_unstable();
    starts.dedup();
    assert_eq!(starts.len(), log.len(), "{}", show(log));
    assert_eq!(server.body_bytes(path), body.len() as u64, "{}", show(log));
}

/// `n` files `/{prefix}{i}.bin` of about `size` bytes (each a little
/// larger than the one before) on a fresh server, and a request for each
/// into the sandbox.
fn many_files(
    sb: &Sandbox,
    prefix: &str,
    n: usize,
    size: usize,
    seed: u64,
) -> (FaultServer, Vec<Vec<u8>>, Vec<Request>) {
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| random_bytes(size + i * 1000, seed + i as u64))
        .collect();
    let server = FaultServer::start(
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("/{prefix}{i}.bin"), Route::new(b.clone()))),
    );
    let requests = (0..n)
        .map(|i| Request::new(server.url(&format!("/{prefix}{i}.bin"))).dir(sb.dir_str()))
        .collect();
    (server, bodies, requests)
}

/// Every file of [`many_files`] landed whole, and nothing else.
fn assert_many_landed(sb: &Sandbox, results: &Results, prefix: &str, bodies: &[Vec<u8>]) {
    assert!(results.errors.is_empty(), "{results}");
    for (i, body) in bodies.iter().enumerate() {
        assert_bytes(&sb.read(&format!("{prefix}{i}.bin")), body, prefix);
    }
    sb.assert_clean();
}

// 2d. `max_per_host` bounds the transfers to one host, all files together,
// and files go on with the connections they have rather than wait for more.
// The engine's limit is the only one (no protocol keeps its own), and each
// answer is held back a little so that requests the limit did not hold
// would overlap at the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_host_bounds_transfers_across_files() {
    let sb = Sandbox::new();
    let bodies: Vec<Vec<u8>> = (0..6)
        .map(|i| random_bytes(MIB + i * 1000, 40 + i as u64))
        .collect();
    let server = FaultServer::start(bodies.iter().enumerate().map(|(i, b)| {
        let route = Route::new(b.clone()).behaviour(Behaviour::SlowStart {
            delay: Duration::from_millis(100),
            after: 0,
        });
        (format!("/h{i}.bin"), route)
    }));
    let requests = (0..6)
        .map(|i| Request::new(server.url(&format!("/h{i}.bin"))).dir(sb.dir_str()))
        .collect();
    let results = download(
        config()
            .max_parallel(6)
            .max_splits(4)
            .min_split_size(128 * KIB as u64)
            .max_per_host(Some(2)),
        requests,
    )
    .await;
    assert_many_landed(&sb, &results, "h", &bodies);
    assert!(
        server.max_in_flight() <= 2,
        "{} transfers at once",
        server.max_in_flight()
    );
    assert!(server.max_in_flight() >= 1);
}

// A batch with more files than slots fills its slots with files, not with
// parts of its first files: at the start the other slots are about to take
// files of their own (over FTP each extra part is a login and an early
// cut; 32 x 16 MiB took 0.48 s with the first file cut, 0.40 s without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_waiting_for_a_slot_are_not_cut_into_parts() {
    let sb = Sandbox::new();
    let (server, bodies, requests) = many_files(&sb, "w", 8, 2 * MIB, 60);
    let results = download(
        config()
            .max_parallel(4)
            .max_splits(4)
            .min_split_size(256 * KIB as u64),
        requests,
    )
    .await;
    assert_many_landed(&sb, &results, "w", &bodies);
    // w0..w3 start while w4..w7 wait for a slot, and the queue empties
    // only when the last file is taken, by which time at least 5 of the 8
    // first requests (8 files less the 4 slots, plus one) have been sent.
    // No part of any file is asked for before that. (Files still running when the queue is empty may be cut.)
    let log = server.all_requests();
    let whole = |r: &RequestLog| r.range_start() == Some(0);
    let fifth_start = log
        .iter()
        .enumerate()
        .filter(|(_, r)| whole(r))
        .nth(4)
        .map(|(n, _)| n)
        .expect("first requests");
    // The rest of a file after its first answer is asked for from where
    // the last answer ended (in one request or several, each asking for a
    // part of what is left); a second part would start further on.
    let mut next_start = std::collections::HashMap::new();
    for (n, r) in log[..fifth_start].iter().enumerate() {
        let range = r.range.as_deref().and_then(|v| v.strip_prefix("bytes="));
        let (first, last) = range
            .and_then(|v| v.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .expect("a range with an end");
        let expected = next_start.insert(r.path.clone(), last + 1);
        assert!(
            first == 0 || expected == Some(first),
            "request {n} cut a file into parts while files waited:\n{}",
            show(&log)
        );
    }
}

// The other side of the same rule: a big file that started while small
// files waited gets the connections they leave when they are done, rather
// than running alone on one to the end. Its first transfer stalls here, so
// without that help its next request would wait for the stall to be
// noticed (seconds); with it, a free connection asks for part of the rest
// as soon as the small files are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_left_by_finished_files_join_a_big_one() {
    let big = random_bytes(4 * MIB, 70);
    let small: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(KIB, 71 + i)).collect();
    let mut routes = vec![(
        "/big.bin".to_owned(),
        Route::new(big.clone()).behaviour(Behaviour::StallAfter {
            bytes: 512 * KIB as u64,
            times: 1,
        }),
    )];
    for (i, b) in small.iter().enumerate() {
        routes.push((format!("/s{i}.bin"), Route::new(b.clone())));
    }
    let server = FaultServer::start(routes);
    let sb = Sandbox::new();
    let mut requests = vec![Request::new(server.url("/big.bin")).dir(sb.dir_str())];
    for i in 0..small.len() {
        requests.push(Request::new(server.url(&format!("/s{i}.bin"))).dir(sb.dir_str()));
    }
    let results = download(
        config()
            .max_parallel(4)
            .max_splits(4)
            .min_split_size(256 * KIB as u64),
        requests,
    )
    .await;
    assert!(results.errors.is_empty(), "{results}");
    assert_bytes(&sb.read("big.bin"), &big, "big.bin");
    sb.assert_clean();
    let log = server.requests("/big.bin");
    assert!(log.len() >= 2, "big.bin was never helped:\n{}", show(&log));
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited < Duration::from_secs(1),
        "the second part of big.bin waited {waited:?}:\n{}",
        show(&server.all_requests())
    );
}

// 2b. A server that accepts and never answers: the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_within_the_timeout_is_retried() {
    let body = random_bytes(10 * KIB, 3);
    let server = FaultServer::start([(
        "/hang.bin",
        Route::new(body.clone()).behaviour(Behaviour::Hang { times: 1 }),
    )]);
    let (sb, results, log) = fetch_path(
        &server,
        config().timeout(Duration::from_secs(1)),
        "/hang.bin",
    )
    .await;
    assert_landed(&sb, &results, &log, "hang.bin", &body);
    assert_eq!(log.len(), 2, "{}", show(&log));
}

// 3. 503 with Retry-After: retried, after at least the wait asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_is_retried_after_the_wait_asked_for() {
    let body = random_bytes(50 * KIB, 4);
    let server = FaultServer::start([(
        "/busy.bin",
        Route::new(body.clone()).behaviour(Behaviour::ServiceUnavailable {
            times: 2,
            retry_after_secs: Some(1),
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config(), "/busy.bin").await;
    assert_landed(&sb, &results, &log, "busy.bin", &body);
    assert_eq!(log.len(), 3, "{}", show(&log));
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 206]
    );
    for pair in log.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(990),
            "Retry-After: 1 not honoured, next attempt after {gap:?}: {}",
            show(&log)
        );
    }
}

// 3b. Other retryable statuses are retried up to max_tries, then reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_reported() {
    let server = FaultServer::start([("/err.bin", Route::status(500))]);
    let (sb, results, log) = fetch_path(&server, config().max_tries(3), "/err.bin").await;
    let failed = only_error(&results, &log);
    assert_eq!(failed.error.kind(), ErrorKind::Protocol, "{}", failed.error);
    assert!(failed.error.is_retryable());
    assert!(failed.error.to_string().contains("500"), "{}", failed.error);
    assert_eq!(log.len(), 3, "max_tries 3 means 3 attempts: {}", show(&log));
    sb.assert_empty();
}

// 4. 200 to a range request: one stream, never a full body at an offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_ranges_fall_back_to_one_stream() {
    let body = random_bytes(3 * MIB, 5);
    let server = FaultServer::start([(
        "/noranges.bin",
        Route::new(body.clone()).behaviour(Behaviour::IgnoreRange),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_splits(4), "/noranges.bin").await;
    assert_landed(&sb, &results, &log, "noranges.bin", &body);
    assert_eq!(log.len(), 1, "one stream expected: {}", show(&log));
}

/// The download of 4b and 4c: `flaky-ranges.bin` (3 MiB) in 4 parts from
/// a server that answers the first range request with 206 and the others
/// with 200. The body, the sandbox, the results and the requests.
async fn fetch_with_ranges_refused_midway() -> (Vec<u8>, Sandbox, Results, Vec<RequestLog>) {
    let body = random_bytes(3 * MIB, 6);
    let server = FaultServer::start([(
        "/flaky-ranges.bin",
        Route::new(body.clone()).behaviour(Behaviour::IgnoreRangeAfter { after: 1 }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_splits(4), "/flaky-ranges.bin").await;
    (body, sb, results, log)
}

// 4b. A server that answers the first range request with 206 and the
// others with 200 (whole body): the download must not write whole bodies
// at the parts' offsets. The contract says a 200 means "no ranges" and the
// download falls back to one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_refused_midway_fall_back_to_one_stream() {
    let (body, sb, results, log) = fetch_with_ranges_refused_midway().await;
    assert_landed(&sb, &results, &log, "flaky-ranges.bin", &body);
}

// 4c. Whatever happens to 4b, a 200 to a range request never yields a file
// with a full body written at an offset, and never leaves a temp file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_refused_midway_never_corrupt_the_file() {
    let (body, sb, results, log) = fetch_with_ranges_refused_midway().await;
    error_unless_landed(&sb, &results, &log, "flaky-ranges.bin", &body);
}

// 4d. A 206 whose Content-Range is not the range asked for: those bytes
// are never written where they do not belong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_content_range_is_never_written() {
    let body = random_bytes(2 * MIB, 7);
    let server = FaultServer::start([(
        "/shifted.bin",
        Route::new(body.clone()).behaviour(Behaviour::WrongContentRange { shift: 1000 }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_splits(4), "/shifted.bin").await;
    // Every response to a range not starting at 0 is wrong: the file
    // cannot be fetched in parts. Either the engine refuses (the contract:
    // "a response to a range request must be 206 with a matching
    // Content-Range") or it gets the bytes right some other way.
    if let Some(failed) = error_unless_landed(&sb, &results, &log, "shifted.bin", &body) {
        assert_eq!(
            failed.error.kind(),
            ErrorKind::RangeUnsupported,
            "{}",
            failed.error
        );
    }
}

// 4e. The file changes on the server between the parts' requests: never a
// file mixing two versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changing_midway_is_never_mixed() {
    let old = random_bytes(2 * MIB, 8);
    let new = random_bytes(2 * MIB, 9);
    let server = FaultServer::start([(
        "/moving.bin",
        Route::new(old.clone()).behaviour(Behaviour::ChangeAfter {
            after: 1,
            body: new.clone().into(),
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_splits(4), "/moving.bin").await;
    sb.assert_clean();
    match results.success.first() {
        Some(_) => {
            let got = sb.read("moving.bin");
            assert!(
                got == old || got == new,
                "the file mixes two versions: {}",
                show(&log)
            );
        }
        None => {
            let failed = only_error(&results, &log);
            assert_eq!(failed.error.kind(), ErrorKind::Changed, "{}", failed.error);
            assert!(!failed.error.is_retryable());
            assert!(sb.files().is_empty(), "{:?}", sb.files());
        }
    }
    // The parts asked for the version they started with.
    assert!(
        log.iter().skip(1).all(|r| r.if_range.is_some()),
        "later parts were requested without If-Range: {}",
        show(&log)
    );
}

// 5. A body shorter than its Content-Length, every time: fails as
// truncated, after max_tries attempts, leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_shorter_than_content_length_fails_as_truncated() {
    let body = random_bytes(100 * KIB, 10);
    let server = FaultServer::start([(
        "/short.bin",
        Route::new(body.clone()).behaviour(Behaviour::LongContentLength {
            extra: 1000,
            times: usize::MAX,
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config().max_tries(2), "/short.bin").await;
    let failed = only_error(&results, &log);
    assert_eq!(
        failed.error.kind(),
        ErrorKind::Truncated,
        "{}",
        failed.error
    );
    assert!(failed.error.is_retryable(), "{}", failed.error);
    // The first attempt brought the 100 KiB that exist, which is progress
    // and uses up no try; the next two brought nothing (max_tries 2).
    assert_eq!(log.len(), 3, "max_tries 2: {}", show(&log));
    // The retries asked for the bytes still missing, not the whole file
    // again.
    for retry in &log[1..] {
        assert_eq!(
            retry.range_start(),
            Some(body.len() as u64),
            "{}",
            show(&log)
        );
    }
    sb.assert_empty();
}

// 5b. A body cut short of its Content-Length once, on a server without
// ranges: retried (from zero, there is no other way), succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cut_short_once_without_ranges_is_retried() {
    let body = random_bytes(300 * KIB, 11);
    let server = FaultServer::start([(
        "/once.bin",
        Route::new(body.clone())
            .ranges(false)
            .behaviour(Behaviour::DropAfter {
                bytes: 50_000,
                times: 1,
            }),
    )]);
    let (sb, results, log) = fetch_path(&server, config(), "/once.bin").await;
    assert_landed(&sb, &results, &log, "once.bin", &body);
    assert_eq!(sb.files(), ["once.bin"]);
    assert_eq!(log.len(), 2, "{}", show(&log));
}

// 5c. A response that overstates the size once (later ones are honest):
// either the engine recovers with the right bytes, or it reports the size
// change; it never keeps a file of the wrong size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_overstated_once_never_keeps_a_wrong_file() {
    let body = random_bytes(100 * KIB, 12);
    let server = FaultServer::start([(
        "/liar.bin",
        Route::new(body.clone()).behaviour(Behaviour::LongContentLength {
            extra: 1000,
            times: 1,
        }),
    )]);
    let (sb, results, log) = fetch_path(&server, config(), "/liar.bin").await;
    if let Some(failed) = error_unless_landed(&sb, &results, &log, "liar.bin", &body) {
        assert!(
            matches!(
                failed.error.kind(),
                ErrorKind::Changed | ErrorKind::Truncated | ErrorKind::Network
            ),
            "{}",
            failed.error
        );
    }
}

// 6. No Content-Length (close-delimited body): one stream to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_body_is_downloaded_whole() {
    let body = random_bytes(700 * KIB, 13);
    let server = FaultServer::start([(
        "/stream.bin",
        Route::new(body.clone()).behaviour(Behaviour::NoContentLength),
    )]);
    let (sb, results, log) = fetch_path(&server, config(), "/stream.bin").await;
    assert_landed(&sb, &results, &log, "stream.bin", &body);
    assert_eq!(results.success[0].size, body.len() as u64);
    assert_eq!(log.len(), 1, "{}", show(&log));
}

// 7. A chain of redirects: the file is named after the final URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_chain_names_the_file_after_the_final_url() {
    let body = random_bytes(20 * KIB, 14);
    let server = FaultServer::start([
        ("/start", Route::redirect(302, "/hop/two")),
        ("/hop/two", Route::redirect(301, "three")),
        (
            "/hop/three",
            Route::redirect(307, "/files/final%20name.bin?token=1"),
        ),
        ("/files/final%20name.bin", Route::new(body.clone())),
    ]);
    let sb = Sandbox::new();
    let results = fetch_one(&sb, config(), server.url("/start")).await;
    let log = server.all_requests();
    let name = only_success(&results, &log);
    assert_eq!(name, "final name.bin");
    assert_bytes(&sb.read("final name.bin"), &body, "final name.bin");
    assert_eq!(sb.files(), ["final name.bin"]);
    sb.assert_clean();
    for path in [
        "/start",
        "/hop/two",
        "/hop/three",
        "/files/final%20name.bin",
    ] {
        assert_eq!(server.hits(path), 1, "{path}: {}", show(&log));
    }
    // Success reports the URL the user asked for.
    assert_eq!(results.success[0].url, server.url("/start"));
}

// 7b. A redirect loop ends in an error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loop_is_an_error() {
    let server = FaultServer::start([
        ("/loop/a", Route::redirect(302, "/loop/b")),
        ("/loop/b", Route::redirect(302, "/loop/a")),
    ]);
    let sb = Sandbox::new();
    let results = fetch_one(&sb, config(), server.url("/loop/a")).await;
    let log = server.all_requests();
    let failed = only_error(&results, &log);
    assert!(!failed.error.is_retryable(), "{}", failed.error);
    assert!(
        log.len() <= 30,
        "{} requests for a redirect loop",
        log.len()
    );
    sb.assert_empty();
}

// 8. Hostile Content-Disposition names stay inside the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_content_disposition_stays_inside_the_dir() {
    let cases = [
        ("/cd/dotdot", "attachment; filename=\"../../x\"", "x"),
        ("/cd/abs", "attachment; filename=\"/etc/passwd\"", "passwd"),
        (
            "/cd/ext",
            "attachment; filename=\"fallback.txt\"; filename*=UTF-8''..%2F..%2Fevil.txt",
            "evil.txt",
        ),
        (
            "/cd/backslash",
            "attachment; filename=\"..\\\\..\\\\win.ini\"",
            "win.ini",
        ),
    ];
    let bodies: Vec<Vec<u8>> = (0..cases.len())
        .map(|i| random_bytes(1000 + i, 20 + i as u64))
        .collect();
    let server = FaultServer::start(cases.iter().zip(&bodies).map(|((path, cd, _), body)| {
        (
            path.to_string(),
            Route::new(body.clone()).header("Content-Disposition", *cd),
        )
    }));
    let sb = Sandbox::new();
    let requests = cases
        .iter()
        .map(|(path, _, _)| Request::new(server.url(path)).dir(sb.dir_str()))
        .collect();
    let results = download(config(), requests).await;
    let log = server.all_requests();
    assert!(
        results.errors.is_empty(),
        "{results}\nrequests: {}",
        show(&log)
    );
    sb.assert_clean();
    let mut expected: Vec<String> = cases.iter().map(|(_, _, n)| n.to_string()).collect();
    expected.sort();
    assert_eq!(sb.files(), expected);
    for ((_, _, name), body) in cases.iter().zip(&bodies) {
        assert_bytes(&sb.read(name), body, name);
    }
    for ok in &results.success {
        assert!(
            ok.path.starts_with(sb.dir_str()),
            "{} is outside {}",
            ok.path,
            sb.dir_str()
        );
    }
}

// 9. Zero-byte files, as servers answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_files_are_downloaded() {
    let server = FaultServer::start([
        // RFC 9110: `bytes=0-` of an empty file is unsatisfiable (416 */0).
        ("/e416/empty.txt", Route::new(Vec::new())),
        // nginx 1.22: 200 with Content-Length: 0.
        (
            "/e200/empty.txt",
            Route::new(Vec::new()).behaviour(Behaviour::IgnoreRange),
        ),
        // No length at all, the connection closes at once.
        (
            "/eclose/empty.txt",
            Route::new(Vec::new()).behaviour(Behaviour::NoContentLength),
        ),
    ]);
    for path in ["/e416/empty.txt", "/e200/empty.txt", "/eclose/empty.txt"] {
        let (sb, results, log) = fetch_path(&server, config(), path).await;
        let name = only_success(&results, &log);
        assert_eq!(name, "empty.txt", "{path}");
        assert_eq!(results.success[0].size, 0, "{path}");
        assert_eq!(sb.files(), ["empty.txt"], "{path}");
        assert_eq!(sb.read("empty.txt").len(), 0, "{path}");
        sb.assert_clean();
    }
}

// 10. 404 and 403: the right kinds, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_forbidden_are_not_retried() {
    let server = FaultServer::start([
        ("/gone.bin", Route::status(404)),
        ("/secret.bin", Route::status(403)),
    ]);
    for (path, kind) in [
        ("/gone.bin", ErrorKind::NotFound),
        ("/secret.bin", ErrorKind::PermissionDenied),
    ] {
        let (sb, results, log) = fetch_path(&server, config().max_tries(3), path).await;
        let failed = only_error(&results, &log);
        assert_eq!(failed.error.kind(), kind, "{path}: {}", failed.error);
        assert!(!failed.error.is_retryable(), "{path}");
        assert_eq!(log.len(), 1, "{path} retried: {}", show(&log));
        assert_eq!(failed.url, server.url(path));
        assert!(sb.files().is_empty(), "{path}: {:?}", sb.files());
        sb.assert_clean();
    }
}

/// Runs the CLI from an async test without holding a runtime worker.
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || run_pymatris(args))
        .await
        .expect("pymatris runner")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cli_args(sb: &Sandbox, extra: &[&str], urls: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec!["--dir".into(), sb.dir_str(), "--quiet".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(urls.iter().cloned());
    args
}

// 10b. Through the CLI: exit status 1, the URL named on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_a_missing_file() {
    let server = FaultServer::start([("/gone.bin", Route::status(404))]);
    let sb = Sandbox::new();
    let url = server.url("/gone.bin");
    let out = cli(cli_args(
        &sb,
        &["--max-tries", "3"],
        std::slice::from_ref(&url),
    ))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&url),
        "stderr does not name {url}: {stderr}"
    );
    assert!(stderr.contains("404"), "stderr: {stderr}");
    assert_eq!(server.hits("/gone.bin"), 1);
    sb.assert_empty();
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not JSON ({e}): {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

// 11. A batch with bad URLs among good ones: nothing lost, exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_batch_with_bad_urls_reports_each_one() {
    let one = random_bytes(30 * KIB, 30);
    let two = random_bytes(40 * KIB, 31);
    let server = FaultServer::start([
        ("/one.bin", Route::new(one.clone())),
        ("/two.bin", Route::new(two.clone())),
        ("/missing.bin", Route::status(404)),
    ]);
    let sb = Sandbox::new();
    let urls = vec![
        server.url("/one.bin"),
        server.url("/missing.bin"),
        "not-a-url".to_owned(),
        server.url("/two.bin"),
        "gopher://x/y".to_owned(),
    ];
    let out = cli(cli_args(&sb, &["--json", "--max-tries", "1"], &urls)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(sb.files(), ["one.bin", "two.bin"]);
    assert_bytes(&sb.read("one.bin"), &one, "one.bin");
    assert_bytes(&sb.read("two.bin"), &two, "two.bin");
    sb.assert_clean();

    let json = json_of(&out);
    let success = json["success"].as_array().expect("success array");
    let errors = json["errors"].as_array().expect("errors array");
    assert_eq!(success.len(), 2, "{json:#}");
    assert_eq!(errors.len(), 3, "{json:#}");
    let error_of = |url: &str| {
        errors
            .iter()
            .find(|e| e["url"].as_str().is_some_and(|u| u.contains(url)))
            .unwrap_or_else(|| panic!("{url} missing from the errors: {json:#}"))
    };
    assert_eq!(error_of("/missing.bin")["kind"], "NotFound", "{json:#}");
    assert_eq!(error_of("not-a-url")["kind"], "InvalidUrl", "{json:#}");
    assert_eq!(
        error_of("gopher://x/y")["kind"],
        "UnsupportedScheme",
        "{json:#}"
    );
    for e in errors {
        assert!(
            e["error"].as_str().is_some_and(|s| !s.is_empty()),
            "error without a message: {e}"
        );
    }
    for url in ["/missing.bin", "not-a-url", "gopher://x/y"] {
        assert!(stderr.contains(url), "stderr does not name {url}: {stderr}");
    }
}

// 12. Names clash: within a batch, and with a file already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_names_never_overwrite_each_other() {
    let first = random_bytes(20 * KIB, 40);
    let second = random_bytes(25 * KIB, 41);
    let server = FaultServer::start([
        ("/x/a.bin", Route::new(first.clone())),
        ("/y/a.bin", Route::new(second.clone())),
    ]);
    let urls = [server.url("/x/a.bin"), server.url("/y/a.bin")];

    // Two URLs of one batch, with or without --overwrite: both kept.
    for extra in [
        &["--json", "--max-tries", "1"][..],
        &["--json", "--max-tries", "1", "--overwrite"],
    ] {
        let sb = Sandbox::new();
        let out = cli(cli_args(&sb, extra, &urls)).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(sb.files(), ["a.1.bin", "a.bin"], "{extra:?}");
        sb.assert_clean();
        // Each URL's reported path holds that URL's bytes.
        let json = json_of(&out);
        for ok in json["success"].as_array().expect("success") {
            let url = ok["url"].as_str().expect("url");
            let path = ok["path"].as_str().expect("path");
            let expected = if url.ends_with("/x/a.bin") {
                &first
            } else {
                &second
            };
            let got = std::fs::read(path).expect("reported path exists");
            assert_bytes(&got, expected, path);
        }
    }

    // A file already there is untouched without --overwrite.
    let sb = Sandbox::new();
    std::fs::write(sb.path("a.bin"), b"old").unwrap();
    let out = cli(cli_args(&sb, &["--max-tries", "1"], &urls[..1])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sb.files(), ["a.1.bin", "a.bin"]);
    assert_eq!(sb.read("a.bin"), b"old");
    assert_bytes(&sb.read("a.1.bin"), &first, "a.1.bin");
    sb.assert_clean();

    // ... and replaced with it.
    let sb = Sandbox::new();
    std::fs::write(sb.path("a.bin"), b"old").unwrap();
    let out = cli(cli_args(
        &sb,
        &["--max-tries", "1", "--overwrite"],
        &urls[..1],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(sb.files(), ["a.bin"]);
    assert_bytes(&sb.read("a.bin"), &first, "a.bin");
    sb.assert_clean();
}

// 12b. --overwrite never touches the old file when the new one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_overwrite_keeps_the_old_file() {
    let body = random_bytes(300 * KIB, 42);
    let server = FaultServer::start([(
        "/a.bin",
        Route::new(body).behaviour(Behaviour::DropAfter {
            bytes: 1000,
            times: usize::MAX,
        }),
    )]);
    let sb = Sandbox::new();
    std::fs::write(sb.path("a.bin"), b"old").unwrap();
    let results = fetch_one(
        &sb,
        config().overwrite(true).max_tries(2),
        server.url("/a.bin"),
    )
    .await;
    let log = server.requests("/a.bin");
    only_error(&results, &log);
    assert_eq!(sb.files(), ["a.bin"]);
    assert_eq!(sb.read("a.bin"), b"old");
    sb.assert_clean();
}

// 13. Checksums: a mismatch is an error and the file is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mismatch_keeps_nothing() {
    let body = random_bytes(600 * KIB, 50);
    let server = FaultServer::start([("/sum.bin", Route::new(body.clone()))]);

    let sb = Sandbox::new();
    let wrong = sha256_hex(b"something else");
    let results = download(
        config(),
        vec![
            Request::new(server.url("/sum.bin"))
                .dir(sb.dir_str())
                .sha256(wrong),
        ],
    )
    .await;
    let log = server.requests("/sum.bin");
    let failed = only_error(&results, &log);
    assert_eq!(failed.error.kind(), ErrorKind::Checksum, "{}", failed.error);
    assert!(!failed.error.is_retryable());
    sb.assert_empty();
    let first_run = log.len();

    let sb = Sandbox::new();
    let results = download(
        config(),
        vec![
            Request::new(server.url("/sum.bin"))
                .dir(sb.dir_str())
                .sha256(sha256_hex(&body).to_uppercase()),
        ],
    )
    .await;
    let log = server.requests("/sum.bin");
    assert_landed(&sb, &results, &log, "sum.bin", &body);
    // The mismatch was not retried: the second run's requests are all new
    // (a 600 KiB file in parts of 256 KiB+ takes at most 2 requests).
    assert!(first_run <= 2, "checksum mismatch retried: {}", show(&log));
}

// 14. Passwords never show: not in stderr, not in --json, not in --verbose
// logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_redacted_everywhere() {
    let server = FaultServer::start([
        ("/missing", Route::status(404)),
        ("/denied", Route::status(401)),
    ]);
    let port = server.addr().port();
    let urls = vec![
        format!("http://user:secret@127.0.0.1:{port}/missing"),
        format!("http://user:secret@127.0.0.1:{port}/denied"),
    ];
    // base64("user:secret"), as an Authorization header would carry it.
    let encoded = "dXNlcjpzZWNyZXQ=";
    for extra in [
        &["--json", "--max-tries", "1"][..],
        &["--json", "--max-tries", "1", "--show-errors", "--verbose"],
    ] {
        let sb = Sandbox::new();
        let out = cli(cli_args(&sb, extra, &urls)).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        for leak in ["secret", encoded] {
            assert!(
                !stdout.contains(leak),
                "{extra:?}: stdout leaks {leak}: {stdout}"
            );
            assert!(
                !stderr.contains(leak),
                "{extra:?}: stderr leaks {leak}: {stderr}"
            );
        }
        let json = json_of(&out);
        let errors = json["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 2, "{json:#}");
        for e in errors {
            let url = e["url"].as_str().expect("url");
            assert!(url.contains("user:***@"), "{url}");
        }
        assert!(stderr.contains("user:***@"), "{stderr}");
        sb.assert_clean();
    }
    // The credentials did reach the server, as Basic auth.
    let log = server.requests("/missing");
    assert!(
        log.iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Basic {encoded}"))),
        "{}",
        show(&log)
    );

    // The library's results too.
    let sb = Sandbox::new();
    let results = fetch_one(&sb, config().max_tries(1), urls[0].clone()).await;
    let failed = only_error(&results, &server.requests("/missing"));
    assert!(!failed.url.contains("secret"), "{}", failed.url);
    assert!(
        !failed.error.chain().contains("secret"),
        "{}",
        failed.error.chain()
    );
    assert!(!results.to_string().contains("secret"), "{results}");
    assert!(
        !format!("{:?}", results.errors).contains("secret"),
        "{:?}",
        results.errors
    );
}

// Credentials stay on the origin they were given for, across redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_a_redirect_to_another_host() {
    let body = random_bytes(5 * KIB, 60);
    let other = FaultServer::start([("/file.bin", Route::new(body.clone()))]);
    let server = FaultServer::start([
        ("/same", Route::redirect(302, "/file.bin")),
        ("/file.bin", Route::new(body.clone())),
        ("/away", Route::redirect(302, other.url("/file.bin"))),
    ]);
    let port = server.addr().port();
    for path in ["/same", "/away"] {
        let sb = Sandbox::new();
        let url = format!("http://user:secret@127.0.0.1:{port}{path}");
        let results = fetch_one(&sb, config(), url).await;
        let log = server.all_requests();
        only_success(&results, &log);
        assert_bytes(&sb.read("file.bin"), &body, path);
        sb.assert_clean();
    }
    assert!(
        server
            .requests("/file.bin")
            .iter()
            .all(|r| r.authorization.is_some()),
        "same-origin redirect dropped the credentials"
    );
    assert!(
        other
            .requests("/file.bin")
            .iter()
            .all(|r| r.authorization.is_none()),
        "credentials sent to another host: {}",
        show(&other.all_requests())
    );
    assert_eq!(other.hits("/file.bin"), 1);
}

/// The process-wide helpers above need the directories to be UTF-8.
#[test]
fn sandbox_layout() {
    let sb = Sandbox::new();
    sb.assert_clean();
    assert!(Path::new(&sb.dir_str()).is_dir());
}

// The blocking convenience of the contract, for callers with no runtime.
#[test]
fn download_blocking_works_without_a_runtime() {
    let body = random_bytes(300 * KIB, 60);
    let server = FaultServer::start([("/b.bin", Route::new(body.clone()))]);
    let sb = Sandbox::new();
    let mut dl = Downloader::new(config());
    dl.enqueue_file(&server.url("/b.bin"), sb.dir_str());
    dl.enqueue_file("not a url", sb.dir_str());
    let results = dl.download_blocking();
    assert_eq!(results.success.len(), 1, "{results}");
    assert_eq!(results.errors.len(), 1, "{results}");
    assert_eq!(results.errors[0].error.kind(), ErrorKind::InvalidUrl);
    assert_bytes(&sb.read("b.bin"), &body, "b.bin");
    sb.assert_clean();
}
