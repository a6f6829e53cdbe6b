//! `Downloader.iter_download()`: a job's outcomes handed to Python one at a
//! time, each as soon as its file is done, while the engine runs the whole
//! queue as one streaming batch (`Downloader::download_each`) on a thread
//! of its own. The engine takes a request only while fewer than
//! `max_parallel` + [`AHEAD`] outcomes are unclaimed, so a loop that is
//! slow, or never finishes, holds a bounded number of them however long
//! the queue. Waiting for the next one releases the GIL, hands log records
//! and progress events to Python, and looks for Ctrl-C, as `Job.run` does;
//! closing the iterator early cancels what is left and waits for the
//! transfers to clean up.

use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::Stream;
use pymatris_core::{CancellationToken, Config, Downloader, Failed, Request, Succeeded};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::sync::Semaphore;

use crate::job::{Outcome, Progress, describe, runtime};
use crate::logs;

/// How often a wait for the next outcome hands log records and progress
/// events to Python and looks for Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// How many finished outcomes may wait for the Python loop, beyond the
/// files in flight, before the engine takes no new request.
pub(crate) const AHEAD: usize = 64;

/// The outcomes of a job, as they come.
#[pyclass(module = "pymatris._native")]
pub(crate) struct OutcomeIter {
    /// `None` once every outcome is out, or the iterator was closed.
    rx: Mutex<Option<Receiver<Outcome>>>,
    engine: Mutex<Option<JoinHandle<()>>>,
    /// A permit per request the engine may take; each outcome claimed
    /// gives one back.
    gate: Arc<Semaphore>,
    cancel: CancellationToken,
    progress: Option<Arc<Progress>>,
    on_events: Option<Py<PyAny>>,
    /// When progress events last went to `on_events`.
    handed: Mutex<Instant>,
}

/// Starts the engine on `requests`; `on_events` receives progress events
/// as `Job.run` hands them.
pub(crate) fn start(
    py: Python<'_>,
    config: Config,
    requests: Vec<Request>,
    cancel: CancellationToken,
    on_events: Option<Py<PyAny>>,
) -> PyResult<OutcomeIter> {
    logs::start(py)?;
    let progress = on_events.as_ref().map(|_| Arc::new(Progress::default()));
    let runtime = runtime()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the download engine: {e}")))?;
    let gate = Arc::new(Semaphore::new(config.max_parallel.max(1) + AHEAD));
    let (tx, rx) = mpsc::channel();
    let engine = {
        let (gate, cancel, reporter) = (gate.clone(), cancel.clone(), progress.clone());
        std::thread::Builder::new()
            .name("pymatris".into())
            .spawn(move || {
                runtime.block_on(run_each(config, requests, reporter, cancel, gate, tx));
            })
            .map_err(|e| {
                PyRuntimeError::new_err(format!("cannot start the download thread: {e}"))
            })?
    };
    Ok(OutcomeIter {
        rx: Mutex::new(Some(rx)),
        engine: Mutex::new(Some(engine)),
        gate,
        cancel,
        progress,
        on_events,
        handed: Mutex::new(Instant::now()),
    })
}

async fn run_each(
    config: Config,
    requests: Vec<Request>,
    reporter: Option<Arc<Progress>>,
    cancel: CancellationToken,
    gate: Arc<Semaphore>,
    tx: mpsc::Sender<Outcome>,
) {
    let mut downloader = Downloader::new(config);
    if let Some(reporter) = reporter {
        downloader = downloader.with_reporter(reporter);
    }
    // A cancelled job takes no more requests: closing the gate ends the
    // stream, and the engine's token ends the transfers in flight.
    let token = downloader.cancel_token();
    let relay = {
        let (cancel, gate) = (cancel.clone(), gate.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            token.cancel();
            gate.close();
        })
    };
    if cancel.is_cancelled() {
        downloader.cancel_token().cancel();
        gate.close();
    }
    let left = requests.len();
    let gated = futures_util::stream::unfold(
        (requests.into_iter(), gate),
        |(mut requests, gate)| async move {
            gate.acquire().await.ok()?.forget();
            let request = requests.next()?;
            Some((request, (requests, gate)))
        },
    );
    let requests = Counted {
        inner: Box::pin(gated),
        left,
    };
    downloader
        .download_each(requests, |index, result| {
            // A closed iterator wants no more outcomes.
            let _ = tx.send(outcome(index, result));
        })
        .await;
    relay.abort();
}

/// A job's outcome as `Job.run` gives it.
fn outcome(index: usize, result: Result<Succeeded, Failed>) -> Outcome {
    match result {
        Ok(s) => (index, s.path.into_string(), s.url, None),
        Err(e) => (
            index,
            e.filepath_partial.into_string(),
            e.url,
            Some(describe(&e.error)),
        ),
    }
}

/// A stream that says how many requests it still holds, so that the
/// engine cuts files into parts as `download()` of the same queue would.
struct Counted<S> {
    inner: S,
    left: usize,
}

impl<S: Stream<Item = Request> + Unpin> Stream for Counted<S> {
    type Item = Request;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Request>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.left = self.left.saturating_sub(1);
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl OutcomeIter {
    /// Hands the progress events since the last time to `on_events`, at
    /// most ten times a second unless `now`.
    fn hand_events(&self, py: Python<'_>, now: bool) -> PyResult<()> {
        let (Some(progress), Some(callback)) = (&self.progress, &self.on_events) else {
            return Ok(());
        };
        {
            let mut handed = self.handed.lock().expect("iterator poisoned");
            if !now && handed.elapsed() < TICK {
                return Ok(());
            }
            *handed = Instant::now();
        }
        let events = progress.drain(py)?;
        if !events.is_empty() {
            callback.call1(py, (events,))?;
        }
        Ok(())
    }

    /// Waits for the engine thread, once the outcomes are all out.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        let engine = self.engine.lock().expect("iterator poisoned").take();
        let Some(engine) = engine else {
            return Ok(());
        };
        match py.detach(move || engine.join()) {
            Ok(()) => Ok(()),
            Err(_) => Err(PyRuntimeError::new_err(
                "the download engine failed (a bug in pymatris)",
            )),
        }
    }

    /// Cancels what is left, waits for the transfers to clean up (their
    /// outcomes unwanted), and for the engine.
    fn stop(&self, py: Python<'_>, rx: Option<Receiver<Outcome>>) -> PyResult<()> {
        self.cancel.cancel();
        if let Some(rx) = rx {
            py.detach(move || while rx.recv().is_ok() {});
        }
        let joined = self.join(py);
        logs::flush(py, &mut logs::Logger::lazy());
        joined
    }
}

#[pymethods]
impl OutcomeIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next outcome, `(index, path, url, error)` as `Job.run` gives
    /// them, in the order the files finish; `None` (Python's
    /// `StopIteration`) when all are out. Ctrl-C, or an exception in
    /// `on_events`, cancels the transfers, waits for them to clean up, and
    /// is raised.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Outcome>> {
        let Some(mut rx) = self.rx.lock().expect("iterator poisoned").take() else {
            return Ok(None);
        };
        let mut logger = logs::Logger::lazy();
        loop {
            let (got, back) = py.detach(move || (rx.recv_timeout(TICK), rx));
            rx = back;
            logs::flush(py, &mut logger);
            let ended = matches!(got, Err(RecvTimeoutError::Disconnected));
            if let Err(e) = self.hand_events(py, ended) {
                self.stop(py, Some(rx))?;
                return Err(e);
            }
            match got {
                Ok(outcome) => {
                    self.gate.add_permits(1);
                    *self.rx.lock().expect("iterator poisoned") = Some(rx);
                    return Ok(Some(outcome));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.join(py)?;
                    logs::flush(py, &mut logger);
                    return Ok(None);
                }
            }
            if let Err(e) = py.check_signals() {
                self.stop(py, Some(rx))?;
                return Err(e);
            }
        }
    }

    /// Ends the iteration early: cancels the transfers left and returns
    /// once they have cleaned up (partial files removed, or kept for
    /// resuming). Does nothing after the end.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let rx = self.rx.lock().expect("iterator poisoned").take();
        if rx.is_none() && self.engine.lock().expect("iterator poisoned").is_none() {
            return Ok(());
        }
        self.stop(py, rx)
    }
}

impl Drop for OutcomeIter {
    fn drop(&mut self) {
        // An iterator dropped before its end stops the engine: nobody
        // would see the rest.
        self.cancel.cancel();
    }
}
