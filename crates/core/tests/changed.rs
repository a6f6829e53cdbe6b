//! The engine's check that every part is of the version the download
//! started with, the only one: protocols report the version they find and
//! never refuse it themselves. `moving://` ignores the validator it is
//! handed, and serves version 1 to the first request of a file and
//! version 2, with other bytes and another validator, to every later one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, Downloader, ErrorKind, Fetched, Protocol, ProtocolConfig, ProtocolPlugin,
    RemoteMeta, Request, Result, Url, Validator,
};

/// Bytes of the `moving://` file: enough to be cut into parts.
const SIZE: u64 = 4 * 1024 * 1024;

/// Requests so far.
static FETCHES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Moving;

fn meta(version: u8) -> RemoteMeta {
    RemoteMeta {
        size: Some(SIZE),
        ranges: true,
        validator: Validator {
            etag: Some(format!("\"v{version}\"")),
            modified: None,
        },
        ..RemoteMeta::default()
    }
}

#[async_trait::async_trait]
impl Protocol for Moving {
    async fn stat(&self, _url: &Url) -> Result<RemoteMeta> {
        Ok(meta(1))
    }

    async fn fetch(
        &self,
        _url: &Url,
        range: ByteRange,
        _validator: Option<&Validator>,
    ) -> Result<Fetched> {
        let version = if FETCHES.fetch_add(1, Ordering::SeqCst) == 0 {
            1
        } else {
            2
        };
        let end = range.end.unwrap_or(SIZE).min(SIZE);
        let bytes = Bytes::from(vec![version; (end - range.start) as usize]);
        Ok(Fetched {
            meta: meta(version),
            offset: range.start,
            carrier: None,
            answer: None,
            body: Box::pin(futures_util::stream::iter([Ok(bytes)])),
        })
    }
}

fn build(_: &ProtocolConfig) -> Result<Arc<dyn Protocol>> {
    Ok(Arc::new(Moving))
}

pymatris_core::inventory::submit! {
    ProtocolPlugin { schemes: &["moving"], build }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_of_another_version_fails_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap();
    let config = Config::default()
        .max_splits(4)
        .min_split_size(64 * 1024)
        .max_tries(1);
    let mut dl = Downloader::new(config);
    dl.enqueue(Request::new("moving://host/file.bin").dir(dir));
    let results = dl.download().await;
    assert!(results.success.is_empty(), "{results}");
    let failed = &results.errors[0];
    assert_eq!(failed.error.kind(), ErrorKind::Changed, "{}", failed.error);
    assert!(!failed.error.is_retryable());
    // Nothing of either version is left behind.
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    assert!(FETCHES.load(Ordering::SeqCst) >= 2);
}
