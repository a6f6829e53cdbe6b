//! `Downloader::download_each`: requests taken from a stream only as slots
//! free up, every one ending in exactly one result, handed over as it
//! finishes. `tiny://` serves a few bytes per URL, and `tiny://h/missing`
//! fails, so that a long stream runs fast and without a server.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use camino::Utf8Path;
use futures_util::StreamExt;
use pymatris_core::{
    ByteRange, Config, Downloader, Error, ErrorKind, Fetched, Protocol, ProtocolConfig,
    ProtocolPlugin, RemoteMeta, Request, Result, Url, Validator,
};

const BODY: &[u8] = b"tiny";

#[derive(Debug)]
struct Tiny;

fn meta() -> RemoteMeta {
    RemoteMeta {
        size: Some(BODY.len() as u64),
        ranges: true,
        ..RemoteMeta::default()
    }
}

#[async_trait::async_trait]
impl Protocol for Tiny {
    fn default_port(&self, scheme: &str) -> Option<u16> {
        (scheme == "tiny").then_some(9)
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
        if url.path().starts_with("/missing") {
            return Err(Error::new(ErrorKind::NotFound, "404 Not Found"));
        }
        let end = range
            .end
            .unwrap_or(BODY.len() as u64)
            .min(BODY.len() as u64);
        let bytes = Bytes::from_static(&BODY[range.start as usize..end as usize]);
        Ok(Fetched {
            meta: meta(),
            offset: range.start,
            carrier: None,
            answer: None,
            body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
        })
    }
}

fn build(_: &ProtocolConfig) -> Result<Arc<dyn Protocol>> {
    Ok(Arc::new(Tiny))
}

pymatris_core::inventory::submit! {
    ProtocolPlugin { schemes: &["tiny"], build }
}

/// A stream of unknown length is read only a slot's worth ahead of the
/// results, and each request ends exactly once, success or failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_as_slots_free_up_and_each_request_ends_once() {
    const COUNT: usize = 3000;
    const PARALLEL: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap().to_owned();
    let downloader = Downloader::new(Config::default().max_parallel(PARALLEL));
    let taken = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let most_ahead = Arc::new(AtomicUsize::new(0));
    let requests = {
        let (taken, finished, most_ahead) = (taken.clone(), finished.clone(), most_ahead.clone());
        let dir = dir.clone();
        // `filter` hides the length, as a list read line by line does.
        futures_util::stream::iter(0..COUNT)
            .filter(|_| std::future::ready(true))
            .map(move |i| {
                let ahead =
                    taken.fetch_add(1, Ordering::SeqCst) + 1 - finished.load(Ordering::SeqCst);
                most_ahead.fetch_max(ahead, Ordering::SeqCst);
                let path = if i % 3 == 0 { "missing" } else { "f" };
                Request::new(format!("tiny://h/{path}/{i}.bin")).dir(&dir)
            })
            .boxed()
    };
    let mut seen = HashSet::new();
    let (mut ok, mut failed) = (0, 0);
    downloader
        .download_each(requests, |index, outcome| {
            finished.fetch_add(1, Ordering::SeqCst);
            assert!(seen.insert(index), "request {index} ended twice");
            match outcome {
                Ok(done) => {
                    assert_eq!(done.path.file_name(), Some(format!("{index}.bin").as_str()));
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.error.kind(), ErrorKind::NotFound, "{index}: {}", e.error);
                    assert_eq!(index % 3, 0);
                    failed += 1;
                }
            }
        })
        .await;
    assert_eq!(seen.len(), COUNT);
    assert_eq!((ok, failed), (COUNT - COUNT / 3, COUNT / 3));
    // The slots' files, those whose results wait to be handed over (the
    // channel holds two slots' worth) and the one being taken.
    let bound = PARALLEL * 4 + 1;
    let ahead = most_ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= bound,
        "read {ahead} requests ahead of the results (bound {bound})"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), COUNT - COUNT / 3);
}

/// Many requests for one name: each lands under a name of its own, with
/// or without overwriting, though names are held only while in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_many_times_never_overwrites_within_a_batch() {
    for overwrite in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap().to_owned();
        let config = Config::default().max_parallel(4).overwrite(overwrite);
        let downloader = Downloader::new(config);
        let into = dir.clone();
        let requests =
            (0..50).map(move |i| Request::new(format!("tiny://h/f/{i}/same.bin")).dir(&into));
        let mut paths = HashSet::new();
        downloader
            .download_each(futures_util::stream::iter(requests), |_, outcome| {
                assert!(paths.insert(outcome.unwrap().path));
            })
            .await;
        assert_eq!(paths.len(), 50, "overwrite: {overwrite}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 50);
    }
}

/// A stream that ended is not polled again: a `Stream` owes nothing after
/// its `None`, and `stream::unfold` (what a caller writes to feed requests
/// on its own terms) panics when it is, in one of the engine's tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_stream_is_never_polled_again() {
    struct Strict {
        left: std::vec::IntoIter<Request>,
        ended: bool,
        polled_after_end: Arc<AtomicUsize>,
    }
    impl futures_util::Stream for Strict {
        type Item = Request;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Request>> {
            if self.ended {
                self.polled_after_end.fetch_add(1, Ordering::SeqCst);
                return std::task::Poll::Ready(None);
            }
            let next = self.left.next();
            self.ended = next.is_none();
            std::task::Poll::Ready(next)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap().to_owned();
    let polled_after_end = Arc::new(AtomicUsize::new(0));
    let requests = Strict {
        left: (0..3)
            .map(|i| Request::new(format!("tiny://h/f/{i}.bin")).dir(&dir))
            .collect::<Vec<_>>()
            .into_iter(),
        ended: false,
        polled_after_end: polled_after_end.clone(),
    };
    let mut results = 0;
    Downloader::new(Config::default().max_parallel(8))
        .download_each(requests, |_, outcome| {
            assert!(outcome.is_ok());
            results += 1;
        })
        .await;
    assert_eq!(results, 3);
    assert_eq!(polled_after_end.load(Ordering::SeqCst), 0);
}
