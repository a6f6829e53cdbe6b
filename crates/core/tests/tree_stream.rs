//! `Downloader::download_trees_each`: a tree's files are reported as they
//! end, while its walk goes on, so nothing of a tree of millions of files
//! waits in memory for the end. Through `gen://`, a protocol whose last
//! directory cannot be listed until a result has been reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, DirEntry, Downloader, EntryKind, ErrorKind, Fetched, Protocol,
    ProtocolPlugin, RemoteMeta, Result, TreeOptions, Url, Validator,
};

const DIRS: usize = 4;
const FILES_PER_DIR: usize = 10;
const BODY: &[u8] = b"data";

/// Results reported so far.
static REPORTED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct Gen;

fn time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn meta() -> RemoteMeta {
    RemoteMeta {
        size: Some(BODY.len() as u64),
        modified: Some(time()),
        ranges: true,
        validator: Validator {
            etag: None,
            modified: Some("1700000000".into()),
        },
        ..RemoteMeta::default()
    }
}

fn entry(name: String, kind: EntryKind) -> DirEntry {
    DirEntry {
        name: name.into_bytes(),
        kind,
        size: (kind == EntryKind::File).then_some(BODY.len() as u64),
        modified: Some(time()),
        link_target: None,
    }
}

#[pymatris_core::async_trait]
impl Protocol for Gen {
    async fn stat(&self, _: &Url) -> Result<RemoteMeta> {
        Ok(meta())
    }

    async fn fetch(&self, _: &Url, range: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
        let end = range.end.map_or(BODY.len(), |e| BODY.len().min(e as usize));
        let start = (range.start as usize).min(end);
        Ok(Fetched {
            meta: meta(),
            offset: range.start,
            carrier: None,
            answer: None,
            body: Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(
                &BODY[start..end],
            ))])),
        })
    }

    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>> {
        let path = url.path();
        if path == "/" {
            return Ok((0..DIRS)
                .map(|d| entry(format!("d{d}"), EntryKind::Dir))
                .collect());
        }
        // The last directory: listed only once a file of the others has
        // been reported, as a listing far down a huge tree would be.
        if path == format!("/d{}/", DIRS - 1) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while REPORTED.load(Ordering::SeqCst) == 0 {
                if Instant::now() > deadline {
                    return Err(pymatris_core::Error::new(
                        ErrorKind::Timeout,
                        "no result was reported while the tree was walked",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok((0..FILES_PER_DIR)
            .map(|f| entry(format!("f{f}"), EntryKind::File))
            .collect())
    }
}

const PLUGIN: ProtocolPlugin = ProtocolPlugin {
    schemes: &["gen"],
    build: |_| Ok(Arc::new(Gen)),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trees_files_are_reported_while_it_is_walked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(tmp.path()).unwrap().join("dl");
    let mut dl = Downloader::builder(Config::default().max_parallel(4).max_tries(1))
        .protocol(PLUGIN)
        .build();
    dl.enqueue_tree("gen://host/", &dir, TreeOptions::default());
    let mut ok = 0;
    let mut failed = Vec::new();
    dl.download_trees_each(|outcome| {
        REPORTED.fetch_add(1, Ordering::SeqCst);
        match outcome {
            Ok(_) => ok += 1,
            Err(f) => failed.push(f.error.to_string()),
        }
    })
    .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(ok, DIRS * FILES_PER_DIR);
    for d in 0..DIRS {
        for f in 0..FILES_PER_DIR {
            let got = std::fs::read(dir.join(format!("d{d}/f{f}"))).unwrap();
            assert_eq!(got, BODY);
        }
    }
}
