//! A batch ends when its last file does, not at the next tick of its
//! growth: the growth kept a sender of the batch's results until its tick
//! (every 50 ms) saw no file left, so every run of the CLI ended on a tick
//! (W4's runs took 0.308, 0.360 or 0.410 s: 25 ms more on average, a tenth
//! of a batch of 2,000 small files on loopback). Measured on tokio's
//! paused clock, which moves only when every task waits on a timer: files
//! that come at once take no time on it, and the end of a batch that
//! waits for a tick shows that tick.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, Downloader, Fetched, Protocol, ProtocolConfig, ProtocolPlugin, RemoteMeta,
    Request, Result, Url, Validator,
};

const BODY: &[u8] = b"sixteen bytes ok";

fn meta() -> RemoteMeta {
    RemoteMeta {
        size: Some(BODY.len() as u64),
        ranges: true,
        ..RemoteMeta::default()
    }
}

/// Answers every fetch at once with [`BODY`].
#[derive(Debug)]
struct AtOnce;

#[async_trait::async_trait]
impl Protocol for AtOnce {
    fn default_port(&self, _scheme: &str) -> Option<u16> {
        Some(1)
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
        let body = Bytes::from_static(&BODY[range.start as usize..]);
        let stream = futures_util::stream::iter([Ok(body)]);
        Ok(Fetched::new(meta(), range.start, Box::pin(stream)))
    }
}

fn build(_: &ProtocolConfig) -> Result<Arc<dyn Protocol>> {
    Ok(Arc::new(AtOnce))
}

pymatris_core::inventory::submit! {
    ProtocolPlugin { schemes: &["atonce"], build }
}

#[tokio::test(start_paused = true)]
async fn a_growing_batch_ends_with_its_last_file_not_at_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(dir.path()).unwrap();
    let mut dl = Downloader::new(Config::default().adaptive(true));
    for i in 0..20 {
        dl.enqueue(Request::new(format!("atonce://here.test/f{i}.bin")).dir(dir));
    }
    let began = tokio::time::Instant::now();
    let results = dl.download().await;
    let took = began.elapsed();
    assert!(results.errors.is_empty(), "{results}");
    assert_eq!(results.success.len(), 20);
    assert_eq!(std::fs::read(dir.join("f7.bin")).unwrap(), BODY);
    assert!(
        took < Duration::from_millis(50),
        "the batch took {took:?} on the paused clock"
    );
}
