//! What the files of one batch share (settings, credentials, the bandwidth
//! cap, host slots, counters of transfers and files left), how a request
//! becomes a file job, and the batch's policy of how many connections a
//! file may use now.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::adapt::Adapt;
use super::file_job::{FileJob, Start};
use super::finish::{Expected, Finish};
use super::host_slots::HostSlots;
use super::parts::first_request_end;
use super::{Request, failed_early};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::naming::{self, NameTable};
use crate::netrc::Netrc;
use crate::protocol::{ByteRange, Fetched, FileOptions, PartEnd, Protocol, RemoteMeta, Validator};
use crate::redact::redact_url;
use crate::registry::Protocols;
use crate::reporter::Reporter;
use crate::results::{Failed, Succeeded};

use crate::resume;
use crate::throttle::Throttle;
use crate::writer::PartFile;

/// How often a download waiting for another's lock on its file looks
/// again: a file takes far longer than this, so the wait costs nothing.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// How many directories made a batch remembers (see [`Batch::create_dir`]).
const MAX_DIRS_KNOWN: usize = 4096;

/// How long after running out of file handles the batch adds no parts.
pub(super) const HANDLES_CALM: Duration = Duration::from_secs(2);

/// What the files of one batch share.
pub(super) struct Batch {
    pub(super) config: Config,
    /// Credentials for URLs without any (`--netrc`), read once per batch.
    pub(super) netrc: Option<Netrc>,
    /// The bandwidth cap shared by every transfer (`--max-speed`).
    pub(super) throttle: Option<Throttle>,
    /// Transfers to one host at once (`--max-per-host`).
    pub(super) hosts: Option<HostSlots>,
    /// The directories made so far.
    pub(super) dirs: Mutex<HashSet<Utf8PathBuf>>,
    /// Transfers running, all files together.
    pub(super) transfers: AtomicUsize,
    /// Transfers allowed at once: `max(max_parallel, max_splits)`, or what
    /// `adapt` grew it to.
    pub(super) budget: AtomicUsize,
    /// Grows `budget` where the user left it to the batch.
    pub(super) adapt: Option<Mutex<Adapt>>,
    /// Bytes received, all files together (what `adapt` measures).
    pub(super) received: AtomicU64,
    /// Files being downloaded by a task of the batch, and running files
    /// that could still be split (what `adapt` counts as waiting work).
    pub(super) file_tasks: AtomicUsize,
    pub(super) splittable_files: AtomicUsize,
    /// Files waiting for the answer to their first request: transfers
    /// too, as `adapt` counts them, though no worker runs yet.
    pub(super) opening: AtomicUsize,
    /// Files not finished yet, running or waiting for a slot.
    pub(super) files_left: AtomicUsize,
    /// Requests a streamed batch's stream holds ready beyond those taken,
    /// and the quickest answer to a request (µs; `u64::MAX`: none): what
    /// `adapt` counts as waiting work, and goes by for its pace.
    pub(super) ahead: AtomicUsize,
    pub(super) answer: AtomicU64,
    /// Notified when a file finishes: running files may then take the
    /// connections it leaves (see [`FileJob::help`]).
    pub(super) file_done: Notify,
    /// When the batch started: the clock of the two fields below.
    pub(super) started: Instant,
    /// When a byte last arrived, or a file last finished, in the batch
    /// (milliseconds since `started`).
    pub(super) last_progress: AtomicU64,
    /// When the process last ran out of file handles (milliseconds since
    /// `started`, plus one; 0: never).
    pub(super) out_of_handles: AtomicU64,
    /// Held by the one file at a time that gave back its first response
    /// to wait for the handle of its part file, from then until it ends:
    /// such a file holds that handle while it asks again, and several of
    /// them could hold every handle left, each waiting for a connection.
    pub(super) regain: Arc<tokio::sync::Semaphore>,
    pub(super) protocols: Protocols,
    pub(super) names: NameTable,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) cancel: CancellationToken,
}

impl Batch {
    pub(super) async fn download_one(
        self: Arc<Self>,
        request: Request,
    ) -> std::result::Result<Succeeded, Failed> {
        if self.cancel.is_cancelled() {
            return Err(failed_early(&request, Error::cancelled()));
        }
        let url = match Url::parse(&request.url) {
            Ok(mut url) => {
                if let Some(netrc) = &self.netrc {
                    netrc.apply(&mut url);
                }
                url
            }
            Err(e) => {
                let err = Error::new(ErrorKind::InvalidUrl, e.to_string());
                return self.next_mirror(request, err).await;
            }
        };
        let protocol = match self.protocols.get(url.scheme()) {
            Ok(p) => p,
            Err(e) => return self.next_mirror(request, e).await,
        };
        if let Err(e) = self.create_dir(&request.dir).await {
            let err = Error::io(format_args!("cannot create directory {}", request.dir), e);
            return Err(failed_early(&request, err));
        }
        let shown = match request.origin() == request.url {
            true => redact_url(&url),
            false => crate::redact::redact_url_str(request.origin()),
        };
        tracing::debug!(url = %redact_url(&url), "starting");
        let settings = self.settings_of(&request);
        let options = &settings.options;

        // The file's first transfer waits for a slot on its host; its other
        // parts take one only if one is free.
        let slot = match self.slot(&url, true).await {
            Ok(slot) => slot,
            Err(e) => return Err(failed_early(&request, e)),
        };
        let opening = Counting::new(&self.opening);
        let asked = Instant::now();
        // With --continue, a HEAD-like `stat` tells whether a file on disk
        // is complete or resumable before any body is asked for; otherwise
        // the first GET both describes the file and starts its transfer.
        // -N: the file this request would replace, when there is one,
        // decides whether a body is wanted at all.
        let local = self.local_copy(&request, &url);
        // While a mirror is left to ask, a failing URL is not retried: the
        // mirror is asked at once (see `mirrors.rs`).
        let tries = match request.mirror_urls() {
            [] => settings.max_tries,
            _ => 1,
        };
        // The protocol's own timing of the request, if it gives one (a
        // login is no answer: see `Fetched::answer`).
        let mut answer = None;
        let mut first_told = None;
        let first = if self.config.resume {
            self.attempts(tries, None, || self.stat(&protocol, &url, options))
                .await
                .map(|meta| Some((meta, None, None)))
        } else {
            // A range with an end, even before the size is known: once the
            // file is cut into parts, the first connection's server stops
            // where the first part does, rather than sending on into parts
            // that other connections fetch (where the connection would be
            // dropped, with all the bytes under way).
            let first = ByteRange::new(0, first_request_end(self.config.min_split_size));
            // A protocol whose ranges have no end (FTP's `REST`) would cut
            // its transfer there and fetch the rest on a new one: it runs
            // on, told where the first part ends once the file is cut.
            // (Not when asking only if the file changed: that request is
            // bounded as asked.)
            first_told =
                (local.is_none() && !protocol.stops_at_range_end()).then(|| PartEnd::new(u64::MAX));
            let told_options;
            let options = match &first_told {
                Some(told) => {
                    told_options = options.clone().with_part_end(told.clone());
                    &told_options
                }
                None => options,
            };
            let fetched = match &local {
                Some((_, copy)) => {
                    self.attempts(tries, None, || {
                        self.fetch_if_changed(&protocol, &url, first, copy)
                    })
                    .await
                }
                None => (self.attempts(tries, None, || {
                    self.fetch(&protocol, &url, first, None, options)
                }))
                .await
                .map(Some),
            };
            fetched.and_then(|fetched| {
                let Some(f) = fetched else { return Ok(None) };
                if f.offset != 0 {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "asked for the file from byte 0, got bytes from {}",
                            f.offset
                        ),
                    ));
                }
                answer = f.answer;
                Ok(Some((f.meta, Some(f.body), f.carrier)))
            })
        };
        self.answered(answer.unwrap_or_else(|| asked.elapsed()));
        let (meta, body, carrier) = match first {
            Ok(Some(first)) => first,
            Ok(None) => {
                let (path, copy) = local.expect("only a local copy is unchanged");
                return Ok(self.up_to_date(path, copy.size, &shown));
            }
            Err(e) => {
                // The host's slot is not held while another is tried.
                drop(slot);
                drop(opening);
                return self.next_mirror(request, e).await;
            }
        };
        let name = super::dry_run::file_name(&request, &meta, &url);
        // The server may not have honoured the condition, or there was
        // none to ask (a stat under --continue): its answer says it all.
        if let Some((path, copy)) = local
            && path.file_name() == Some(name.as_str())
            && copy.is_current(&meta)
        {
            return Ok(self.up_to_date(path, copy.size, &shown));
        }

        // With --continue, another run of the same list may be writing this
        // very file: one works on it at a time, and the other then finds
        // it complete.
        let _lock = if self.config.resume {
            match self.lock_target(&request.dir.join(&name), &shown).await {
                Ok(lock) => lock,
                Err(e) => return Err(failed_early(&request, e)),
            }
        } else {
            None
        };
        if self.config.resume
            && let Some(done) = self.already_complete(&request, &name, &meta, &shown).await
        {
            return Ok(done);
        }
        let target = self.names.reserve(&request.dir, &name, settings.overwrite);
        let temp = naming::part_path(&target);
        let resumed = if self.config.resume {
            resume::load(&temp, &meta)
        } else {
            None
        };
        let id = self.reporter.on_start(&shown, &name, meta.size);
        if let Some(spans) = &resumed {
            let have: u64 = spans.iter().map(|[start, pos, _]| pos - start).sum();
            tracing::debug!(url = %shown, have, "resuming");
            self.reporter.on_progress(id, have);
        }

        let mirrors = Arc::new(super::mirrors::Mirrors::new(
            (url.clone(), protocol),
            &meta,
            self.mirrors_of(&request),
            request.failed_urls(),
        ));
        let job = FileJob {
            mirrors: mirrors.clone(),
            batch: self.clone(),
            url,
            temp,
            id,
            size: meta.size,
            validator: Some(meta.validator.clone()).filter(|v| !v.is_empty()),
            parts: FileJob::no_parts(meta.size),
            opened: std::sync::OnceLock::new(),
            workers: AtomicUsize::new(0),
            span_done: Notify::new(),
            cancel: Mutex::new(self.cancel.child_token()),
            state_final: Mutex::new(false),
            settings,
        };
        let start = Start {
            asked: if meta.ranges {
                first_request_end(self.config.min_split_size)
            } else {
                u64::MAX
            },
            told: first_told.filter(|_| meta.ranges),
            body,
            carrier,
            ranges: meta.ranges,
            resumed,
            slot,
            sent: asked,
        };
        drop(opening);
        let mut expected: Vec<Expected> = (request.checksum.iter().cloned())
            .map(|sum| Expected {
                sum,
                from_server: false,
            })
            .collect();
        if self.config.verify_server_digests {
            expected.extend(meta.digests.iter().cloned().map(|sum| Expected {
                sum,
                from_server: true,
            }));
        }
        let finish = Finish {
            expected,
            modified: meta.modified.filter(|_| self.config.remote_time),
        };
        let result = (job.run(start, &target, finish).await).map_err(|e| mirrors.explain(e));
        // In flight no more: the file system now tells what is there.
        let landed = result.as_ref().ok().map(|(path, _)| path.as_path());
        self.names.release(&target, landed);
        self.reporter.on_finish(id, result.as_ref().err());
        match result {
            Ok((path, size)) => Ok(Succeeded {
                path,
                url: shown,
                size,
                up_to_date: false,
                served_by: mirrors.served_by(),
            }),
            Err(error) => Err(Failed {
                filepath_partial: target,
                url: shown,
                error,
            }),
        }
    }

    /// Waits until no other download (of this process or another) works
    /// on `target`, and returns the lock that keeps it so. A lock that
    /// cannot be taken at all (a directory that refuses the lock file) is
    /// no reason to fail: the download goes on without it.
    async fn lock_target(
        &self,
        target: &Utf8Path,
        shown: &str,
    ) -> Result<Option<crate::files::TargetLock>> {
        let path = naming::lock_path(target);
        let mut told = false;
        loop {
            match crate::files::TargetLock::try_acquire(&path) {
                Ok(Some(lock)) => return Ok(Some(lock)),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(url = %shown, %path, "no lock: {e}");
                    return Ok(None);
                }
            }
            if !told {
                tracing::info!(url = %shown, %target, "another download of this file is running: waiting for it");
                told = true;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return Err(Error::cancelled()),
                () = tokio::time::sleep(LOCK_POLL) => {}
            }
        }
    }

    /// With `--continue`: the file is already on disk, of the remote size
    /// (and of the checksum asked for and the digests the server sent
    /// with the size, when there are), so it is kept as it is.
    pub(super) async fn already_complete(
        &self,
        request: &Request,
        name: &str,
        meta: &RemoteMeta,
        shown: &str,
    ) -> Option<Succeeded> {
        // A tree's file on disk was found out of date, whatever its size.
        if request.mirror {
            return None;
        }
        let path = request.dir.join(name);
        let size = meta.size?;
        // A link is not a complete file, whatever it points to.
        let on_disk = tokio::fs::symlink_metadata(&path).await.ok()?;
        if !on_disk.is_file() || on_disk.len() != size {
            return None;
        }
        // The checksum asked for, and the digests the server sent with the
        // size: a file of the right size with other bytes is not complete.
        let mut expected: Vec<&crate::Checksum> = request.checksum.iter().collect();
        if self.config.verify_server_digests {
            expected.extend(&meta.digests);
        }
        if !expected.is_empty() {
            let mut algos: Vec<_> = expected.iter().map(|sum| sum.algo()).collect();
            algos.sort();
            algos.dedup();
            let file = crate::files::open_regular(&path, false).ok()??;
            let actual = PartFile::new(file).checksums(algos).await.ok()?;
            if let Some(want) = expected.iter().find(|want| !actual.contains(want)) {
                tracing::info!(url = %shown, %path, "on disk at the remote size but not {}: downloaded again", want.algo());
                return None;
            }
        }
        if !self.names.claim(&path) {
            return None;
        }
        self.names.release(&path, Some(&path));
        tracing::debug!(url = %shown, %path, "already complete");
        let id = self.reporter.on_start(shown, name, Some(size));
        self.reporter.on_finish(id, None);
        Some(Succeeded {
            path,
            url: shown.to_owned(),
            size,
            up_to_date: false,
            served_by: Vec::new(),
        })
    }

    /// Into how many parts a file starting now may be cut: parts pay when
    /// connections are to spare, not when `max_parallel` files already
    /// keep as many busy (then parts are slower than whole files, over FTP,
    /// where a part is a login, much slower; see `docs/benchmarks.md`). The
    /// batch aims at about `max(max_parallel, max_splits)` transfers, and
    /// counts the other files that hold or are about to take a slot, not
    /// only the transfers already running: at the start of a batch the
    /// other slots have not begun theirs yet, and the first file would be
    /// cut as if it were alone (more FTP logins than transfers).
    pub(super) fn splits_now(&self, max_splits: usize) -> usize {
        if self.short_of_handles() {
            return 1;
        }
        max_splits.min(self.spare(0, max_splits)).max(1)
    }

    /// Runs one file's `download`, a panic in it failing that file alone
    /// (as `fallback`), and counts the file finished.
    pub(super) async fn run_file(
        &self,
        download: impl std::future::Future<Output = super::Outcome>,
        fallback: Failed,
    ) -> super::Outcome {
        use futures_util::FutureExt as _;
        let outcome = std::panic::AssertUnwindSafe(download)
            .catch_unwind()
            .await
            .unwrap_or(Err(fallback));
        self.files_left.fetch_sub(1, Ordering::SeqCst);
        self.progressed();
        self.file_done.notify_waiters();
        outcome
    }

    /// Notes that a byte arrived or a file finished.
    pub(super) fn progressed(&self) {
        self.progressed_at(Instant::now());
    }

    /// [`Batch::progressed`] with the time already read: it runs for every
    /// chunk received, which has read the clock once already.
    pub(super) fn progressed_at(&self, now: Instant) {
        let now = now.saturating_duration_since(self.started).as_millis() as u64;
        self.last_progress.fetch_max(now, Ordering::Relaxed);
    }

    /// How long the batch has gone without a byte or a finished file.
    pub(super) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the process ran out of file handles lately: no file is
    /// then cut into parts, and no part added, until it has not for a
    /// while.
    pub(super) fn short_of_handles(&self) -> bool {
        match self.out_of_handles.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let at = Duration::from_millis(at - 1);
                self.started.elapsed().saturating_sub(at) < HANDLES_CALM
            }
        }
    }

    /// Transfers a file that has `own` running, and may have `max_splits`,
    /// may still add: the batch aims at `max(max_parallel, max_splits)`
    /// (the file's own `max_splits` when larger), less the larger of the
    /// transfers running (the file's own included) and the file's own plus
    /// one for each other file that holds or is about to take one of the
    /// `max_parallel` slots.
    pub(super) fn spare(&self, own: usize, max_splits: usize) -> usize {
        let budget = self.budget.load(Ordering::Relaxed).max(max_splits);
        let running = self.transfers.load(Ordering::SeqCst);
        let other_files = self
            .files_left
            .load(Ordering::SeqCst)
            .saturating_sub(1)
            .min(self.files_allowed() - 1);
        budget.saturating_sub(running.max(other_files + own))
    }

    /// Creates `dir` (and its parents) once per batch.
    pub(super) async fn create_dir(&self, dir: &Utf8Path) -> std::io::Result<()> {
        if self.dirs.lock().expect("dirs poisoned").contains(dir) {
            return Ok(());
        }
        tokio::fs::create_dir_all(dir).await?;
        let mut dirs = self.dirs.lock().expect("dirs poisoned");
        // A list may name a directory per line: forgetting costs one more
        // `create_dir_all`, remembering them all would grow with the list.
        if dirs.len() >= MAX_DIRS_KNOWN {
            dirs.clear();
        }
        dirs.insert(dir.to_owned());
        Ok(())
    }

    /// `Protocol::stat`, bounded by the batch's cancellation.
    pub(super) async fn stat(
        &self,
        protocol: &Arc<dyn Protocol>,
        url: &Url,
        file: &FileOptions,
    ) -> Result<RemoteMeta> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            r = protocol.stat_file(url, file) => r,
        }
    }

    /// One call to the protocol, bounded by the batch's cancellation. The
    /// protocol bounds connecting and waiting for an answer by the timeout
    /// itself: only it can tell waiting for a connection slot (which may
    /// rightly take long under `max_per_host`) from waiting on the network.
    pub(super) async fn fetch(
        &self,
        protocol: &Arc<dyn Protocol>,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        file: &FileOptions,
    ) -> Result<Fetched> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            r = protocol.fetch_file(url, range, validator, file) => r,
        }
    }
}

/// One counted in a counter of the batch while it lives.
pub(super) struct Counting<'a>(&'a AtomicUsize);

impl<'a> Counting<'a> {
    pub(super) fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Counting(counter)
    }
}

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
