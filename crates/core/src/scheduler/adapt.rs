//! How many transfers a batch runs at once when the user did not say:
//! grown while the batch's aggregate rate grows with them, stopped where
//! one more no longer pays. A pure rule, with times and byte counts as
//! arguments, so that its tests need no network (as `PartTable`'s).
//!
//! The numbers that are fastest depend on the link, not on the file: where
//! each connection is capped (a CDN, a server's per-connection limit) or a
//! round trip bounds what one connection moves, every added connection adds
//! its share; where the CPU is the bound (loopback, a fast LAN) an added
//! one only adds work. Which holds is measured: while every allowed
//! transfer runs and more work waits, the batch allows half as many more
//! (a probe) and compares the aggregate rate of a window after it with that
//! of a window before. The probe pays when each added transfer brought at
//! least a third of its share (and the whole at least [`GAIN`]): then the
//! next probe goes, doubling at once when the gain was in proportion (a cap
//! per connection). Anything less takes the probe back and stops growth
//! for the batch. A probe of half the transfers, not one, so that what it
//! brings on a capped link stands well above the noise of a busy machine.
//! On a long link (the batch's quickest answer to a request, from asking
//! to the first byte, took [`LONG_ANSWER`] or more) the windows last a few
//! such answers, between a floor that the noise of a busy machine asks for
//! and the full figures, and the first probe goes to the ceiling at once,
//! as soon as the transfers have settled, its rate before measured while
//! its transfers connect ([`BEFORE_ANSWERS`]): there a moment at too few
//! connections costs the most (each step takes a connection's opening, a
//! settling and a window, a second of a transfer that may last a few),
//! and each one's rate is steady. Such a
//! probe that gains, but less than its share, keeps the transfers its gain
//! paid for (the transfers before it, times the gain): it skipped the steps
//! that would have found where the link stops adding, and where a bound
//! across connections binds (a total cap, the CPU), the rate grows in
//! proportion up to it. A short link (loopback, a LAN), where the CPU is
//! the usual bound and a busy machine's rates swing, keeps the full
//! windows and the half probe.
//! This is the rule `pymatris-proto-sftp` applies to its SSH connections,
//! applied here to the transfers of every protocol.

use std::time::{Duration, Instant};

/// The aggregate rate after a probe, over the rate before it, that makes
/// the probe worth its transfers at least.
pub(super) const GAIN: f64 = 1.1;

/// The share of its part of the rate each transfer of a probe must bring.
const SHARE: f64 = 1.0 / 3.0;

/// How long a rate is measured, before and after a probe: long enough for
/// several round trips of a long link, short enough that a large file
/// still has most of its bytes to gain from the result.
pub(super) const WINDOW: Duration = Duration::from_millis(600);

/// After the probe's transfers all run, they take a few round trips to
/// reach their pace (connecting, TLS, the first request): the window after
/// starts later.
pub(super) const SETTLE: Duration = Duration::from_millis(250);

/// The shortest [`WINDOW`] and [`SETTLE`] however quick the answers: a
/// window of a few scheduler slices on a busy machine measures the
/// machine, not the link.
const MIN_WINDOW: Duration = Duration::from_millis(250);
const MIN_SETTLE: Duration = Duration::from_millis(100);

/// A window and a settling time of this many quickest answers: each
/// answer is one to three round trips (a connection, TLS, the request),
/// and a rate over several round trips is the link's steady one.
const WINDOW_ANSWERS: u32 = 4;
const SETTLE_ANSWERS: u32 = 2;

/// On a long link the rate before the first probe is measured over this
/// many quickest answers after the probe is raised: its transfers are
/// connecting and asking all that time (an answer is a connection and a
/// request), so what arrives is the old transfers' alone. Measured before
/// the raise, over a settling and a window of their own, it held a
/// capped link at too few connections for most of a second (1.25 s of a
/// 3 s file 50 ms away).
const BEFORE_ANSWERS: u32 = 1;

/// An answer at least this slow is a long link (not loopback, not a LAN),
/// where connections are often each bounded (a cap per connection, a TCP
/// window over the round trip): its windows follow its answers, and its
/// first probe goes to the ceiling rather than adding half.
const LONG_ANSWER: Duration = Duration::from_millis(10);

/// How long a window settles and lasts on a link whose quickest answer to
/// a request took `answer` (none seen yet, or a short link: the full
/// figures).
fn pace(answer: Option<Duration>) -> (Duration, Duration) {
    match answer {
        Some(a) if a >= LONG_ANSWER => (
            (a * SETTLE_ANSWERS).clamp(MIN_SETTLE, SETTLE),
            (a * WINDOW_ANSWERS).clamp(MIN_WINDOW, WINDOW),
        ),
        _ => (SETTLE, WINDOW),
    }
}

/// How the batch's transfers stand at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Load {
    /// Transfers running.
    pub(super) running: usize,
    /// Transfers that would run if allowed: those running, plus one per
    /// file waiting for a slot, plus what running files could still split.
    pub(super) wanting: usize,
    /// The quickest answer to a request seen in the batch (from asking to
    /// the first byte), which sets how long a window lasts.
    pub(super) answer: Option<Duration>,
}

/// How long fewer transfers than allowed may run before a window starts
/// again. Many small files leave a slot empty for a moment between two
/// (the next request is taken, opened, answered): a tick that falls there
/// says nothing of the work waiting, two in a row do.
pub(super) const BLIP: Duration = Duration::from_millis(100);

/// A rate measured over a window (see [`pace`]), once the transfers counted
/// have settled (connections opened and requests answered), with every
/// allowed transfer running all the while, but for blips.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Window {
    /// Since when every allowed transfer runs.
    full: Option<Instant>,
    /// Where the window starts: the time and the bytes received then.
    from: Option<(Instant, u64)>,
    /// Since when fewer run, if they do.
    short: Option<Instant>,
}

impl Window {
    /// The rate once the window is complete; `busy` says whether every
    /// allowed transfer runs now (if not for longer than a [`BLIP`], the
    /// window starts again).
    fn measure(
        &mut self,
        now: Instant,
        received: u64,
        busy: bool,
        (settle, window): (Duration, Duration),
    ) -> Option<f64> {
        if !busy {
            let short = *self.short.get_or_insert(now);
            if self.full.is_none() || now.duration_since(short) >= BLIP {
                *self = Window::default();
            }
            return None;
        }
        self.short = None;
        let full = *self.full.get_or_insert(now);
        if now.duration_since(full) < settle {
            return None;
        }
        let (t0, b0) = *self.from.get_or_insert((now, received));
        let dt = now.duration_since(t0);
        (dt >= window).then(|| rate(received - b0, dt))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waiting for a window in which every allowed transfer ran with more
    /// work waiting.
    Measuring(Window),
    /// `budget` was raised from `had`; `before` is the rate with `had`
    /// (bytes per second). `whole`: the first probe of a long link, to the
    /// ceiling at once.
    Probing {
        before: f64,
        had: usize,
        whole: bool,
        window: Window,
        /// While `before` is measured after the raise (a long link's
        /// first probe): from when and what was received then, until
        /// when.
        measuring: Option<(Instant, u64, Instant)>,
    },
    /// An added transfer did not pay (or the budget reached its ceiling).
    Stopped,
}

/// The transfers a batch allows at once, between a floor (what the user's
/// settings give) and a ceiling (the polite cap per host).
#[derive(Debug, Clone)]
pub(super) struct Adapt {
    state: State,
    budget: usize,
    ceiling: usize,
}

impl Adapt {
    pub(super) fn new(floor: usize, ceiling: usize) -> Adapt {
        let floor = floor.max(1);
        Adapt {
            state: State::Measuring(Window::default()),
            budget: floor,
            ceiling: ceiling.max(floor),
        }
    }

    /// Transfers allowed now.
    #[cfg(test)]
    pub(super) fn budget(&self) -> usize {
        self.budget
    }

    /// Whether growth stopped for good.
    #[cfg(test)]
    pub(super) fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Called from time to time with every byte `received` by the batch so
    /// far; returns the budget, changed or not.
    pub(super) fn tick(&mut self, now: Instant, received: u64, load: Load) -> usize {
        let busy = load.running >= self.budget;
        let pace = pace(load.answer);
        match &mut self.state {
            State::Stopped => {}
            State::Measuring(window) => {
                let crowded = busy && load.wanting > self.budget && self.budget < self.ceiling;
                let long = load.answer.filter(|&a| a >= LONG_ANSWER);
                if let Some(answer) = long {
                    // A long link: once the transfers run at their pace,
                    // to the ceiling at once, the rate before measured
                    // while the probe's transfers connect (see
                    // `BEFORE_ANSWERS`).
                    let (settle, _) = pace;
                    if window
                        .measure(now, received, crowded, (settle, Duration::ZERO))
                        .is_some()
                    {
                        let step = self.ceiling - self.budget;
                        self.raise(0.0, step.min(load.wanting - self.budget));
                        let until = now + (answer * BEFORE_ANSWERS).clamp(MIN_SETTLE, SETTLE);
                        if let State::Probing {
                            whole, measuring, ..
                        } = &mut self.state
                        {
                            *whole = true;
                            *measuring = Some((now, received, until));
                        }
                    }
                } else if let Some(before) = window.measure(now, received, crowded, pace) {
                    self.raise(
                        before,
                        self.budget.div_ceil(2).min(load.wanting - self.budget),
                    );
                }
            }
            State::Probing {
                before,
                had,
                whole,
                window,
                measuring,
            } => {
                if let Some((t0, b0, until)) = *measuring {
                    if now < until {
                        return self.budget;
                    }
                    *before = rate(received - b0, now.duration_since(t0));
                    *measuring = None;
                }
                // Until the raised budget is all in use (the probe's
                // transfers started) and work still waits for it, the
                // window would measure the work, not the link.
                let busy = busy && load.wanting >= self.budget;
                let (before, had, whole) = (*before, *had, *whole);
                if let Some(after) = window.measure(now, received, busy, pace) {
                    self.judge(before, had, after, load, whole);
                }
            }
        }
        self.budget
    }

    /// Whether the probe from `had` to the budget paid, and what follows.
    fn judge(&mut self, before: f64, had: usize, after: f64, load: Load, whole: bool) {
        let added = (self.budget - had) as f64 / had.max(1) as f64;
        if after < before * (1.0 + SHARE * added).max(GAIN) {
            // A whole probe that gained keeps what its gain paid for.
            let keep = match whole && after >= before * GAIN {
                true => ((had as f64 * after / before).ceil() as usize).clamp(had, self.budget),
                false => had,
            };
            tracing::debug!(
                before,
                after,
                budget = self.budget,
                "more transfers did not pay: back to {keep}"
            );
            self.budget = keep;
            self.state = State::Stopped;
            return;
        }
        tracing::debug!(before, after, budget = self.budget, "more transfers paid");
        if self.budget >= self.ceiling {
            self.state = State::Stopped;
        } else if load.wanting > self.budget {
            // Each added transfer added as much as those before it (a cap
            // per connection): double at once.
            let linear = after >= 0.9 * before * (1.0 + added);
            let n = if linear {
                self.budget
            } else {
                self.budget.div_ceil(4)
            };
            self.raise(after, n.min(load.wanting - self.budget));
        } else {
            self.state = State::Measuring(Window::default());
        }
    }

    fn raise(&mut self, before: f64, by: usize) {
        let had = self.budget;
        self.budget = (had + by.max(1)).min(self.ceiling);
        self.state = State::Probing {
            before,
            had,
            whole: false,
            window: Window::default(),
            measuring: None,
        };
    }
}

fn rate(bytes: u64, over: Duration) -> f64 {
    bytes as f64 / over.as_secs_f64().max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    /// Drives `a` with a link that moves `rate(transfers)` bytes per
    /// second, ticking every 50 ms for `secs`, with work for `work`
    /// transfers; a raised budget is taken up after `start` (connecting).
    /// Returns the budgets it went through.
    fn run(a: &mut Adapt, rate: impl Fn(usize) -> f64, work: usize, secs: f64) -> Vec<usize> {
        let steps = run_timed(a, rate, work, secs, None);
        steps.into_iter().map(|(budget, _)| budget).collect()
    }

    /// [`run`] on a link whose requests are answered after `answer`, with
    /// the time (from the start) at which each budget was set.
    fn run_timed(
        a: &mut Adapt,
        rate: impl Fn(usize) -> f64,
        work: usize,
        secs: f64,
        answer: Option<Duration>,
    ) -> Vec<(usize, Duration)> {
        let t0 = Instant::now();
        let tick = Duration::from_millis(50);
        let start = answer.unwrap_or(Duration::from_millis(100));
        let mut now = t0;
        let mut received = 0u64;
        let mut running = a.budget().min(work);
        let mut raised_at = now;
        let mut budgets = vec![(a.budget(), Duration::ZERO)];
        while now.duration_since(t0).as_secs_f64() < secs {
            now += tick;
            received += (rate(running) * tick.as_secs_f64()) as u64;
            let load = Load {
                running,
                wanting: work,
                answer,
            };
            let budget = a.tick(now, received, load);
            if budget != budgets.last().unwrap().0 {
                budgets.push((budget, now.duration_since(t0)));
                raised_at = now;
            }
            // Transfers beyond the budget end with their part; new ones
            // take a while to start.
            running = if budget < running || now.duration_since(raised_at) >= start {
                budget.min(work)
            } else {
                running
            };
        }
        budgets
    }

    #[test]
    fn a_capped_link_grows_to_the_ceiling() {
        // 8 MB/s per connection: every transfer adds as much.
        let mut a = Adapt::new(5, 16);
        let budgets = run(&mut a, |n| 8.0 * MB * n as f64, 100, 20.0);
        // One probe, then doubling, as each added as much as the first.
        assert_eq!(budgets, [5, 8, 16], "{budgets:?}");
        assert!(a.stopped());
    }

    #[test]
    fn growth_stops_where_the_work_ends() {
        let mut a = Adapt::new(5, 16);
        let budgets = run(&mut a, |n| 8.0 * MB * n as f64, 9, 20.0);
        assert_eq!(*budgets.last().unwrap(), 9, "{budgets:?}");
    }

    #[test]
    fn a_cpu_bound_link_probes_once_and_goes_back() {
        // Loopback: one more transfer is a little slower.
        let mut a = Adapt::new(5, 16);
        let budgets = run(
            &mut a,
            |n| if n <= 5 { 900.0 } else { 880.0 } * MB,
            100,
            10.0,
        );
        assert_eq!(budgets, [5, 8, 5]);
        assert!(a.stopped());
    }

    #[test]
    fn a_total_cap_stops_where_it_binds() {
        // 8 MB/s per connection, 60 MB/s for all: 8 gains 50 %, then 16
        // nothing and goes back to 8.
        let mut a = Adapt::new(5, 16);
        let budgets = run(&mut a, |n| (8.0 * n as f64).min(60.0) * MB, 100, 20.0);
        assert_eq!(budgets, [5, 8, 16, 8], "{budgets:?}");
    }

    #[test]
    fn a_gain_short_of_a_third_of_the_probes_share_does_not_pay() {
        // 5 to 8 transfers bring 15 %: above 10 %, below a third of 60 %.
        let mut a = Adapt::new(5, 16);
        let budgets = run(
            &mut a,
            |n| if n <= 5 { 100.0 } else { 115.0 } * MB,
            100,
            10.0,
        );
        assert_eq!(budgets, [5, 8, 5], "{budgets:?}");
    }

    #[test]
    fn diminishing_gains_grow_by_quarters() {
        // Each transfer beyond 8 adds a quarter of the first ones' share:
        // 5 to 8 pays in proportion, 8 to 16 gains 25 %, short of a third
        // of the 100 % the probe's share would be.
        let rate = |n: usize| {
            let n = n as f64;
            (8.0 * n.min(8.0) + 2.0 * (n - 8.0).max(0.0)) * MB
        };
        let mut a = Adapt::new(5, 16);
        let budgets = run(&mut a, rate, 100, 20.0);
        assert_eq!(budgets, [5, 8, 16, 8], "{budgets:?}");
        // Where the proportion is missed but a third of the share is met,
        // the next probe adds a quarter.
        let rate = |n: usize| (8.0 * n as f64).powf(0.6) * MB;
        let mut a = Adapt::new(4, 16);
        let budgets = run(&mut a, rate, 100, 20.0);
        assert_eq!(budgets[..4], [4, 6, 8, 10], "{budgets:?}");
    }

    #[test]
    fn without_waiting_work_nothing_grows() {
        let mut a = Adapt::new(5, 16);
        let budgets = run(&mut a, |n| 8.0 * MB * n as f64, 5, 10.0);
        assert_eq!(budgets, [5]);
        assert!(!a.stopped());
    }

    #[test]
    fn a_floor_at_the_ceiling_never_grows() {
        let mut a = Adapt::new(16, 8);
        let budgets = run(&mut a, |n| 8.0 * MB * n as f64, 100, 10.0);
        assert_eq!(budgets, [16]);
    }

    #[test]
    fn the_window_before_needs_the_budget_full_the_whole_time() {
        let mut a = Adapt::new(2, 16);
        let t = Instant::now();
        let w = WINDOW.as_millis() as u64;
        let ms = |n: u64| t + Duration::from_millis(n);
        let full = Load {
            running: 2,
            wanting: 3,
            answer: None,
        };
        // The window starts once the transfers settled.
        assert_eq!(a.tick(ms(0), 0, full), 2);
        let s = SETTLE.as_millis() as u64;
        let ms = |n: u64| t + Duration::from_millis(s + n);
        assert_eq!(a.tick(ms(0), 0, full), 2);
        // A slot between two files for one tick: the window goes on.
        let gap = Load {
            running: 1,
            wanting: 3,
            answer: None,
        };
        assert_eq!(a.tick(ms(w - 300), 50, gap), 2);
        assert_eq!(a.tick(ms(w - 250), 60, full), 2);
        // A transfer ended for longer: the window starts again.
        let b = BLIP.as_millis() as u64;
        assert_eq!(a.tick(ms(w - 100 - b), 100, gap), 2);
        assert_eq!(a.tick(ms(w - 100), 100, gap), 2);
        assert_eq!(a.tick(ms(w), 200, full), 2);
        assert_eq!(a.tick(ms(w + s), 200, full), 2);
        assert_eq!(a.tick(ms(2 * w + s - 100), 300, full), 2);
        assert_eq!(a.tick(ms(2 * w + s), 400, full), 3);
        // The probe waits for its transfer to start.
        assert_eq!(a.tick(ms(10 * w), 500, full), 3);
        assert!(!a.stopped());
    }

    #[test]
    fn a_slot_between_two_files_does_not_start_the_window_again() {
        let mut a = Adapt::new(2, 16);
        let t = Instant::now();
        let (s, w) = (SETTLE.as_millis() as u64, WINDOW.as_millis() as u64);
        let ms = |n: u64| t + Duration::from_millis(n);
        let full = Load {
            running: 2,
            wanting: 3,
            answer: None,
        };
        let gap = Load {
            running: 1,
            wanting: 3,
            answer: None,
        };
        assert_eq!(a.tick(ms(0), 0, full), 2);
        assert_eq!(a.tick(ms(s), 0, full), 2);
        assert_eq!(a.tick(ms(s + w / 2), 50, gap), 2);
        assert_eq!(a.tick(ms(s + w / 2 + 50), 60, full), 2);
        assert_eq!(a.tick(ms(s + w), 100, full), 3);
    }

    #[test]
    fn a_short_round_trip_reaches_the_ceiling_sooner() {
        // 8 MB/s per connection, answers after 80 ms (a connection and a
        // request over 20 ms each way): one probe, to the ceiling, decided
        // in a few answers' time rather than the full window's.
        let capped = |n: usize| 8.0 * MB * n as f64;
        let ms = Duration::from_millis;
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(&mut a, capped, 100, 20.0, Some(ms(80)));
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 16], "{steps:?}");
        assert!(a.stopped());
        // A settling, to the next tick, and no window before the probe:
        // the rate before it is measured while its transfers connect.
        // Without an answer to go by, the ceiling takes two steps of the
        // full figures.
        let (settle, window) = pace(Some(ms(80)));
        let bound = settle + 2 * ms(50);
        assert!(steps[1].1 <= bound, "{steps:?}, bound {bound:?}");
        let bound = bound + window;
        let mut slow = Adapt::new(5, 16);
        let unknown = run_timed(&mut slow, capped, 100, 20.0, None);
        assert_eq!(unknown.last().unwrap().0, 16, "{unknown:?}");
        assert!(unknown.last().unwrap().1 > 2 * bound, "{unknown:?}");
    }

    #[test]
    fn a_far_link_probes_after_a_settling_and_judges_after_a_window() {
        // 42 MB/s per connection (a window over 100 ms round trips),
        // answers after 200 ms: the probe goes once the five run at their
        // pace, its windows at their caps, and pays.
        let ms = Duration::from_millis;
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(&mut a, |n| 42.0 * MB * n as f64, 100, 20.0, Some(ms(200)));
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 16], "{steps:?}");
        assert!(a.stopped() && a.budget() == 16, "{steps:?}");
        assert!(steps[1].1 <= SETTLE + 2 * ms(50), "{steps:?}");
        // Where the link has no more to give (200 MB/s in all), the probe
        // goes back: the rate before it was measured while it connected.
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(
            &mut a,
            |n| (42.0 * n as f64).min(200.0) * MB,
            100,
            20.0,
            Some(ms(200)),
        );
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 16, 5], "{steps:?}");
        assert!(a.stopped(), "{steps:?}");
    }

    #[test]
    fn a_long_link_with_a_total_cap_keeps_what_the_probe_paid_for() {
        // 8 MB/s per connection, 60 MB/s in all, answers after 80 ms: the
        // probe to 16 gains half (40 to 60 MB/s), less than its share;
        // five transfers times that gain carry the total.
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(
            &mut a,
            |n| (8.0 * n as f64).min(60.0) * MB,
            100,
            20.0,
            Some(Duration::from_millis(80)),
        );
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 16, 8], "{steps:?}");
        assert!(a.stopped());
        // Where the work ends first, the probe goes as far as the work.
        let mut a = Adapt::new(5, 16);
        let capped = |n: usize| 8.0 * MB * n as f64;
        let steps = run_timed(&mut a, capped, 9, 20.0, Some(Duration::from_millis(80)));
        assert_eq!(steps.last().unwrap().0, 9, "{steps:?}");
    }

    #[test]
    fn a_quick_answer_on_a_cpu_bound_link_still_goes_back() {
        // Loopback: answers within a millisecond, one more transfer a
        // little slower.
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(
            &mut a,
            |n| if n <= 5 { 900.0 } else { 880.0 } * MB,
            100,
            10.0,
            Some(Duration::from_micros(300)),
        );
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 8, 5]);
        assert!(a.stopped());
    }

    #[test]
    fn a_long_link_that_does_not_pay_goes_back_after_one_probe() {
        // A far link whose total is the bound, not each connection.
        let mut a = Adapt::new(5, 16);
        let steps = run_timed(
            &mut a,
            |n| if n <= 5 { 200.0 } else { 205.0 } * MB,
            100,
            10.0,
            Some(Duration::from_millis(200)),
        );
        let budgets: Vec<usize> = steps.iter().map(|s| s.0).collect();
        assert_eq!(budgets, [5, 16, 5]);
        assert!(a.stopped());
    }

    #[test]
    fn the_pace_follows_the_answer_between_its_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(pace(None), (SETTLE, WINDOW));
        assert_eq!(pace(Some(ms(1))), (SETTLE, WINDOW));
        assert_eq!(pace(Some(LONG_ANSWER)), (MIN_SETTLE, MIN_WINDOW));
        assert_eq!(pace(Some(ms(80))), (ms(160), ms(320)));
        assert_eq!(pace(Some(ms(300))), (SETTLE, WINDOW));
    }
}
