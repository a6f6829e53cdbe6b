//! `--dry-run`: what a run would do, from the library's
//! [`Downloader::dry_run`]: each URL's file name, size, and whether it would
//! be downloaded, replaced, resumed or skipped, touching no file. One line
//! a URL on stdout, or with `--json` one JSON document.

use std::sync::{Arc, Mutex};

use pymatris_core::{CancellationToken, ChecksumList, Downloader, Planned, PlannedAction};
use serde_json::json;

use crate::feed::{self, Fed, Source};
use crate::input::BadLine;
use crate::words;

/// Reads the whole list, plans it and prints the plan; returns the exit
/// status: 1 when a URL could not be resolved (a download of it would
/// fail), 2 when the list could not be read.
pub(crate) async fn run(
    mut downloader: Downloader,
    source: Source,
    sums: Option<Arc<(ChecksumList, String)>>,
    json: bool,
) -> u8 {
    let (tx, mut rx) = tokio::sync::mpsc::channel(feed::LOOK_AHEAD);
    let bad_lines = Arc::new(Mutex::new(Vec::new()));
    let on_bad = {
        let bad_lines = bad_lines.clone();
        move |bad: BadLine| bad_lines.lock().expect("poisoned").push(bad)
    };
    if let Err(e) = source.spawn_reader(tx, on_bad, CancellationToken::new()) {
        err!("pymatris: cannot start: {e}");
        return 1;
    }
    let mut lines = Vec::new();
    let mut unverified = crate::sums::Unverified::new(false);
    while let Some(fed) = rx.recv().await {
        match fed {
            Fed::Request(mut request, line) => {
                if let Some(sums) = &sums {
                    request = crate::sums::apply_one(request, &sums.0, &sums.1, &mut unverified);
                }
                downloader.enqueue(request);
                lines.push(line);
            }
            Fed::ReadError(e) => {
                err!("pymatris: {e}");
                return 2;
            }
            Fed::Position(_) => {}
        }
    }
    let planned = downloader.dry_run().await;
    let mut items = Vec::new();
    let mut errors = Vec::new();
    // The files of `-r` trees come after the list's, with no line.
    let lines = lines.into_iter().chain(std::iter::repeat(None));
    for (outcome, line) in planned.iter().zip(lines) {
        match outcome {
            Ok(p) => {
                items.push(serde_json::to_value(p).unwrap_or_default());
                if !json {
                    out!("{}", describe(p));
                }
            }
            Err(f) => {
                let text = words::error_text(&f.error, false);
                let mut e = json!({
                    "url": f.url,
                    "kind": f.error.kind().public_name(),
                    "error": text,
                });
                if let Some(line) = line {
                    e["line"] = line.into();
                }
                errors.push(e);
                if !json {
                    out!("fail      {}: {text}", f.url);
                }
            }
        }
    }
    let bad_lines = std::mem::take(&mut *bad_lines.lock().expect("poisoned"));
    for bad in bad_lines {
        if !json {
            out!("fail      line {}: {}: {}", bad.line, bad.shown, bad.reason);
        }
        errors.push(json!({
            "url": bad.shown,
            "kind": bad.kind.public_name(),
            "error": bad.reason,
            "line": bad.line,
        }));
    }
    // As a run would warn: these files would not be verified.
    if let Some((_, from)) = sums.as_deref()
        && let Some(line) = unverified.summary(from)
    {
        err!("{line}");
    }
    if json {
        let doc = json!({ "planned": items, "errors": errors });
        out!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    u8::from(!errors.is_empty())
}

/// `ACTION  URL -> PATH (SIZE)`, the action padded so the URLs line up.
fn describe(p: &Planned) -> String {
    let size = match p.size {
        Some(n) => format!("{n} bytes"),
        None => "size unknown".to_owned(),
    };
    let (action, detail) = match p.action {
        PlannedAction::Replace => ("replace", size),
        PlannedAction::Resume { have } => ("resume", format!("from byte {have} of {size}")),
        PlannedAction::Complete => ("skip", format!("complete, {size}")),
        PlannedAction::UpToDate => ("skip", format!("up to date, {size}")),
        // Download, and whatever a later library adds.
        _ => ("download", size),
    };
    format!("{action:<9} {} -> {} ({detail})", p.url, p.path)
}
