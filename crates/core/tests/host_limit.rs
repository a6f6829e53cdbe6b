//! The engine's own `max_per_host`, with a protocol that has no limit of
//! its own. The real protocols bound their connections per host too
//! (proto-http for redirects and for crates that embed it alone, FTP in its
//! session pool), so a download through them passes even when the engine
//! does not hold to the limit. `gauge://` counts the fetches open at once
//! per host, and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, Downloader, Fetched, Protocol, ProtocolConfig, ProtocolPlugin, RemoteMeta,
    Request, Result, Url, Validator,
};

/// Bytes of every `gauge://` file.
const SIZE: u64 = 64 * 1024;

/// How long a fetch stays open: long enough for all the batch's slots to
/// start theirs at once when nothing holds them back.
const OPEN_FOR: Duration = Duration::from_millis(40);

/// Fetches open now, and the most ever open at once, per host.
#[derive(Default)]
struct Gauge {
    open: HashMap<String, usize>,
    peak: HashMap<String, usize>,
}

static GAUGE: LazyLock<Mutex<Gauge>> = LazyLock::new(Mutex::default);

/// Counts one fetch of `host` open until dropped.
struct Open(String);

impl Open {
    fn new(host: &str) -> Open {
        let mut g = GAUGE.lock().unwrap();
        let open = g.open.entry(host.to_owned()).or_default();
        *open += 1;
        let now = *open;
        let peak = g.peak.entry(host.to_owned()).or_default();
        *peak = (*peak).max(now);
        Open(host.to_owned())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        *GAUGE.lock().unwrap().open.get_mut(&self.0).unwrap() -= 1;
    }
}

/// The byte at `offset` of every `gauge://` file.
fn byte_at(offset: u64) -> u8 {
    (offset % 251) as u8
}

#[derive(Debug)]
struct GaugeProtocol;

fn meta() -> RemoteMeta {
    RemoteMeta {
        size: Some(SIZE),
        ranges: true,
        ..RemoteMeta::default()
    }
}

/// The port of a `gauge://` URL that names none.
const GAUGE_PORT: u16 = 7;

#[async_trait::async_trait]
impl Protocol for GaugeProtocol {
    fn default_port(&self, scheme: &str) -> Option<u16> {
        (scheme == "gauge").then_some(GAUGE_PORT)
    }

    async fn stat(&self, _url: &Url) -> Result<RemoteMeta> {
        Ok(meta())
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        _validator: Option<&Validator>,
    ) -> Result<Fetched> {
        let open = Open::new(url.host_str().unwrap_or(""));
        let end = range.end.unwrap_or(SIZE).min(SIZE);
        let bytes: Vec<u8> = (range.start..end).map(byte_at).collect();
        let body = futures_util::stream::once(async move {
            tokio::time::sleep(OPEN_FOR).await;
            drop(open);
            Ok(Bytes::from(bytes))
        });
        Ok(Fetched {
            meta: meta(),
            offset: range.start,
            carrier: None,
            answer: None,
            body: Box::pin(body),
        })
    }
}

fn build(_: &ProtocolConfig) -> Result<Arc<dyn Protocol>> {
    Ok(Arc::new(GaugeProtocol))
}

pymatris_core::inventory::submit! {
    ProtocolPlugin { schemes: &["gauge"], build }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_per_host_bounds_the_fetches_of_each_host() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap();
    // Slots for every file at once; only the per-host limit holds any back.
    let config = Config::default().max_parallel(16).max_per_host(Some(3));
    let mut dl = Downloader::new(config);
    let names: Vec<String> = (0..12)
        .map(|i| format!("a.test/f{i}"))
        .chain((0..4).map(|i| format!("b.test/g{i}")))
        .collect();
    for name in &names {
        dl.enqueue(Request::new(format!("gauge://{name}")).dir(dir));
    }
    let results = dl.download().await;
    assert!(results.errors.is_empty(), "{results}");
    let expected: Vec<u8> = (0..SIZE).map(byte_at).collect();
    for name in &names {
        let file = name.rsplit('/').next().unwrap();
        assert!(std::fs::read(dir.join(file)).unwrap() == expected, "{file}");
    }
    let peak = GAUGE.lock().unwrap().peak.clone();
    // At the limit, not under it: the hosts' files did run side by side.
    assert_eq!(peak.get("a.test"), Some(&3), "host a: {peak:?}");
    assert_eq!(peak.get("b.test"), Some(&3), "host b: {peak:?}");
}

/// A URL with the scheme's default port written and one without are the
/// same host, also for a scheme the `url` crate does not know (`sftp`,
/// `ftps`): the protocol says its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_port_written_or_not_is_one_host() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap();
    let config = Config::default().max_parallel(16).max_per_host(Some(2));
    let mut dl = Downloader::new(config);
    for i in 0..4 {
        dl.enqueue(Request::new(format!("gauge://c.test/h{i}")).dir(dir));
        let port = GAUGE_PORT;
        dl.enqueue(Request::new(format!("gauge://c.test:{port}/k{i}")).dir(dir));
    }
    let results = dl.download().await;
    assert!(results.errors.is_empty(), "{results}");
    let peak = GAUGE.lock().unwrap().peak.clone();
    assert_eq!(peak.get("c.test"), Some(&2), "{peak:?}");
}
