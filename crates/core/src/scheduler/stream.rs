//! The streaming form of a batch: requests are taken from a stream as slots
//! free up, and each result is handed over as soon as its file is done, so
//! that a list of any length runs in memory bounded by the files in flight
//! (plus whatever look-ahead the caller's stream keeps), not by the list.
//! [`Downloader::download`] is this with a vector in and one out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::adapt::Adapt;
use super::batch::Batch;
use super::host_slots::HostSlots;
use super::tree_jobs::TreeFeed;
use super::{CLOSE_WAIT, Downloader, Request, failed_early, internal_error};
use crate::naming::NameTable;
use crate::netrc::Netrc;
use crate::registry::Protocols;
use crate::results::{Failed, Succeeded};
use crate::throttle::Throttle;
use crate::tree::TreeRequest;

/// How often an adaptive batch measures its rate.
const ADAPT_TICK: Duration = Duration::from_millis(50);

/// A slot's results, on their way to the caller.
pub(super) type Done = tokio::sync::mpsc::Sender<(usize, std::result::Result<Succeeded, Failed>)>;

/// The position given with the outcome of a tree's file (or of a walk's
/// failure): none of a request's.
pub(super) const TREE_FILE: usize = usize::MAX;

/// The requests of a batch, shared by its slots, and what they know of its
/// length.
struct Feed<S> {
    /// The requests, and the position of the next one (from 0).
    stream: tokio::sync::Mutex<(S, usize)>,
    /// Whether the stream said how many requests it holds: `files_left`
    /// then counts them all from the start.
    exact: bool,
    /// The files `files_left` counted at the start: the stream's length
    /// when exact, else `max_parallel` (see [`Feed::next`]).
    counted: usize,
    /// Set once the stream has ended.
    ended: AtomicBool,
}

impl Downloader {
    /// Downloads the requests of `requests` as they come, `max_parallel`
    /// files at once, and calls `on_result` with each request's position
    /// in the stream (from 0) and its outcome as soon as it is done: in the
    /// order they finish, not the order they came. Every request ends in
    /// exactly one call. Requests already queued with
    /// [`enqueue`](Self::enqueue) are not part of it.
    ///
    /// A request is taken from the stream only when a slot is free, so the
    /// memory used is bounded by the files in flight, whatever the length
    /// of the stream: a list of millions of URLs is read a little ahead of
    /// the downloads (`futures_util::stream::iter` makes a stream of an
    /// iterator; a channel fed by a thread suits a blocking reader). Only
    /// a stream whose `size_hint` is exact is taken to know its length
    /// (then a file starting early is cut into parts as it would be in a
    /// [`download`](Self::download) of that many).
    pub async fn download_each<S, F>(&self, requests: S, on_result: F)
    where
        S: Stream<Item = Request> + Send + Unpin + 'static,
        F: FnMut(usize, std::result::Result<Succeeded, Failed>),
    {
        self.run_slots(requests, Vec::new(), on_result).await;
    }

    /// [`download_each`](Self::download_each), whose slots then take the
    /// files that the walks of `trees` find; their outcomes (and the
    /// walks' failures) come to `on_result` with the position
    /// [`TREE_FILE`].
    pub(super) async fn run_slots<S, F>(
        &self,
        requests: S,
        trees: Vec<TreeRequest>,
        mut on_result: F,
    ) where
        S: Stream<Item = Request> + Send + Unpin + 'static,
        F: FnMut(usize, std::result::Result<Succeeded, Failed>),
    {
        let max_parallel = self.config.max_parallel.max(1);
        let (lower, upper) = requests.size_hint();
        let exact = upper == Some(lower);
        let counted = if exact { lower } else { max_parallel };
        let batch = Arc::new(self.batch(counted, !trees.is_empty()));
        let tree = TreeFeed::start(&batch, trees);
        let slots = if exact && tree.is_none() {
            max_parallel.min(lower.max(1))
        } else {
            max_parallel
        };
        let feed = Arc::new(Feed {
            stream: tokio::sync::Mutex::new((requests, 0)),
            exact,
            counted,
            ended: AtomicBool::new(false),
        });
        // Results go through a channel to this task, which alone calls
        // `on_result` (no `Send` or `Sync` asked of it); its bound holds
        // the slots back while the caller is busy with earlier results.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(slots * 2);
        // `max_parallel` tasks each take the next request when done with
        // one, rather than a task per file spawned from here: a file then
        // costs no wakeup of this task and no cross-thread spawn, which
        // count in a batch of many small files.
        let mut running = JoinSet::new();
        let spawn = |running: &mut JoinSet<()>, done_tx: &Done| {
            batch.file_tasks.fetch_add(1, Ordering::SeqCst);
            let (batch, feed, done_tx) = (batch.clone(), feed.clone(), done_tx.clone());
            running.spawn(slot(batch, feed, done_tx, tree.clone()));
        };
        for _ in 0..slots {
            spawn(&mut running, &done_tx);
        }
        // Where the user left the numbers to the batch, it grows them while
        // they pay (see `adapt`); more files at once are more slots, which
        // need a sender of their own while requests may still come.
        let adaptive = batch.adapt.is_some();
        let mut grow_tx = adaptive.then(|| done_tx.clone());
        drop(done_tx);
        // The feed is done, or no file task is left to take from it.
        let no_file_can_come =
            || feed.ended.load(Ordering::SeqCst) || batch.file_tasks.load(Ordering::SeqCst) == 0;
        let mut tick = tokio::time::interval(ADAPT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                done = done_rx.recv() => match done {
                    Some((index, outcome)) => on_result(index, outcome),
                    None => break,
                },
                // A file task ends when it finds no file left: once none
                // can come, the growth's sender goes at once, so that the
                // batch ends with its last file, not at the next tick.
                Some(_) = running.join_next(), if grow_tx.is_some() => {
                    if no_file_can_come() {
                        grow_tx = None;
                    }
                }
                _ = tick.tick(), if adaptive => {
                    batch.adapt_tick(Instant::now());
                    if no_file_can_come() {
                        grow_tx = None;
                    }
                    if let Some(done_tx) = &grow_tx {
                        let tasks = batch.file_tasks.load(Ordering::SeqCst);
                        let left = tasks + batch.files_waiting();
                        while batch.file_tasks.load(Ordering::SeqCst) < batch.files_allowed().min(left) {
                            spawn(&mut running, done_tx);
                        }
                    }
                }
            }
        }
        // The tasks catch the panics of their requests and are never
        // aborted.
        while running.join_next().await.is_some() {}
        // Bounded: a server that does not answer a goodbye holds no batch.
        let _ = tokio::time::timeout(CLOSE_WAIT, batch.protocols.close()).await;
    }

    /// What the files of a batch share, with `files_left` files counted as
    /// waiting at its start.
    pub(super) fn batch(&self, files_left: usize, trees: bool) -> Batch {
        let netrc = self.config.protocol.netrc.as_deref().and_then(|path| {
            Netrc::load(path)
                .inspect_err(|e| tracing::warn!("cannot read {}: {e}", path.display()))
                .ok()
        });
        let mut config = self.config.clone();
        let floor = config.max_parallel.max(config.max_splits).max(1);
        let adaptive = config.grow_parallel || config.grow_splits;
        let ceiling =
            (config.protocol.max_per_host).unwrap_or(crate::config::DEFAULT_GROWTH_CEILING);
        // The connections to one host a batch with trees holds at once,
        // listings and transfers together, when the user set no per-host
        // limit: what its files may use (up to where growth stops, when it
        // grows), as lftp's `mirror --parallel` uses its N connections for
        // both. Listing beside them instead would open sessions of its
        // own, and an FTP login costs the server far more than a listing
        // (a process, a password hash).
        let per_host = (config.protocol.max_per_host).or(trees.then_some(if adaptive {
            floor.max(ceiling)
        } else {
            floor
        }));
        // Timestamping replaces an out-of-date copy, as wget's -N does,
        // rather than keeping it beside a numbered new one.
        config.overwrite |= config.timestamping;
        Batch {
            config,
            netrc,
            throttle: self.config.max_speed.map(Throttle::new),
            hosts: per_host.map(HostSlots::new),
            dirs: Mutex::new(HashSet::new()),
            transfers: AtomicUsize::new(0),
            budget: AtomicUsize::new(floor),
            adapt: adaptive.then(|| Mutex::new(Adapt::new(floor, ceiling))),
            received: AtomicU64::new(0),
            file_tasks: AtomicUsize::new(0),
            splittable_files: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            files_left: AtomicUsize::new(files_left),
            ahead: AtomicUsize::new(0),
            answer: AtomicU64::new(u64::MAX),
            file_done: Notify::new(),
            started: Instant::now(),
            last_progress: AtomicU64::new(0),
            out_of_handles: AtomicU64::new(0),
            regain: Arc::new(tokio::sync::Semaphore::new(1)),
            protocols: Protocols::new(self.config.protocol.clone()),
            names: NameTable::default(),
            reporter: self.reporter.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

/// One of the batch's slots: takes the next request when done with one,
/// then the files the walks of a tree find. A slot leaves when the batch
/// allows fewer files at once than it has slots (it grew, and took back
/// what did not pay).
async fn slot<S: Stream<Item = Request> + Unpin>(
    batch: Arc<Batch>,
    feed: Arc<Feed<S>>,
    done_tx: Done,
    tree: Option<TreeFeed>,
) {
    loop {
        let tasks = batch.file_tasks.load(Ordering::SeqCst);
        if tasks > batch.files_allowed()
            && (batch.file_tasks)
                .compare_exchange(tasks, tasks - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return;
        }
        let Some((index, request)) = feed.next(&batch).await else {
            break;
        };
        let fallback = failed_early(&request, internal_error());
        let outcome = batch
            .run_file(batch.clone().download_one(request), fallback)
            .await;
        if done_tx.send((index, outcome)).await.is_err() {
            break;
        }
        // Let the other slots whose files just arrived finish them first:
        // the next requests then leave together and the server wakes once
        // for several (with many small files, half as often).
        tokio::task::yield_now().await;
    }
    if let Some(tree) = tree {
        tree.run(&batch, &done_tx).await;
    }
    batch.file_tasks.fetch_sub(1, Ordering::SeqCst);
}

impl<S: Stream<Item = Request> + Unpin> Feed<S> {
    /// The next request and its position. A stream of unknown length
    /// counts, until it ends, `max_parallel` files as waiting beyond those
    /// taken: a long list has more to come, so a file is not cut into
    /// parts that the next files would need.
    /// A stream that holds more or fewer than it said is counted right
    /// all the same.
    async fn next(&self, batch: &Batch) -> Option<(usize, Request)> {
        let mut feed = self.stream.lock().await;
        // A stream owes nothing after its end (`stream::unfold` panics):
        // the other slots learn it here.
        if self.ended.load(Ordering::SeqCst) {
            return None;
        }
        match feed.0.next().await {
            Some(request) => {
                let index = feed.1;
                feed.1 += 1;
                // What the stream says it holds ready is work waiting too.
                (batch.ahead).store(feed.0.size_hint().0, Ordering::Relaxed);
                if !self.exact || index >= self.counted {
                    batch.files_left.fetch_add(1, Ordering::SeqCst);
                }
                Some((index, request))
            }
            None => {
                batch.ahead.store(0, Ordering::Relaxed);
                if !self.ended.swap(true, Ordering::SeqCst) {
                    let taken = if self.exact { feed.1 } else { 0 };
                    let uncounted = self.counted.saturating_sub(taken);
                    batch.files_left.fetch_sub(uncounted, Ordering::SeqCst);
                }
                None
            }
        }
    }
}
