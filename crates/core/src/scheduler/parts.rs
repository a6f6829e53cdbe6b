//! How a file is cut into parts (spans), and the rules by which an idle
//! connection splits the largest span, takes over a stalled one, or carries
//! on into the next: a [`PartTable`] of plain synchronous code, with no
//! tokio, no I/O and no clock of its own (every rule that looks at time is
//! handed "now"), so that the rules are tested by driving the table through
//! sequences of events rather than through a server.

mod span;

use std::time::{Duration, Instant};

use span::Span;

use crate::link::Carrier;
use crate::protocol::PartEnd;

/// How often a worker with nothing left to split looks for a stalled part.
pub(super) const TAIL_POLL: Duration = Duration::from_millis(250);

/// A part whose request is answered and whose bytes arrive is split only if,
/// at its own pace, it would not be done within this long. Splitting it
/// costs the bytes the server has already sent past the cut (its request
/// ends at the old end, and the kernel's buffers hold megabytes), and
/// saves at most half of this.
pub(super) const SPLIT_HORIZON: Duration = Duration::from_secs(1);

/// A part that got bytes is stalled after a silence this many times the
/// longest it has known in its current request (when that is longer than
/// the takeover delay): bytes that come in bursts, on a link shared with
/// other transfers, are its pace, not a stall.
pub(super) const STALL_GAPS: u32 = 4;

/// A part whose request its protocol cuts cheaply is split for an idle
/// connection when its rest takes this many times as long as a request
/// takes to answer: the back half then arrives at least half an answer
/// sooner than the part would have got there (see
/// `Span::cheap_cut_pays`).
pub(super) const CHEAP_CUT_PAYS: u32 = 3;

/// How long a part's request runs before its pace says anything.
pub(super) const PACE_SEEN_AFTER: Duration = TAIL_POLL;

/// How many bytes one request of a span asks for, of the `left` it has:
/// half of them while that is more than about `horizon` at `pace` (the
/// bytes per second of one part's request), all of them after. Without a
/// pace, half, or a quarter for a span's `first` request (the file's parts
/// are asked for while the batch may still grow to several times its
/// connections, whose newcomers then find most of each part not yet asked
/// for; a later request without a pace is on a link too quick to show
/// one, where a request costs next to nothing). A split then cuts at the
/// end of the request under way, where the server stops sending of its
/// own accord: cutting a request in the middle loses whatever the server
/// sent past the cut (a round trip of the link's bytes, megabytes on a long
/// fast one). Each request after the first costs its connection a round
/// trip, so they halve rather than stay small; never below twice the
/// smallest part. Near the end (a `horizon` under [`SPLIT_HORIZON`], the
/// time the file has left) a request asks for no more than that time at
/// its pace, though that is less than half: a part whose request reaches
/// its end can only be split by a cut inside the request, so on a capped
/// link the part asked for last would run on alone.
fn request_len(
    left: u64,
    pace: Option<f64>,
    min_split: u64,
    horizon: Duration,
    first: bool,
) -> u64 {
    let smallest = min_split.max(1).saturating_mul(2);
    let (floor, share) = match pace {
        Some(p) => (((p * horizon.as_secs_f64()) as u64).max(smallest), 2),
        None => (smallest, if first { 4 } else { 2 }),
    };
    if left <= floor.saturating_add(floor / 4) {
        left
    } else if pace.is_some() && horizon < SPLIT_HORIZON {
        // Near the end, no longer than the file has left: the rest stays
        // unasked, for idle connections to take without a cut.
        (left / share).min(floor).max(smallest)
    } else {
        (left / share).max(smallest)
    }
}

/// How far the first request of a file asks, made before its size is known
/// (a range with an end, so that a server never sends past the first part
/// once the file is cut): twice the smallest part, so that a file too small
/// to be cut comes whole in one answer.
pub(super) fn first_request_end(min_split: u64) -> u64 {
    min_split.max(1).saturating_mul(2)
}

/// A span's place in its table, stable until the table starts over as one
/// stream (when no worker is left to hold an old one).
pub(super) type SpanId = usize;

/// The settings the table's rules read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    /// A span is split only when at least twice this is left of it.
    pub(super) min_split: u64,
    /// A span that received nothing for this long has stalled.
    pub(super) takeover_after: Duration,
    /// How many times the rest of one range may be taken over: a server
    /// that stalls every connection then fails by the idle timeout rather
    /// than being asked again every few seconds forever.
    pub(super) max_takeovers: u32,
}

/// What an idle connection was given (see [`PartTable::next_for_idle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Given {
    /// A whole span no worker fills.
    Orphan(SpanId),
    /// The back half of a span, cut at `at`.
    Split { span: SpanId, at: u64 },
    /// The rest of a stalled span, whose worker must stop.
    TakeOver { span: SpanId, stalled: SpanId },
}

impl Given {
    /// The span to fill.
    pub(super) fn span(self) -> SpanId {
        match self {
            Given::Orphan(span) | Given::Split { span, .. } | Given::TakeOver { span, .. } => span,
        }
    }
}

/// What [`PartTable::record`] did with a chunk of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Recorded {
    /// How many of the bytes belong to the span (the rest lie past its
    /// end).
    pub(super) take: usize,
    /// Whether the span is now complete.
    pub(super) full: bool,
    /// Whether the chunk ran past the end of the file.
    pub(super) past_file_end: bool,
}

/// Every span of one file, under one lock: together they tile the file
/// (`0..size`, or `0..` when the size is unknown) at every moment, so the
/// bytes received and the resume state are read from one consistent view.
#[derive(Debug)]
pub(super) struct PartTable<S> {
    size: Option<u64>,
    rules: Rules,
    spans: Vec<Span<S>>,
    /// The file is fetched as one stream, which no worker may split:
    /// the server does not serve ranges, or stopped honouring them.
    one_stream: bool,
    /// The one stream started over from byte 0, so the file on disk may
    /// be longer than what this attempt wrote.
    rewound: bool,
    /// The pace of the last request of any span that showed one (bytes per
    /// second), for the first request of a span that has none yet.
    pace: Option<f64>,
    /// The quickest a request of the file was answered, by its protocol's
    /// measure: how long an idle connection that takes half of a span
    /// waits for its first byte (see `Span::cheap_cut_pays`).
    answer: Option<Duration>,
}

impl<S: Default> PartTable<S> {
    /// A table of `plan`'s spans (`[start, pos, end]`, tiling the file),
    /// each with a worker.
    pub(super) fn new(
        size: Option<u64>,
        plan: &[[u64; 3]],
        rules: Rules,
        one_stream: bool,
        now: Instant,
    ) -> Self {
        let spans = plan
            .iter()
            .map(|&[start, pos, end]| Span::new(start, pos, end, now))
            .collect();
        PartTable {
            size,
            rules,
            spans,
            one_stream,
            rewound: false,
            pace: None,
            answer: None,
        }
    }

    /// Replaces every span by one covering the whole file, fetched as one
    /// stream from byte 0. Returns it.
    pub(super) fn restart_as_one_stream(&mut self, now: Instant) -> SpanId {
        self.one_stream = true;
        self.rewound = true;
        let end = self.size.unwrap_or(u64::MAX);
        self.spans = vec![Span::new(0, 0, end, now)];
        0
    }

    /// What an idle connection may do now: take a span no worker fills;
    /// split the span with the most bytes left of those worth splitting
    /// (see [`Span::worth_splitting`]) and take its back half; or take over
    /// the rest of a stalled span, whose worker must then be stopped (its
    /// `stop` is returned by [`PartTable::stop`]).
    pub(super) fn next_for_idle(&mut self, now: Instant) -> Option<Given> {
        if let Some(orphan) = self.take_orphan(now) {
            return Some(Given::Orphan(orphan));
        }
        // Without a known size, or when ranges failed, there is no range
        // to split.
        if self.size.is_none() || self.one_stream {
            return None;
        }
        let min = self.rules.min_split.max(1);
        // A rest its request does not reach costs no byte to take, once
        // the file shows a pace: the pace of a request that ended (a
        // request just made shows none for a quarter of a second, which
        // near the end is the idle connection's whole wait), or of the
        // request under way (it is no stall to wait on).
        let file_pace = self.pace.is_some();
        let answer = self.answer;
        let unasked = |s: &Span<S>| {
            s.end.saturating_sub(s.asked) >= min && (file_pace || s.pace(now).is_some())
        };
        let victim = (self.spans.iter().enumerate())
            .filter(|(_, s)| s.active && s.left() >= 2 * min)
            .filter(|(_, s)| s.worth_splitting(now) || unasked(s) || s.cheap_cut_pays(now, answer))
            .filter_map(|(id, s)| Some((id, s.cut_at(min, now, answer)?, s.left())))
            .max_by_key(|&(_, _, left)| left);
        if let Some((victim, at, _)) = victim {
            let v = &mut self.spans[victim];
            let stolen = Span::new(at, at, v.end, now);
            v.cut(at);
            self.spans.push(stolen);
            return Some(Given::Split {
                span: self.spans.len() - 1,
                at,
            });
        }
        // A connection that stalled near the end must not hold the file
        // until the idle timeout: its whole rest goes to the idle one.
        let stalled = (self.spans.iter()).position(|s| s.stalled(now, &self.rules))?;
        let v = &mut self.spans[stalled];
        let mut rest = Span::new(v.pos, v.pos, v.end, now);
        rest.takeovers = v.takeovers + 1;
        v.cut(v.pos);
        self.spans.push(rest);
        Some(Given::TakeOver {
            span: self.spans.len() - 1,
            stalled,
        })
    }
}

impl<S> PartTable<S> {
    /// Whether the file is fetched as one stream.
    pub(super) fn one_stream(&self) -> bool {
        self.one_stream
    }

    /// Marks the file as fetched as one stream from now on; returns
    /// whether it was not already.
    pub(super) fn fall_back_to_one_stream(&mut self) -> bool {
        !std::mem::replace(&mut self.one_stream, true)
    }

    /// Whether the one stream started over from byte 0.
    pub(super) fn rewound(&self) -> bool {
        self.rewound
    }

    /// `[start, pos, end]` of every span, `pos` what is on disk: a true
    /// statement of which bytes of the file are good.
    pub(super) fn resume_state(&self) -> Vec<[u64; 3]> {
        (self.spans.iter())
            .map(|s| [s.start, s.on_disk.min(s.end).max(s.start), s.end])
            .collect()
    }

    /// How long the file has left: the bytes not received, at the latest
    /// pace of one request times the spans being filled (`None` before a
    /// pace is seen, or without a size).
    fn time_left(&self) -> Option<Duration> {
        let (pace, size) = (self.pace?, self.size?);
        let filling = (self.spans.iter())
            .filter(|s| s.active && s.pos < s.end)
            .count()
            .max(1);
        let left = size.saturating_sub(self.received()) as f64;
        Duration::try_from_secs_f64(left / (pace * filling as f64)).ok()
    }

    /// Bytes received over all spans.
    pub(super) fn received(&self) -> u64 {
        (self.spans.iter())
            .map(|s| s.pos.min(s.end).saturating_sub(s.start))
            .sum()
    }

    /// Whether some span is still being filled and could stall (so an
    /// idle worker has a reason to stay near the tail).
    pub(super) fn others_running(&self) -> bool {
        if self.size.is_none() || self.one_stream {
            return false;
        }
        self.spans.iter().any(|s| s.active && s.pos < s.end)
    }

    /// A span no worker fills, taken whole at `now`: its stall clock
    /// starts again, since nothing was owed to its new worker.
    pub(super) fn take_orphan(&mut self, now: Instant) -> Option<SpanId> {
        let id = (self.spans.iter()).position(|s| !s.active && s.pos < s.end)?;
        let s = &mut self.spans[id];
        s.active = true;
        s.progressed = now;
        Some(id)
    }

    /// The span's worker leaves it (the server refused the connection):
    /// the next idle worker takes it whole.
    pub(super) fn leave(&mut self, id: SpanId) {
        self.spans[id].active = false;
    }

    /// Extends `id`, which is full, over the untouched span without a
    /// worker that starts where it ends, so that a body going on past its
    /// span is not dropped. Returns whether it did.
    pub(super) fn absorb_next(&mut self, id: SpanId) -> bool {
        let end = self.spans[id].end;
        let next = (self.spans.iter().enumerate()).position(|(i, o)| {
            i != id && !o.active && o.start == end && o.pos == o.start && o.end > o.start
        });
        let Some(next) = next else {
            return false;
        };
        let o = &mut self.spans[next];
        let new_end = o.end;
        o.cut(o.start);
        // Its request's part end stays: a protocol that stops there asks
        // for the rest anew.
        self.spans[id].end = new_end;
        true
    }

    /// A new request for `id` starts, from the first byte not on disk
    /// (after a failed write, bytes gathered are lost), for as much of the
    /// rest as [`request_len`] says (all of it when the size is unknown or
    /// the file is one stream, which no one splits, or when the server
    /// would not stop at the end asked: not `stops`). Returns the range to
    /// ask for.
    pub(super) fn begin_request(&mut self, id: SpanId, stops: bool, now: Instant) -> (u64, u64) {
        let own = self.spans[id].pace_when_done(now);
        self.pace = own.or(self.pace);
        let bounded = stops && self.size.is_some() && !self.one_stream;
        let (pace, min) = (self.pace, self.rules.min_split);
        // Near the end a request lasts no longer than the file has left,
        // so that the last ones end together.
        let horizon = self
            .time_left()
            .map_or(SPLIT_HORIZON, |t| t.min(SPLIT_HORIZON));
        let s = &mut self.spans[id];
        s.pos = s.on_disk;
        s.began = now;
        s.began_pos = s.pos;
        s.asked_at = now;
        s.longest_gap = Duration::ZERO;
        s.carrier = None;
        s.asked = match bounded {
            true => s.pos + request_len(s.left(), pace, min, horizon, s.pos == s.start),
            false => s.end,
        };
        s.told = PartEnd::new(s.asked);
        (s.pos, s.asked)
    }

    /// Where the part of `id`'s current request ends, for its protocol:
    /// lowered whenever the span is cut while the request runs.
    pub(super) fn part_end(&self, id: SpanId) -> PartEnd {
        self.spans[id].told.clone()
    }

    /// The request that fills `id` runs on to the span's end, stopping
    /// where `told` says (a protocol whose ranges have no end, told where
    /// the part ends after its first request was made): from now on it is
    /// told the span's end and every cut.
    pub(super) fn runs_on_to_its_end(&mut self, id: SpanId, told: PartEnd) {
        let s = &mut self.spans[id];
        told.lower(s.end);
        s.told = told;
        s.asked = s.end;
    }

    /// The request that fills `id` asked only up to `end` (the first
    /// request of a file, made before the span was planned), or, with
    /// `u64::MAX`, for the whole rest of the file (a server that ignored
    /// the range).
    pub(super) fn asked_up_to(&mut self, id: SpanId, end: u64) {
        self.spans[id].asked = end;
    }

    /// The request that fills `id` was made at `at`, before the table
    /// (the file's first request, made before its size was known).
    pub(super) fn asked_at(&mut self, id: SpanId, at: Instant) {
        self.spans[id].asked_at = at;
    }

    /// Whether the body of `id`'s request ended because it gave all that
    /// was asked, short of the span's end: the rest is asked for next, on
    /// the same connection, and the attempt is no failure.
    pub(super) fn ended_where_asked(&self, id: SpanId) -> bool {
        let s = &self.spans[id];
        s.pos == s.asked && s.pos < s.end
    }

    /// The request that fills `id` is one its protocol cuts cheaply (see
    /// `Protocol::cuts_cheaply`), answered `answer` after it was made by
    /// the protocol's measure, if it measured.
    pub(super) fn cut_cheaply(&mut self, id: SpanId, cheap: bool, answer: Option<Duration>) {
        self.spans[id].cheap_cuts = cheap;
        if let Some(took) = answer {
            self.answer = Some(self.answer.map_or(took, |a| a.min(took)));
        }
    }

    /// The request that fills `id` is carried by a connection it shares
    /// with other fetches (see [`Span::stalled`]).
    pub(super) fn carried_by(&mut self, id: SpanId, carrier: Option<Carrier>) {
        self.spans[id].carrier = carrier;
    }

    /// The span's worker waits for something that is not a stall (its
    /// request's answer, the bandwidth cap).
    pub(super) fn waiting(&mut self, id: SpanId) {
        self.spans[id].waiting = true;
    }

    /// The wait is over: the stall clock starts again now.
    pub(super) fn done_waiting(&mut self, id: SpanId, now: Instant) {
        let s = &mut self.spans[id];
        s.waiting = false;
        s.progressed = now;
    }

    /// The span's request is answered (or failed): the stall clock starts,
    /// and so does its pace, which the time the server took to answer says
    /// nothing of.
    pub(super) fn answered(&mut self, id: SpanId, now: Instant) {
        self.done_waiting(id, now);
        let s = &mut self.spans[id];
        s.began = now;
        s.began_pos = s.pos;
        s.longest_gap = Duration::ZERO;
    }

    /// The server sent the only span's bytes from byte 0 instead of from
    /// where it was asked: the span starts over from 0. Returns false (and
    /// changes nothing) when the file has other spans, which a stream from
    /// 0 cannot serve.
    pub(super) fn rewind(&mut self, id: SpanId) -> bool {
        if self.spans.len() != 1 {
            return false;
        }
        self.rewound = true;
        let s = &mut self.spans[id];
        s.start = 0;
        s.pos = 0;
        s.on_disk = 0;
        true
    }

    /// Records `len` bytes received for `id` at `now`: those up to the
    /// span's end are its.
    pub(super) fn record(&mut self, id: SpanId, len: usize, now: Instant) -> Recorded {
        let s = &mut self.spans[id];
        let take = (len as u64).min(s.left()) as usize;
        s.pos += take as u64;
        let gap = now.saturating_duration_since(s.progressed);
        s.longest_gap = s.longest_gap.max(gap);
        s.progressed = now;
        Recorded {
            take,
            full: s.pos >= s.end,
            past_file_end: take < len && Some(s.end) == self.size,
        }
    }

    /// `n` more bytes of `id` are written to the file.
    pub(super) fn written(&mut self, id: SpanId, n: u64) {
        self.spans[id].on_disk += n;
    }

    /// The next byte `id` expects.
    pub(super) fn pos(&self, id: SpanId) -> u64 {
        self.spans[id].pos
    }

    /// One past the last byte of `id`.
    pub(super) fn end(&self, id: SpanId) -> u64 {
        self.spans[id].end
    }

    /// How the worker of `id` is told to stop.
    pub(super) fn stop(&self, id: SpanId) -> &S {
        &self.spans[id].stop
    }
}

/// Cuts `0..size` into at most `max_splits` parts of at least `min_split`
/// bytes when ranges work; otherwise one part (open-ended when the size is
/// unknown). The first part reaches at least `first_end` (what the first
/// response already carries): a body never runs into a part that another
/// connection fills, where it would have to be dropped with the bytes the
/// server already sent.
pub(super) fn plan_parts(
    size: Option<u64>,
    ranges: bool,
    max_splits: usize,
    min_split: u64,
    first_end: u64,
) -> Vec<(u64, u64)> {
    let Some(size) = size else {
        return vec![(0, u64::MAX)];
    };
    let parts = if ranges {
        (size / min_split.max(1)).clamp(1, max_splits.max(1) as u64)
    } else {
        1
    };
    let even = cut(size, parts);
    let first_end = first_end.min(size);
    if even[0].1 < first_end {
        // The first part is what the first answer carries; the rest is
        // cut as a file of its own.
        let rest = size - first_end;
        let more = (rest / min_split.max(1)).min(parts - 1);
        let mut out = vec![(0, first_end)];
        out.extend(
            cut(rest, more.max(1))
                .into_iter()
                .map(|(a, b)| (first_end + a, first_end + b))
                .filter(|(a, b)| a < b),
        );
        return out;
    }
    even
}

/// `0..size` in `parts` parts of lengths that differ by at most one.
fn cut(size: u64, parts: u64) -> Vec<(u64, u64)> {
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
mod tests;
