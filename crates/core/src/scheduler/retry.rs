//! When a failed attempt is followed by another, and how long before it:
//! tries counted by progress, exponential backoff with jitter, a server's
//! `Retry-After`, and waits for a busy server or for file handles that
//! spend no try.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::batch::Batch;
use crate::error::{Error, ErrorKind, Result};
use crate::reporter::ReportId;

/// The longest `Retry-After` honoured; a server asking for more is waited
/// on for this long.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Batch {
    /// A short, growing, jittered wait after a server refused one more
    /// connection, which spends no try.
    pub(super) async fn wait_busy(&self, wait: &mut HandleWait, error: &Error) -> Result<()> {
        wait.waits += 1;
        let pause = pause_after(wait.waits);
        tracing::debug!(waits = wait.waits, ?pause, error = %error, "the server is busy, waiting for a connection to free");
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// Waits for file handles to free after an attempt ran out of them,
    /// without spending a try: other transfers of the batch hold them and
    /// will give them back. Fails (with `error`, explained) only when
    /// nothing in the batch progressed for the idle timeout while this
    /// waited: then nothing is about to free a handle.
    pub(super) async fn wait_for_handles(&self, wait: &mut HandleWait, error: Error) -> Result<()> {
        let now = self.started.elapsed().as_millis() as u64;
        self.out_of_handles.fetch_max(now + 1, Ordering::Relaxed);
        let since = *wait.since.get_or_insert_with(Instant::now);
        let idle = self.config.protocol.timeout;
        if since.elapsed() >= idle && self.idle_for() >= idle {
            return Err(error
                .context(format_args!(
                    "out of file handles, and none was freed for {}s",
                    idle.as_secs_f32()
                ))
                .retryable(false));
        }
        wait.waits += 1;
        let pause = pause_after(wait.waits);
        tracing::debug!(waits = wait.waits, ?pause, error = %error, "out of file handles, waiting for some to free");
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(pause) => Ok(()),
        }
    }

    /// The permit a file that gave back its first response for want of a
    /// file handle opens its part file under (see `Batch::regain`).
    pub(super) async fn regain_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            permit = self.regain.clone().acquire_owned() => {
                permit.map_err(|_| Error::cancelled())
            }
        }
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of
    /// `max_tries` attempts, waiting between attempts. `op` brings no bytes of the
    /// file, so every failure is an attempt without progress.
    pub(super) async fn attempts<T, F, Fut>(
        &self,
        max_tries: u32,
        id: Option<ReportId>,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = Tries::new(max_tries);
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) => self.before_retry(id, &mut tries, 0, e).await?,
            }
        }
    }

    /// Decides whether a failed attempt that brought `gained` new bytes
    /// may be followed by another (see [`Tries`]), and waits before it.
    /// Returns the error when not.
    pub(super) async fn before_retry(
        &self,
        id: Option<ReportId>,
        tries: &mut Tries,
        gained: u64,
        error: Error,
    ) -> Result<()> {
        if error.is_out_of_handles() {
            return self.wait_for_handles(&mut tries.handles, error).await;
        }
        let others = self.transfers.load(Ordering::SeqCst) > usize::from(tries.worker);
        if error.kind() == ErrorKind::Busy
            && others
            && self.idle_for() < self.config.protocol.timeout
        {
            // The server takes no more connections while others of the
            // batch transfer: one of theirs will come free, and the
            // protocol (which lowered the host's limit) waits for it. A
            // server busy with nothing of ours spends tries as before.
            return self.wait_busy(&mut tries.handles, &error).await;
        }
        tries.handles = HandleWait::default();
        if !error.is_retryable() || !tries.fail(gained) {
            return Err(error);
        }
        // An attempt that advanced the part is followed at once: the
        // server is serving, only in pieces (capped ranges, connections
        // that close every so often).
        let wait = match tries.misses {
            0 => error
                .retry_after()
                .map_or(Duration::ZERO, |asked| asked.min(MAX_RETRY_AFTER)),
            misses => backoff(
                self.config.backoff_base,
                self.config.backoff_max,
                misses,
                error.retry_after(),
                fastrand::f64(),
            ),
        };
        tracing::debug!(misses = tries.misses, gained, ?wait, error = %error.chain(), "retrying");
        if let Some(id) = id
            && tries.misses > 0
        {
            self.reporter.on_retry(id, tries.misses, &error);
        }
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }
}

/// The wait after `waits` attempts in a row that found no connection or
/// handle free: from 20 ms to about a second, jittered so the waiting
/// transfers do not all try again at once.
pub(super) fn pause_after(waits: u32) -> Duration {
    let step = Duration::from_millis(10 << waits.min(7)).min(Duration::from_secs(1));
    step.mul_f64(0.5 + 0.5 * fastrand::f64())
}

/// One transfer's wait for file handles (see [`Batch::wait_for_handles`]).
#[derive(Debug, Default)]
pub(super) struct HandleWait {
    /// When this wait began.
    pub(super) since: Option<Instant>,
    /// Attempts that ran out of handles in a row.
    pub(super) waits: u32,
}

/// A failed attempt that brought fewer new bytes than this made no
/// progress. Small beside any range a server caps its answers at, large
/// beside what a server that trickles a few bytes per connection sends.
pub(super) const PROGRESS_MIN: u64 = 64 * 1024;

/// The failed attempts of a part (or of a file's first request), and
/// whether another may follow: `Config::max_tries` counts the attempts in
/// a row that made no progress (brought less than [`PROGRESS_MIN`] new
/// bytes), so a part that advances with every attempt finishes. The bound
/// on a server that alternates a little progress with failures: all
/// failed attempts together may not outnumber `max_tries` plus one for
/// each `PROGRESS_MIN` bytes the attempts brought. One try means no retry
/// at all, progress or not, as it always has.
#[derive(Debug)]
pub(super) struct Tries {
    /// Waiting for file handles, which spends no try.
    pub(super) handles: HandleWait,
    /// Whether the attempts are a worker's, counted among the batch's
    /// transfers.
    pub(super) worker: bool,
    pub(super) max: u32,
    /// Failed attempts in a row without progress.
    pub(super) misses: u32,
    /// Failed attempts, all told.
    pub(super) failed: u64,
    /// New bytes the attempts brought, all told.
    pub(super) gained: u64,
}

impl Tries {
    pub(super) fn new(max_tries: u32) -> Self {
        Tries {
            handles: HandleWait::default(),
            worker: false,
            max: max_tries.max(1),
            misses: 0,
            failed: 0,
            gained: 0,
        }
    }

    /// The attempts of a worker (see [`Tries::worker`]).
    pub(super) fn of_worker(mut self) -> Self {
        self.worker = true;
        self
    }

    /// Records a failed attempt that brought `gained` new bytes; returns
    /// whether another attempt may follow.
    pub(super) fn fail(&mut self, gained: u64) -> bool {
        self.failed += 1;
        self.gained = self.gained.saturating_add(gained);
        if gained >= PROGRESS_MIN {
            self.misses = 0;
        } else {
            self.misses += 1;
        }
        self.max > 1
            && self.misses < self.max
            && self.failed <= u64::from(self.max) + self.gained / PROGRESS_MIN
    }
}

/// The wait before attempt `attempt + 1`: exponential from `base`, capped at
/// `max`, with "equal jitter" (half fixed, half random, from `unit` in
/// 0..1) so parts that failed together do not retry together; never shorter
/// than what the server asked for.
pub(super) fn backoff(
    base: Duration,
    max: Duration,
    attempt: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let exp = base.saturating_mul(1u32 << (attempt - 1).min(16)).min(max);
    let jittered = exp.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
    match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_that_advance_use_up_no_try() {
        const K: u64 = 1024;
        // Nothing received: max_tries attempts in all.
        let mut tries = Tries::new(3);
        assert!(tries.fail(0) && tries.fail(PROGRESS_MIN - 1));
        assert!(!tries.fail(10));
        // 256 KiB at a time, forever: never runs out.
        let mut tries = Tries::new(2);
        assert!((0..10_000).all(|_| tries.fail(256 * K)));
        // One try is no retry, progress or not.
        assert!(!Tries::new(1).fail(256 * K));
        // Progress resets the count of misses in a row...
        let mut tries = Tries::new(2);
        assert!(tries.fail(512 * K) && tries.fail(0) && tries.fail(512 * K) && tries.fail(0));
        assert!(!tries.fail(0));
        // ...but a little progress between many misses runs out: failures
        // may not outnumber max_tries plus one per PROGRESS_MIN received.
        let mut tries = Tries::new(5);
        let mut attempts = 0;
        while tries.fail(if attempts % 4 == 0 { PROGRESS_MIN } else { 0 }) {
            attempts += 1;
            assert!(attempts < 100, "never ran out");
        }
        // Zero tries means one.
        assert!(!Tries::new(0).fail(0));
    }

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        assert_eq!(backoff(base, max, 1, None, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 1, None, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(base, max, 3, None, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 30, None, 1.0), max);
        assert_eq!(
            backoff(base, max, 1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(base, max, 1, Some(Duration::from_secs(9999)), 0.5),
            MAX_RETRY_AFTER
        );
    }
}
