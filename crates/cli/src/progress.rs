//! Progress bars on standard error: one overall bar (bytes, speed, ETA,
//! files done) and one line per file in flight. The engine only knows the
//! [`Reporter`] trait; indicatif stays in the CLI. While an input list is
//! still being read the total is unknown: the overall line then shows
//! files done, bytes so far and the list's line reached, and no bar or
//! ETA it cannot know.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pymatris_core::{Error, ReportId, Reporter};

/// Draws the progress of a batch.
pub(crate) struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    files: Mutex<HashMap<ReportId, ProgressBar>>,
    next_id: AtomicU64,
    done: AtomicU64,
    /// Files in all, when known.
    total_files: Option<u64>,
    /// The input list's line reached.
    position: AtomicU64,
    /// Bytes of files whose size is known, for the overall bar's length.
    known_bytes: AtomicU64,
}

/// Shows at most this many file lines; the rest are counted in the overall
/// bar only.
const MAX_FILE_LINES: usize = 8;

impl Bars {
    /// Bars for `total_files` files (`None`: not known, a list is read as
    /// the batch goes).
    pub(crate) fn new(total_files: Option<usize>) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(0));
        let template = if total_files.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {bytes} {bytes_per_sec} {msg}"
        };
        overall.set_style(ProgressStyle::with_template(template).expect("valid template"));
        overall.enable_steady_tick(Duration::from_millis(200));
        let bars = Bars {
            multi,
            overall,
            files: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            done: AtomicU64::new(0),
            total_files: total_files.map(|n| n as u64),
            position: AtomicU64::new(0),
            known_bytes: AtomicU64::new(0),
        };
        bars.update_message();
        bars
    }

    fn update_message(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let message = match self.total_files {
            Some(total) => format!("{done}/{total} files"),
            None => format!(
                "{done} files done, list read to line {}",
                self.position.load(Ordering::Relaxed)
            ),
        };
        self.overall.set_message(message);
    }

    /// The input list has been read to `line`.
    pub(crate) fn set_position(&self, line: usize) {
        self.position.store(line as u64, Ordering::Relaxed);
        self.update_message();
    }

    /// A file that failed before it started (a bad line of the list).
    pub(crate) fn file_failed(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.update_message();
    }

    /// Removes the bars from the screen.
    pub(crate) fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }

    fn file_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "  {msg:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        )
        .expect("valid template")
    }
}

impl Reporter for Bars {
    fn on_start(&self, _url: &str, name: &str, size: Option<u64>) -> ReportId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(size) = size {
            let total = self.known_bytes.fetch_add(size, Ordering::Relaxed) + size;
            self.overall.set_length(total);
        }
        let mut files = self.files.lock().expect("bars poisoned");
        if files.len() < MAX_FILE_LINES {
            let bar = self.multi.add(ProgressBar::new(size.unwrap_or(0)));
            bar.set_style(Self::file_style());
            bar.set_message(name.to_owned());
            files.insert(id, bar);
        }
        id
    }

    fn on_progress(&self, id: ReportId, bytes: u64) {
        self.overall.inc(bytes);
        if let Some(bar) = self.files.lock().expect("bars poisoned").get(&id) {
            bar.inc(bytes);
        }
    }

    fn on_rewind(&self, id: ReportId, bytes: u64) {
        self.overall
            .set_position(self.overall.position().saturating_sub(bytes));
        if let Some(bar) = self.files.lock().expect("bars poisoned").get(&id) {
            bar.set_position(bar.position().saturating_sub(bytes));
        }
    }

    fn on_retry(&self, id: ReportId, attempt: u32, error: &Error) {
        if let Some(bar) = self.files.lock().expect("bars poisoned").get(&id) {
            let name = bar.message();
            let name = name.split(" (retry").next().unwrap_or_default().to_owned();
            bar.set_message(format!("{name} (retry {attempt}: {})", error.kind()));
        }
    }

    fn on_mirror_dropped(&self, _id: ReportId, url: &str, error: &Error) {
        // Above the bars, which are drawn again below it.
        let _ = self.multi.println(mirror_dropped(url, error));
    }

    fn on_finish(&self, id: ReportId, _error: Option<&Error>) {
        if let Some(bar) = self.files.lock().expect("bars poisoned").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        self.update_message();
    }
}

/// The line that says a mirror is no longer used.
pub(crate) fn mirror_dropped(url: &str, error: &Error) -> String {
    let why = crate::words::error_text(error, false);
    format!("pymatris: {url}: no longer used as a mirror: {why}")
}

/// Without bars (not a terminal, `--progress none`): what a person should
/// still be told as it happens, on a line of its own.
pub(crate) struct Notes;

impl Reporter for Notes {
    fn on_start(&self, _url: &str, _name: &str, _size: Option<u64>) -> ReportId {
        0
    }

    fn on_mirror_dropped(&self, _id: ReportId, url: &str, error: &Error) {
        err!("{}", mirror_dropped(url, error));
    }

    fn on_finish(&self, _id: ReportId, _error: Option<&Error>) {}
}
