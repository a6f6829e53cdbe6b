//! The URLs of one file (`Request::mirrors`): which of them a new
//! connection goes to (the one with the fewest connections), what each is
//! held to, and which were dropped because they failed, so that the others
//! finish the file.
//!
//! A mirror is held to the file's size and, where both sides tell one, to
//! its modification time (to the second: HTTP `Last-Modified`, FTP `MDTM`
//! and SFTP mtime alike, so that an FTP mirror of an HTTP file compares);
//! mirrors kept in step (rsync, a CDN) keep their files' times. Entity
//! tags are not compared across servers: each server makes its own for the
//! same bytes. Within one mirror, every answer must be of the version of
//! its first (see `version.rs`), so no mirror switches versions in the
//! middle of a file. A checksum given with the request checks the whole.
//!
//! Before the file's first answer, a URL that fails is not retried while
//! another is left to ask, which is asked at once (as aria2 does); the
//! last one left gets every try.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::OwnedSemaphorePermit;
use url::Url;

use std::future::Future;
use std::pin::Pin;

use super::batch::Batch;
use super::file_job::FileJob;
use super::retry::PROGRESS_MIN;
use super::version::same_version;
use super::{Outcome, Request, failed_early};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Protocol, RemoteMeta, Validator};
use crate::redact::{redact_url, redact_url_str};

/// One URL of a file.
pub(super) struct Mirror {
    pub(super) url: Url,
    pub(super) protocol: Arc<dyn Protocol>,
    /// The version it serves, from its first answer (`None` inside: it
    /// told none).
    validator: OnceLock<Option<Validator>>,
    dropped: AtomicBool,
    /// Why it was dropped (redacted).
    why: OnceLock<String>,
    /// Connections on it now.
    conns: AtomicUsize,
    /// Bytes of the file it served.
    served: AtomicU64,
}

impl Mirror {
    fn new(url: Url, protocol: Arc<dyn Protocol>) -> Arc<Mirror> {
        Arc::new(Mirror {
            url,
            protocol,
            validator: OnceLock::new(),
            dropped: AtomicBool::new(false),
            why: OnceLock::new(),
            conns: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        })
    }

    /// Counts `bytes` of the file received from it.
    pub(super) fn served(&self, bytes: u64) {
        self.served.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    /// The version to make a request conditional on, once known.
    pub(super) fn validator(&self) -> Option<&Validator> {
        self.validator.get().and_then(Option::as_ref)
    }
}

/// The URLs of a file; the first is the one whose answer described it.
pub(super) struct Mirrors {
    all: Vec<Arc<Mirror>>,
    /// The file's modification time, as its first answer told it.
    modified: Option<SystemTime>,
    /// The URLs that failed before the first answer, and why.
    failed_first: Vec<(String, String)>,
}

impl Mirrors {
    /// The URL that answered first with `meta` (its version is the
    /// file's), then the others; `failed_first`: those that failed before.
    pub(super) fn new(
        first: (Url, Arc<dyn Protocol>),
        meta: &RemoteMeta,
        others: Vec<(Url, Arc<dyn Protocol>)>,
        failed_first: &[(String, String)],
    ) -> Mirrors {
        let primary = Mirror::new(first.0, first.1);
        let _ = primary
            .validator
            .set(Some(meta.validator.clone()).filter(|v| !v.is_empty()));
        let mut all = vec![primary];
        all.extend(others.into_iter().map(|(url, p)| Mirror::new(url, p)));
        Mirrors {
            all,
            modified: meta.modified,
            failed_first: failed_first.to_vec(),
        }
    }

    /// The URLs that served bytes of the file (redacted), when it has
    /// several, or failed at first; empty otherwise.
    pub(super) fn served_by(&self) -> Vec<String> {
        if !self.several() && self.failed_first.is_empty() {
            return Vec::new();
        }
        (self.all.iter())
            .filter(|m| m.served.load(Ordering::Relaxed) > 0)
            .map(|m| redact_url(&m.url))
            .collect()
    }

    /// `error`, the file's last, with what became of each of its other
    /// URLs, when it has several: each failed before it.
    pub(super) fn explain(&self, error: Error) -> Error {
        if local(&error) {
            return error;
        }
        let dropped = (self.all.iter()).filter_map(|m| {
            let why = m.why.get()?;
            Some((redact_url(&m.url), why.clone()))
        });
        let before: Vec<String> = (self.failed_first.iter().cloned())
            .chain(dropped)
            .map(|(url, why)| format!("{url}: {why}"))
            .collect();
        if before.is_empty() {
            return error;
        }
        let live = (self.all.iter()).filter(|m| !m.dropped());
        let live: Vec<String> = live.map(|m| redact_url(&m.url)).collect();
        error.context(format_args!(
            "from {}; every other URL of the file failed before: {}",
            live.join(", "),
            before.join("; ")
        ))
    }

    /// The URL that described the file.
    pub(super) fn primary(&self) -> &Arc<Mirror> {
        &self.all[0]
    }

    /// Whether the file has more than one URL.
    pub(super) fn several(&self) -> bool {
        self.all.len() > 1
    }

    /// The mirror a new connection goes to: of those not dropped, the one
    /// with the fewest connections (the first of them on a tie), counted
    /// as one more until the connection is dropped.
    pub(super) fn pick(&self) -> Conn {
        let live = self.all.iter().filter(|m| !m.dropped());
        let mirror = live
            .min_by_key(|m| m.conns.load(Ordering::SeqCst))
            .unwrap_or(&self.all[0]);
        Conn::on(mirror.clone())
    }

    /// The primary, for the connection of the file's first answer.
    pub(super) fn first_conn(&self, slot: Option<OwnedSemaphorePermit>) -> Conn {
        let mut conn = Conn::on(self.all[0].clone());
        conn.slot = slot;
        conn
    }

    /// Drops `mirror` for `why`, unless it is the last one left. Returns
    /// whether it is dropped, and whether by this call.
    fn drop_mirror(&self, mirror: &Mirror, why: &Error, file: &str) -> (bool, bool) {
        if mirror.dropped() {
            return (true, false);
        }
        let live = self.all.iter().filter(|m| !m.dropped()).count();
        if live < 2 {
            return (false, false);
        }
        let now = !mirror.dropped.swap(true, Ordering::SeqCst);
        if now {
            let _ = mirror.why.set(why.chain());
            tracing::warn!(
                "{}: no longer used as a mirror of {file}: {}",
                redact_url(&mirror.url),
                why.chain()
            );
        }
        (true, now)
    }
}

/// A connection's mirror, and its slot on the mirror's host.
pub(super) struct Conn {
    pub(super) mirror: Arc<Mirror>,
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

impl Conn {
    fn on(mirror: Arc<Mirror>) -> Conn {
        mirror.conns.fetch_add(1, Ordering::SeqCst);
        Conn { mirror, slot: None }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.mirror.conns.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether an error says nothing of the server that gave it (a local
/// disk, a cancellation, a busy server that will take the connection
/// later): no reason to drop a mirror.
fn local(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Cancelled | ErrorKind::Io | ErrorKind::Checksum | ErrorKind::Busy
    ) || error.is_out_of_handles()
}

impl FileJob {
    /// A connection for a new worker: on the mirror with the fewest, with
    /// a slot on its host (waiting for one with `wait`; without, failing
    /// with [`ErrorKind::Busy`] when none is free).
    pub(super) async fn connect(&self, wait: bool) -> Result<Conn> {
        let mut conn = self.mirrors.pick();
        conn.slot = self.batch.slot(&conn.mirror.url, wait).await?;
        Ok(conn)
    }

    /// Moves `conn` to another mirror after `error`, when the file has
    /// others and its mirror failed (an attempt that brought nothing, or
    /// an error that no retry mends), dropping that mirror. Returns whether
    /// it did; if not, the error is the worker's to retry or report.
    pub(super) async fn leave_mirror(
        &self,
        conn: &mut Conn,
        error: &Error,
        gained: u64,
    ) -> Result<bool> {
        if !self.mirrors.several() || local(error) {
            return Ok(false);
        }
        let failed = !error.is_retryable() || gained < PROGRESS_MIN || conn.mirror.dropped();
        if !failed {
            return Ok(false);
        }
        let (dropped, now) = self.mirrors.drop_mirror(&conn.mirror, error, &self.shown());
        if now {
            let url = redact_url(&conn.mirror.url);
            self.batch.reporter.on_mirror_dropped(self.id, &url, error);
        }
        if !dropped {
            return Ok(false);
        }
        self.switch_mirror(conn).await?;
        Ok(true)
    }

    /// Moves `conn` off its mirror, which is dropped, to the one with the
    /// fewest connections.
    pub(super) async fn switch_mirror(&self, conn: &mut Conn) -> Result<()> {
        // The old slot is given back before the new one is waited for.
        *conn = self.mirrors.pick();
        conn.slot = self.batch.slot(&conn.mirror.url, true).await?;
        tracing::debug!(url = %self.shown(), mirror = %redact_url(&conn.mirror.url), "a connection moves to another mirror");
        Ok(())
    }

    /// Whether `answer`, from `mirror`, is of the version being
    /// downloaded: the primary's answers are held to the file's version;
    /// another mirror's, to the file's size and to its own first answer.
    pub(super) fn same_version_at(&self, mirror: &Mirror, answer: &RemoteMeta) -> Result<()> {
        if self.is_primary(mirror) {
            return same_version(self.validator.as_ref(), self.size, answer);
        }
        if let (Some(ours), Some(theirs)) = (self.size, answer.size)
            && ours != theirs
        {
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{} serves another version of the file ({theirs} bytes; {} has {ours})",
                    redact_url(&mirror.url),
                    self.shown()
                ),
            )
            .retryable(false));
        }
        let second = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
        if let (Some(ours), Some(theirs)) = (self.mirrors.modified, answer.modified)
            && second(ours) != second(theirs)
        {
            let told = |v: &Validator| v.modified.clone().unwrap_or_default();
            let primary = self.mirrors.primary().validator().map(told);
            return Err(Error::new(
                ErrorKind::Changed,
                format!(
                    "{} serves another version of the file (modified {}; {} was modified {})",
                    redact_url(&mirror.url),
                    told(&answer.validator),
                    self.shown(),
                    primary.unwrap_or_default(),
                ),
            )
            .retryable(false));
        }
        let own = mirror
            .validator
            .get_or_init(|| Some(answer.validator.clone()).filter(|v| !v.is_empty()));
        same_version(own.as_ref(), self.size, answer)
    }

    fn is_primary(&self, mirror: &Mirror) -> bool {
        std::ptr::eq(mirror, Arc::as_ptr(self.mirrors.primary()))
    }

    /// The file's URL as results show it.
    pub(super) fn shown(&self) -> String {
        redact_url(&self.url)
    }
}

impl Batch {
    /// After the first request of `request` failed with `error`: the
    /// download goes on from its next mirror, when it has one, the URL
    /// that failed no longer among them. When none is left, the error
    /// says what each URL did.
    pub(super) fn next_mirror(
        self: Arc<Self>,
        request: Request,
        error: Error,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        Box::pin(async move {
            let next = (!local(&error)).then(|| request.next_mirror(&error));
            let Some(next) = next.flatten() else {
                let error = match request.failed_urls() {
                    [] => error,
                    before => {
                        let before: Vec<String> = (before.iter())
                            .map(|(url, why)| format!("{url}: {why}"))
                            .collect();
                        error.context(format_args!(
                            "from {}; every other URL of the file failed before: {}",
                            redact_url_str(&request.url),
                            before.join("; ")
                        ))
                    }
                };
                return Err(failed_early(&request, error));
            };
            tracing::warn!(
                "{}: {}; trying a mirror, {}",
                redact_url_str(&request.url),
                error.chain(),
                redact_url_str(&next.url)
            );
            self.download_one(next).await
        })
    }

    /// The mirrors of `request` that can be used: those whose URL parses
    /// and whose scheme a protocol serves (the others are dropped with a
    /// warning).
    pub(super) fn mirrors_of(&self, request: &Request) -> Vec<(Url, Arc<dyn Protocol>)> {
        let mut out = Vec::new();
        for raw in request.mirror_urls() {
            let parsed = Url::parse(raw)
                .map_err(|e| Error::new(ErrorKind::InvalidUrl, e.to_string()))
                .and_then(|mut url| {
                    if let Some(netrc) = &self.netrc {
                        netrc.apply(&mut url);
                    }
                    let protocol = self.protocols.get(url.scheme())?;
                    Ok((url, protocol))
                });
            match parsed {
                Ok(mirror) => out.push(mirror),
                Err(e) => tracing::warn!(
                    "{}: not used as a mirror of {}: {}",
                    redact_url_str(raw),
                    redact_url_str(request.origin()),
                    e.chain()
                ),
            }
        }
        out
    }
}
