//! Progress bars on standard error: one overall bar (bytes, speed, ETA,
//! files done) and one line per file in flight. The engine only knows the
//! [`Reporter`] trait; indicatif stays in the CLI.

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
    total_files: u64,
    /// Bytes of files whose size is known, for the overall bar's length.
    known_bytes: AtomicU64,
}

/// Shows at most this many file lines; the rest are counted in the overall
/// bar only.
const MAX_FILE_LINES: usize = 8;

impl Bars {
    pub(crate) fn new(total_files: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        let bars = Bars {
            multi,
            overall,
            files: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            done: AtomicU64::new(0),
            total_files: total_files as u64,
            known_bytes: AtomicU64::new(0),
        };
        bars.update_message();
        bars
    }

    fn update_message(&self) {
        let done = self.done.load(Ordering::Relaxed);
        self.overall
            .set_message(format!("{done}/{} files", self.total_files));
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

    fn on_finish(&self, id: ReportId, _error: Option<&Error>) {
        if let Some(bar) = self.files.lock().expect("bars poisoned").remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
        self.update_message();
    }
}
