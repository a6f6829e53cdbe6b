//! Settings one request sets for itself (`Request::max_splits`,
//! `max_tries`, `overwrite`, `header`) in a batch whose other files keep
//! the batch's: all in one batch, each file by its own rules.

use std::time::Duration;

use pymatris_core::{Config, Downloader, Request, Results};
use pymatris_proto_http::HttpOptions;
use pymatris_tests::fault_server::{Behaviour, FaultServer, RequestLog, Route};
use pymatris_tests::random_bytes;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn config() -> Config {
    Config::default()
        .max_tries(5)
        .max_splits(4)
        .min_split_size(256 * KIB as u64)
        .timeout(Duration::from_secs(5))
        .backoff_base(Duration::from_millis(10))
        .backoff_max(Duration::from_millis(50))
}

async fn download(config: Config, requests: Vec<Request>) -> Results {
    let mut dl = Downloader::new(config);
    for r in requests {
        dl.enqueue(r);
    }
    dl.download().await
}

fn dir_of(tmp: &tempfile::TempDir) -> String {
    tmp.path().to_str().expect("UTF-8 temp dir").to_owned()
}

/// Whether each request asked for the bytes right after the previous
/// one's: the file was fetched as one part.
fn one_part(log: &[RequestLog]) -> bool {
    let ranges: Vec<(u64, Option<u64>)> = (log.iter())
        .map(|r| {
            let spec = r.range.as_deref().and_then(|r| r.strip_prefix("bytes="));
            let (a, b) = spec.and_then(|s| s.split_once('-')).expect("a range");
            (a.parse().unwrap(), b.parse().ok())
        })
        .collect();
    ranges[0].0 == 0
        && ranges
            .windows(2)
            .all(|w| w[0].1.map(|b| b + 1) == Some(w[1].0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_own_tries_and_splits_hold_for_it_alone() {
    let body = random_bytes(4 * MIB, 61);
    let server = FaultServer::start([
        (
            "/flaky-once.bin",
            Route::new(&b"flaky"[..]).behaviour(Behaviour::ServiceUnavailable {
                times: usize::MAX,
                retry_after_secs: None,
            }),
        ),
        (
            "/flaky.bin",
            Route::new(&b"flaky"[..]).behaviour(Behaviour::ServiceUnavailable {
                times: usize::MAX,
                retry_after_secs: None,
            }),
        ),
        ("/one.bin", Route::new(body.clone())),
        ("/split.bin", Route::new(body.clone())),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = dir_of(&tmp);
    let results = download(
        // Connections to spare (8 for 4 files), so that the batch cuts a
        // file into parts from the start.
        config().max_parallel(4).max_splits(8),
        vec![
            Request::new(server.url("/flaky-once.bin"))
                .dir(&dir)
                .max_tries(1),
            Request::new(server.url("/flaky.bin")).dir(&dir),
            Request::new(server.url("/one.bin")).dir(&dir).max_splits(1),
            Request::new(server.url("/split.bin")).dir(&dir),
        ],
    )
    .await;
    assert_eq!(results.errors.len(), 2, "{results}");
    assert_eq!(results.success.len(), 2, "{results}");
    // One try is no retry; the batch's five hold for the other file.
    assert_eq!(server.hits("/flaky-once.bin"), 1);
    assert_eq!(server.hits("/flaky.bin"), 5);
    // One split is one part; the batch's cut the other file.
    let one = server.requests("/one.bin");
    assert!(one_part(&one), "{one:#?}");
    let split = server.requests("/split.bin");
    assert!(!one_part(&split), "{split:#?}");
    for name in ["one.bin", "split.bin"] {
        assert_eq!(std::fs::read(tmp.path().join(name)).unwrap(), body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_own_overwrite_holds_for_it_alone() {
    let server = FaultServer::start([
        ("/a.txt", Route::new(&b"new a"[..])),
        ("/b.txt", Route::new(&b"new b"[..])),
    ]);
    for batch_overwrites in [false, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = dir_of(&tmp);
        std::fs::write(tmp.path().join("a.txt"), "old a").unwrap();
        std::fs::write(tmp.path().join("b.txt"), "old b").unwrap();
        let results = download(
            config().overwrite(batch_overwrites),
            vec![
                Request::new(server.url("/a.txt"))
                    .dir(&dir)
                    .overwrite(!batch_overwrites),
                Request::new(server.url("/b.txt")).dir(&dir),
            ],
        )
        .await;
        assert!(results.errors.is_empty(), "{results}");
        let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).ok();
        // The one that overwrites replaced its file; the other kept it
        // and saved beside it.
        let (replaced, kept) = if batch_overwrites {
            ("b", "a")
        } else {
            ("a", "b")
        };
        assert_eq!(
            read(&format!("{replaced}.txt")).as_deref(),
            Some(format!("new {replaced}").as_str())
        );
        assert_eq!(read(&format!("{replaced}.1.txt")), None);
        assert_eq!(
            read(&format!("{kept}.txt")).as_deref(),
            Some(format!("old {kept}").as_str())
        );
        assert_eq!(
            read(&format!("{kept}.1.txt")).as_deref(),
            Some(format!("new {kept}").as_str())
        );
    }
}

fn header<'a>(r: &'a RequestLog, name: &str) -> Vec<&'a str> {
    (r.headers.iter())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_own_headers_replace_the_batchs_and_stay_with_their_origin() {
    let elsewhere = FaultServer::start([("/there.txt", Route::new(&b"there"[..]))]);
    let server = FaultServer::start([
        ("/mine.txt", Route::new(&b"mine"[..])),
        ("/plain.txt", Route::new(&b"plain"[..])),
        (
            "/away.txt",
            Route::redirect(302, elsewhere.url("/there.txt")),
        ),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = dir_of(&tmp);
    let config = config().with(HttpOptions::default().header("X-Token", "batch-token"));
    let results = download(
        config,
        vec![
            Request::new(server.url("/mine.txt"))
                .dir(&dir)
                .header("x-token", "file-token")
                .header("X-Extra", "one"),
            Request::new(server.url("/plain.txt")).dir(&dir),
            Request::new(server.url("/away.txt"))
                .dir(&dir)
                .header("X-Extra", "two"),
        ],
    )
    .await;
    assert!(results.errors.is_empty(), "{results}");
    for r in server.requests("/mine.txt") {
        assert_eq!(header(&r, "x-token"), ["file-token"], "{r:#?}");
        assert_eq!(header(&r, "x-extra"), ["one"], "{r:#?}");
    }
    for r in server.requests("/plain.txt") {
        assert_eq!(header(&r, "x-token"), ["batch-token"], "{r:#?}");
        assert!(header(&r, "x-extra").is_empty(), "{r:#?}");
    }
    for r in server.requests("/away.txt") {
        assert_eq!(header(&r, "x-extra"), ["two"], "{r:#?}");
    }
    // Like the batch's headers, a file's stay behind on a redirect to
    // another origin.
    let there = elsewhere.requests("/there.txt");
    assert!(!there.is_empty());
    for r in there {
        assert!(header(&r, "x-extra").is_empty(), "{r:#?}");
        assert!(header(&r, "x-token").is_empty(), "{r:#?}");
    }
}
