//! The account of a run, kept as results arrive: counts, the first
//! failures for the summary on stderr, every result as a line of
//! `--jsonl` the moment it is known, and, for `--json`, the whole results
//! (a single document, meant for batches that fit in memory).

use std::io::Write;
use std::sync::Mutex;

use pymatris_core::{ErrorKind, Failed, Results, Succeeded};

use crate::input::BadLine;
use crate::words;

/// Failures listed on stderr; the rest are counted ("and N more").
pub(crate) const MAX_LISTED: usize = 50;

/// Where a result sorts in the account: the requests in their order, then
/// the list's bad lines in theirs, as a batch of known length has them.
type Key = (u8, usize);

/// A result, with its key and its line in the list.
type Kept = (Key, Option<usize>, Result<Succeeded, Failed>);

/// What a run did, so far.
pub(crate) struct Account {
    jsonl: Option<Mutex<Box<dyn Write + Send>>>,
    show_errors: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    succeeded: usize,
    /// Of those, files kept as they were (`-N`, up to date).
    up_to_date: usize,
    /// Bytes of the files fetched.
    bytes: u64,
    failed: usize,
    cancelled: usize,
    /// The first [`MAX_LISTED`] failures (not cancellations, unless
    /// `--show-errors`): key, line, URL and the words of the error.
    listed: Vec<(Key, Option<usize>, String, String)>,
    /// For `--json`: every result, with its key and line.
    all: Option<Vec<Kept>>,
    /// Writing `--jsonl` failed (said once).
    jsonl_failed: bool,
}

impl Account {
    pub(crate) fn new(jsonl: Option<Box<dyn Write + Send>>, json: bool, show_errors: bool) -> Self {
        Account {
            jsonl: jsonl.map(Mutex::new),
            show_errors,
            state: Mutex::new(State {
                all: json.then(Vec::new),
                ..State::default()
            }),
        }
    }

    /// Notes the outcome of the request at `index` of the run, from
    /// `line` of the list.
    pub(crate) fn result(
        &self,
        index: usize,
        line: Option<usize>,
        outcome: Result<Succeeded, Failed>,
    ) {
        self.write_line(&outcome, line);
        let mut state = self.state.lock().expect("account poisoned");
        match &outcome {
            Ok(ok) => {
                state.succeeded += 1;
                if ok.up_to_date {
                    state.up_to_date += 1;
                } else {
                    state.bytes += ok.size;
                }
            }
            Err(failed) => self.failure(&mut state, (0, index), line, failed),
        }
        if let Some(all) = &mut state.all {
            all.push(((0, index), line, outcome));
        }
    }

    /// Notes a line of the list that is not a download.
    pub(crate) fn bad_line(&self, bad: BadLine) {
        let failed = Failed {
            filepath_partial: Default::default(),
            url: bad.shown,
            error: pymatris_core::Error::new(bad.kind, bad.reason),
        };
        let line = Some(bad.line);
        let outcome = Err(failed);
        self.write_line(&outcome, line);
        let mut state = self.state.lock().expect("account poisoned");
        if let Err(failed) = &outcome {
            self.failure(&mut state, (1, bad.line), line, failed);
        }
        if let Some(all) = &mut state.all {
            all.push(((1, bad.line), line, outcome));
        }
    }

    fn failure(&self, state: &mut State, key: Key, line: Option<usize>, failed: &Failed) {
        state.failed += 1;
        let cancelled = failed.error.kind() == ErrorKind::Cancelled;
        if cancelled {
            state.cancelled += 1;
        }
        if (!cancelled || self.show_errors) && state.listed.len() < MAX_LISTED {
            let text = words::error_text(&failed.error, self.show_errors);
            state.listed.push((key, line, failed.url.clone(), text));
        }
    }

    /// One line of `--jsonl`, written whole and flushed, so that a run
    /// killed at any moment leaves a log valid to its last line.
    fn write_line(&self, outcome: &Result<Succeeded, Failed>, line: Option<usize>) {
        let Some(jsonl) = &self.jsonl else {
            return;
        };
        let mut value = match outcome {
            Ok(ok) => serde_json::json!({
                "ok": true,
                "url": ok.url,
                "path": ok.path,
                "size": ok.size,
                "up_to_date": ok.up_to_date,
            }),
            Err(failed) => {
                let e = &failed.error;
                serde_json::json!({
                    "ok": false,
                    "url": failed.url,
                    "filepath_partial": failed.filepath_partial,
                    "kind": e.kind().public_name(),
                    "retryable": e.is_retryable(),
                    "error": words::error_text(e, false),
                    "chain": words::error_text(e, true),
                })
            }
        };
        if let (Some(line), Some(object)) = (line, value.as_object_mut()) {
            object.insert("line".to_owned(), line.into());
        }
        if let (Ok(ok), Some(object)) = (outcome, value.as_object_mut())
            && !ok.served_by.is_empty()
        {
            object.insert("served_by".to_owned(), ok.served_by.clone().into());
        }
        let mut text = value.to_string();
        text.push('\n');
        let mut out = jsonl.lock().expect("jsonl poisoned");
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            let mut state = self.state.lock().expect("account poisoned");
            if !state.jsonl_failed {
                state.jsonl_failed = true;
                err!("pymatris: cannot write --jsonl: {e}");
            }
        }
    }

    /// Ends `--progress json`'s events with the counts.
    pub(crate) fn events_done(&self, events: &crate::progress_json::JsonProgress) {
        let state = self.state.lock().expect("account poisoned");
        events.finish(state.succeeded, state.failed, state.bytes);
    }

    /// Whether every request succeeded.
    pub(crate) fn all_ok(&self) -> bool {
        self.state.lock().expect("account poisoned").failed == 0
    }

    /// The whole results in the order of a batch of known length, and the
    /// line of each failure; `None` without `--json`.
    pub(crate) fn results(&self) -> Option<(Results, Vec<Option<usize>>)> {
        let mut all = self.state.lock().expect("account poisoned").all.take()?;
        // A tree's files share one key: by path among themselves.
        all.sort_by(|(a, _, x), (b, _, y)| a.cmp(b).then_with(|| path_of(x).cmp(path_of(y))));
        let mut results = Results::default();
        let mut lines = Vec::new();
        for (_, line, outcome) in all {
            match outcome {
                Ok(ok) => results.success.push(ok),
                Err(failed) => {
                    results.errors.push(failed);
                    lines.push(line);
                }
            }
        }
        Some((results, lines))
    }

    /// The summary on stderr: what was downloaded (unless `quiet`), and
    /// the failures, the first [`MAX_LISTED`] of them by name.
    pub(crate) fn summary(&self, quiet: bool, elapsed: std::time::Duration, jsonl: bool) {
        let mut state = self.state.lock().expect("account poisoned");
        if !quiet {
            let secs = elapsed.as_secs_f64().max(1e-3);
            let kept = match state.up_to_date {
                0 => String::new(),
                n => format!(" {n} file(s) up to date, kept as they were."),
            };
            err!(
                "Downloaded {} file(s), {} bytes in {:.2}s ({:.1} MB/s).{}",
                state.succeeded - state.up_to_date,
                state.bytes,
                secs,
                state.bytes as f64 / secs / 1e6,
                kept
            );
        }
        if state.failed == 0 {
            return;
        }
        // The account of failures goes to stderr even with --quiet.
        err!(
            "{} of {} download(s) failed:",
            state.failed,
            state.failed + state.succeeded
        );
        state.listed.sort_by_key(|(key, ..)| *key);
        for (_, line, url, text) in &state.listed {
            match line {
                Some(n) => err!("  line {n}: {url}: {text}"),
                None => err!("  {url}: {text}"),
            }
        }
        let shown_cancelled = if self.show_errors { 0 } else { state.cancelled };
        let more = state.failed - shown_cancelled - state.listed.len();
        if more > 0 {
            let see = if jsonl {
                "see --jsonl"
            } else {
                "--jsonl FILE lists them all"
            };
            err!("  and {more} more; {see}.");
        }
        if shown_cancelled > 0 {
            err!("  {shown_cancelled} cancelled by the user.");
        }
    }
}

fn path_of(outcome: &Result<Succeeded, Failed>) -> &str {
    match outcome {
        Ok(ok) => ok.path.as_str(),
        Err(failed) => failed.filepath_partial.as_str(),
    }
}
