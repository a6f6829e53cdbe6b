//! pymatris-core: the engine of pymatris, a parallel downloader.
//!
//! A [`Downloader`] takes requests (a URL and where to put it), finds the
//! [`Protocol`] of each URL's scheme among the protocol crates linked into
//! the program, fetches several files at once and large files in parts,
//! retries what can be retried from the last byte written, and returns
//! [`Results`] in which every request ends up exactly once, as a success or
//! as an error.
//!
//! ```no_run
//! # async fn run() -> Result<(), pymatris_core::Error> {
//! use pymatris_core::{Config, Downloader};
//! let mut dl = Downloader::new(Config::default());
//! dl.enqueue_file("https://example.org/a.parquet", "./")?;
//! let results = dl.download().await;
//! println!("{results}");
//! # Ok(()) }
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod config;
mod error;
mod files;
mod naming;
mod netrc;
mod protocol;
mod redact;
pub mod registry;
mod reporter;
mod results;
mod resume;
mod scheduler;
mod throttle;
mod writer;

pub use camino;
pub use config::{Config, ProtocolConfig, ProtocolOptions};
pub use error::{Error, ErrorKind, Result};
pub use naming::{filename_from_url, sanitize_filename, sanitize_user_filename};
pub use protocol::{
    ByteRange, ByteStream, Fetched, Protocol, ProtocolPlugin, RemoteMeta, Validator,
};
pub use redact::{
    MIN_SECRET_LEN, redact_text, redact_url, redact_url_str, register_secret, register_url_secrets,
};
pub use reporter::{NoReporter, ReportId, Reporter};
pub use results::{Failed, Results, Succeeded};
pub use scheduler::{Downloader, Request};
pub use tokio_util::sync::CancellationToken;
pub use url::Url;

#[doc(hidden)]
pub use inventory;
