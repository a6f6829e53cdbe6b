//! How a file is cut into parts (spans), and the rules by which an idle
//! connection splits the largest span, takes over a stalled one, or carries
//! on into the next.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often a worker with nothing left to split looks for a stalled part.
pub(super) const TAIL_POLL: Duration = Duration::from_millis(250);

/// A part whose request is answered and whose bytes arrive is split only if,
/// at its own pace, it would not be done within this long. Splitting it
/// costs the bytes the server has already sent past the cut (its request
/// ends at the old end, and the kernel's buffers hold megabytes), and
/// saves at most half of this.
pub(super) const SPLIT_HORIZON: Duration = Duration::from_secs(1);

/// How long a part's request runs before its pace says anything.
pub(super) const PACE_SEEN_AFTER: Duration = TAIL_POLL;

/// A range of the file that one worker fills: `pos` is the next byte to
/// receive, `end` one past the last, and other workers may lower `end` to
/// take over the rest.
#[derive(Debug)]
pub(super) struct Span {
    pub(super) start: u64,
    pub(super) pos: u64,
    pub(super) end: u64,
    /// Bytes `start..on_disk` are written to the file; `pos` runs ahead
    /// by what is still gathered for writing. Resume state claims no more.
    pub(super) on_disk: u64,
    /// Whether a worker is filling it; a span left by a worker that the
    /// server refused is taken over whole by the next idle worker.
    pub(super) active: bool,
    /// When a byte last arrived (or the span was made, or its request
    /// was answered).
    pub(super) progressed: Instant,
    /// When its current request was made, and `pos` then: its pace.
    pub(super) began: Instant,
    pub(super) began_pos: u64,
    /// Whether its worker is in a wait that is no stall: asking for its
    /// bytes (connecting, logging in, waiting for a connection the server
    /// will take; a stall is of a transfer that started, and the protocol
    /// bounds the request by the timeout), or held back by the bandwidth
    /// cap.
    pub(super) waiting: bool,
    /// Cancelled when an idle worker takes over the rest of this span
    /// because it stalled: its own worker then stops.
    pub(super) taken: CancellationToken,
    /// How many stalled spans this one continues: bounded, so a server that
    /// stalls every connection fails by the idle timeout rather than being
    /// asked again every few seconds forever.
    pub(super) takeovers: u32,
}

impl Span {
    pub(super) fn new(start: u64, pos: u64, end: u64) -> SharedSpan {
        Arc::new(Mutex::new(Span {
            start,
            pos,
            end,
            on_disk: pos,
            active: true,
            progressed: Instant::now(),
            began: Instant::now(),
            began_pos: pos,
            waiting: false,
            taken: CancellationToken::new(),
            takeovers: 0,
        }))
    }

    /// Whether an idle connection gains by taking the back half of this
    /// span now. Its request asks up to `end`: a cut wastes whatever the
    /// server has sent past it (and SFTP reads already asked for), so a
    /// part on course to finish soon is left to its connection; one that
    /// is slow, or stuck asking for its bytes, is split.
    pub(super) fn worth_splitting(&self) -> bool {
        let elapsed = self.began.elapsed();
        if self.waiting {
            return elapsed >= SPLIT_HORIZON;
        }
        if elapsed < PACE_SEEN_AFTER {
            return false;
        }
        let received = self.pos.saturating_sub(self.began_pos);
        if received == 0 {
            return true;
        }
        let left = self.end.saturating_sub(self.pos);
        elapsed.mul_f64(left as f64 / received as f64) >= SPLIT_HORIZON
    }
}

pub(super) type SharedSpan = Arc<Mutex<Span>>;

pub(super) fn lock(span: &SharedSpan) -> std::sync::MutexGuard<'_, Span> {
    span.lock().expect("span poisoned")
}

/// Cuts `0..size` into at most `max_splits` parts of at least `min_split`
/// bytes when ranges work; otherwise one part (open-ended when the size is
/// unknown).
pub(super) fn plan_parts(
    size: Option<u64>,
    ranges: bool,
    max_splits: usize,
    min_split: u64,
) -> Vec<(u64, u64)> {
    let Some(size) = size else {
        return vec![(0, u64::MAX)];
    };
    let parts = if ranges {
        (size / min_split.max(1)).clamp(1, max_splits.max(1) as u64)
    } else {
        1
    };
    let base = size / parts;
    let extra = size % parts;
    let mut out = Vec::with_capacity(parts as usize);
    let mut start = 0;
    for i in 0..parts {
        let len = base + u64::from(i < extra);
        out.push((start, start + len));
        start += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_file_and_respect_the_minimum() {
        assert_eq!(plan_parts(Some(0), true, 5, 10), vec![(0, 0)]);
        assert_eq!(plan_parts(Some(10), true, 5, 10), vec![(0, 10)]);
        assert_eq!(plan_parts(Some(25), true, 5, 10), vec![(0, 13), (13, 25)]);
        assert_eq!(plan_parts(Some(100), false, 5, 10), vec![(0, 100)]);
        assert_eq!(plan_parts(None, true, 5, 10), vec![(0, u64::MAX)]);
        let plan = plan_parts(Some(1003), true, 5, 1);
        assert_eq!(plan.len(), 5);
        assert_eq!(plan.first().unwrap().0, 0);
        assert_eq!(plan.last().unwrap().1, 1003);
        assert!(plan.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(plan_parts(Some(100), true, 0, 0), vec![(0, 100)]);
    }
}
