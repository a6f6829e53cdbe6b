//! A [`Reporter`] of one's own: one line per file when it starts and ends,
//! instead of the CLI's progress bars.
//!
//! `cargo run -p pymatris-examples --example reporter -- https://example.org/a.bin`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pymatris_core::{Config, Downloader, Error, ReportId, Reporter};

/// Counts the bytes of all files and prints each file's start and end.
#[derive(Default)]
struct Lines {
    next_id: AtomicU64,
    bytes: AtomicU64,
}

impl Reporter for Lines {
    fn on_start(&self, url: &str, name: &str, size: Option<u64>) -> ReportId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let size = size.map_or_else(|| "unknown size".to_owned(), |n| format!("{n} bytes"));
        eprintln!("[{id}] {url} -> {name} ({size})");
        id
    }

    fn on_progress(&self, _id: ReportId, bytes: u64) {
        // Called from several threads at once: keep it cheap.
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn on_finish(&self, id: ReportId, error: Option<&Error>) {
        match error {
            None => eprintln!("[{id}] done"),
            Some(e) => eprintln!("[{id}] failed: {e}"),
        }
    }
}

fn main() {
    let reporter = Arc::new(Lines::default());
    let mut dl = Downloader::builder(Config::default())
        .protocol(pymatris_proto_http::PLUGIN)
        .reporter(reporter.clone())
        .build();
    for url in std::env::args().skip(1) {
        dl.enqueue_file(&url, ".");
    }
    let results = dl.download_blocking();
    eprintln!(
        "{} files, {} failed, {} bytes",
        results.success.len() + results.errors.len(),
        results.errors.len(),
        reporter.bytes.load(Ordering::Relaxed)
    );
}
