//! The seam between the engine and the protocol crates.
//!
//! A protocol knows how to learn about a remote file and how to stream a
//! range of its bytes; it knows nothing of local files, retries or progress.
//! Each protocol crate registers a [`ProtocolPlugin`] with
//! `inventory::submit!` (and exports it for explicit registration), and the
//! [`registry`](crate::registry) finds it by the URL's scheme.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use url::Url;

use crate::checksum::Checksum;
use crate::config::ProtocolConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::link::Carrier;
use crate::local::LocalCopy;

/// A range of bytes of a remote file: `start..end`, `end` exclusive, or
/// open-ended (to the end of the file) when `end` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte wanted.
    pub start: u64,
    /// One past the last byte wanted, or `None` for "to the end".
    pub end: Option<u64>,
}

impl ByteRange {
    /// `start..end`.
    pub fn new(start: u64, end: u64) -> Self {
        ByteRange {
            start,
            end: Some(end),
        }
    }

    /// `start..` to the end of the file.
    pub fn from(start: u64) -> Self {
        ByteRange { start, end: None }
    }

    /// Whether this range asks for the whole file.
    pub fn is_whole(&self) -> bool {
        self.start == 0 && self.end.is_none()
    }
}

/// What identifies one version of a remote file, so that a resumed or
/// split download never mixes bytes of two versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validator {
    /// An HTTP entity tag (strong or weak, as the server sent it).
    pub etag: Option<String>,
    /// A modification time, as the server sent it (HTTP date, FTP `MDTM`,
    /// SFTP mtime in seconds).
    pub modified: Option<String>,
}

impl Validator {
    /// Whether there is anything to compare.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.modified.is_none()
    }

    /// Whether `other` may be the same version: fields both sides know must
    /// be equal.
    pub fn matches(&self, other: &Validator) -> bool {
        let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same(&self.etag, &other.etag) && same(&self.modified, &other.modified)
    }
}

/// What a protocol learned about a remote file.
#[derive(Debug, Clone, Default)]
pub struct RemoteMeta {
    /// The size of the whole file, when known.
    pub size: Option<u64>,
    /// Whether the server serves byte ranges of this file.
    pub ranges: bool,
    /// The version of the file.
    pub validator: Validator,
    /// A file name the server suggested (HTTP `Content-Disposition`),
    /// unsanitised: the engine sanitises it.
    pub filename: Option<String>,
    /// The URL after redirects, when it differs from the one asked for.
    pub final_url: Option<Url>,
    /// When the file was last modified (HTTP `Last-Modified`, FTP `MDTM`,
    /// SFTP mtime), when the server tells.
    pub modified: Option<SystemTime>,
    /// Digests of the whole file the server sent with this answer (HTTP
    /// `Repr-Digest`, and `Digest` or `x-amz-checksum-sha256` where they
    /// cover the whole file). A digest of only the bytes of a partial
    /// answer does not belong here.
    pub digests: Vec<Checksum>,
}

/// What one file asks of its protocol beyond the batch's settings (see
/// [`Protocol::fetch_file`]). Empty for most files.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOptions {
    /// Extra request headers, for the protocols that send headers (HTTP):
    /// each replaces a header of the same name of the protocol's own
    /// settings, and goes to the same origins those would.
    pub headers: Vec<(String, String)>,
    /// The file's size as its directory listing gave it (a file of a
    /// tree). A protocol may take it for the size of the first request
    /// rather than ask (FTP's `SIZE`); it must then check the bytes it
    /// gets against it, as the file may have changed since.
    pub listed_size: Option<u64>,
    /// Where the part this request fills now ends, while it runs (see
    /// [`PartEnd`]); `None` for a request whose range's end stays put.
    pub part_end: Option<PartEnd>,
}

impl FileOptions {
    /// Options with these extra request headers.
    pub fn with_headers(headers: Vec<(String, String)>) -> Self {
        FileOptions {
            headers,
            listed_size: None,
            part_end: None,
        }
    }

    /// These options, for a request whose part ends where `end` says.
    pub fn with_part_end(mut self, end: PartEnd) -> Self {
        self.part_end = Some(end);
        self
    }

    /// These options, with the size a listing gave.
    pub fn with_listed_size(mut self, size: Option<u64>) -> Self {
        self.listed_size = size;
        self
    }

    /// Whether there is nothing beyond the batch's settings.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.listed_size.is_none() && self.part_end.is_none()
    }
}

impl Debug for FileOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold tokens: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FileOptions")
            .field("headers", &names)
            .field("listed_size", &self.listed_size)
            .field("part_end", &self.part_end)
            .finish()
    }
}

/// Where the part a running request fills now ends: one past its last
/// byte, as the engine sees it. The engine lowers it when it gives the
/// back of the part to another connection (a cut always comes far from
/// where the part has got to), also before the request's first byte (a
/// slow login); it never raises it.
///
/// A protocol whose server stops at the end of the range it was asked for
/// in one request (HTTP) has no use for it. One whose requests have no end
/// (FTP's `REST`) reads it to stop the transfer there, and to let the
/// server send ahead freely while the end is far and little once it nears,
/// so that little is sent past it for nothing. One that asks for a range
/// in many reads (SFTP) asks none past it.
#[derive(Clone, Debug)]
pub struct PartEnd(Arc<AtomicU64>);

impl PartEnd {
    /// A part that ends before `end`.
    pub fn new(end: u64) -> Self {
        PartEnd(Arc::new(AtomicU64::new(end)))
    }

    /// Where the part ends now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The part now ends at `end`, if that is sooner.
    pub fn lower(&self, end: u64) {
        self.0.fetch_min(end, Ordering::Relaxed);
    }
}

/// One handle is equal only to itself (and its clones): two parts that end
/// at the same byte are still two parts.
impl PartialEq for PartEnd {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PartEnd {}

/// A stream of the bytes of a file, in order.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// The answer to [`Protocol::fetch`]: what the server said of the file and
/// a stream of its bytes from `offset` on.
pub struct Fetched {
    /// What this response told of the file.
    pub meta: RemoteMeta,
    /// The offset of the first byte of `body` in the file. Equal to the
    /// range's start when the server honoured the range; 0 when it sent the
    /// whole file instead.
    pub offset: u64,
    /// The bytes. It may end before the range's end (the engine checks
    /// lengths) and may go past it (the engine stops reading).
    pub body: ByteStream,
    /// The connection that carries it, for a protocol that carries several
    /// fetches on one connection (SFTP): while that connection still
    /// receives, a silent fetch waits behind the others and is not taken
    /// over as stalled. `None` (a connection of its own: HTTP/1.1, FTP)
    /// judges a fetch by its own bytes.
    pub carrier: Option<Carrier>,
    /// How long the request itself took to be answered, from asking to
    /// its first byte, for a protocol whose fetch may first open a
    /// connection much slower to open than a request is to answer (SFTP:
    /// a key exchange and a login, a dozen round trips). The engine paces
    /// its measurements of the link on its quickest answer. `None`: the
    /// engine times the whole fetch (a TCP connection and a request cost
    /// about as many round trips as a request on a warm connection).
    pub answer: Option<std::time::Duration>,
}

impl Fetched {
    /// A fetch of `body`, starting at `offset` of the file, over a
    /// connection of its own ([`carrier`](Fetched::carrier) `None`) and
    /// timed whole by the engine ([`answer`](Fetched::answer) `None`).
    pub fn new(meta: RemoteMeta, offset: u64, body: ByteStream) -> Fetched {
        Fetched {
            meta,
            offset,
            body,
            carrier: None,
            answer: None,
        }
    }
}

impl Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("meta", &self.meta)
            .field("offset", &self.offset)
            .field("carrier", &self.carrier.is_some())
            .finish_non_exhaustive()
    }
}

/// What an entry of a directory listing is (what a link points to, for a
/// link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Not known (an FTP `LIST` line of a link), or neither a file nor a
    /// directory (a device, a socket, a dangling link).
    Other,
}

/// One entry of a directory listing ([`Protocol::list`]), as the server
/// gave it: the engine checks and sanitises every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name, unsanitised, as bytes (SFTP names need not be
    /// UTF-8). A name with `/`, NUL, or of `.` or `..` is refused by the
    /// engine.
    pub name: Vec<u8>,
    /// What it is; for a symbolic link, what the link points to.
    pub kind: EntryKind,
    /// Its size in bytes, when the listing says.
    pub size: Option<u64>,
    /// Its modification time, only when the listing gives it to the
    /// second (MLSD, SFTP); `None` for coarser times (an FTP `LIST` line),
    /// which the engine then asks for with `stat` when it needs one.
    pub modified: Option<SystemTime>,
    /// The target of a symbolic link, as the server gave it; `None` for
    /// anything else.
    pub link_target: Option<Vec<u8>>,
}

/// A transfer protocol: HTTP, FTP, SFTP…
#[async_trait::async_trait]
pub trait Protocol: Send + Sync + Debug {
    /// Size, range support, validators and a suggested name, without the
    /// body. Used to check a file that may already be complete on disk.
    async fn stat(&self, url: &Url) -> Result<RemoteMeta>;

    /// The bytes of `range` of the file (the whole file for `0..`).
    ///
    /// `validator` is the version being downloaded, for a protocol that
    /// can make its request conditional on it (HTTP `If-Range`). The
    /// engine compares the validator and size of every answer's `meta`
    /// with that version and fails with
    /// [`ErrorKind::Changed`](crate::ErrorKind::Changed) on a difference,
    /// so a protocol only has to report what it found.
    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> Result<Fetched>;

    /// The entries of the directory at `url` (whose path ends in `/`),
    /// without `.` and `..`, in any order. What it costs is one listing;
    /// the engine lists the directories of a tree in parallel, each under
    /// a slot of the per-host limit.
    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>> {
        let _ = url;
        Err(Error::new(
            ErrorKind::Protocol,
            "listing directories is not supported by this protocol",
        )
        .retryable(false))
    }

    /// [`fetch`](Self::fetch), unless the remote file is no newer than
    /// `local` ([`LocalCopy::is_current`]): then `Ok(None)`, ideally
    /// without any body sent. By default a `stat` decides; HTTP asks the
    /// server instead (`If-Modified-Since`, `If-None-Match`: a `304`). A
    /// `Some` answer may still describe a current file (a server that
    /// ignores the condition): the engine checks it again.
    async fn fetch_if_changed(
        &self,
        url: &Url,
        range: ByteRange,
        local: &LocalCopy,
    ) -> Result<Option<Fetched>> {
        let meta = self.stat(url).await?;
        if local.is_current(&meta) {
            return Ok(None);
        }
        self.fetch(url, range, None).await.map(Some)
    }

    /// [`Protocol::stat`] for a file with options of its own. A protocol
    /// that has no use for them (only HTTP sends headers) keeps this
    /// default, which ignores them.
    async fn stat_file(&self, url: &Url, _file: &FileOptions) -> Result<RemoteMeta> {
        self.stat(url).await
    }

    /// [`Protocol::fetch`] for a file with options of its own; the engine
    /// calls this one. The default ignores the options.
    async fn fetch_file(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        _file: &FileOptions,
    ) -> Result<Fetched> {
        self.fetch(url, range, validator).await
    }

    /// The port of a URL of `scheme` that names none, for a scheme the
    /// `url` crate has no default for (`sftp` 22, `ftps` 990): URLs with
    /// and without it are then one host to the per-host limit. `None`
    /// leaves it to the `url` crate.
    fn default_port(&self, _scheme: &str) -> Option<u16> {
        None
    }

    /// Whether its server stops at the end of a range it was asked for
    /// (HTTP, SFTP): then the engine asks for a long part in several
    /// requests, so that cutting the part later loses nothing the server
    /// sent. A protocol whose ranges only have a start (FTP's `REST`) says
    /// no, and each part is asked for in one request.
    fn stops_at_range_end(&self) -> bool {
        true
    }

    /// Whether a part may be cut while its request runs at little cost:
    /// the protocol asks for the bytes as it goes (SFTP's reads, about a
    /// link's worth in flight) and asks none past where the part now ends
    /// (its [`PartEnd`]), so a cut wastes what is in flight at most, not
    /// the rest of a range the server streams. Near the end of a file the
    /// engine then gives an idle connection half of any part that would
    /// take a few times longer than a request takes to answer, not only of
    /// one far from done (the last part of a capped link kept its one
    /// connection busy for half a second while seven idled).
    fn cuts_cheaply(&self) -> bool {
        false
    }

    /// Closes the idle connections it keeps, politely (FTP `QUIT`), at the
    /// end of a batch: servers that count sessions free their places at
    /// once rather than when they notice the connection is gone.
    async fn close(&self) {}
}

/// How a protocol crate makes itself known to the engine: submitted to
/// `inventory` (found when the crate is linked), or handed to
/// [`DownloaderBuilder::protocol`](crate::DownloaderBuilder::protocol).
#[derive(Debug, Clone, Copy)]
pub struct ProtocolPlugin {
    /// The URL schemes it serves, lower case (`"http"`, `"https"`).
    pub schemes: &'static [&'static str],
    /// Builds the protocol (its connection pools) for one download batch.
    pub build: fn(&ProtocolConfig) -> Result<Arc<dyn Protocol>>,
}

inventory::collect!(ProtocolPlugin);
