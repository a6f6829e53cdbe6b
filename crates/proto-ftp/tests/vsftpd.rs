//! The FTP protocol against a real vsftpd on loopback, started by
//! `pymatris-harness` (needs root and Debian's vsftpd). Logins and
//! connections are counted in vsftpd's own log.

// Figures (times, connection counts) for whoever runs with --nocapture.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pymatris_core::camino::{Utf8Path, Utf8PathBuf};
use pymatris_core::{
    ByteRange, ByteStream, Config, Downloader, ErrorKind, Protocol, ProtocolConfig, Results, Url,
};
use pymatris_harness::{Options, Servers, Which, random_bytes};
use pymatris_proto_ftp::{FtpOptions, FtpProtocol};

/// What vsftpd's log says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Log {
    /// Control connections accepted (including those refused with 421).
    connects: usize,
    logins: usize,
    failed_logins: usize,
}

/// Reads the log once vsftpd had time to write it: its session processes
/// log some events after they answer for them.
fn log(s: &Servers) -> Log {
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(s.root_dir().join("vsftpd/vsftpd.log")).unwrap_or_default();
    Log {
        connects: text.matches("CONNECT: Client").count(),
        logins: text.matches("OK LOGIN: Client").count(),
        failed_logins: text.matches("FAIL LOGIN: Client").count(),
    }
}

fn servers() -> Servers {
    Servers::start(Which::ftp_only()).expect("starting vsftpd")
}

fn out_dir() -> (tempfile::TempDir, Utf8PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = Utf8Path::from_path(t.path()).unwrap().to_owned();
    (t, p)
}

fn fast(config: Config) -> Config {
    config
        .backoff_base(Duration::from_millis(20))
        .backoff_max(Duration::from_millis(200))
        .timeout(Duration::from_secs(20))
}

async fn download(config: Config, urls: &[String], dir: &Utf8Path) -> Results {
    let mut dl = Downloader::new(config);
    for url in urls {
        dl.enqueue_file(url, dir);
    }
    dl.download().await
}

fn assert_ok(r: &Results) {
    let chains: Vec<String> = r.errors.iter().map(|e| e.error.chain()).collect();
    assert!(r.is_ok(), "{r}\n{chains:#?}");
}

async fn read_all(mut body: ByteStream, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match body.next().await {
            Some(chunk) => out.extend_from_slice(&chunk.unwrap()),
            None => break,
        }
    }
    out
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_reports_size_and_time_and_serves_ranges_on_one_session() {
    let s = servers();
    let size = 3 << 20;
    s.write_random("r.bin", size as u64, 1);
    let want = random_bytes(size, 1);
    let ftp = FtpProtocol::new(&ProtocolConfig::default()).unwrap();
    let u = url(&s.ftp_url("r.bin"));

    let meta = ftp.stat(&u).await.unwrap();
    assert_eq!(meta.size, Some(size as u64));
    assert!(meta.ranges);
    let modified = meta.validator.modified.clone().expect("MDTM");
    assert_eq!(modified.len(), 14, "{modified}");

    // The whole file, cut early by the consumer (as the engine does).
    let first = ftp.fetch(&u, ByteRange::from(0), None).await.unwrap();
    assert_eq!(first.offset, 0);
    assert_eq!(first.meta.validator, meta.validator);
    let head = read_all(first.body, 100_000).await;
    assert_eq!(head[..], want[..head.len()]);

    // A range in the middle, with the validator: REST + RETR.
    let (a, b) = (1_000_003, 2_000_000);
    let part = ftp
        .fetch(&u, ByteRange::new(a, b), Some(&meta.validator))
        .await
        .unwrap();
    assert_eq!(part.offset, a);
    let got = read_all(part.body, (b - a) as usize).await;
    assert_eq!(got[..(b - a) as usize], want[a as usize..b as usize]);

    // The tail, read to the end (the final 226 is read, not a 426).
    let tail = ftp
        .fetch(&u, ByteRange::from(size as u64 - 10), Some(&meta.validator))
        .await
        .unwrap();
    let got = read_all(tail.body, usize::MAX).await;
    assert_eq!(got[..], want[size - 10..]);

    // Each cut transfer gave its session back: one login did it all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let again = ftp.stat(&u).await.unwrap();
    assert_eq!(again.size, Some(size as u64));
    assert_eq!(log(&s).logins, 1, "{:?}", log(&s));

    // A stale validator: the protocol reports the version it found, and
    // the engine decides (`a_file_touched_between_parts_fails_as_changed`).
    let mut old = meta.validator.clone();
    old.modified = Some("19990101000000".into());
    let stale = ftp
        .fetch(&u, ByteRange::new(5, 10), Some(&old))
        .await
        .unwrap();
    assert_eq!(stale.meta.validator, meta.validator);
    let got = read_all(stale.body, 5).await;
    assert!(got[..5] == want[5..10]);
}

/// The path that [`Touching`] gives another modification time.
#[derive(Debug)]
struct TouchAfterFirst(std::path::PathBuf);

/// This crate's protocol, with the served file given another modification
/// time once the first transfer has started (and that transfer slowed, so
/// that the engine asks for more parts): the bytes stay the same, the
/// version does not.
#[derive(Debug)]
struct Touching {
    ftp: FtpProtocol,
    path: std::path::PathBuf,
    fetches: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Protocol for Touching {
    async fn stat(&self, url: &Url) -> pymatris_core::Result<pymatris_core::RemoteMeta> {
        self.ftp.stat(url).await
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&pymatris_core::Validator>,
    ) -> pymatris_core::Result<pymatris_core::Fetched> {
        let n = (self.fetches).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 1 {
            let earlier = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            let file = std::fs::File::options()
                .write(true)
                .open(&self.path)
                .unwrap();
            file.set_modified(earlier).unwrap();
        }
        let mut fetched = self.ftp.fetch(url, range, validator).await?;
        if n == 0 {
            fetched.body = Box::pin(fetched.body.then(|chunk| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                chunk
            }));
        }
        Ok(fetched)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_touched_between_parts_fails_as_changed() {
    let s = servers();
    let path = s.write_random("moving.bin", 4 << 20, 5);
    let (_t, dir) = out_dir();
    let config = fast(Config::default())
        .max_splits(4)
        .min_split_size(64 * 1024)
        .max_tries(1)
        .with(TouchAfterFirst(path));
    let plugin = pymatris_core::ProtocolPlugin {
        schemes: &["ftp"],
        build: |cfg| {
            let path = cfg.get::<TouchAfterFirst>().unwrap().0.clone();
            Ok(std::sync::Arc::new(Touching {
                ftp: FtpProtocol::new(cfg)?,
                path,
                fetches: Default::default(),
            }))
        },
    };
    let mut dl = Downloader::builder(config).protocol(plugin).build();
    dl.enqueue_file(&s.ftp_url("moving.bin"), &dir);
    let results = dl.download().await;
    assert!(results.success.is_empty(), "{results}");
    let failed = &results.errors[0];
    assert_eq!(failed.error.kind(), ErrorKind::Changed, "{}", failed.error);
    assert!(!failed.error.is_retryable());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_map_to_kinds_and_name_the_url_and_reply() {
    let s = servers();
    s.write_file("here.txt", b"here\n");
    let ftp = FtpProtocol::new(&ProtocolConfig::default()).unwrap();

    let missing = url(&s.ftp_url("nope/missing.bin"));
    let err = ftp
        .fetch(&missing, ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("550"), "{text}");
    assert!(text.contains("missing.bin"), "{text}");
    let (_, password) = s.ftp_user();
    assert!(!text.contains(password), "{text}");
    let err = ftp.stat(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let (user, _) = s.ftp_user();
    let bad = url(&format!(
        "ftp://{user}:wrong-Pa55@127.0.0.1:{}/here.txt",
        s.ftp_port()
    ));
    let err = ftp.fetch(&bad, ByteRange::from(0), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("530"), "{err}");
    assert!(!err.chain().contains("wrong-Pa55"), "{}", err.chain());

    // The right password still works: sessions are keyed by password too.
    let good = url(&s.ftp_url("here.txt"));
    let f = ftp.fetch(&good, ByteRange::from(0), None).await.unwrap();
    assert_eq!(read_all(f.body, usize::MAX).await, b"here\n");
    let err = ftp.fetch(&bad, ByteRange::from(0), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    // Nothing listens: a network error, worth retrying.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let nowhere = url(&format!("ftp://127.0.0.1:{closed}/a"));
    let err = ftp
        .fetch(&nowhere, ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_zero_byte_files() {
    let s = servers();
    s.write_file("empty.bin", b"");
    s.write_file("pub/hello world.txt", b"hello\n");
    let (_t, dir) = out_dir();
    let urls = [
        s.ftp_anon_url("empty.bin"),
        s.ftp_anon_url("pub/hello%20world.txt"),
    ];
    let r = download(fast(Config::default()), &urls, &dir).await;
    assert_ok(&r);
    assert_eq!(std::fs::read(dir.join("empty.bin")).unwrap(), b"");
    assert_eq!(
        std::fs::read(dir.join("hello world.txt")).unwrap(),
        b"hello\n"
    );
    let l = log(&s);
    assert!(l.logins >= 1 && l.logins <= 2, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ftps_with_the_harness_ca() {
    let s = servers();
    let size = 6 << 20;
    s.write_random("secret.bin", size as u64, 5);
    let (_t, dir) = out_dir();
    let config = fast(Config::default())
        .with(FtpOptions::default().require_tls(true))
        .ca_certs(vec![s.ca_cert().to_owned()])
        .max_splits(3)
        .min_split_size(1 << 20);
    let r = download(config, &[s.ftp_url("secret.bin")], &dir).await;
    assert_ok(&r);
    assert_eq!(
        std::fs::read(dir.join("secret.bin")).unwrap(),
        random_bytes(size, 5)
    );
    let l = log(&s);
    assert!(l.logins >= 2, "parts on several TLS sessions: {l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ftps_refuses_an_unknown_ca_unless_insecure() {
    let s = servers();
    s.write_file("secret.txt", b"s3cret\n");
    let (_t, dir) = out_dir();
    let config = fast(Config::default())
        .with(FtpOptions::default().require_tls(true))
        .max_tries(3);
    let r = download(config, &[s.ftp_url("secret.txt")], &dir).await;
    assert_eq!(r.errors.len(), 1, "{r}");
    let err = &r.errors[0].error;
    assert_eq!(err.kind(), ErrorKind::Tls, "{}", err.chain());
    assert!(!err.is_retryable());
    assert_eq!(log(&s).connects, 1, "a TLS failure is not retried");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());

    let config = fast(Config::default())
        .with(FtpOptions::default().require_tls(true))
        .insecure(true);
    let r = download(config, &[s.ftp_url("secret.txt")], &dir).await;
    assert_ok(&r);
    assert_eq!(std::fs::read(dir.join("secret.txt")).unwrap(), b"s3cret\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_share_at_most_max_per_host_logins() {
    let s = servers();
    let n = 500;
    let mut urls = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("small/f{i:03}.bin");
        s.write_file(&name, &random_bytes(100 + i * 7, i as u64));
        urls.push(s.ftp_url(&name));
    }
    let (_t, dir) = out_dir();
    let config = fast(Config::default())
        .max_parallel(8)
        .max_per_host(Some(4));
    let t = Instant::now();
    let r = download(config, &urls, &dir).await;
    let took = t.elapsed();
    assert_ok(&r);
    assert_eq!(r.success.len(), n);
    for i in (0..n).step_by(37) {
        let got = std::fs::read(dir.join(format!("f{i:03}.bin"))).unwrap();
        assert_eq!(got, random_bytes(100 + i * 7, i as u64), "file {i}");
    }
    let l = log(&s);
    eprintln!("{n} small files in {took:?}: {l:?}");
    assert!(l.logins <= 4, "{l:?}");
    assert!(l.connects <= 4, "{l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_allowing_two_connections_still_serves_eight_splits() {
    let s = Servers::start_with(
        Which::ftp_only(),
        Options {
            ftp_max_per_ip: Some(2),
            ..Options::default()
        },
    )
    .expect("starting vsftpd");
    let size = 8 << 20;
    s.write_random("big.bin", size as u64, 9);
    s.write_random("big2.bin", size as u64, 10);
    let (_t, dir) = out_dir();
    let config = fast(Config::default())
        .max_splits(8)
        .min_split_size(256 << 10)
        .max_parallel(1);
    let urls = [s.ftp_url("big.bin"), s.ftp_url("big2.bin")];
    let r = download(config, &urls, &dir).await;
    assert_ok(&r);
    assert_eq!(
        std::fs::read(dir.join("big.bin")).unwrap(),
        random_bytes(size, 9)
    );
    assert_eq!(
        std::fs::read(dir.join("big2.bin")).unwrap(),
        random_bytes(size, 10)
    );
    let l = log(&s);
    eprintln!("{l:?}");
    // The refusals of the first file taught the limit: the second file
    // asks for no more connections than the server allows.
    assert!(l.logins <= 4, "{l:?}");
}

/// Figures, not a check: `cargo test --release -p pymatris-proto-ftp --test
/// vsftpd -- --ignored --nocapture throughput` (size in MiB from
/// `PYMATRIS_FTP_BENCH_MIB`, default 1024), with curl for comparison.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark"]
async fn throughput() {
    let mib: u64 = std::env::var("PYMATRIS_FTP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let s = servers();
    let size = mib << 20;
    s.write_random("bench.bin", size, 11);
    let url = s.ftp_url("bench.bin");
    let curl = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", &url])
        .status();
    if matches!(out, Ok(st) if st.success()) {
        let t = curl.elapsed();
        eprintln!(
            "curl: {mib} MiB in {t:.2?} ({:.0} MB/s)",
            size as f64 / t.as_secs_f64() / 1e6
        );
    }
    for splits in [1, 5] {
        let before = log(&s).logins;
        let (_t, dir) = out_dir();
        let config = Config::default().max_splits(splits).min_split_size(1 << 20);
        let t = Instant::now();
        let r = download(config, std::slice::from_ref(&url), &dir).await;
        let took = t.elapsed();
        assert_ok(&r);
        assert_eq!(
            std::fs::metadata(dir.join("bench.bin")).unwrap().len(),
            size
        );
        let logins = log(&s).logins - before;
        eprintln!(
            "pymatris, max_splits {splits}: {mib} MiB in {took:.2?} ({:.0} MB/s), {logins} logins",
            size as f64 / took.as_secs_f64() / 1e6
        );
    }
}

/// Figures, not a check: the protocol's own speed, bytes discarded.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark"]
async fn raw_stream_throughput() {
    let mib: u64 = std::env::var("PYMATRIS_FTP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let s = servers();
    let size = mib << 20;
    s.write_random("bench.bin", size, 11);
    let ftp = FtpProtocol::new(&ProtocolConfig::default()).unwrap();
    let u = url(&s.ftp_url("bench.bin"));
    for _ in 0..2 {
        let t = Instant::now();
        let mut body = ftp.fetch(&u, ByteRange::from(0), None).await.unwrap().body;
        let (mut n, mut chunks) = (0u64, 0u64);
        while let Some(chunk) = body.next().await {
            n += chunk.unwrap().len() as u64;
            chunks += 1;
        }
        let took = t.elapsed();
        assert_eq!(n, size);
        eprintln!(
            "raw: {mib} MiB in {took:.2?} ({:.0} MB/s), {} KiB a chunk on average",
            size as f64 / took.as_secs_f64() / 1e6,
            n / chunks / 1024
        );
    }
}

/// The engine's per-host limit counts `ftps://h/` and `ftps://h:990/` as
/// one host only if the protocol says its port (the `url` crate knows
/// none for `ftps`).
#[test]
fn says_its_default_ports() {
    let ftp = FtpProtocol::new(&ProtocolConfig::default()).unwrap();
    assert_eq!(ftp.default_port("ftp"), Some(21));
    assert_eq!(ftp.default_port("ftps"), Some(990));
}
