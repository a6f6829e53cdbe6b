//! The pace of the batch's growth follows how long a request takes to be
//! answered, not how long a connection takes to open, when the protocol
//! can tell the two apart (`Fetched::answer`). A `login://` fetch opens
//! its connection first (a login of [`LOGIN`], as SFTP's key exchange and
//! login on a long link), then answers after [`ANSWER`], and each fetch
//! then streams at a capped rate, so that more transfers pay. Timed whole,
//! the first fetch made the engine take the link for a slow one and
//! measure it over its longest windows: a large file waited most of a
//! second more for its parts. Bytes, not times, are compared: how much of
//! the file had arrived when its sixth transfer started, with the answer
//! told and without.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, Downloader, Fetched, Protocol, ProtocolConfig, ProtocolPlugin, RemoteMeta,
    Request, Result, Url, Validator,
};

/// Bytes of every `login://` file.
const SIZE: u64 = 128 << 20;

/// How long the first fetch logs in before it asks.
const LOGIN: Duration = Duration::from_millis(400);

/// How long a request takes to be answered (a round trip or two of a
/// long link).
const ANSWER: Duration = Duration::from_millis(30);

/// Each fetch sends this much every [`TICK`]: 6.4 MB/s, a cap per
/// connection.
const CHUNK: u64 = 64 << 10;
const TICK: Duration = Duration::from_millis(10);

/// What one run saw.
#[derive(Default)]
struct Seen {
    /// Whether the protocol tells the engine its answer.
    tells: AtomicBool,
    /// Whether the first fetch logged in already.
    logged_in: AtomicBool,
    /// Fetches streaming now.
    open: AtomicUsize,
    /// Bytes sent so far.
    sent: AtomicU64,
    /// Bytes sent when a sixth fetch first streamed at once with five.
    at_sixth: Mutex<Option<u64>>,
}

static SEEN: std::sync::LazyLock<Seen> = std::sync::LazyLock::new(Seen::default);

/// Counts one fetch streaming until dropped.
struct Open;

impl Open {
    fn new() -> Open {
        let now = SEEN.open.fetch_add(1, Ordering::SeqCst) + 1;
        if now >= 6 {
            let mut at = SEEN.at_sixth.lock().unwrap();
            at.get_or_insert(SEEN.sent.load(Ordering::SeqCst));
        }
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        SEEN.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// The bytes from `pos` to `next` (at most a chunk), sliced from one
/// buffer of the pattern.
fn bytes(pos: u64, next: u64) -> Bytes {
    static PATTERN: std::sync::LazyLock<Bytes> =
        std::sync::LazyLock::new(|| (0..CHUNK + 251).map(byte_at).collect());
    let from = (pos % 251) as usize;
    PATTERN.slice(from..from + (next - pos) as usize)
}

fn meta() -> RemoteMeta {
    RemoteMeta {
        size: Some(SIZE),
        ranges: true,
        ..RemoteMeta::default()
    }
}

#[derive(Debug)]
struct LoginProtocol;

#[async_trait::async_trait]
impl Protocol for LoginProtocol {
    fn default_port(&self, _scheme: &str) -> Option<u16> {
        Some(22)
    }

    async fn stat(&self, _url: &Url) -> Result<RemoteMeta> {
        Ok(meta())
    }

    async fn fetch(
        &self,
        _url: &Url,
        range: ByteRange,
        _validator: Option<&Validator>,
    ) -> Result<Fetched> {
        if !SEEN.logged_in.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(LOGIN).await;
        }
        let asked = tokio::time::Instant::now();
        tokio::time::sleep(ANSWER).await;
        let answer = asked.elapsed();
        let end = range.end.unwrap_or(SIZE).min(SIZE);
        let body = futures_util::stream::unfold(
            (range.start, Open::new()),
            move |(pos, open)| async move {
                if pos >= end {
                    return None;
                }
                tokio::time::sleep(TICK).await;
                let next = (pos + CHUNK).min(end);
                SEEN.sent.fetch_add(next - pos, Ordering::SeqCst);
                Some((Ok(bytes(pos, next)), (next, open)))
            },
        );
        let mut fetched = Fetched::new(meta(), range.start, Box::pin(body));
        if SEEN.tells.load(Ordering::SeqCst) {
            fetched.answer = Some(answer);
        }
        Ok(fetched)
    }
}

fn build(_: &ProtocolConfig) -> Result<Arc<dyn Protocol>> {
    Ok(Arc::new(LoginProtocol))
}

pymatris_core::inventory::submit! {
    ProtocolPlugin { schemes: &["login"], build }
}

/// Downloads one `login://` file with the engine's defaults and growth;
/// returns the bytes sent when its sixth transfer began.
async fn bytes_before_the_sixth_transfer(tells: bool) -> u64 {
    SEEN.tells.store(tells, Ordering::SeqCst);
    SEEN.logged_in.store(false, Ordering::SeqCst);
    SEEN.sent.store(0, Ordering::SeqCst);
    *SEEN.at_sixth.lock().unwrap() = None;
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap();
    let mut dl = Downloader::new(Config::default().max_splits(5).adaptive(true));
    dl.enqueue(Request::new("login://far.test/big.bin").dir(dir));
    let results = dl.download().await;
    assert!(results.errors.is_empty(), "{results}");
    let got = std::fs::read(dir.join("big.bin")).unwrap();
    assert!(got.len() as u64 == SIZE);
    assert!(got.chunks(251).all(|c| c == &bytes(0, c.len() as u64)[..]));
    SEEN.at_sixth
        .lock()
        .unwrap()
        .expect("the file never had six transfers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_not_taken_for_the_answer_of_a_request() {
    let told = bytes_before_the_sixth_transfer(true).await;
    let timed = bytes_before_the_sixth_transfer(false).await;
    // Told: windows of a few 30 ms answers (about 0.35 s before the
    // probe, some 11 MB at five transfers); timed whole, the login made
    // them the longest (0.85 s, some 27 MB).
    assert!(
        told * 4 < timed * 3,
        "bytes before the sixth transfer: {told} with the answer told, {timed} without"
    );
}
