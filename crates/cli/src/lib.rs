//! The `pymatris` command: parses flags, runs a batch with progress bars,
//! prints the account of what failed, and exits 0 (all fetched), 1 (some
//! failed), 2 (usage error), 130 (Ctrl-C), 143 (SIGTERM) or 129 (SIGHUP).
//!
//! It is a library so that the Python package's `pymatris` command runs
//! this same code ([`main`]) rather than a second implementation; the
//! binary is one call to it.

// The CLI is the one place that writes to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

// Each protocol crate registers itself with `inventory`, and rustc links
// only crates that something names: name every enabled one.
#[cfg(feature = "ftp")]
extern crate pymatris_proto_ftp as _;
#[cfg(feature = "http")]
extern crate pymatris_proto_http as _;
#[cfg(feature = "sftp")]
extern crate pymatris_proto_sftp as _;

/// `println!` that never panics: once the terminal is closed (SIGHUP) or
/// the reader of a pipe is gone, output is lost but the run still ends with
/// its own exit status.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see [`out!`]).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod account;
mod args;
mod completions;
mod config;
mod dry_run;
mod feed;
mod input;
mod logging;
mod one_url;
mod progress;
mod progress_json;
mod shard;
mod sums;
mod tree;
mod values;
mod words;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use pymatris_core::{Downloader, Results};

use crate::account::Account;
use crate::args::{Plan, ProgressMode};
pub use crate::config::command;
use crate::feed::Fed;
use crate::progress::Bars;
use crate::progress_json::JsonProgress;

/// Runs the command with `args` (the program's name first, as
/// `std::env::args_os` gives them) and returns its exit status. `--help`,
/// `--version` and a flag clap rejects end the process, as in any clap
/// program.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    raise_open_files_limit();
    let args = match config::parse(args.into_iter().map(Into::into).collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("pymatris: {e:#}");
            return 2;
        }
    };
    if let Some(args::Subcommand::Completions { shell }) = args.command {
        return completions::print(shell);
    }
    let plan = match args.into_plan(std::io::stdin()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("pymatris: {e:#}");
            return 2;
        }
    };
    if plan.verbose {
        logging::init();
    }
    let runtime = match runtime(std::env::var_os(WORKER_THREADS_VAR).is_some()) {
        Ok(rt) => rt,
        Err(e) => return cannot_start(&e),
    };
    // On the runtime's worker, not on this thread: the batch wakes the
    // run for each file that ends, and a wake-up across threads is two
    // system calls and two context switches (2,000 small files took 30 %
    // more CPU).
    runtime.block_on(async {
        tokio::spawn(run(plan))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    })
}

/// Raises the soft limit of open files to the hard one, as servers do: a
/// batch holds a socket and a file for each transfer, and the soft limit
/// (often 1024) is a default for programs that need few. Running out
/// anyway only slows the batch down (the engine waits for handles).
fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            limit.current = limit.maximum;
            // macOS refuses an unlimited soft limit: what there is stays.
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
}

/// Says why the batch cannot start, and returns the exit status. No file
/// descriptor left before the first transfer means the limit of open files
/// (`ulimit -n`) is too low to run at all: a setup error, named as such.
fn cannot_start(e: &std::io::Error) -> u8 {
    #[cfg(unix)]
    if rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::MFILE) {
        use rustix::process::{Resource, getrlimit};
        let limit = match getrlimit(Resource::Nofile).current {
            Some(n) => format!(" (at most {n} open files)"),
            None => String::new(),
        };
        err!("pymatris: cannot start: too few file descriptors{limit}: {e}");
        return 2;
    }
    err!("pymatris: cannot start: {e}");
    1
}

/// tokio's own setting of its worker threads, honoured when set.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// The runtime of a batch: one worker thread for every transfer, unless
/// `TOKIO_WORKER_THREADS` is set (`from_env`). Writes of more than 64 KiB
/// go to tokio's blocking pool, so the disk does not wait on the network
/// nor the network on the disk.
///
/// One worker, as curl and aria2 have one thread, because a second one
/// costs more than it gains unless the bytes come faster than one core
/// can take them: with two, every workload of the benchmark spent more
/// CPU, on the threads' sleeps, wakeups and shared locks, and only the
/// fastest loopback ones finished sooner (`docs/benchmarks.md`, "Figures
/// behind the code").
fn runtime(from_env: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if !from_env {
        builder.worker_threads(1);
    }
    // tokio panics, rather than failing, when its signal handling finds no
    // descriptor left for its pipe; with its other needs met just before,
    // that is one more case of too few descriptors, not a crash.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build()));
    std::panic::set_hook(previous);
    built.unwrap_or_else(|_| Err(std::io::Error::from_raw_os_error(EMFILE)))
}

/// "Too many open files": what the runtime's panic stands for.
#[cfg(unix)]
const EMFILE: i32 = rustix::io::Errno::MFILE.raw_os_error();
#[cfg(not(unix))]
const EMFILE: i32 = 24;

async fn run(plan: Plan) -> u8 {
    if let Some(list) = &plan.empty_list {
        // Even with --quiet: a list that lost its lines is worth a word.
        err!("pymatris: no URL in {list}: nothing to do");
    }
    let Plan {
        config,
        source,
        quiet,
        verbose,
        show_errors,
        json,
        jsonl,
        progress,
        sums,
        trees,
        dry_run,
        ..
    } = plan;
    let has_jsonl = jsonl.is_some();
    // Bars and logs would interleave, and bars on a pipe are noise.
    let show_bars =
        progress == ProgressMode::Bars && !quiet && !verbose && std::io::stderr().is_terminal();
    let total = source.known_total();
    let bars = show_bars.then(|| Arc::new(Bars::new(total)));
    let events = (progress == ProgressMode::Json).then(|| Arc::new(JsonProgress::new(total)));
    let mut downloader = Downloader::new(config);
    if let Some(bars) = &bars {
        downloader = downloader.with_reporter(bars.clone());
    }
    if let Some(events) = &events {
        downloader = downloader.with_reporter(events.clone());
    }
    // --verbose logs what these would say.
    if bars.is_none() && events.is_none() && !quiet && !verbose {
        downloader = downloader.with_reporter(Arc::new(crate::progress::Notes));
    }
    // `--checksum-file`, read (or fetched) before the first download.
    let sums = match sums {
        None => None,
        Some(sums) => match sums.load(downloader.config()).await {
            Ok(loaded) => Some(Arc::new(loaded)),
            Err(e) => {
                err!("pymatris: {e:#}");
                return 1;
            }
        },
    };
    if dry_run {
        for (url, dir, options) in trees {
            downloader.enqueue_tree(&url, &dir, options);
        }
        return dry_run::run(downloader, source, sums, json).await;
    }
    let cancel = downloader.cancel_token();
    // 0 until a signal stops the batch, then the status to exit with.
    let interrupted = Arc::new(std::sync::atomic::AtomicU8::new(0));
    {
        let interrupted = interrupted.clone();
        let cancel = cancel.clone();
        // On a thread and a runtime of their own: the run's one worker
        // may be held by a write to a pipe nobody reads (the account), and
        // a second signal must still end the process.
        let (listening_tx, listening) = std::sync::mpsc::channel();
        let listener = std::thread::Builder::new()
            .name("pymatris-signals".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = listening_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut signals = StopSignals::listen();
                    let _ = listening_tx.send(Ok(()));
                    let status = signals.recv().await;
                    interrupted.store(status, std::sync::atomic::Ordering::SeqCst);
                    cancel.cancel();
                    // What follows (parts removed or synced and their state
                    // saved, the account of failures written) can take
                    // long: on a slow disk, or to a paused pager. A second
                    // signal means "now". Final names are only ever given
                    // by a rename, so none holds a half-written file; a
                    // state file is at worst the last checkpoint's.
                    let status = signals.recv().await;
                    std::process::exit(i32::from(status));
                });
            });
        // Listening starts before the first transfer; a run that could not
        // listen does not start (a Ctrl-C would leave its parts behind).
        let listening = listener.and_then(|_| {
            listening
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("the signal thread ended")))
        });
        if let Err(e) = listening {
            return cannot_start(&e);
        }
    }
    let started = std::time::Instant::now();
    let account = Arc::new(Account::new(jsonl, json, show_errors));
    let (tx, rx) = tokio::sync::mpsc::channel(feed::LOOK_AHEAD);
    let on_bad = {
        let (account, bars, events) = (account.clone(), bars.clone(), events.clone());
        move |bad: input::BadLine| {
            if let Some(events) = &events {
                events.bad_line(&bad);
            }
            account.bad_line(bad);
            if let Some(bars) = &bars {
                bars.file_failed();
            }
        }
    };
    let ready = source.ready.clone();
    if let Err(e) = source.spawn_reader(tx, on_bad, cancel.clone()) {
        return cannot_start(&e);
    }
    // The line in the list of each request in flight, by its position.
    let lines = Arc::new(Mutex::new(HashMap::new()));
    let read_error = Arc::new(Mutex::new(None));
    let unverified = Arc::new(Mutex::new(sums::Unverified::new(verbose)));
    let requests = {
        let (bars, lines, read_error) = (bars.clone(), lines.clone(), read_error.clone());
        let (sums, unverified) = (sums.clone(), unverified.clone());
        let mut index = 0;
        let stop = cancel.clone();
        let taken = ready.clone();
        futures_util::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) })
            .filter_map(move |fed| {
                let request = match fed {
                    Fed::Request(mut request, line) => {
                        taken.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(sums) = &sums {
                            let mut unverified = unverified.lock().expect("poisoned");
                            request = sums::apply_one(request, &sums.0, &sums.1, &mut unverified);
                        }
                        if let Some(line) = line {
                            lines.lock().expect("lines poisoned").insert(index, line);
                        }
                        index += 1;
                        Some(request)
                    }
                    Fed::ReadError(e) => {
                        *read_error.lock().expect("poisoned") = Some(e);
                        None
                    }
                    Fed::Position(line) => {
                        if let Some(bars) = &bars {
                            bars.set_position(line);
                        }
                        None
                    }
                };
                std::future::ready(request)
            })
            // A stopped run reads no further: what is not read yet is left
            // for the next run, not reported as cancelled one by one.
            .take_until(async move { stop.cancelled().await })
            .boxed()
    };
    if !trees.is_empty() {
        // `-r`: the trees' files, each reported as a request's result.
        for (url, dir, options) in trees {
            downloader.enqueue_tree(&url, &dir, options);
        }
        // Each file's outcome as it ends (`--jsonl` lines, the failure
        // count), nothing kept but what `--json` asks for.
        downloader
            .download_trees_each(|outcome| {
                if let Some(events) = &events {
                    events.result(&outcome, None);
                }
                account.result(usize::MAX, None, outcome);
            })
            .await;
    }
    // The requests read ahead count as work waiting (see `feed::Ready`).
    let requests = feed::Ready { requests, ready };
    downloader
        .download_each(requests, |index, outcome| {
            let line = lines.lock().expect("lines poisoned").remove(&index);
            if let Some(events) = &events {
                events.result(&outcome, line);
            }
            account.result(index, line, outcome);
        })
        .await;
    if let Some(bars) = &bars {
        bars.finish();
    }
    // Even under --quiet: a download the user may believe verified was not.
    if let Some((_, from)) = sums.as_deref()
        && let Some(line) = unverified.lock().expect("poisoned").summary(from)
    {
        err!("{line}");
    }
    if let Some((results, lines)) = account.results() {
        match results_json(&results, &lines) {
            Ok(text) => out!("{text}"),
            Err(e) => err!("pymatris: cannot write JSON: {e}"),
        }
    }
    match &events {
        // The events told all a program reading stderr wants to know.
        Some(events) => account.events_done(events),
        None => account.summary(quiet, started.elapsed(), has_jsonl),
    }
    let read_error = read_error.lock().expect("poisoned").take();
    if let Some(e) = &read_error {
        err!("pymatris: {e}");
    }
    let status = interrupted.load(std::sync::atomic::Ordering::SeqCst);
    if status != 0 {
        status
    } else if read_error.is_some() {
        2
    } else if account.all_ok() {
        0
    } else {
        1
    }
}

/// The signals that stop a batch the way Ctrl-C does, so that a run ended
/// by `timeout`, systemd, docker (SIGTERM) or a closed terminal (SIGHUP)
/// keeps its resumable parts under `--continue` and leaves nothing behind
/// otherwise. Each gives the exit status a shell reports for it: 128 plus
/// the signal's number.
struct StopSignals {
    /// Each signal listened to, with the status it calls for.
    #[cfg(unix)]
    listening: Vec<(tokio::signal::unix::Signal, u8)>,
}

impl StopSignals {
    /// Starts listening; must be called inside the runtime.
    fn listen() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // (signal, its number, the exit status it calls for)
            let wanted = [
                (SignalKind::interrupt(), 2, 130),
                (SignalKind::terminate(), 15, 143),
                (SignalKind::hangup(), 1, 129),
            ];
            let ignored = ignored_signals();
            // A signal the parent set to be ignored (`nohup`, a background
            // job of a script) stays ignored: installing a handler would
            // undo that choice. Should a handler fail to install, that
            // signal keeps its default action (the process ends at once).
            let listening = wanted
                .into_iter()
                .filter(|&(_, number, _)| ignored & (1 << (number - 1)) == 0)
                .filter_map(|(kind, _, status)| Some((signal(kind).ok()?, status)))
                .collect();
            StopSignals { listening }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next stop signal, and returns the exit status it
    /// calls for.
    async fn recv(&mut self) -> u8 {
        #[cfg(unix)]
        {
            let waits = self.listening.iter_mut().map(|(signal, status)| {
                Box::pin(async move {
                    signal.recv().await;
                    *status
                })
            });
            if waits.len() == 0 {
                return std::future::pending().await;
            }
            futures_util::future::select_all(waits).await.0
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            130
        }
    }
}

/// The signals this process was started with set to be ignored, as a mask
/// (bit `n - 1` for signal `n`), read before any handler is installed.
/// Linux tells it in `/proc/self/status` (`SigIgn`), which needs no
/// `unsafe` call to `sigaction`; elsewhere none is taken as ignored.
#[cfg(unix)]
fn ignored_signals() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("SigIgn:"))?;
            u64::from_str_radix(line["SigIgn:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0)
}

/// `results` as JSON, each failure that comes from the input file with its
/// `line`.
fn results_json(results: &Results, lines: &[Option<usize>]) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(results)?;
    if let Some(errors) = value.get_mut("errors").and_then(|e| e.as_array_mut()) {
        for (i, (error, failed)) in errors.iter_mut().zip(&results.errors).enumerate() {
            let Some(error) = error.as_object_mut() else {
                continue;
            };
            // The CLI's words: its kind names, and the hint as its flags.
            let e = &failed.error;
            error.insert("kind".to_owned(), e.kind().public_name().into());
            error.insert("error".to_owned(), words::error_text(e, false).into());
            error.insert("chain".to_owned(), words::error_text(e, true).into());
            if let Some(Some(line)) = lines.get(i) {
                error.insert("line".to_owned(), (*line).into());
            }
        }
    }
    serde_json::to_string_pretty(&value)
}

#[cfg(test)]
mod tests {
    /// Every enabled protocol feature must register its schemes, and no
    /// other scheme may appear: a protocol crate that is enabled but not
    /// linked would otherwise vanish without a word.
    #[test]
    fn registered_schemes_match_enabled_features() {
        #[allow(unused_mut)]
        let mut expected: Vec<&str> = Vec::new();
        #[cfg(feature = "http")]
        expected.extend(["http", "https"]);
        #[cfg(feature = "ftp")]
        expected.extend(["ftp", "ftps"]);
        #[cfg(feature = "sftp")]
        expected.push("sftp");
        expected.sort_unstable();
        assert_eq!(pymatris_core::registry::schemes(), expected);
    }

    #[test]
    fn one_worker_thread_unless_tokio_is_told_otherwise() {
        let runtime = super::runtime(false).unwrap();
        assert_eq!(runtime.metrics().num_workers(), 1);
    }
}
