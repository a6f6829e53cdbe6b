//! One span of a file, and what can be judged of it alone: whether it is
//! worth splitting now, and whether it stalled.

use std::time::{Duration, Instant};

use super::{CHEAP_CUT_PAYS, PACE_SEEN_AFTER, Rules, SPLIT_HORIZON, STALL_GAPS};
use crate::link::Carrier;
use crate::protocol::PartEnd;

/// A range of the file that one worker fills: `pos` is the next byte to
/// receive, `end` one past the last, and other workers may lower `end` to
/// take over the rest.
#[derive(Debug)]
pub(super) struct Span<S> {
    pub(super) start: u64,
    pub(super) pos: u64,
    pub(super) end: u64,
    /// One past the last byte its current request asked for: `end` when
    /// it was made, unless it is the file's first request (see
    /// [`PartTable::asked_up_to`](super::PartTable::asked_up_to)).
    pub(super) asked: u64,
    /// Where its current request's part ends, as its protocol is told:
    /// `asked`, lowered with `end` (see [`Span::cut`]).
    pub(super) told: PartEnd,
    /// Bytes `start..on_disk` are written to the file; `pos` runs ahead
    /// by what is still gathered for writing. Resume state claims no more.
    pub(super) on_disk: u64,
    /// Whether a worker is filling it; a span left by a worker that the
    /// server refused is taken over whole by the next idle worker.
    pub(super) active: bool,
    /// When a byte last arrived (or the span was made, or its request
    /// was answered).
    pub(super) progressed: Instant,
    /// When its current request was answered (made, while it waits for
    /// the answer), and `pos` then: its pace.
    pub(super) began: Instant,
    pub(super) began_pos: u64,
    /// When its current request was made (the answer's wait included):
    /// what a request done in one burst is timed from.
    pub(super) asked_at: Instant,
    /// The longest wait for a byte in its current request (from its
    /// answer, or from the byte before).
    pub(super) longest_gap: Duration,
    /// Whether its worker is in a wait that is no stall: asking for its
    /// bytes (connecting, logging in, waiting for a connection the server
    /// will take; a stall is of a transfer that started, and the protocol
    /// bounds the request by the timeout), or held back by the bandwidth
    /// cap.
    pub(super) waiting: bool,
    /// How the span's worker is told to stop when an idle worker takes
    /// over its rest (the scheduler's cancellation token); the table only
    /// keeps it with the span, under the same lock.
    pub(super) stop: S,
    /// How many stalled spans this one continues (see
    /// [`Rules::max_takeovers`]).
    pub(super) takeovers: u32,
    /// The connection its current request shares with other fetches, when
    /// the protocol said (see [`Carrier`]).
    pub(super) carrier: Option<Carrier>,
    /// Whether its current request's protocol cuts it cheaply
    /// (`Protocol::cuts_cheaply`).
    pub(super) cheap_cuts: bool,
}

impl<S: Default> Span<S> {
    pub(super) fn new(start: u64, pos: u64, end: u64, now: Instant) -> Self {
        Span {
            start,
            pos,
            end,
            asked: end,
            told: PartEnd::new(end),
            on_disk: pos,
            active: true,
            progressed: now,
            began: now,
            began_pos: pos,
            asked_at: now,
            longest_gap: Duration::ZERO,
            waiting: false,
            stop: S::default(),
            takeovers: 0,
            carrier: None,
            cheap_cuts: false,
        }
    }
}

impl<S> Span<S> {
    /// The span now ends at `at` (no later than it did): another worker
    /// takes the rest. Its request's protocol learns of it at once, also
    /// when the request is still waiting for its first byte.
    pub(super) fn cut(&mut self, at: u64) {
        self.end = at;
        self.told.lower(at);
    }

    pub(super) fn left(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// Whether an idle connection gains by taking the back half of this
    /// span now. Its request asks up to `end`: a cut wastes whatever the
    /// server has sent past it (and SFTP reads already asked for), so a
    /// part on course to finish soon is left to its connection; one that
    /// is slow, or stuck asking for its bytes, is split.
    pub(super) fn worth_splitting(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.began);
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
        elapsed.mul_f64(self.left() as f64 / received as f64) >= SPLIT_HORIZON
    }

    /// Where an idle connection cuts this span, if anywhere: at the middle
    /// of what is left, or at the end of the request under way when that
    /// is further (the server stops there of its own accord, so no byte it
    /// sent is lost). A cut inside the request under way loses what the
    /// server sent past it, so it is made only for a part far from done
    /// at its pace (twice the horizon), or one still waiting for its first
    /// byte. (Waiting on the bandwidth cap, its pace says how far it is:
    /// several connections joining at once would otherwise halve it again
    /// and again, each cut nearer to where its bytes have got.)
    ///
    /// A request its protocol cuts cheaply is cut in the middle whenever
    /// that pays ([`Span::cheap_cut_pays`]).
    pub(super) fn cut_at(
        &self,
        min_split: u64,
        now: Instant,
        answer: Option<Duration>,
    ) -> Option<u64> {
        let mid = self.pos + self.left() / 2;
        if self.asked < self.end && self.end - self.asked >= min_split {
            return Some(mid.max(self.asked));
        }
        let far = (self.waiting && self.pos == self.began_pos)
            || self
                .time_left(now)
                .is_none_or(|left| left >= 2 * SPLIT_HORIZON)
            || self.cheap_cut_pays(now, answer);
        far.then_some(mid)
    }

    /// Whether an idle connection gains by taking the back half of this
    /// span, its request being one its protocol cuts cheaply: when the
    /// rest, at the span's pace, takes at least [`CHEAP_CUT_PAYS`] times
    /// `answer` (the quickest a request of the file was answered), the
    /// back half arrives before the span would have got there (the half
    /// takes half the time, after an answer's wait), and the cut wastes
    /// only what is in flight past it.
    pub(super) fn cheap_cut_pays(&self, now: Instant, answer: Option<Duration>) -> bool {
        let elapsed = now.saturating_duration_since(self.began);
        self.cheap_cuts
            && !self.waiting
            && elapsed >= PACE_SEEN_AFTER
            && answer.is_some_and(|answer| {
                self.time_left(now)
                    .is_some_and(|left| left >= answer * CHEAP_CUT_PAYS)
            })
    }

    /// The pace of its current request, in bytes per second, once it has
    /// run long enough to say.
    pub(super) fn pace(&self, now: Instant) -> Option<f64> {
        let elapsed = now.saturating_duration_since(self.began);
        let received = self.pos.saturating_sub(self.began_pos);
        (elapsed >= PACE_SEEN_AFTER && received > 0)
            .then(|| received as f64 / elapsed.as_secs_f64())
    }

    /// The pace of its request, also of one that gave all it asked for
    /// before its pace could be seen: such a request ran on a link too
    /// quick to show one while it ran, and its bytes over its time say how
    /// quick (else the next request, without a pace, asks for half of the
    /// rest, and so on: five requests for a file of 16 MiB on loopback).
    /// That time runs from when the request was made: on a long link a
    /// request smaller than the window comes in one burst a round trip
    /// after it is made, and its bytes over the burst alone (2 MiB in 2
    /// ms at 100 ms) would promise a pace no request can keep.
    pub(super) fn pace_when_done(&self, now: Instant) -> Option<f64> {
        self.pace(now).or_else(|| {
            let received = self.pos.saturating_sub(self.began_pos);
            let elapsed = now.saturating_duration_since(self.asked_at);
            (self.pos == self.asked && received > 0)
                .then(|| received as f64 / elapsed.max(Duration::from_micros(100)).as_secs_f64())
        })
    }

    /// How long the rest takes at the pace of its current request (`None`
    /// before any byte of it arrived).
    fn time_left(&self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.began);
        let received = self.pos.saturating_sub(self.began_pos);
        (received > 0).then(|| elapsed.mul_f64(self.left() as f64 / received as f64))
    }

    /// Whether its worker has received nothing for longer than the link
    /// explains while the server owed it bytes: for the takeover delay, and
    /// for [`STALL_GAPS`] times the longest wait its request has known.
    /// A span whose connection carries other fetches too is stalled only
    /// when that connection has been as silent: reads on a shared
    /// connection are answered in order, and its wait behind the others'.
    /// One on a connection of its own is judged by its own bytes, whatever
    /// the file's other parts do: one dead connection is taken over while
    /// the others flow.
    pub(super) fn stalled(&self, now: Instant, rules: &Rules) -> bool {
        let limit = rules.takeover_after.max(self.longest_gap * STALL_GAPS);
        let silent_since = |at: Instant| now.saturating_duration_since(at) >= limit;
        let link_silent = (self.carrier.as_ref())
            .and_then(Carrier::last_received)
            .is_none_or(silent_since);
        self.active
            && !self.waiting
            && self.pos < self.end
            && self.takeovers < rules.max_takeovers
            && silent_since(self.progressed)
            && link_silent
    }
}
