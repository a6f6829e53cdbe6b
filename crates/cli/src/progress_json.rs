//! `--progress json`: the progress of a run as newline-delimited JSON on
//! standard error, for programs (GUIs, job systems) that follow a run
//! rather than a person watching bars. The schema is in
//! `docs/progress-json.md`; fields are only ever added to it.
//!
//! Each event is one line written with one call, so lines from the
//! engine's threads never interleave.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pymatris_core::{Error, Failed, ReportId, Reporter, Succeeded};
use serde_json::{Value, json};

use crate::input::BadLine;
use crate::words;

/// The shortest time between two `progress` events of one file.
const INTERVAL: Duration = Duration::from_millis(500);

/// Writes the events of a batch.
pub(crate) struct JsonProgress {
    started: Instant,
    next_id: AtomicU64,
    files: Mutex<HashMap<ReportId, File>>,
    /// How many times each URL ended in failure through
    /// [`Reporter::on_finish`], so that [`JsonProgress::finish`] reports
    /// the failures that came before any transfer began, and those only.
    failed: Mutex<HashMap<String, usize>>,
}

/// What is known of one file in flight.
struct File {
    url: String,
    size: Option<u64>,
    bytes: u64,
    /// When its last `progress` event was written (or it started).
    last: Instant,
}

impl JsonProgress {
    /// Starts a batch of `files` downloads (`None`: not known, a list is
    /// read as the batch goes), and says so.
    pub(crate) fn new(files: Option<usize>) -> Self {
        let progress = JsonProgress {
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        };
        progress.emit("batch_start", json!({ "files": files }));
        progress
    }

    /// A request's outcome: a `file_failed` event (with no id) for a
    /// failure that never started a transfer (a bad URL, a server that
    /// refused it); the others were told as they ended.
    pub(crate) fn result(&self, outcome: &Result<Succeeded, Failed>, line: Option<usize>) {
        let Err(failed) = outcome else {
            return;
        };
        {
            let mut reported = self.failed.lock().expect("progress poisoned");
            if let Some(n) = reported.get_mut(&failed.url) {
                // Forgotten once told: the map holds failures in flight.
                *n -= 1;
                if *n == 0 {
                    reported.remove(&failed.url);
                }
                return;
            }
        }
        self.early_failure(&failed.url, &failed.error, line);
    }

    /// A line of the input list that is not a download.
    pub(crate) fn bad_line(&self, bad: &BadLine) {
        let error = Error::new(bad.kind, bad.reason.clone());
        self.early_failure(&bad.shown, &error, Some(bad.line));
    }

    fn early_failure(&self, url: &str, error: &Error, line: Option<usize>) {
        let mut fields = failure(error);
        fields["id"] = Value::Null;
        fields["url"] = url.into();
        if let Some(line) = line {
            fields["line"] = line.into();
        }
        self.emit("file_failed", fields);
    }

    /// Ends the batch.
    pub(crate) fn finish(&self, succeeded: usize, failed: usize, bytes: u64) {
        self.emit(
            "batch_done",
            json!({ "succeeded": succeeded, "failed": failed, "bytes": bytes }),
        );
    }

    /// Writes one event: its name, the seconds since the batch began, and
    /// `fields`.
    fn emit(&self, event: &str, fields: Value) {
        let mut line = json!({
            "event": event,
            "time": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        });
        if let (Some(line), Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let mut text = line.to_string();
        text.push('\n');
        // Lost if stderr is gone, as every other message would be.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn progress_event(&self, id: ReportId, file: &mut File, now: Instant) {
        file.last = now;
        self.emit(
            "progress",
            json!({ "id": id, "bytes": file.bytes, "size": file.size }),
        );
    }
}

/// The fields of a failure: the CLI's kind name and its message.
fn failure(error: &Error) -> Value {
    json!({
        "kind": error.kind().public_name(),
        "error": words::error_text(error, false),
    })
}

impl Reporter for JsonProgress {
    fn on_start(&self, url: &str, name: &str, size: Option<u64>) -> ReportId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.files.lock().expect("progress poisoned").insert(
            id,
            File {
                url: url.to_owned(),
                size,
                bytes: 0,
                last: Instant::now(),
            },
        );
        self.emit(
            "file_start",
            json!({ "id": id, "url": url, "name": name, "size": size }),
        );
        id
    }

    fn on_progress(&self, id: ReportId, bytes: u64) {
        let mut files = self.files.lock().expect("progress poisoned");
        let Some(file) = files.get_mut(&id) else {
            return;
        };
        file.bytes += bytes;
        let now = Instant::now();
        if now.duration_since(file.last) >= INTERVAL {
            self.progress_event(id, file, now);
        }
    }

    fn on_rewind(&self, id: ReportId, bytes: u64) {
        if let Some(file) = self.files.lock().expect("progress poisoned").get_mut(&id) {
            file.bytes = file.bytes.saturating_sub(bytes);
        }
    }

    fn on_mirror_dropped(&self, id: ReportId, url: &str, error: &Error) {
        let mut fields = failure(error);
        fields["id"] = id.into();
        fields["url"] = url.into();
        self.emit("mirror_dropped", fields);
    }

    fn on_retry(&self, id: ReportId, attempt: u32, error: &Error) {
        let mut fields = failure(error);
        fields["id"] = id.into();
        fields["attempt"] = attempt.into();
        self.emit("retry", fields);
    }

    fn on_finish(&self, id: ReportId, error: Option<&Error>) {
        let Some(file) = self.files.lock().expect("progress poisoned").remove(&id) else {
            return;
        };
        match error {
            // Its count is the file's last, whenever the last `progress`
            // event was.
            None => self.emit("file_done", json!({ "id": id, "bytes": file.bytes })),
            Some(error) => {
                *self
                    .failed
                    .lock()
                    .expect("progress poisoned")
                    .entry(file.url.clone())
                    .or_default() += 1;
                let mut fields = failure(error);
                fields["id"] = id.into();
                fields["url"] = file.url.into();
                fields["bytes"] = file.bytes.into();
                self.emit("file_failed", fields);
            }
        }
    }
}
