//! FTP and FTPS for pymatris, on [`suppaftp`].
//!
//! - `ftp://[user[:password]@]host[:port]/path`: anonymous login
//!   (`anonymous` / `anonymous@`) when the URL names no user; the path is
//!   relative to the login directory (`%2F` at its start makes it
//!   absolute, RFC 1738); binary mode; passive mode, `EPSV` first and
//!   `PASV` when the server refuses it (the address of a `PASV` answer is
//!   ignored for the control connection's, as curl does).
//! - `ftps://` is implicit TLS (port 990); `ftp://` with
//!   [`FtpOptions::require_tls`] requires explicit `AUTH TLS`. Certificates
//!   are checked against the system roots plus `ca_certs`, unless
//!   `insecure`.
//! - The size comes from `SIZE` (else `MLST`; for the first request of a
//!   file of a tree, from its listing, the body then checking that the
//!   data ends there), the version from `MDTM`;
//!   ranges are `REST` + `RETR` on a control connection of their own.
//! - Control connections are pooled per server and login, reused across
//!   files, and bounded per server by `max_per_host`. A server that refuses
//!   one more connection gets a [`ErrorKind::Busy`], and a lower limit.
//!   Sessions the pool lets go, and the idle ones at the end of the batch
//!   ([`Protocol::close`]), say `QUIT`, so servers that count sessions
//!   free their places at once.
//! - A new login runs in a task of its own: the request that asked for it
//!   takes whichever comes first, that session or one another request
//!   lets go meanwhile; logins under way never outnumber the requests
//!   waiting for a session. A server on the same machine (quickest round
//!   trip under 0.5 ms) gets at most four sessions (`pool.rs`), unless
//!   `max_per_host` says how many.
//! - Once a server has shown that `EPSV` transfers work (and `SIZE`, where
//!   the size is not known from a listing), a file's commands go in one
//!   write: `[SIZE] [MDTM] EPSV [REST] RETR` (`pipeline.rs`), two round
//!   trips a file instead of four or five.
//! - One transfer per control connection. A body dropped before its end
//!   (the engine stops at the end of its range) closes the data connection;
//!   a background task reads the server's `426`/`226` and pools the session
//!   again (no `ABOR`: vsftpd answers it in a way suppaftp rejects). What
//!   the server had written into its socket past the cut is sent for
//!   nothing, so the data connection of such a part stops where the engine
//!   says the part now ends, and shrinks its receive window as that end
//!   nears (`window.rs`).
//! - With TLS, each control connection has a TLS session cache of its own,
//!   which its data connections resume: vsftpd's `require_ssl_reuse`
//!   refuses a data connection that resumes another connection's session.

#![warn(missing_docs, missing_debug_implementations)]

mod body;
mod caps;
mod error;
mod listing;
mod pipeline;
mod pool;
mod session;
mod target;
mod window;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pymatris_core::{
    ByteRange, DirEntry, Error, ErrorKind, Fetched, FileOptions, PartEnd, Protocol, ProtocolConfig,
    RemoteMeta, Url, Validator,
};
use rustls::ClientConfig;
use suppaftp::{FtpError, Mode};

use crate::body::{Body, Data};
use crate::error::{ftp_error, is_unsupported, keeps_session, reply_error, reply_text};
use crate::pool::{Acquired, Caps, Host, Pool, Session};
use crate::session::{Probe, within};
use crate::target::Target;
use crate::window::Tail;

/// FTP and FTPS, to register explicitly
/// (`Downloader::builder(config).protocol(PLUGIN)`). The crate also
/// registers it with `inventory`, which finds it whenever the crate is
/// linked.
pub const PLUGIN: pymatris_core::ProtocolPlugin = pymatris_core::ProtocolPlugin {
    schemes: &["ftp", "ftps"],
    build: |cfg| Ok(Arc::new(FtpProtocol::new(cfg)?)),
};

pymatris_core::inventory::submit! { PLUGIN }

/// The settings only FTP reads, handed over in the batch's config
/// ([`pymatris_core::Config::with`]). Absent, [`FtpOptions::default`]
/// applies: `ftp://` URLs are plain FTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FtpOptions {
    /// Require explicit TLS (`AUTH TLS`) on `ftp://` URLs.
    pub require_tls: bool,
}

impl FtpOptions {
    /// Requires (or not) `AUTH TLS` on `ftp://` URLs.
    pub fn require_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }
}

/// FTP and FTPS: one per download batch, holding its connection pools.
pub struct FtpProtocol {
    timeout: Duration,
    ftp_tls: bool,
    config: ProtocolConfig,
    /// The SOCKS5 proxy of the batch (or of `ALL_PROXY`).
    socks: Option<pymatris_core::socks::SocksProxy>,
    /// Built on first use: plain FTP never reads the CA stores.
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
    pool: Pool,
}

impl std::fmt::Debug for FtpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpProtocol")
            .field("timeout", &self.timeout)
            .field("ftp_tls", &self.ftp_tls)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl FtpProtocol {
    /// The FTP protocol for a batch configured by `cfg`.
    pub fn new(cfg: &ProtocolConfig) -> Result<FtpProtocol, Error> {
        Ok(FtpProtocol {
            timeout: cfg.timeout,
            ftp_tls: cfg.get::<FtpOptions>().is_some_and(|o| o.require_tls),
            config: cfg.clone(),
            socks: cfg.socks(),
            tls: OnceLock::new(),
            pool: Pool::new(cfg.max_per_host),
        })
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, Error> {
        self.tls
            .get_or_init(|| {
                pymatris_tls::client_config(&self.config)
                    .map(Arc::new)
                    .map_err(|e| e.chain())
            })
            .clone()
            .map_err(|chain| Error::new(ErrorKind::Tls, chain))
    }

    /// A logged-in session for `target`: pooled, or new. A new login runs
    /// in a task of its own, and the request takes whichever comes first:
    /// that login, or a session another request lets go meanwhile (the
    /// login then joins the pool). A login takes a server many round trips
    /// and, with hashed passwords, much of its CPU; a session is often
    /// free again sooner.
    async fn session(&self, host: &Arc<Host>, target: &Target) -> Result<Session, Error> {
        loop {
            let mut session = self.session_owing(host, target).await?;
            match pipeline::settle(&mut session, self.timeout).await {
                Ok(()) => return Ok(session),
                Err(e) => {
                    tracing::debug!(host = %host.id, error = %e, "a pooled session went stale");
                }
            }
        }
    }

    /// [`FtpProtocol::session`], which may still owe the final reply of
    /// its last transfer (`pipeline::settle`): for a caller that sends its
    /// commands first.
    async fn session_owing(&self, host: &Arc<Host>, target: &Target) -> Result<Session, Error> {
        let _waiting = host.waiting();
        match host.acquire(&target.login).await {
            Acquired::Idle(session) => Ok(*session),
            Acquired::Fresh(slot) => {
                let tls = match target.login.security.is_tls() {
                    true => Some(self.tls_config()?),
                    false => None,
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                let (task_host, task_target) = (host.clone(), target.clone());
                let (timeout, socks) = (self.timeout, self.socks.clone());
                tokio::spawn(async move {
                    let login = session::connect(
                        &task_host,
                        &task_target,
                        slot,
                        tls,
                        timeout,
                        socks.as_ref(),
                    );
                    match tx.send(login.await) {
                        Ok(()) => {}
                        // The request took another session: this one is
                        // pooled for the next.
                        Err(Ok(session)) => session.release(),
                        Err(Err(e)) => {
                            tracing::debug!(host = %task_host.id, error = %e, "a login nobody waits for failed");
                        }
                    }
                });
                host.first_of(&target.login, rx).await
            }
        }
    }

    /// A session and what the server says of the file. A pooled session
    /// that the server dropped while it was idle is replaced silently.
    async fn prepare(
        &self,
        host: &Arc<Host>,
        target: &Target,
        want_mtime: bool,
        known_size: Option<u64>,
    ) -> Result<(Session, Probe), Error> {
        loop {
            let mut session = self.session(host, target).await?;
            let probed = session::probe(
                &mut session,
                host,
                &target.path,
                (want_mtime, known_size),
                self.timeout,
            );
            match probed.await {
                Ok(probe) => return Ok((session, probe)),
                Err(e) if session.reused && !keeps_session(&e) => {
                    tracing::debug!(host = %host.id, error = %e, "a pooled session went stale");
                }
                Err(e) => {
                    let err = ftp_error(e, &target.shown);
                    drop(session);
                    return Err(err);
                }
            }
        }
    }

    /// `REST` (when `start` > 0) and `RETR`, trying `PASV` when the server
    /// refuses `EPSV`. A failure says whether the session is still usable.
    async fn retr(
        &self,
        session: &mut Session,
        host: &Host,
        target: &Target,
        start: u64,
    ) -> Result<body::Transfer, (Error, bool)> {
        let what = format!("RETR {}", target.shown);
        let fail = |e: FtpError| {
            let keep = keeps_session(&e);
            let err = ftp_error(e, &what);
            if err.kind() == ErrorKind::Busy {
                // No data connection: the server counts data connections
                // among its connections and is full. This session goes, to
                // free its place, and the host allows one fewer.
                host.refused_data_connection();
                return (err, false);
            }
            (err, keep)
        };
        let mut tried_pasv = false;
        loop {
            if start > 0 {
                let offset = usize::try_from(start).map_err(|_| {
                    let e = Error::new(
                        ErrorKind::RangeUnsupported,
                        format!("{what}: offset too large"),
                    );
                    (e, true)
                })?;
                within(self.timeout, session.ftp.resume_transfer(offset))
                    .await
                    .map_err(fail)?;
            }
            let err = match within(self.timeout, session.ftp.retr_as_stream(&target.path)).await {
                Ok(transfer) => {
                    if tried_pasv {
                        Caps::set(&host.caps.no_epsv, true);
                    } else if !session.passive {
                        Caps::set(&host.caps.epsv_ok, true);
                    }
                    return Ok(transfer);
                }
                Err(e) => e,
            };
            if is_unsupported(&err) {
                if !session.passive && !Caps::get(&host.caps.epsv_ok) {
                    // Maybe `EPSV` was refused: try `PASV` once.
                    session.passive = true;
                    session.ftp.set_mode(Mode::Passive);
                    tried_pasv = true;
                    continue;
                }
                if tried_pasv {
                    // `PASV` failed alike: `EPSV` was not the culprit.
                    session.passive = false;
                    session.ftp.set_mode(Mode::ExtendedPassive);
                }
                if start > 0
                    && let FtpError::UnexpectedResponse(reply) = &err
                {
                    Caps::set(&host.caps.no_rest, true);
                    return Err((rest_refused(start, target, &reply_text(reply)), true));
                }
            }
            return Err(fail(err));
        }
    }
}

#[async_trait::async_trait]
impl Protocol for FtpProtocol {
    fn default_port(&self, scheme: &str) -> Option<u16> {
        match scheme {
            "ftp" => Some(target::FTP_PORT),
            "ftps" => Some(target::FTPS_PORT),
            _ => None,
        }
    }

    // `REST` has no end: a request that stops short of its part's end is
    // a cut transfer, and a new data connection for the rest.
    fn stops_at_range_end(&self) -> bool {
        false
    }

    async fn stat(&self, url: &Url) -> pymatris_core::Result<RemoteMeta> {
        let target = target::parse(url, self.ftp_tls)?;
        let host = self.pool.host(&target.host);
        let (session, probe) = self.prepare(&host, &target, true, None).await?;
        session.release();
        if probe.size.is_none()
            && let Some(reply) = &probe.size_refused
        {
            return Err(reply_error(reply, &format!("SIZE {}", target.shown)));
        }
        Ok(meta(&host, probe))
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> pymatris_core::Result<Fetched> {
        self.fetch_listed(url, range, validator, &FileOptions::default())
            .await
    }

    async fn fetch_file(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        file: &FileOptions,
    ) -> pymatris_core::Result<Fetched> {
        self.fetch_listed(url, range, validator, file).await
    }

    async fn list(&self, url: &Url) -> pymatris_core::Result<Vec<DirEntry>> {
        let target = target::parse_dir(url, self.ftp_tls)?;
        let host = self.pool.host(&target.host);
        let path = (!target.path.is_empty()).then_some(target.path.as_str());
        loop {
            let mut session = self.session(&host, &target).await?;
            match self.list_on(&mut session, &host, path).await {
                Ok(entries) => {
                    session.release();
                    return Ok(entries);
                }
                Err(e) if session.reused && !keeps_session(&e) => {
                    tracing::debug!(host = %host.id, error = %e, "a pooled session went stale");
                }
                Err(e) => {
                    if keeps_session(&e) {
                        session.release();
                    }
                    return Err(ftp_error(e, &format!("listing {}", target.shown)));
                }
            }
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

impl FtpProtocol {
    /// [`Protocol::fetch_file`]: the listing's size, and where the part
    /// now ends, are taken from `file`.
    async fn fetch_listed(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        file: &FileOptions,
    ) -> pymatris_core::Result<Fetched> {
        let target = target::parse(url, self.ftp_tls)?;
        let host = self.pool.host(&target.host);
        if range.start > 0 && Caps::get(&host.caps.no_rest) {
            return Err(Error::new(
                ErrorKind::RangeUnsupported,
                format!("{}: the server does not resume transfers", target.shown),
            ));
        }
        // A part only needs the time when the first response had one.
        let want_mtime = validator.is_none_or(|v| v.modified.is_some());
        // Another version is the engine's to refuse: this reports the one
        // found.
        // The first request of a listed file takes its size from the
        // listing (no `SIZE`); its body then checks the bytes against it.
        let listed = (file.listed_size).filter(|_| validator.is_none() && range.start == 0);
        let ask = pipeline::Ask {
            path: &target.path,
            size: listed.is_none(),
            mtime: want_mtime && !Caps::get(&host.caps.no_mdtm),
            start: range.start,
        };
        // The part's end must be known before the data connection opens.
        let end_known = file.part_end.is_some() || range.end.is_none() || listed.is_some();
        if end_known
            && let Some(fetched) = self
                .fetch_pipelined(&host, &target, &ask, range, listed, file)
                .await?
        {
            return Ok(fetched);
        }
        let (mut session, probe) = self.prepare(&host, &target, want_mtime, listed).await?;
        let meta = meta(&host, probe);
        // Where the transfer stops: where the engine says its part now ends
        // (read again as the bytes come: the part may be cut while it
        // runs, or was while we logged in), else the range's end, unless
        // that is the end of the file. A transfer cut before the end of the
        // file costs the server what its socket holds past the cut.
        let end = part_end(file, range, meta.size);
        let plan = session
            .window
            .set(end.as_ref().map(|e| e.get().saturating_sub(range.start)));
        let transfer = match self.retr(&mut session, &host, &target, range.start).await {
            Ok(t) => t,
            Err((e, keep)) => {
                if keep {
                    session.release();
                }
                return Err(e);
            }
        };
        tracing::debug!(url = %target.shown, start = range.start, "transfer started");
        let what = format!("RETR {}", target.shown);
        let tail = end.map(|end| Tail::new(end, range.start, plan, transfer.get_ref().get_ref()));
        Ok(Fetched::new(
            meta,
            range.start,
            Box::pin(
                Body::new(
                    Data::Client(transfer),
                    Some(session),
                    tail,
                    self.timeout,
                    what,
                )
                .ending_at(listed),
            ),
        ))
    }

    /// `MLSD`, or `LIST` where the server does not know it.
    async fn list_on(
        &self,
        session: &mut Session,
        host: &Host,
        path: Option<&str>,
    ) -> Result<Vec<DirEntry>, FtpError> {
        if !Caps::get(&host.caps.no_mlsd) {
            match within(self.timeout, session.ftp.mlsd(path)).await {
                Ok(lines) => return Ok(listing::from_mlsd(&lines)),
                Err(e) if is_unsupported(&e) => Caps::set(&host.caps.no_mlsd, true),
                Err(e) => return Err(e),
            }
        }
        let lines = within(self.timeout, session.ftp.list(path)).await?;
        Ok(listing::from_list(&lines))
    }
}

fn meta(host: &Host, probe: Probe) -> RemoteMeta {
    let modified = probe.modified.as_deref().and_then(session::mdtm_time);
    RemoteMeta {
        size: probe.size,
        ranges: probe.size.is_some() && !Caps::get(&host.caps.no_rest),
        validator: Validator {
            etag: None,
            modified: probe.modified,
        },
        filename: None,
        final_url: None,
        modified,
        digests: Vec::new(),
    }
}

/// Where a transfer of `range` stops: where the engine says its part now
/// ends (read again as the bytes come: the part may be cut while it runs),
/// else the range's end, unless that is the end of a file of `size`.
fn part_end(file: &FileOptions, range: ByteRange, size: Option<u64>) -> Option<PartEnd> {
    match (&file.part_end, range.end, size) {
        (Some(told), _, _) => Some(told.clone()),
        (None, Some(end), Some(size)) if end < size => Some(PartEnd::new(end)),
        _ => None,
    }
}

/// The error of a `REST` the server refused, with its `reply`.
fn rest_refused(start: u64, target: &Target, reply: &str) -> Error {
    Error::new(
        ErrorKind::RangeUnsupported,
        format!(
            "REST {start} {}: the server refused to resume: {reply}",
            target.shown
        ),
    )
}
