//! SFTP for pymatris, on `russh` (async, pure Rust) and an SFTP v3 client
//! of our own (`client.rs`), whose handles and paths are bytes.
//!
//! `sftp://[user[:password]@]host[:port]/path` URLs: the path is absolute
//! (`/srv/data/a.bin`), or relative to the login directory when it starts
//! with `/~/`. Files are served in ranges, so large files download in
//! parts; the files of a batch to one host share its SSH connections, more
//! than one only where more are measured to be faster, and reads are
//! pipelined. Host keys are checked against `known_hosts`; see
//! [`SftpProtocol::new`] for the settings read.

#![warn(missing_docs, missing_debug_implementations)]

mod auth;
mod client;
mod conn;
mod error;
mod growth;
mod known_hosts;
mod meter;
mod read;
mod ssh;
mod target;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::auth::KeySources;
use crate::client::{Attrs, Sftp, SftpError};
use crate::conn::{Lease, Pool, Settings};
use crate::known_hosts::Policy;
use crate::read::{OpenFile, Reader};
use crate::target::Target;
use pymatris_core::{
    ByteRange, DirEntry, EntryKind, Error, ErrorKind, Fetched, FileOptions, PartEnd, Protocol,
    ProtocolConfig, RemoteMeta, Result, Url, Validator,
};

/// SFTP, to register explicitly
/// (`Downloader::builder(config).protocol(PLUGIN)`). The crate also
/// registers it with `inventory`, which finds it whenever the crate is
/// linked.
pub const PLUGIN: pymatris_core::ProtocolPlugin = pymatris_core::ProtocolPlugin {
    schemes: &["sftp"],
    build: |cfg| Ok(Arc::new(SftpProtocol::new(cfg)?)),
};

pymatris_core::inventory::submit! { PLUGIN }

/// The settings only SFTP reads, handed over in the batch's config
/// ([`pymatris_core::Config::with`]). Absent, [`SftpOptions::default`]
/// applies: ssh-agent and `~/.ssh/id_*` keys, host keys checked against
/// `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`, unknown hosts
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SftpOptions {
    /// A private key tried before ssh-agent and `~/.ssh/id_*`.
    pub identity: Option<PathBuf>,
    /// The `known_hosts` file to check host keys against, instead of the
    /// user's and the system's.
    pub known_hosts: Option<PathBuf>,
    /// Add the keys of unknown hosts to `known_hosts` (a changed key is
    /// still refused).
    pub accept_new_host_keys: bool,
}

impl SftpOptions {
    /// Tries this private key first.
    pub fn identity(mut self, path: Option<PathBuf>) -> Self {
        self.identity = path;
        self
    }

    /// Checks host keys against this file.
    pub fn known_hosts(mut self, path: Option<PathBuf>) -> Self {
        self.known_hosts = path;
        self
    }

    /// Adds the keys of unknown hosts to `known_hosts`.
    pub fn accept_new_host_keys(mut self, accept: bool) -> Self {
        self.accept_new_host_keys = accept;
        self
    }
}

/// The SFTP protocol of one download batch: its connection pool and the
/// settings it was built with.
pub struct SftpProtocol {
    pool: Pool,
}

impl fmt::Debug for SftpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpProtocol")
            .field("pool", &self.pool)
            .finish()
    }
}

impl SftpProtocol {
    /// Builds the protocol from the batch's settings: `timeout` (connect,
    /// handshake, login, and each SFTP request), `max_per_host` (SSH
    /// connections to one host and port), `insecure` (no host key check at
    /// all), and the [`SftpOptions`].
    pub fn new(cfg: &ProtocolConfig) -> Result<SftpProtocol> {
        let default = SftpOptions::default();
        let options = cfg.get::<SftpOptions>().unwrap_or(&default);
        let settings = Settings {
            timeout: cfg.timeout,
            max_per_host: cfg.max_per_host,
            policy: Arc::new({
                let policy = Policy::new(
                    options.known_hosts.clone(),
                    cfg.insecure,
                    options.accept_new_host_keys,
                );
                if cfg.read_only {
                    policy.without_recording()
                } else {
                    policy
                }
            }),
            keys: KeySources::new(options.identity.clone()),
            socks: cfg.socks(),
        };
        Ok(SftpProtocol {
            pool: Pool::new(settings),
        })
    }

    fn target(&self, url: &Url) -> Result<Target> {
        // `--netrc` credentials are already in the URL: the engine puts
        // them there for every protocol.
        Target::parse(url)
    }

    /// Runs `op` on a pooled connection. When it fails with a transport
    /// error on a connection that was reused (the server may have closed it
    /// while idle), the connection is dropped and `op` tried once more on a
    /// new one; the engine's retries handle the rest.
    async fn with_conn<T, F, Fut>(&self, target: &Target, op: F) -> Result<T>
    where
        F: Fn(Lease) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut again = true;
        loop {
            let lease = self.pool.get(target).await?;
            let fresh = lease.fresh;
            match op(lease).await {
                Err(e) if error::breaks_connection(&e) && !fresh && again => {
                    tracing::debug!(error = %e, "reused SSH connection failed, reconnecting");
                    again = false;
                }
                other => return other,
            }
        }
    }
}

/// What an SFTP `stat` tells the engine.
fn meta_of(attrs: &Attrs) -> RemoteMeta {
    RemoteMeta {
        size: attrs.size,
        ranges: attrs.size.is_some(),
        validator: Validator {
            etag: None,
            modified: attrs.mtime.map(|t| t.to_string()),
        },
        filename: None,
        final_url: None,
        modified: (attrs.mtime)
            .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.into())),
        digests: Vec::new(),
    }
}

fn not_a_file(path: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("{path} is a directory, not a file"),
    )
}

/// The entries of the directory `dir` (`/srv/tree/.`): what `READDIR`
/// says, and for a link, where it points and (`STAT`, following it) what
/// it points to.
async fn list_on(sftp: &Sftp, dir: &[u8]) -> std::result::Result<Vec<DirEntry>, SftpError> {
    let handle = sftp.opendir(dir).await?;
    let mut out = Vec::new();
    let read = async {
        while let Some(batch) = sftp.readdir(&handle).await? {
            for (name, attrs) in batch {
                if &name[..] == b"." || &name[..] == b".." {
                    continue;
                }
                out.push((name, attrs));
            }
        }
        Ok::<_, SftpError>(())
    }
    .await;
    let _ = sftp.close(&handle).await;
    read?;
    let base = dir.strip_suffix(b".").unwrap_or(dir);
    let mut entries = Vec::with_capacity(out.len());
    for (name, attrs) in out {
        let kind = |a: &Attrs| match () {
            () if a.is_file() => EntryKind::File,
            () if a.is_dir() => EntryKind::Dir,
            () => EntryKind::Other,
        };
        let mut entry = DirEntry {
            name: name.to_vec(),
            kind: kind(&attrs),
            size: attrs.size,
            modified: attrs
                .mtime
                .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.into())),
            link_target: None,
        };
        if attrs.is_link() {
            let path = [base, &name[..]].concat();
            entry.link_target = Some(sftp.readlink(&path).await?.to_vec());
            match sftp.stat(&path).await {
                Ok(target) => {
                    entry.kind = kind(&target);
                    entry.size = target.size;
                    entry.modified = target
                        .mtime
                        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.into()));
                }
                // A dangling link: nothing to fetch.
                Err(_) => entry.kind = EntryKind::Other,
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Opens `target`'s path and streams `range` of it, asking no read past
/// where `part_end`, when given, says the part now ends.
async fn fetch_on(
    lease: Lease,
    target: &Target,
    range: ByteRange,
    part_end: Option<PartEnd>,
) -> Result<Fetched> {
    let path = target.display_path();
    let path = path.as_str();
    let sftp = lease.sftp.clone();
    // A part of a large file counts for the pool's growth from now, not
    // from when its open is answered: on a long link its open waits
    // behind the reads of the parts already on the connection.
    if read::end_known(range.start, range.end) {
        lease.set_movable(read::movable(range.start, range.end, lease.read_len));
    }
    let asked = std::time::Instant::now();
    let opened = sftp
        .open(&target.path)
        .await
        .inspect(|_| lease.meter.saw_round_trip(asked.elapsed()))
        .map_err(|e| error::sftp(&format!("opening {path}"), e))
        .inspect_err(|e| {
            if error::breaks_connection(e) {
                lease.mark_dead();
            }
        })?;
    let file = Arc::new(OpenFile::new(sftp.clone(), opened));
    // The first read goes out with the fstat: a small file arrives in the
    // same round trip as its size.
    let mut reader = Reader::new(
        lease,
        file.clone(),
        range.start,
        range.end,
        part_end,
        path,
        &target.path,
    );
    let carrier = reader.carrier();
    let (attrs, first) = tokio::join!(sftp.fstat(&file.handle), reader.next_chunk());
    let attrs = attrs.map_err(|e| error::sftp(&format!("reading the attributes of {path}"), e))?;
    if attrs.is_dir() {
        return Err(not_a_file(path));
    }
    // Another version is the engine's to refuse: this reports the one
    // found.
    let meta = meta_of(&attrs);
    if let Some(size) = attrs.size {
        reader.limit_to(size);
    }
    // A first chunk that ran past the size (the file grew after the
    // fstat) is cut to it.
    let first = match (first, attrs.size) {
        (Some(Ok(bytes)), Some(size)) if range.start + bytes.len() as u64 > size => {
            let keep = size.saturating_sub(range.start) as usize;
            (keep > 0).then(|| Ok(bytes.slice(..keep)))
        }
        (first, _) => first,
    };
    Ok(Fetched {
        meta,
        offset: range.start,
        body: reader.into_stream(first),
        carrier: Some(carrier),
        answer: Some(asked.elapsed()),
    })
}

#[async_trait::async_trait]
impl Protocol for SftpProtocol {
    fn default_port(&self, _scheme: &str) -> Option<u16> {
        Some(target::SSH_PORT)
    }

    /// A part asks its reads as it goes, a link's worth in flight, and
    /// none past where the part is cut (`read.rs`).
    fn cuts_cheaply(&self) -> bool {
        true
    }

    async fn stat(&self, url: &Url) -> Result<RemoteMeta> {
        let target = self.target(url)?;
        let target = &target;
        self.with_conn(target, |lease| async move {
            let path = target.display_path();
            let attrs = lease
                .sftp
                .stat(&target.path)
                .await
                .map_err(|e| error::sftp(&format!("looking up {path}"), e))
                .inspect_err(|e| {
                    if error::breaks_connection(e) {
                        lease.mark_dead();
                    }
                })?;
            if attrs.is_dir() {
                return Err(not_a_file(&path));
            }
            Ok(meta_of(&attrs))
        })
        .await
    }

    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>> {
        let target = Target::parse_dir(url)?;
        let target = &target;
        self.with_conn(target, |lease| async move {
            let path = target.display_path();
            list_on(&lease.sftp, &target.path)
                .await
                .map_err(|e| error::sftp(&format!("listing {path}"), e))
                .inspect_err(|e| {
                    if error::breaks_connection(e) {
                        lease.mark_dead();
                    }
                })
        })
        .await
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        // SFTP cannot make a read conditional; the engine compares the
        // version the answer reports.
        _validator: Option<&Validator>,
    ) -> Result<Fetched> {
        self.fetch_file(url, range, None, &FileOptions::default())
            .await
    }

    /// A part cut inside its range (the engine lowered `file.part_end`)
    /// asks no read past the cut: the server answers every read asked,
    /// and whatever it answers past the cut is discarded.
    async fn fetch_file(
        &self,
        url: &Url,
        range: ByteRange,
        _validator: Option<&Validator>,
        file: &FileOptions,
    ) -> Result<Fetched> {
        let target = self.target(url)?;
        let target = &target;
        let part_end = &file.part_end;
        self.with_conn(target, |lease| {
            fetch_on(lease, target, range, part_end.clone())
        })
        .await
    }
}
