//! Where a run's requests come from: the command line's URLs and the input
//! list, read on a thread of its own a bounded window ahead of the
//! downloads, so that a list of any length (or a slow pipe) costs neither
//! memory nor a stalled transfer.

use std::io::BufRead;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;

use pymatris_core::camino::{Utf8Path, Utf8PathBuf};
use pymatris_core::{CancellationToken, Request, Shard, Url};
use tokio::sync::mpsc;

use crate::input::{BadLine, Entry, Item, Lines};

/// How many entries the list is read ahead of the downloads.
pub(crate) const LOOK_AHEAD: usize = 256;

/// How many places the reader waits for once the list is read
/// [`LOOK_AHEAD`] ahead: it is woken once per so many requests taken, not
/// at each (a wake-up of its thread per request, 2,000 of them for a list
/// of small files on loopback, cost more CPU than their transfers).
const ROOM: usize = LOOK_AHEAD / 4;

/// Sends from the reader's thread, outside the runtime, taking places in
/// the channel [`ROOM`] at a time. An entry is sent as soon as it is read,
/// into a place already taken: none waits for others to fill a batch (a
/// list on a slow pipe starts its downloads line by line).
struct Feeder<'a> {
    tx: &'a mpsc::Sender<Fed>,
    runtime: tokio::runtime::Handle,
    places: Option<mpsc::PermitIterator<'a, Fed>>,
}

impl Feeder<'_> {
    /// Sends `fed`; `false` once nobody takes what is sent.
    fn send(&mut self, fed: Fed) -> bool {
        loop {
            if let Some(place) = self.places.as_mut().and_then(Iterator::next) {
                place.send(fed);
                return true;
            }
            match self.runtime.block_on(self.tx.reserve_many(ROOM)) {
                Ok(places) => self.places = Some(places),
                Err(_) => return false,
            }
        }
    }
}

/// The input list being read.
pub(crate) type List = Lines<Box<dyn BufRead + Send>>;

/// The requests of a run, not yet read.
pub(crate) struct Source {
    /// `--dir`.
    pub(crate) dir: Utf8PathBuf,
    /// The command line's entries, then the first of the list (read before
    /// the run, to check the flags that apply to one URL).
    pub(crate) head: Vec<Item>,
    /// The rest of the list, with its name.
    pub(crate) list: Option<(String, List)>,
    pub(crate) shard: Option<Shard>,
    /// Requests sent to the run (or being sent) and not yet taken: see
    /// [`Ready`].
    pub(crate) ready: Arc<AtomicUsize>,
}

/// What the reader thread hands to the run, in the list's order.
pub(crate) enum Fed {
    /// A request and its line in the list (`None`: the command line).
    Request(Request, Option<usize>),
    /// The list could not be read on: nothing more comes.
    ReadError(String),
    /// The reader is at this line of the list.
    Position(usize),
}

impl Source {
    /// How many requests there are, when no list is still to be read.
    pub(crate) fn known_total(&self) -> Option<usize> {
        self.list.is_none().then_some(self.head.len())
    }

    /// The request of an entry: `--dir`, then the entry's `dir=`, then
    /// the directories of its `out=`, whose last component is the name.
    pub(crate) fn request(&self, entry: Entry) -> Request {
        let mut dir = self.dir.clone();
        if let Some(sub) = &entry.dir {
            dir.push(sub);
        }
        let mut name = None;
        if let Some(out) = &entry.out {
            let path = Utf8Path::new(out);
            match (path.parent(), path.file_name()) {
                (Some(parent), Some(file)) => {
                    dir.push(parent);
                    name = Some(file.to_owned());
                }
                _ => name = Some(out.clone()),
            }
        }
        let mut request = Request::new(entry.url).dir(dir).mirrors(entry.mirrors);
        if let Some(name) = name {
            request = request.filename(name);
        }
        match (entry.checksum, entry.sha256) {
            (Some(sum), _) => request = request.checksum(sum),
            (None, Some(sha)) => request = request.sha256(sha),
            (None, None) => {}
        }
        request
    }

    /// Whether this shard downloads `item` (a bad line is reported by one
    /// shard only, as a URL would be).
    fn mine(&self, item: &Item) -> bool {
        let Some(shard) = &self.shard else {
            return true;
        };
        match item {
            Ok(entry) => shard.contains(&entry.url),
            Err(bad) => shard.contains(&bad.shown),
        }
    }

    /// Every entry in order, on this thread; for tests.
    #[cfg(test)]
    pub(crate) fn read_all(mut self) -> std::io::Result<Vec<Item>> {
        let mut items: Vec<Item> = std::mem::take(&mut self.head);
        if let Some((_, list)) = self.list.take() {
            items.extend(list.collect::<std::io::Result<Vec<_>>>()?);
        }
        Ok(items.into_iter().filter(|i| self.mine(i)).collect())
    }

    /// Reads the entries on a thread of their own and sends them to `tx`,
    /// at most [`LOOK_AHEAD`] ahead of what is taken; hands bad lines to
    /// `on_bad` (on that thread, which may wait on a slow reader of the
    /// account without holding up a transfer). The thread ends with the
    /// list, once nobody takes what it sends, or once `stop` is cancelled.
    pub(crate) fn spawn_reader(
        mut self,
        tx: mpsc::Sender<Fed>,
        on_bad: impl Fn(BadLine) + Send + 'static,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let head = std::mem::take(&mut self.head);
        let list = self.list.take();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("pymatris-input".to_owned())
            .spawn(move || {
                let mut feeder = Feeder {
                    tx: &tx,
                    runtime,
                    places: None,
                };
                let send = |feeder: &mut Feeder, item| {
                    !stop.is_cancelled() && self.send(feeder, item, &on_bad)
                };
                for item in head {
                    if !send(&mut feeder, item) {
                        return;
                    }
                }
                let Some((name, mut list)) = list else {
                    return;
                };
                let mut told = 0;
                while let Some(next) = list.next() {
                    let item = match next {
                        Ok(item) => item,
                        Err(e) => {
                            feeder.send(Fed::ReadError(format!(
                                "cannot read the input file {name}: {e}"
                            )));
                            return;
                        }
                    };
                    if !send(&mut feeder, item) {
                        return;
                    }
                    // The position, for the progress bar, now and then.
                    if list.position() - told >= 64 {
                        told = list.position();
                        if !feeder.send(Fed::Position(told)) {
                            return;
                        }
                    }
                }
                feeder.send(Fed::Position(list.position()));
            })
            .map(drop)
    }

    /// Sends one entry; `false` once nobody takes them.
    fn send(&self, feeder: &mut Feeder, item: Item, on_bad: &impl Fn(BadLine)) -> bool {
        if !self.mine(&item) {
            return true;
        }
        let fed = match item {
            Ok(entry) => {
                // Registered before the URL is used, so that no log line
                // shows its password.
                for raw in std::iter::once(&entry.url).chain(&entry.mirrors) {
                    if raw.contains('@')
                        && let Ok(url) = Url::parse(raw)
                    {
                        pymatris_core::register_url_secrets(&url);
                    }
                }
                let line = entry.line;
                // Counted before it is sent, so that the count taken off
                // when it is received never goes below zero.
                self.ready.fetch_add(1, Ordering::SeqCst);
                Fed::Request(self.request(entry), line)
            }
            Err(bad) => {
                on_bad(bad);
                return true;
            }
        };
        feeder.send(fed)
    }
}

/// The run's requests, whose `size_hint` says how many the reader has
/// ready beyond those taken: the downloader counts them as work waiting
/// when it decides whether more connections could be used (the list read
/// ahead holds far more than the files in flight).
pub(crate) struct Ready<S> {
    pub(crate) requests: S,
    /// [`Source::ready`], taken off as each request is received.
    pub(crate) ready: Arc<AtomicUsize>,
}

impl<S: Stream + Unpin> Stream for Ready<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.requests).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ready.load(Ordering::SeqCst), None)
    }
}
