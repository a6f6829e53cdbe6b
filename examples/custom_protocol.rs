//! A protocol of one's own: `file:` URLs, read from the local disk, in a
//! few lines. The engine brings the rest: parallel files, parts, retries,
//! resume, the temporary file and the rename.
//!
//! `cargo run -p pymatris-examples --example custom_protocol -- /etc/hostname out/`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use pymatris_core::{
    ByteRange, Config, Downloader, Error, ErrorKind, Fetched, Protocol, ProtocolPlugin, RemoteMeta,
    Result, Url, Validator,
};

/// Serves `file:///path` URLs.
#[derive(Debug)]
struct LocalFiles;

fn path_of(url: &Url) -> Result<std::path::PathBuf> {
    url.to_file_path()
        .map_err(|()| Error::new(ErrorKind::InvalidUrl, format!("{url}: not a local path")))
}

fn io_error(url: &Url, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    };
    Error::new(kind, format!("{url}: {e}"))
}

#[async_trait::async_trait]
impl Protocol for LocalFiles {
    async fn stat(&self, url: &Url) -> Result<RemoteMeta> {
        let meta = std::fs::metadata(path_of(url)?).map_err(|e| io_error(url, e))?;
        Ok(RemoteMeta {
            size: Some(meta.len()),
            // Any range can be read, so large files are fetched in parts.
            ranges: true,
            ..RemoteMeta::default()
        })
    }

    async fn fetch(&self, url: &Url, range: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
        let meta = self.stat(url).await?;
        let mut file = std::fs::File::open(path_of(url)?).map_err(|e| io_error(url, e))?;
        let end = range.end.unwrap_or(u64::MAX).min(meta.size.unwrap_or(0));
        let mut bytes = Vec::new();
        // One read for the whole range keeps the example short; a real
        // protocol streams chunks as they come.
        file.seek(SeekFrom::Start(range.start))
            .and_then(|_| {
                (&mut file)
                    .take(end.saturating_sub(range.start))
                    .read_to_end(&mut bytes)
            })
            .map_err(|e| io_error(url, e))?;
        let body = futures_util::stream::iter([Ok(Bytes::from(bytes))]);
        Ok(Fetched::new(meta, range.start, Box::pin(body)))
    }
}

/// How the engine builds it, once per batch; no settings to read here.
const LOCAL_FILES: ProtocolPlugin = ProtocolPlugin {
    schemes: &["file"],
    build: |_config| Ok(Arc::new(LocalFiles)),
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, dir] = args.as_slice() else {
        eprintln!("usage: custom_protocol FILE DIR");
        std::process::exit(2);
    };
    let source = std::fs::canonicalize(source).expect("the file to copy");
    let url = Url::from_file_path(&source).expect("an absolute path");
    let mut dl = Downloader::builder(Config::default())
        .protocol(LOCAL_FILES)
        .build();
    dl.enqueue_file(url.as_str(), dir);
    let results = dl.download_blocking();
    print!("{results}");
}
