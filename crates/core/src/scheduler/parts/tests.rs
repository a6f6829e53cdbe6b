//! The part table's rules, driven by hand and by random sequences of
//! events, without a server or a runtime.

use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::link::ConnActivity;

const MS: Duration = Duration::from_millis(1);
const TAKEOVER: Duration = Duration::from_secs(3);

fn rules(min_split: u64) -> Rules {
    Rules {
        min_split,
        takeover_after: TAKEOVER,
        max_takeovers: 3,
    }
}

/// A table of `size` bytes cut as the scheduler cuts it.
fn table(size: u64, parts: usize, min_split: u64, now: Instant) -> PartTable<Cell<bool>> {
    let plan: Vec<[u64; 3]> = plan_parts(Some(size), true, parts, min_split, 0)
        .into_iter()
        .map(|(s, e)| [s, s, e])
        .collect();
    PartTable::new(Some(size), &plan, rules(min_split), false, now)
}

/// Receives and writes `n` bytes of `id`.
fn deliver<S>(t: &mut PartTable<S>, id: SpanId, n: usize, now: Instant) -> Recorded {
    let r = t.record(id, n, now);
    t.written(id, r.take as u64);
    r
}

#[test]
fn parts_tile_the_file_and_respect_the_minimum() {
    assert_eq!(plan_parts(Some(0), true, 5, 10, 0), vec![(0, 0)]);
    assert_eq!(plan_parts(Some(10), true, 5, 10, 0), vec![(0, 10)]);
    assert_eq!(
        plan_parts(Some(25), true, 5, 10, 0),
        vec![(0, 13), (13, 25)]
    );
    assert_eq!(plan_parts(Some(100), false, 5, 10, 0), vec![(0, 100)]);
    assert_eq!(plan_parts(None, true, 5, 10, 0), vec![(0, u64::MAX)]);
    let plan = plan_parts(Some(1003), true, 5, 1, 0);
    assert_eq!(plan.len(), 5);
    assert_eq!(plan.first().unwrap().0, 0);
    assert_eq!(plan.last().unwrap().1, 1003);
    assert!(plan.windows(2).all(|w| w[0].1 == w[1].0));
    assert_eq!(plan_parts(Some(100), true, 0, 0, 0), vec![(0, 100)]);
}

#[test]
fn the_first_part_holds_what_the_first_answer_carries() {
    // An even first part already holds it: the plan is unchanged.
    assert_eq!(
        plan_parts(Some(100), true, 4, 10, 20),
        plan_parts(Some(100), true, 4, 10, 0)
    );
    // Otherwise the first part ends where the first answer ends, and the
    // rest is cut into the other parts.
    assert_eq!(
        plan_parts(Some(100), true, 5, 10, 40),
        vec![(0, 40), (40, 55), (55, 70), (70, 85), (85, 100)]
    );
    // The rest keeps to the minimum part.
    assert_eq!(
        plan_parts(Some(100), true, 5, 30, 40),
        vec![(0, 40), (40, 70), (70, 100)]
    );
    // A rest smaller than a part is one part of its own.
    assert_eq!(
        plan_parts(Some(50), true, 5, 20, 40),
        vec![(0, 40), (40, 50)]
    );
    // The first answer carried the whole file.
    assert_eq!(plan_parts(Some(30), true, 5, 10, 40), vec![(0, 30)]);
    assert_eq!(plan_parts(Some(40), true, 5, 10, 40), vec![(0, 40)]);
}

#[test]
fn a_request_that_gave_all_it_asked_is_followed_by_one_for_the_rest() {
    let t0 = Instant::now();
    let mut t = table(1000, 2, 100, t0);
    // The first request asked for less than the first span.
    t.asked_up_to(0, 300);
    deliver(&mut t, 0, 200, t0);
    assert!(!t.ended_where_asked(0), "a body short of what it asked");
    deliver(&mut t, 0, 100, t0);
    assert!(t.ended_where_asked(0));
    // The next request asks for the rest of the span.
    assert_eq!(t.begin_request(0, true, t0), (300, 500));
    assert!(!t.ended_where_asked(0));
    deliver(&mut t, 0, 200, t0);
    assert!(!t.ended_where_asked(0), "the span is full");
    // A body that is the whole file (the server ignored the range) asked
    // for all of it.
    t.asked_up_to(1, u64::MAX);
    assert!(!t.ended_where_asked(1));
}

#[test]
fn an_idle_connection_splits_the_largest_span_once_its_pace_is_seen() {
    let t0 = Instant::now();
    let mut t = table(1000, 2, 100, t0);
    // Too early to tell whether either part is on course to finish soon.
    assert_eq!(t.next_for_idle(t0 + PACE_SEEN_AFTER - MS), None);
    deliver(&mut t, 0, 100, t0 + MS);
    let given = t.next_for_idle(t0 + PACE_SEEN_AFTER);
    // The second part has the most left: it is cut in the middle of
    // what is left of it.
    assert_eq!(given, Some(Given::Split { span: 2, at: 750 }));
    assert_eq!(t.end(1), 750);
    assert_eq!((t.pos(2), t.end(2)), (750, 1000));
    assert_eq!(
        t.resume_state(),
        vec![[0, 100, 500], [500, 500, 750], [750, 750, 1000]]
    );
}

#[test]
fn a_span_on_course_to_finish_soon_is_left_to_its_connection() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 1, 1000, t0);
    // 900 kB in half a second: the last 100 kB come in well under the
    // horizon.
    deliver(&mut t, 0, 900_000, t0 + 500 * MS);
    assert_eq!(t.next_for_idle(t0 + 500 * MS), None);
    // A slow one is split.
    let mut t = table(1_000_000, 1, 1000, t0);
    deliver(&mut t, 0, 1000, t0 + 500 * MS);
    assert!(matches!(
        t.next_for_idle(t0 + 500 * MS),
        Some(Given::Split { .. })
    ));
}

#[test]
fn a_request_done_before_its_pace_shows_gives_the_pace_it_ran_at() {
    const MIB: u64 = 1 << 20;
    let t0 = Instant::now();
    let mut t = table(16 * MIB, 1, MIB, t0);
    // The first request asked for two minimum parts, and they came within
    // 2 ms of its answer (loopback): a pace of 1 GB/s, though the request
    // ended before any pace is seen. The rest comes in one request, not in
    // halves (five requests for a 16 MiB file, W3).
    t.asked_up_to(0, 2 * MIB);
    t.answered(0, t0);
    deliver(&mut t, 0, 2 * MIB as usize, t0 + 2 * MS);
    assert!(t.ended_where_asked(0));
    assert_eq!(t.begin_request(0, true, t0 + 2 * MS), (2 * MIB, 16 * MIB));
}

#[test]
fn a_first_request_done_in_one_burst_on_a_long_link_is_timed_from_when_it_was_made() {
    const MIB: u64 = 1 << 20;
    let answer = Instant::now();
    // 1 GiB in five parts at 50 ms one way: the first request was made
    // 100 ms before its answer, and its 2 MiB (less than the window) came
    // within 2 ms of the answer. Timed from the answer, that is 1 GB/s, a
    // pace no request keeps on that link, and the rest of the first part
    // (212 MB) went in one request that no idle connection could share:
    // 0.4 s alone at the end of the file. Timed from when it was made, it
    // asks for half.
    let mut t = table(1 << 30, 5, MIB, answer);
    let part = t.spans[0].end;
    t.asked_up_to(0, 2 * MIB);
    t.asked_at(0, answer - 100 * MS);
    t.answered(0, answer);
    deliver(&mut t, 0, 2 * MIB as usize, answer + 2 * MS);
    assert!(t.ended_where_asked(0));
    let (from, to) = t.begin_request(0, true, answer + 2 * MS);
    assert_eq!(from, 2 * MIB);
    assert!(
        to - from <= (part - from) / 2,
        "asked {} of the {} left",
        to - from,
        part - from
    );
}

#[test]
fn a_request_asks_for_half_of_a_long_rest_and_all_of_a_short_one() {
    let t0 = Instant::now();
    let mut t = table(100_000, 2, 100, t0);
    // No pace yet: a quarter of the span.
    assert_eq!(t.begin_request(0, true, t0), (0, 12_500));
    t.answered(0, t0);
    // 50 kB/s: the rest of the span is under the horizon at that pace.
    let seen = t0 + PACE_SEEN_AFTER;
    deliver(&mut t, 0, 12_500, seen);
    assert!(t.ended_where_asked(0));
    assert_eq!(t.begin_request(0, true, seen), (12_500, 50_000));
    // A span that has no pace of its own goes by the file's (without it,
    // it would ask for a quarter).
    assert_eq!(t.begin_request(1, true, seen), (50_000, 100_000));
    // The same rest at a tenth of the pace is halved again.
    let mut t = table(100_000, 2, 100, t0);
    t.begin_request(0, true, t0);
    t.answered(0, t0);
    deliver(&mut t, 0, 2_500, t0 + 500 * MS);
    assert_eq!(t.begin_request(0, true, t0 + 500 * MS), (2_500, 26_250));
    // A request done before its pace shows gives the pace it ran at (12.5
    // kB in 10 ms, 1.25 MB/s): the rest is under the horizon.
    let mut t = table(100_000, 2, 100, t0);
    t.begin_request(0, true, t0);
    t.answered(0, t0);
    deliver(&mut t, 0, 12_500, t0 + 10 * MS);
    assert_eq!(t.begin_request(0, true, t0 + 10 * MS), (12_500, 50_000));
    // One that broke off before its pace showed says nothing: the next
    // asks for half, not a quarter.
    let mut t = table(100_000, 2, 100, t0);
    t.begin_request(0, true, t0);
    t.answered(0, t0);
    deliver(&mut t, 0, 5_000, t0 + 10 * MS);
    assert_eq!(t.begin_request(0, true, t0 + 10 * MS), (5_000, 27_500));
    // A server that would not stop at the end asked (FTP) is asked for
    // the whole span.
    let mut t = table(100_000, 2, 100, t0);
    assert_eq!(t.begin_request(0, false, t0), (0, 50_000));
    // Unknown sizes and one stream ask for everything too.
    let mut t = PartTable::<Cell<bool>>::new(None, &[[0, 0, u64::MAX]], rules(100), false, t0);
    assert_eq!(t.begin_request(0, true, t0), (0, u64::MAX));
    let mut t =
        PartTable::<Cell<bool>>::new(Some(100_000), &[[0, 0, 100_000]], rules(100), true, t0);
    assert_eq!(t.begin_request(0, true, t0), (0, 100_000));
}

#[test]
fn a_split_never_cuts_a_request_that_its_server_would_send_past_the_cut() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 1, 1000, t0);
    assert_eq!(t.begin_request(0, true, t0), (0, 250_000));
    t.asked_up_to(0, 500_000);
    t.answered(0, t0);
    deliver(&mut t, 0, 100_000, t0 + 500 * MS);
    // The cut is in the middle of the rest, past the end of the request
    // under way, which stops there: the next asks up to the cut.
    let given = t.next_for_idle(t0 + 500 * MS);
    assert_eq!(
        given,
        Some(Given::Split {
            span: 1,
            at: 550_000
        })
    );
    deliver(&mut t, 0, 400_000, t0 + 2500 * MS);
    assert!(t.ended_where_asked(0));
    assert_eq!(t.begin_request(0, true, t0 + 2500 * MS), (500_000, 550_000));
    // A last request (all of a short rest) is cut only when its part is
    // far from done at its pace: a part with 1.5 s left is not.
    let mut t = table(1_000_000, 1, 1000, t0);
    t.asked_up_to(0, 1_000_000);
    deliver(&mut t, 0, 400_000, t0 + SPLIT_HORIZON);
    assert_eq!(t.next_for_idle(t0 + SPLIT_HORIZON), None);
    // With 2.5 s left, it is, in the middle.
    let mut t = table(1_000_000, 1, 1000, t0);
    t.asked_up_to(0, 1_000_000);
    deliver(&mut t, 0, 285_000, t0 + SPLIT_HORIZON);
    let given = t.next_for_idle(t0 + SPLIT_HORIZON);
    assert_eq!(
        given,
        Some(Given::Split {
            span: 1,
            at: 642_500
        })
    );
}

#[test]
fn near_the_end_requests_last_no_longer_than_the_file_has_left() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 2, 1000, t0);
    for id in 0..2 {
        t.asked_up_to(id, t.end(id));
        t.answered(id, t0);
    }
    // Span 0 ended its first request at 300 kB/s; span 1 is nearly
    // done. 210 kB left for two spans at 300 kB/s: 0.35 s, under the
    // horizon (at which span 0 would ask for all its 200 kB), so it asks
    // for half.
    t.asked_up_to(0, 300_000);
    deliver(&mut t, 0, 300_000, t0 + 1000 * MS);
    deliver(&mut t, 1, 490_000, t0 + 1000 * MS);
    assert_eq!(t.begin_request(0, true, t0 + 1000 * MS), (300_000, 400_000));
    t.answered(0, t0 + 1000 * MS);
    // Span 1 done: its idle connection takes half of span 0's rest,
    // including the part its request does not reach, though span 0 would
    // be done within the horizon at its pace.
    deliver(&mut t, 1, 10_000, t0 + 1000 * MS);
    deliver(&mut t, 0, 90_000, t0 + 1300 * MS);
    assert_eq!(
        t.next_for_idle(t0 + 1300 * MS),
        Some(Given::Split {
            span: 2,
            at: 445_000
        })
    );
}

#[test]
fn near_the_end_a_long_rest_is_asked_for_in_requests_no_longer_than_the_time_left() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 4, 1000, t0);
    for id in 0..4 {
        t.asked_up_to(id, t.end(id));
        t.answered(id, t0);
    }
    // Span 0 ended a first request of 100 kB at 100 kB/s; the other three
    // are 10 kB from done. 180 kB left for four spans at 100 kB/s: 0.45
    // s. Half of span 0's 150 kB would take 0.75 s, and no idle
    // connection could take any of it without a cut inside the request:
    // it asks for 0.45 s of bytes, and leaves the rest to them.
    t.asked_up_to(0, 100_000);
    deliver(&mut t, 0, 100_000, t0 + 1000 * MS);
    for id in 1..4 {
        deliver(&mut t, id, 240_000, t0 + 1000 * MS);
    }
    assert_eq!(t.begin_request(0, true, t0 + 1000 * MS), (100_000, 145_000));
}

#[test]
fn a_rest_no_request_reaches_is_taken_at_once_once_the_file_has_a_pace() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 2, 1000, t0);
    for id in 0..2 {
        t.asked_up_to(id, t.end(id));
        t.answered(id, t0);
    }
    t.asked_up_to(0, 300_000);
    deliver(&mut t, 0, 300_000, t0 + 1000 * MS);
    deliver(&mut t, 1, 490_000, t0 + 1000 * MS);
    assert_eq!(t.begin_request(0, true, t0 + 1000 * MS), (300_000, 400_000));
    t.waiting(0);
    // Span 1 is done 10 ms later. Span 0's new request has shown no pace
    // yet, but the file has one: the rest that request does not reach
    // costs no byte to take, and waiting for the request's pace would
    // leave the idle connection idle for a quarter of a second.
    deliver(&mut t, 1, 10_000, t0 + 1010 * MS);
    assert_eq!(
        t.next_for_idle(t0 + 1010 * MS),
        Some(Given::Split {
            span: 2,
            at: 400_000
        })
    );
}

#[test]
fn a_span_still_asking_for_its_bytes_is_split_after_the_horizon() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 1, 1000, t0);
    t.begin_request(0, true, t0);
    t.waiting(0);
    assert_eq!(t.next_for_idle(t0 + SPLIT_HORIZON - MS), None);
    assert!(t.next_for_idle(t0 + SPLIT_HORIZON).is_some());
}

#[test]
fn a_span_answered_late_is_judged_by_its_pace_since_the_answer() {
    let t0 = Instant::now();
    let mut t = table(4_000_000, 4, 1000, t0);
    // The last part's request waits 300 ms for its answer, then its bytes
    // come fast: a few ms after the answer it has little, and nothing says
    // yet that it is slow.
    t.begin_request(3, true, t0);
    t.waiting(3);
    let answered = t0 + 300 * MS;
    t.answered(3, answered);
    deliver(&mut t, 3, 100_000, answered + 8 * MS);
    for done in 0..3 {
        let left = t.end(done) - t.pos(done);
        deliver(&mut t, done, left as usize, answered);
    }
    assert_eq!(t.next_for_idle(answered + 8 * MS), None);
    // Its pace is seen once it has run that long since the answer.
    deliver(&mut t, 3, 1000, answered + PACE_SEEN_AFTER);
    assert!(t.next_for_idle(answered + PACE_SEEN_AFTER).is_some());
}

/// A protocol whose server never stops at a range's end (FTP) is told
/// where its running part now ends: a cut or a takeover lowers it at once,
/// also while the request waits for its first byte (a slow login), and
/// each request has its own.
#[test]
fn the_part_end_a_request_was_given_follows_every_cut() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 1, 1000, t0);
    assert_eq!(t.begin_request(0, false, t0), (0, 1_000_000));
    let told = t.part_end(0);
    assert_eq!(told.get(), 1_000_000);
    // Still logging in: cut in the middle, and told so before any byte.
    t.waiting(0);
    let given = t.next_for_idle(t0 + SPLIT_HORIZON);
    assert_eq!(
        given,
        Some(Given::Split {
            span: 1,
            at: 500_000
        })
    );
    assert_eq!(told.get(), 500_000);
    // The thief's request is told its own end; the first is unchanged.
    t.begin_request(1, false, t0 + SPLIT_HORIZON);
    let thief = t.part_end(1);
    assert_eq!((told.get(), thief.get()), (500_000, 1_000_000));
    // The first comes fast once logged in; the thief's slowly: it is cut.
    let t1 = t0 + SPLIT_HORIZON;
    t.answered(0, t1);
    deliver(&mut t, 0, 400_000, t1 + PACE_SEEN_AFTER);
    t.answered(1, t1);
    deliver(&mut t, 1, 10_000, t1 + PACE_SEEN_AFTER);
    let given = t.next_for_idle(t1 + PACE_SEEN_AFTER);
    assert_eq!(
        given,
        Some(Given::Split {
            span: 2,
            at: 755_000
        })
    );
    assert_eq!(thief.get(), 755_000);
    // The first stalls, and is taken over where it stopped.
    deliver(&mut t, 1, 245_000, t1 + TAKEOVER);
    deliver(&mut t, 2, 245_000, t1 + TAKEOVER);
    let given = t.next_for_idle(t1 + PACE_SEEN_AFTER + TAKEOVER);
    assert_eq!(
        given,
        Some(Given::TakeOver {
            span: 3,
            stalled: 0
        })
    );
    assert_eq!(told.get(), 400_000);
    // A later request of a span gets a new end; the old one keeps its own.
    t.begin_request(2, false, t1 + TAKEOVER);
    assert_eq!(t.part_end(2).get(), 1_000_000);
    assert_ne!(t.part_end(2), t.part_end(1));
    // A protocol that stops at the range's end is told the request's end.
    let mut t = table(1_000_000, 1, 1000, t0);
    assert_eq!(t.begin_request(0, true, t0), (0, 250_000));
    assert_eq!(t.part_end(0).get(), 250_000);
}

/// A part held back by the bandwidth cap is cut inside its request only
/// when its pace says it is far from done, as one that is not held back:
/// otherwise connections joining at once would each cut it again, nearer
/// and nearer to where its bytes have got.
#[test]
fn a_part_held_back_by_the_cap_is_cut_only_when_far_from_done() {
    let t0 = Instant::now();
    let mut t = table(1_000_000, 1, 1000, t0);
    t.begin_request(0, false, t0);
    t.answered(0, t0);
    deliver(&mut t, 0, 400_000, t0 + SPLIT_HORIZON);
    t.waiting(0);
    // 1.5 s left at its pace.
    assert_eq!(t.next_for_idle(t0 + SPLIT_HORIZON), None);
    // Still waiting for its first byte, it is cut.
    let mut t = table(1_000_000, 1, 1000, t0);
    t.begin_request(0, false, t0);
    t.waiting(0);
    let given = t.next_for_idle(t0 + SPLIT_HORIZON);
    assert_eq!(
        given,
        Some(Given::Split {
            span: 1,
            at: 500_000
        })
    );
}

#[test]
fn spans_too_small_to_halve_are_not_split() {
    let t0 = Instant::now();
    let mut t = table(1000, 1, 600, t0);
    assert_eq!(t.next_for_idle(t0 + Duration::from_secs(1)), None);
}

#[test]
fn a_stalled_span_is_taken_over_from_where_it_stopped() {
    let t0 = Instant::now();
    // Nothing worth splitting (the minimum is the whole file).
    let mut t = table(1000, 1, 1000, t0);
    deliver(&mut t, 0, 300, t0 + MS);
    assert_eq!(t.next_for_idle(t0 + MS + TAKEOVER - MS), None);
    let given = t.next_for_idle(t0 + MS + TAKEOVER);
    assert_eq!(
        given,
        Some(Given::TakeOver {
            span: 1,
            stalled: 0
        })
    );
    assert_eq!((t.pos(0), t.end(0)), (300, 300));
    assert_eq!((t.pos(1), t.end(1)), (300, 1000));
    assert_eq!(t.received(), 300);
}

/// Two spans too small to split whose requests are answered, carried by
/// one shared connection (`shared`), or each by its own (`None`).
fn two_answered(t0: Instant, shared: Option<&ConnActivity>) -> PartTable<Cell<bool>> {
    let mut t = table(1000, 2, 500, t0);
    for id in [0, 1] {
        t.answered(id, t0);
        t.carried_by(id, shared.map(Carrier::new));
    }
    t
}

/// Span 0 gets 10 bytes every 100 ms for 4 s, each also marking
/// `link`; returns when the last came.
fn span_0_flows(
    t: &mut PartTable<Cell<bool>>,
    t0: Instant,
    link: Option<&ConnActivity>,
) -> Instant {
    let mut now = t0;
    for _ in 0..40 {
        now += 100 * MS;
        deliver(t, 0, 10, now);
        if let Some(link) = link {
            link.received_at(now);
        }
    }
    assert!(now >= t0 + TAKEOVER);
    now
}

#[test]
fn a_span_queued_on_a_shared_connection_is_not_stalled_while_it_delivers() {
    let t0 = Instant::now();
    // SFTP reads on one connection are answered in order: span 1's bytes
    // wait behind span 0's, whether it got some of its request already
    // or none yet.
    for got_some in [false, true] {
        let link = ConnActivity::new();
        let mut t = two_answered(t0, Some(&link));
        if got_some {
            deliver(&mut t, 1, 10, t0 + MS);
            link.received_at(t0 + MS);
        }
        let now = span_0_flows(&mut t, t0, Some(&link));
        assert_eq!(t.next_for_idle(now), None, "span 1 is queued, not stalled");
        // When the connection brings nothing any more, both have stalled.
        assert_eq!(t.next_for_idle(now + TAKEOVER - MS), None);
        assert_eq!(
            t.next_for_idle(now + TAKEOVER),
            Some(Given::TakeOver {
                span: 2,
                stalled: 0
            })
        );
        assert_eq!(
            t.next_for_idle(now + TAKEOVER),
            Some(Given::TakeOver {
                span: 3,
                stalled: 1
            })
        );
    }
}

#[test]
fn a_dead_connection_of_its_own_is_taken_over_while_other_parts_flow() {
    let t0 = Instant::now();
    // Each span on a connection of its own (HTTP/1.1, FTP): span 1's
    // server answered, then sent nothing, while span 0's bytes flow.
    let mut t = two_answered(t0, None);
    let now = span_0_flows(&mut t, t0, None);
    assert_eq!(
        t.next_for_idle(now),
        Some(Given::TakeOver {
            span: 2,
            stalled: 1
        })
    );
    // Another connection of the file flowing is no connection of span 1.
    let (busy, idle) = (ConnActivity::new(), ConnActivity::new());
    let mut t = two_answered(t0, None);
    t.carried_by(0, Some(Carrier::new(&busy)));
    t.carried_by(1, Some(Carrier::new(&idle)));
    let now = span_0_flows(&mut t, t0, Some(&busy));
    assert_eq!(t.next_for_idle(now).map(|g| g.span()), Some(2));
}

#[test]
fn a_span_follows_its_fetch_to_another_connection() {
    let t0 = Instant::now();
    let (old, new) = (ConnActivity::new(), ConnActivity::new());
    let mut t = two_answered(t0, Some(&old));
    let carrier = Carrier::new(&old);
    t.carried_by(1, Some(carrier.clone()));
    deliver(&mut t, 1, 10, t0 + MS);
    // Span 1's reads moved to a connection that then went silent: the one
    // it left still delivering to span 0 keeps it queued no longer.
    carrier.moved_to(&new);
    new.received_at(t0 + MS);
    let now = span_0_flows(&mut t, t0, Some(&old));
    assert_eq!(t.next_for_idle(now).map(|g| g.span()), Some(2));
    assert_eq!((t.pos(2), t.end(2)), (510, 1000));
    // A new request of a span drops its old carrier: its answer brings the
    // next.
    let mut t = two_answered(t0, Some(&old));
    t.begin_request(1, true, t0);
    t.answered(1, t0);
    let now = span_0_flows(&mut t, t0, Some(&old));
    assert_eq!(t.next_for_idle(now).map(|g| g.span()), Some(2));
}

#[test]
fn a_span_is_stalled_by_its_own_pace_not_a_fixed_silence() {
    let t0 = Instant::now();
    let mut t = table(1000, 1, 1000, t0);
    t.answered(0, t0);
    // Bytes come in bursts, two seconds apart (a link shared with other
    // transfers): a silence a little longer than the takeover delay is
    // its pace, not a stall.
    let mut now = t0;
    for _ in 0..3 {
        now += 2000 * MS;
        deliver(&mut t, 0, 10, now);
    }
    let after = STALL_GAPS * 2000 * MS;
    assert!(after > TAKEOVER);
    assert_eq!(t.next_for_idle(now + TAKEOVER), None);
    assert_eq!(t.next_for_idle(now + after - MS), None);
    assert!(t.next_for_idle(now + after).is_some());
    // A retry starts the pace again.
    let mut t = table(1000, 1, 1000, t0);
    deliver(&mut t, 0, 10, t0 + 2000 * MS);
    deliver(&mut t, 0, 10, t0 + 4000 * MS);
    t.begin_request(0, true, t0 + 4000 * MS);
    t.answered(0, t0 + 4000 * MS);
    deliver(&mut t, 0, 10, t0 + 4001 * MS);
    assert!(t.next_for_idle(t0 + 4001 * MS + TAKEOVER).is_some());
}

#[test]
fn a_span_waiting_on_something_else_never_stalls() {
    let t0 = Instant::now();
    let mut t = table(1000, 1, 1000, t0);
    t.waiting(0);
    assert_eq!(t.next_for_idle(t0 + 10 * TAKEOVER), None);
    // The clock starts again when the wait ends.
    t.done_waiting(0, t0 + 10 * TAKEOVER);
    assert_eq!(t.next_for_idle(t0 + 11 * TAKEOVER - MS), None);
    assert!(t.next_for_idle(t0 + 11 * TAKEOVER).is_some());
}

#[test]
fn one_range_is_taken_over_a_bounded_number_of_times() {
    let t0 = Instant::now();
    let mut t = table(1000, 1, 1000, t0);
    let mut now = t0;
    let mut span = 0;
    for _ in 0..3 {
        now += TAKEOVER;
        span = t.next_for_idle(now).expect("a takeover").span();
    }
    now += TAKEOVER;
    assert_eq!(t.next_for_idle(now), None);
    assert_eq!((t.pos(span), t.end(span)), (0, 1000));
}

#[test]
fn a_span_left_by_its_worker_goes_whole_to_the_next_idle_one() {
    let t0 = Instant::now();
    let mut t = table(1000, 2, 100, t0);
    t.leave(1);
    assert!(t.others_running());
    assert_eq!(t.next_for_idle(t0), Some(Given::Orphan(1)));
    assert_eq!(t.take_orphan(t0), None);
    t.leave(1);
    assert_eq!(t.take_orphan(t0), Some(1));
}

#[test]
fn a_full_span_carries_on_into_an_untouched_span_without_a_worker() {
    let t0 = Instant::now();
    let mut t = table(1000, 2, 100, t0);
    let r = deliver(&mut t, 0, 600, t0);
    assert_eq!((r.take, r.full, r.past_file_end), (500, true, false));
    // The next span has a worker: no.
    assert!(!t.absorb_next(0));
    t.leave(1);
    assert!(t.absorb_next(0));
    assert_eq!(t.end(0), 1000);
    assert_eq!(t.take_orphan(t0), None);
    let r = deliver(&mut t, 0, 600, t0);
    assert_eq!((r.take, r.full, r.past_file_end), (500, true, true));
    assert_eq!(t.received(), 1000);
}

#[test]
fn a_retry_asks_again_from_the_first_byte_not_on_disk() {
    let t0 = Instant::now();
    let mut t = table(1000, 1, 1000, t0);
    t.record(0, 100, t0);
    t.written(0, 60);
    assert_eq!(t.resume_state(), vec![[0, 60, 1000]]);
    assert_eq!(t.begin_request(0, true, t0), (60, 1000));
    assert_eq!(t.received(), 60);
}

#[test]
fn only_a_lone_span_starts_over_from_zero() {
    let t0 = Instant::now();
    let mut t = table(1000, 2, 100, t0);
    assert!(!t.rewind(1));
    assert!(!t.rewound());
    assert!(t.fall_back_to_one_stream());
    assert!(!t.fall_back_to_one_stream());
    let span = t.restart_as_one_stream(t0);
    assert!(t.rewound() && t.one_stream());
    assert_eq!(t.resume_state(), vec![[0, 0, 1000]]);
    deliver(&mut t, span, 10, t0);
    assert!(t.rewind(span));
    assert_eq!(t.received(), 0);
    // One stream is never split, however slow.
    assert_eq!(t.next_for_idle(t0 + Duration::from_secs(60)), None);
}

#[test]
fn a_file_of_unknown_size_is_one_open_span() {
    let t0 = Instant::now();
    let plan = [[0, 0, u64::MAX]];
    let mut t: PartTable<()> = PartTable::new(None, &plan, rules(1), false, t0);
    let r = deliver(&mut t, 0, 1 << 20, t0);
    assert_eq!((r.take, r.full, r.past_file_end), (1 << 20, false, false));
    assert!(!t.others_running());
    assert_eq!(t.next_for_idle(t0 + Duration::from_secs(60)), None);
}

/// One connection of the file in the model below.
#[derive(Debug, Default)]
struct Conn {
    /// The span it fills; `None` when idle.
    span: Option<SpanId>,
    /// Bytes received and not yet written.
    gathered: u64,
}

#[derive(Debug, Clone)]
enum Event {
    /// Bytes arrive on a connection; a share of what it gathered is
    /// written.
    Deliver {
        conn: usize,
        len: usize,
        write_pct: u8,
    },
    /// Time passes (long enough, a connection that got nothing stalled).
    Tick { ms: u64 },
    /// A connection breaks; with `lost`, a write failed and what it
    /// gathered is gone; it asks again for the rest.
    Fail { conn: usize, lost: bool },
    /// The server refuses a connection: it leaves its span.
    Busy { conn: usize },
    /// A connection is held back (bandwidth cap) or is done being.
    Wait { conn: usize, on: bool },
    /// A connection frees up (a file of the batch finished) and looks for
    /// work.
    Free,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0..8usize, 1..700usize, 0..=100u8)
            .prop_map(|(conn, len, write_pct)| Event::Deliver { conn, len, write_pct }),
        2 => (0..4000u64).prop_map(|ms| Event::Tick { ms }),
        1 => (0..8usize, any::<bool>()).prop_map(|(conn, lost)| Event::Fail { conn, lost }),
        1 => (0..8usize).prop_map(|conn| Event::Busy { conn }),
        1 => (0..8usize, any::<bool>()).prop_map(|(conn, on)| Event::Wait { conn, on }),
        2 => Just(Event::Free),
    ]
}

/// A file's connections driving its table, checking at every step what
/// the table promises.
struct Model {
    t: PartTable<Cell<bool>>,
    size: u64,
    now: Instant,
    conns: Vec<Conn>,
    /// How many times each byte of the file was written.
    on_disk: Vec<u8>,
    /// When each span last got a byte or an answer, and whether it waits:
    /// what a takeover may be judged by.
    progressed: Vec<Instant>,
    waiting: Vec<bool>,
}

impl Model {
    fn new(size: u64, parts: usize, min_split: u64) -> Self {
        let now = Instant::now();
        let t = table(size, parts, min_split, now);
        let n = t.resume_state().len();
        Model {
            t,
            size,
            now,
            conns: (0..n)
                .map(|span| Conn {
                    span: Some(span),
                    gathered: 0,
                })
                .collect(),
            on_disk: vec![0; size as usize],
            progressed: vec![now; n],
            waiting: vec![false; n],
        }
    }

    /// Writes `n` gathered bytes of a connection: each byte of the file is
    /// written once, ever.
    fn write(&mut self, conn: usize, n: u64) {
        let span = self.conns[conn].span.unwrap();
        let at = self.t.resume_state()[span][1];
        for b in &mut self.on_disk[at as usize..(at + n) as usize] {
            assert_eq!(*b, 0, "byte {at}.. written twice");
            *b += 1;
        }
        self.t.written(span, n);
        self.conns[conn].gathered -= n;
    }

    /// The connection is done with its span: what it gathered is written.
    fn release(&mut self, conn: usize) {
        let gathered = self.conns[conn].gathered;
        self.write(conn, gathered);
        self.conns[conn].span = None;
    }

    /// A connection with a span, whose worker was not told to stop.
    fn live(&self, conn: usize) -> Option<SpanId> {
        let span = self.conns.get(conn)?.span?;
        (!self.t.stop(span).get()).then_some(span)
    }

    fn apply(&mut self, e: &Event) {
        match *e {
            Event::Deliver {
                conn,
                len,
                write_pct,
            } => {
                let Some(span) = self.live(conn) else { return };
                let r = self.t.record(span, len, self.now);
                self.progressed[span] = self.now;
                self.conns[conn].gathered += r.take as u64;
                let gathered = self.conns[conn].gathered;
                self.write(conn, gathered * u64::from(write_pct) / 100);
                if r.full {
                    let gathered = self.conns[conn].gathered;
                    self.write(conn, gathered);
                    if r.past_file_end || !self.t.absorb_next(span) {
                        self.release(conn);
                    }
                }
            }
            Event::Tick { ms } => self.now += Duration::from_millis(ms),
            Event::Fail { conn, lost } => {
                let Some(span) = self.live(conn) else { return };
                if lost {
                    self.conns[conn].gathered = 0;
                } else {
                    let gathered = self.conns[conn].gathered;
                    self.write(conn, gathered);
                }
                let (pos, end) = self.t.begin_request(span, true, self.now);
                assert_eq!(pos, self.t.resume_state()[span][1]);
                self.t.answered(span, self.now);
                self.progressed[span] = self.now;
                self.waiting[span] = false;
                if pos >= end {
                    self.conns[conn].span = None;
                }
            }
            Event::Busy { conn } => {
                let Some(span) = self.live(conn) else { return };
                self.release(conn);
                self.t.leave(span);
                self.conns.remove(conn);
            }
            Event::Wait { conn, on } => {
                let Some(span) = self.live(conn) else { return };
                if on {
                    self.t.waiting(span);
                } else {
                    self.t.done_waiting(span, self.now);
                    self.progressed[span] = self.now;
                }
                self.waiting[span] = on;
            }
            Event::Free => self.idle_look(),
        }
        // A connection whose span was taken over stops, keeping what it
        // received.
        for conn in 0..self.conns.len() {
            if let Some(span) = self.conns[conn].span
                && self.t.stop(span).get()
            {
                self.release(conn);
            }
        }
        self.check();
    }

    /// Idle connections (a new one first) look for work, as workers do.
    fn idle_look(&mut self) {
        if self.conns.len() < 8 {
            self.conns.push(Conn::default());
        }
        for conn in 0..self.conns.len() {
            if self.conns[conn].span.is_some() {
                continue;
            }
            let Some(given) = self.t.next_for_idle(self.now) else {
                break;
            };
            if let Given::TakeOver { stalled, .. } = given {
                // Only a span whose server owes bytes and sent none for
                // the takeover time is taken from its connection.
                assert!(!self.waiting[stalled], "took over a waiting span");
                assert!(self.now.duration_since(self.progressed[stalled]) >= TAKEOVER);
                self.t.stop(stalled).set(true);
            }
            let span = given.span();
            let spans = self.t.resume_state().len();
            self.progressed.resize(spans, self.now);
            self.waiting.resize(spans, false);
            self.progressed[span] = self.now;
            self.waiting[span] = false;
            self.conns[conn].span = Some(span);
        }
    }

    fn check(&self) {
        let state = self.t.resume_state();
        // Every byte of the file lies in exactly one span.
        let mut tiles: Vec<_> = state.iter().filter(|s| s[2] > s[0]).collect();
        tiles.sort();
        let mut next = 0;
        for [start, on_disk, end] in tiles {
            assert_eq!(*start, next, "spans {state:?} do not tile");
            assert!(start <= on_disk && on_disk <= end);
            next = *end;
        }
        assert_eq!(next, self.size, "spans {state:?} do not cover the file");
        // No byte is asked of two connections that are still receiving.
        let mut owed: Vec<(u64, u64)> = (0..self.conns.len())
            .filter_map(|c| self.live(c))
            .map(|span| (self.t.pos(span), self.t.end(span)))
            .filter(|(pos, end)| pos < end)
            .collect();
        owed.sort();
        assert!(owed.windows(2).all(|w| w[0].1 <= w[1].0), "{owed:?}");
        let received: u64 = (0..state.len())
            .map(|s| self.t.pos(s).min(self.t.end(s)) - state[s][0])
            .sum();
        assert_eq!(self.t.received(), received);
    }

    /// Connections keep delivering: the file completes, every byte written
    /// once.
    fn finish(&mut self) {
        for round in 0.. {
            assert!(
                round < 10_000,
                "never finished: {:?}",
                self.t.resume_state()
            );
            self.now += 50 * MS;
            let busy: Vec<usize> = (0..self.conns.len())
                .filter(|&c| self.live(c).is_some())
                .collect();
            for &conn in &busy {
                self.apply(&Event::Deliver {
                    conn,
                    len: 97,
                    write_pct: 100,
                });
            }
            if busy.is_empty() {
                // The file's own loop gives a span left without a worker
                // a connection of its own.
                match self.t.take_orphan(self.now) {
                    Some(span) => self.conns.push(Conn {
                        span: Some(span),
                        gathered: 0,
                    }),
                    None => break,
                }
            }
        }
        assert!(self.on_disk.iter().all(|&b| b == 1), "bytes missing");
        assert_eq!(self.t.received(), self.size);
        assert!(!self.t.others_running());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn a_plan_tiles_the_file_and_its_first_part_holds_the_first_answer(
        size in 0..5000u64,
        parts in 0..8usize,
        min_split in 0..800u64,
        first_end in 0..6000u64,
    ) {
        let plan = plan_parts(Some(size), true, parts, min_split, first_end);
        let even = plan_parts(Some(size), true, parts, min_split, 0);
        prop_assert_eq!(plan[0].0, 0);
        prop_assert_eq!(plan.last().unwrap().1, size);
        prop_assert!(plan.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
        prop_assert!(plan[0].1 >= first_end.min(size));
        prop_assert!(plan.len() <= even.len());
        if even[0].1 >= first_end {
            prop_assert_eq!(plan, even);
        }
    }

    #[test]
    fn the_table_tiles_the_file_and_a_file_always_finishes(
        size in 1..5000u64,
        parts in 1..6usize,
        min_split in 1..800u64,
        events in proptest::collection::vec(event(), 0..120),
    ) {
        let mut model = Model::new(size, parts, min_split);
        model.check();
        for e in &events {
            model.apply(e);
        }
        model.finish();
    }
}

#[test]
fn a_part_its_protocol_cuts_cheaply_is_split_when_the_half_comes_sooner() {
    // The last part of a capped link: 4.9 MB left at 9.3 MB/s, its
    // request asking to its end, answers in 80 ms. Its half arrives
    // sooner on an idle connection (80 ms, then half the time) than the
    // part would get there, and the cut costs no byte a server streams.
    let t0 = Instant::now();
    let at = t0 + 500 * MS;
    let cheap = |cheap: bool, answer: Option<Duration>| {
        let mut t = table(10_000_000, 1, 1 << 20, t0);
        assert_eq!(t.begin_request(0, false, t0), (0, 10_000_000));
        t.answered(0, t0);
        t.cut_cheaply(0, cheap, answer);
        deliver(&mut t, 0, 5_100_000, t0 + 250 * MS);
        deliver(&mut t, 0, 0, at);
        t
    };
    let mut t = cheap(true, Some(80 * MS));
    assert_eq!(
        t.next_for_idle(at),
        Some(Given::Split {
            span: 1,
            at: 7_550_000
        })
    );
    assert_eq!(t.end(0), 7_550_000);
    // A protocol whose server streams to the request's end is not cut:
    // the part is on course to finish within the horizon.
    assert_eq!(cheap(false, Some(80 * MS)).next_for_idle(at), None);
    // Nor where an answer takes longer than a third of the time left.
    assert_eq!(cheap(true, Some(200 * MS)).next_for_idle(at), None);
    // Nor before any answer was measured.
    assert_eq!(cheap(true, None).next_for_idle(at), None);
    // The quickest answer counts.
    let mut t = cheap(true, Some(400 * MS));
    t.cut_cheaply(0, true, Some(80 * MS));
    t.cut_cheaply(0, true, Some(300 * MS));
    assert!(t.next_for_idle(at).is_some());
}
