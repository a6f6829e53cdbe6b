//! pymatris-core: the engine of pymatris, a parallel downloader.
//!
//! A [`Downloader`] takes requests (a URL and where to put it), finds the
//! [`Protocol`] of each URL's scheme, fetches several files at once and
//! large files in parts, retries what can be retried from the last byte
//! written, and returns [`Results`] in which every request ends up exactly
//! once, as a success or as an error.
//!
//! Protocols come from their own crates (`pymatris-proto-http`,
//! `pymatris-proto-ftp`, `pymatris-proto-sftp`), each with its options type
//! handed over with [`Config::with`]. Register the ones a program uses
//! with [`Downloader::builder`]: a protocol crate that is only named in
//! `Cargo.toml` is not linked, and a downloader without any protocol says
//! so in the error of each URL.
//!
//! ```no_run
//! # // Not run: it needs the network, and pymatris-proto-http, which
//! # // depends on this crate. The package `pymatris-examples` builds it.
//! # mod pymatris_proto_http { pub const PLUGIN: pymatris_core::ProtocolPlugin =
//! #     pymatris_core::ProtocolPlugin { schemes: &["https"], build: |_| unimplemented!() }; }
//! use pymatris_core::{Config, Downloader};
//!
//! let mut dl = Downloader::builder(Config::default())
//!     .protocol(pymatris_proto_http::PLUGIN)
//!     .build();
//! dl.enqueue_file("https://example.org/a.parquet", "./");
//! let results = dl.download_blocking(); // or `dl.download().await` in a runtime
//! print!("{results}");
//! ```
//!
//! A protocol of one's own takes a few lines. This one serves `data:,TEXT`
//! URLs, whose file is the text after the comma:
//!
//! ```
//! use std::sync::Arc;
//!
//! use pymatris_core::{
//!     ByteRange, Bytes, Config, Downloader, Fetched, Protocol, ProtocolPlugin, RemoteMeta,
//!     Request, Result, Url, Validator, async_trait,
//! };
//!
//! #[derive(Debug)]
//! struct Data;
//!
//! fn text(url: &Url) -> Bytes {
//!     let (_, text) = url.path().split_once(',').unwrap_or_default();
//!     Bytes::copy_from_slice(text.as_bytes())
//! }
//!
//! #[async_trait]
//! impl Protocol for Data {
//!     async fn stat(&self, url: &Url) -> Result<RemoteMeta> {
//!         let size = Some(text(url).len() as u64);
//!         Ok(RemoteMeta { size, ranges: true, ..RemoteMeta::default() })
//!     }
//!
//!     async fn fetch(&self, url: &Url, range: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
//!         let all = text(url);
//!         let end = range.end.map_or(all.len(), |end| all.len().min(end as usize));
//!         let part = all.slice((range.start as usize).min(end)..end);
//!         let body = Box::pin(futures_util::stream::iter([Ok(part)]));
//!         Ok(Fetched::new(self.stat(url).await?, range.start, body))
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut dl = Downloader::builder(Config::default())
//!     .protocol(ProtocolPlugin {
//!         schemes: &["data"],
//!         build: |_config| Ok(Arc::new(Data)),
//!     })
//!     .build();
//! dl.enqueue(
//!     Request::new("data:,Hello-from-pymatris")
//!         .dir(dir.path().to_str().unwrap())
//!         .filename("hello.txt"),
//! );
//! let results = dl.download_blocking();
//! assert!(results.errors.is_empty(), "{results}");
//! let saved = std::fs::read_to_string(dir.path().join("hello.txt")).unwrap();
//! assert_eq!(saved, "Hello-from-pymatris");
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod builder;
mod checksum;
mod config;
mod error;
mod files;
mod link;
mod local;
mod naming;
mod netrc;
pub mod proto_util;
mod protocol;
mod redact;
pub mod registry;
mod reporter;
mod results;
mod resume;
mod scheduler;
mod shard;
pub mod socks;
mod sums;
mod throttle;
mod tree;
mod writer;

pub use async_trait::async_trait;
pub use builder::DownloaderBuilder;
pub use bytes::Bytes;
pub use camino;
pub use checksum::{Algo, Checksum, ChecksumError};
pub use config::{Config, DEFAULT_GROWTH_CEILING, ProtocolConfig, ProtocolOptions};
pub use error::{Error, ErrorKind, Hint, Result};
pub use link::{Carrier, ConnActivity};
pub use local::LocalCopy;
pub use naming::{filename_from_url, sanitize_filename, sanitize_user_filename};
pub use protocol::{
    ByteRange, ByteStream, DirEntry, EntryKind, Fetched, FileOptions, PartEnd, Protocol,
    ProtocolPlugin, RemoteMeta, Validator,
};
pub use redact::{
    MIN_SECRET_LEN, redact_text, redact_url, redact_url_str, register_secret, register_url_secrets,
};
pub use reporter::{NoReporter, ReportId, Reporter};
pub use results::{Failed, Results, Succeeded};
pub use scheduler::{Downloader, Planned, PlannedAction, Request};
pub use shard::{Shard, ShardError, shard_of};
pub use sums::ChecksumList;
pub use tokio_util::sync::CancellationToken;
pub use tree::{GlobError, TreeOptions};
pub use url::Url;

#[doc(hidden)]
pub use inventory;
