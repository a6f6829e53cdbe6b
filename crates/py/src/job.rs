//! One `Downloader.download()` call: the settings and the queue the Python
//! layer hands over, run on the engine while the caller waits without the
//! GIL.
//!
//! pymatris 0.0.10 lets each file have its own `max_splits`, `max_tries`,
//! `headers` and `overwrite`: the engine's requests carry them, so the
//! whole queue is one batch of the engine, its files sharing one
//! `max_parallel` whatever their settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use pymatris_core::socks::SocksProxy;
use pymatris_core::{CancellationToken, Config, Downloader, Error, Reporter, Request, Results};
use pymatris_proto_http::HttpOptions;
use pymatris_proto_sftp::SftpOptions;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::iter::{self, OutcomeIter};
use crate::logs;
use crate::words;

/// How often the waiting caller hands events to Python and looks for
/// Ctrl-C: ten times a second, the most a progress bar needs.
const TICK: Duration = Duration::from_millis(100);

/// How one request ended: its place in the queue, the path, the URL (no
/// password), and for a failure its kind, whether it was retryable, the
/// message and the whole chain of causes.
pub(crate) type Outcome = (
    usize,
    String,
    String,
    Option<(String, bool, String, String)>,
);

/// A queue of downloads and the settings they share; `run` downloads
/// them once.
#[pyclass(module = "pymatris._native")]
pub(crate) struct Job {
    config: Config,
    /// Each request with its URL as results show it.
    requests: Mutex<Option<Vec<(Request, String)>>>,
    queued: AtomicU64,
    cancel: CancellationToken,
}

#[pymethods]
impl Job {
    /// The settings of the whole queue (the Python layer has checked their
    /// types and ranges and passes every one).
    #[new]
    #[pyo3(signature = (*, max_parallel, max_splits, max_tries, overwrite, timeout, user_agent,
        headers, ca_certs, insecure, proxy, netrc, identity, known_hosts, accept_new_host_keys,
        max_speed, max_per_host, min_split_size, resume))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_parallel: usize,
        max_splits: usize,
        max_tries: u32,
        overwrite: bool,
        timeout: f64,
        user_agent: String,
        headers: Vec<(String, String)>,
        ca_certs: Vec<PathBuf>,
        insecure: bool,
        proxy: Option<String>,
        netrc: Option<PathBuf>,
        identity: Option<PathBuf>,
        known_hosts: Option<PathBuf>,
        accept_new_host_keys: bool,
        max_speed: Option<u64>,
        max_per_host: Option<usize>,
        min_split_size: Option<u64>,
        resume: bool,
    ) -> PyResult<Self> {
        if max_parallel == 0 || max_splits == 0 || max_tries == 0 {
            return Err(PyValueError::new_err(
                "max_parallel, max_splits and max_tries must be at least 1",
            ));
        }
        let timeout = Duration::try_from_secs_f64(timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                PyValueError::new_err("timeouts must be a positive number of seconds")
            })?;
        logs::add_secrets(proxy.iter().map(String::as_str), &headers);
        // A SOCKS5 proxy serves every protocol; an HTTP one only HTTP.
        let socks = match proxy.as_deref().filter(|p| SocksProxy::is_socks(p)) {
            Some(p) => {
                Some(SocksProxy::parse(p).map_err(|e| PyValueError::new_err(e.to_string()))?)
            }
            None => None,
        };
        let proxy = proxy.filter(|p| !SocksProxy::is_socks(p));
        let mut config = Config::default()
            .max_parallel(max_parallel)
            .max_splits(max_splits)
            .max_tries(max_tries)
            .overwrite(overwrite)
            .timeout(timeout)
            .with(
                HttpOptions::default()
                    .user_agent(user_agent)
                    .proxy(proxy)
                    .headers(headers),
            )
            .ca_certs(ca_certs)
            .insecure(insecure)
            .netrc(netrc)
            .socks_proxy(socks)
            .with(
                SftpOptions::default()
                    .identity(identity)
                    .known_hosts(known_hosts)
                    .accept_new_host_keys(accept_new_host_keys),
            )
            .max_speed(max_speed)
            .max_per_host(max_per_host)
            .resume(resume);
        if let Some(size) = min_split_size {
            config = config.min_split_size(size.max(1));
        }
        Ok(Job {
            config,
            requests: Mutex::new(Some(Vec::new())),
            queued: AtomicU64::new(0),
            cancel: CancellationToken::new(),
        })
    }

    /// Queues one file.
    #[pyo3(signature = (url, dir, *, filename=None, sha256=None, max_splits=None, max_tries=None,
        headers=None, overwrite=None, mirrors=None))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &self,
        url: String,
        dir: String,
        filename: Option<String>,
        sha256: Option<String>,
        max_splits: Option<usize>,
        max_tries: Option<u32>,
        headers: Option<Vec<(String, String)>>,
        overwrite: Option<bool>,
        mirrors: Option<Vec<String>>,
    ) -> PyResult<()> {
        if max_splits == Some(0) || max_tries == Some(0) {
            return Err(PyValueError::new_err(
                "max_splits and max_tries must be at least 1",
            ));
        }
        let headers = headers.unwrap_or_default();
        let mirrors = mirrors.unwrap_or_default();
        logs::add_secrets(
            std::iter::once(url.as_str()).chain(mirrors.iter().map(String::as_str)),
            &headers,
        );
        let shown = pymatris_core::Url::parse(&url)
            .map(|u| pymatris_core::redact_url(&u))
            .unwrap_or_else(|_| pymatris_core::redact_url_str(&url));
        let mut request = Request::new(url).dir(dir);
        if let Some(name) = filename {
            request = request.filename(name);
        }
        if let Some(hex) = sha256 {
            request = request.sha256(hex);
        }
        if let Some(n) = max_splits {
            request = request.max_splits(n);
        }
        if let Some(n) = max_tries {
            request = request.max_tries(n);
        }
        if let Some(overwrite) = overwrite {
            request = request.overwrite(overwrite);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !mirrors.is_empty() {
            request = request.mirrors(mirrors);
        }
        let mut requests = self.requests.lock().expect("job poisoned");
        requests
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("this job has already run"))?
            .push((request, shown));
        self.queued.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Downloads the queue, blocking, without the GIL. `on_events`, when
    /// given, receives lists of progress events at most ten times a
    /// second: `("start", id, url, name, size)`, `("progress", id, bytes)`,
    /// `("retry", id, attempt, message)`, `("finish", id, error)`. Returns
    /// each request's outcome. Ctrl-C (or an exception in `on_events`)
    /// cancels the transfers, waits for them to clean up, and is raised.
    #[pyo3(signature = (on_events=None))]
    fn run(&self, py: Python<'_>, on_events: Option<Py<PyAny>>) -> PyResult<Vec<Outcome>> {
        let requests = self.take_requests()?;
        let mut logger = logs::start(py)?;
        let progress = on_events.as_ref().map(|_| Arc::new(Progress::default()));
        let runtime = runtime().map_err(|e| {
            PyRuntimeError::new_err(format!("cannot start the download engine: {e}"))
        })?;
        let (tx, mut rx) = mpsc::channel();
        let (config, cancel) = (self.config.clone(), self.cancel.clone());
        let reporter = progress.clone();
        let engine = std::thread::Builder::new()
            .name("pymatris".into())
            .spawn(move || {
                let outcomes = runtime.block_on(run_batch(config, requests, reporter, cancel));
                let _ = tx.send(outcomes);
            })
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the download thread: {e}"))
            })?;
        let mut raised: Option<PyErr> = None;
        let outcomes = loop {
            // A receiver may not be shared with the detached closure, only
            // moved into it and back.
            let (got, back) = py.detach(move || (rx.recv_timeout(TICK), rx));
            rx = back;
            logs::flush(py, &mut logger);
            if let (Some(progress), Some(callback)) = (&progress, &on_events) {
                let events = progress.drain(py)?;
                if !events.is_empty()
                    && raised.is_none()
                    && let Err(e) = callback.call1(py, (events,))
                {
                    self.cancel.cancel();
                    raised = Some(e);
                }
            }
            match got {
                Ok(outcomes) => break outcomes,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Vec::new();
                }
            }
            if raised.is_none()
                && let Err(e) = py.check_signals()
            {
                self.cancel.cancel();
                raised = Some(e);
            }
        };
        if py.detach(|| engine.join()).is_err() && raised.is_none() {
            raised = Some(PyRuntimeError::new_err(
                "the download engine failed (a bug in pymatris)",
            ));
        }
        logs::flush(py, &mut logger);
        match raised {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Downloads the queue as `run` does, but hands each outcome over as
    /// its file finishes, through the iterator returned (see `iter.rs`).
    #[pyo3(signature = (on_events=None))]
    fn iter(&self, py: Python<'_>, on_events: Option<Py<PyAny>>) -> PyResult<OutcomeIter> {
        let requests = self.take_requests()?.into_iter().map(|(r, _)| r).collect();
        iter::start(
            py,
            self.config.clone(),
            requests,
            self.cancel.clone(),
            on_events,
        )
    }

    /// Cancels the transfers of a running `run` (from another thread): they
    /// end as cancelled failures, their temporary files removed (or kept
    /// for resuming).
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// How many files are queued.
    fn __len__(&self) -> usize {
        self.queued.load(Ordering::SeqCst) as usize
    }
}

impl Job {
    fn take_requests(&self) -> PyResult<Vec<(Request, String)>> {
        (self.requests.lock().expect("job poisoned").take())
            .ok_or_else(|| PyRuntimeError::new_err("this job has already run"))
    }
}

/// The runtime of a download: one worker thread as in the CLI (curl and
/// aria2 have one too), unless `TOKIO_WORKER_THREADS` says otherwise.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    builder.build()
}

async fn run_batch(
    config: Config,
    requests: Vec<(Request, String)>,
    reporter: Option<Arc<Progress>>,
    cancel: CancellationToken,
) -> Vec<Outcome> {
    let mut downloader = Downloader::new(config);
    if let Some(reporter) = reporter {
        downloader = downloader.with_reporter(reporter);
    }
    let places: Vec<(usize, String)> = (requests.iter().enumerate())
        .map(|(i, (_, shown))| (i, shown.clone()))
        .collect();
    for (request, _) in requests {
        downloader.enqueue(request);
    }
    let token = downloader.cancel_token();
    let relay = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            token.cancel();
        })
    };
    if cancel.is_cancelled() {
        downloader.cancel_token().cancel();
    }
    let results = downloader.download().await;
    relay.abort();
    place(results, &places)
}

/// Gives each result of a batch its place in the queue. The engine keeps
/// the successes and the errors each in the order of the requests, so each
/// request is the next of one of the two lists: the one whose URL is the
/// request's (either, when both or neither are: the URLs are then the
/// same, or rewritten alike by `netrc`).
fn place(results: Results, places: &[(usize, String)]) -> Vec<Outcome> {
    let mut success = results.success.into_iter().peekable();
    let mut errors = results.errors.into_iter().peekable();
    let mut out = Vec::with_capacity(places.len());
    for (index, shown) in places {
        let take_error = match (success.peek(), errors.peek()) {
            (Some(s), Some(e)) => e.url == *shown && s.url != *shown,
            (None, Some(_)) => true,
            _ => false,
        };
        if take_error {
            if let Some(e) = errors.next() {
                out.push((
                    *index,
                    e.filepath_partial.into_string(),
                    e.url,
                    Some(describe(&e.error)),
                ));
            }
        } else if let Some(s) = success.next() {
            out.push((*index, s.path.into_string(), s.url, None));
        }
    }
    out
}

pub(crate) fn describe(error: &Error) -> (String, bool, String, String) {
    (
        error.kind().public_name(),
        error.is_retryable(),
        words::error_text(error, false),
        words::error_text(error, true),
    )
}

/// What the engine reported since Python last looked.
#[derive(Default)]
pub(crate) struct Progress {
    next_id: AtomicU64,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    started: Vec<(u64, String, String, Option<u64>)>,
    /// Each running file's bytes so far, and whether they changed.
    bytes: HashMap<u64, (u64, bool)>,
    retries: Vec<(u64, u32, String)>,
    finished: Vec<(u64, Option<String>)>,
}

impl Progress {
    /// The events since the last call, as Python tuples, oldest kind first.
    pub(crate) fn drain(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut state = self.state.lock().expect("progress poisoned");
        let mut events = Vec::new();
        for (id, url, name, size) in state.started.drain(..) {
            events.push(
                ("start", id, url, name, size)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
            );
        }
        let mut changed: Vec<(u64, u64)> = Vec::new();
        for (id, (bytes, dirty)) in state.bytes.iter_mut() {
            if std::mem::take(dirty) {
                changed.push((*id, *bytes));
            }
        }
        changed.sort_unstable();
        for (id, bytes) in changed {
            events.push(
                ("progress", id, bytes)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
            );
        }
        for (id, attempt, message) in state.retries.drain(..) {
            events.push(
                ("retry", id, attempt, message)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind(),
            );
        }
        let finished: Vec<_> = state.finished.drain(..).collect();
        for (id, error) in finished {
            state.bytes.remove(&id);
            events.push(("finish", id, error).into_pyobject(py)?.into_any().unbind());
        }
        Ok(events)
    }
}

impl Reporter for Progress {
    fn on_start(&self, url: &str, name: &str, size: Option<u64>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().expect("progress poisoned");
        state
            .started
            .push((id, url.to_owned(), name.to_owned(), size));
        state.bytes.insert(id, (0, false));
        id
    }

    fn on_progress(&self, id: u64, bytes: u64) {
        let mut state = self.state.lock().expect("progress poisoned");
        if let Some((total, dirty)) = state.bytes.get_mut(&id) {
            *total += bytes;
            *dirty = true;
        }
    }

    fn on_rewind(&self, id: u64, bytes: u64) {
        let mut state = self.state.lock().expect("progress poisoned");
        if let Some((total, dirty)) = state.bytes.get_mut(&id) {
            *total = total.saturating_sub(bytes);
            *dirty = true;
        }
    }

    fn on_retry(&self, id: u64, attempt: u32, error: &Error) {
        let mut state = self.state.lock().expect("progress poisoned");
        state.retries.push((id, attempt, error.to_string()));
    }

    fn on_finish(&self, id: u64, error: Option<&Error>) {
        let mut state = self.state.lock().expect("progress poisoned");
        state.finished.push((id, error.map(|e| e.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pymatris_core::{ErrorKind, Failed, Succeeded};

    fn ok(url: &str) -> Succeeded {
        Succeeded {
            path: format!("d/{}", &url[url.len() - 1..]).into(),
            url: url.to_owned(),
            size: 1,
            up_to_date: false,
            served_by: Vec::new(),
        }
    }

    fn failed(url: &str) -> Failed {
        Failed {
            filepath_partial: "d/x".into(),
            url: url.to_owned(),
            error: Error::new(ErrorKind::NotFound, "gone"),
        }
    }

    #[test]
    fn results_of_a_batch_go_back_to_their_places() {
        let places: Vec<(usize, String)> =
            [(0, "http://h/a"), (3, "http://h/b"), (5, "http://h/c")]
                .into_iter()
                .map(|(i, u)| (i, u.to_owned()))
                .collect();
        let results = Results {
            success: vec![ok("http://h/a"), ok("http://h/c")],
            errors: vec![failed("http://h/b")],
        };
        let out = place(results, &places);
        let got: Vec<(usize, &str, bool)> = out
            .iter()
            .map(|(i, _, url, e)| (*i, url.as_str(), e.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "http://h/a", false),
                (3, "http://h/b", true),
                (5, "http://h/c", false)
            ]
        );
        assert_eq!(out[1].3.as_ref().unwrap().0, "NotFound");
    }

    #[test]
    fn the_same_url_twice_fills_both_places() {
        let places = vec![(1, "http://h/a".to_owned()), (2, "http://h/a".to_owned())];
        let results = Results {
            success: vec![ok("http://h/a")],
            errors: vec![failed("http://h/a")],
        };
        let out = place(results, &places);
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().filter(|o| o.3.is_some()).count(), 1);
    }
}
