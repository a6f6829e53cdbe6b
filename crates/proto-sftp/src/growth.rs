//! When one more SSH connection to a host pays, and how many reads a part
//! keeps in flight: pure rules, with times, byte counts and rates as
//! arguments, so that their tests need no network.
//!
//! One connection is fastest where the CPU is the bound (loopback: every
//! connection adds an sshd and a cipher stream to the same cores), several
//! where each connection is capped or a window per round trip limits it
//! (servers and links that cap each TCP connection). Which one holds is
//! measured, not guessed: while parts share every connection, the pool
//! opens one more (a probe) and compares the aggregate rate of a window
//! after it with that of a window before; a gain of at least [`GAIN`] lets
//! the next probe go, anything less stops the growth for good and lets the
//! probe connection go. On a short link whose machine's cores were busy
//! over that window ([`CORES_BOUND`]) no probe goes: they are the bound,
//! and the probe itself (a handshake, parts reopened on it) costs them.

use std::time::{Duration, Instant};

/// The aggregate rate after a probe, over the rate before it, that makes
/// the probe worth its connection.
pub(crate) const GAIN: f64 = 1.1;

/// How long a rate is measured, before and after a probe: long enough for
/// several round trips of a long link, short enough that a large file
/// still has most of its bytes to gain from the result.
pub(crate) const WINDOW: Duration = Duration::from_millis(400);

/// After a probe connection is up, the parts take a round trip or two to
/// move onto it (each opens its file there): the window after starts later.
pub(crate) const SETTLE: Duration = Duration::from_millis(200);

/// A round trip at least this long is a long link (not loopback, not a
/// LAN), where each connection is often bounded on its own (a cap per
/// connection, a window per round trip): there the first probe goes to the
/// ceiling (as many connections as allowed), as `pymatris-core`'s
/// `scheduler/adapt.rs` does with transfers, not one or one per part
/// running: growing in steps (a handshake, a settling and a window each,
/// about a second at 40 ms) kept a capped link below its rate for most of
/// a large file's time, and the engine splits the file for the
/// connections it finds. And it opens as soon as the file is cut into
/// parts that could move, measuring the rate before it while its
/// connections log in: a handshake is a dozen round trips, as long as a
/// window on such a link (and the engine, timing a request without the
/// login, cuts the file further for them as they come up). A probe whose
/// connections find no part to carry lets them go ([`IDLE`]). (Keeping
/// only the connections a smaller gain paid for, as the engine does with
/// transfers, cut a capped link to half its connections: the window after
/// a probe of seven ends while parts still move onto them, the answers
/// queued on the first connection draining at its rate.)
pub(crate) const LONG_RTT: Duration = Duration::from_millis(10);

/// The most connections a probe opens at once: sshd's default
/// `MaxStartups 10:30:100` refuses new connections at random once ten are
/// not yet authenticated, and a refused probe stops the growth. Eight
/// new, beside the one up, stay under it; the next eight follow once the
/// first paid (a window later).
pub(crate) const AT_ONCE: usize = 8;

/// How long a probe's connections may outnumber the parts before the
/// surplus goes: the engine splits a file for new connections within a
/// window or two of its own, so this is a few of them; where the parts
/// cannot grow (`--max-splits` given), the idle connections are let go.
const IDLE: Duration = Duration::from_millis(1500);

/// What the pool should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    Wait,
    /// Open this many more connections (the probe).
    Open(usize),
    /// The last probe did not pay: let this many of the newest
    /// connections go (those it opened).
    Retire(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waiting for a window in which parts shared every connection.
    Measuring { from: Option<(Instant, u64)> },
    /// A probe of `pending` more connections was asked for, over `had`
    /// connections; `before` is the aggregate rate without it (bytes per
    /// second), or, while `from` is set, is being measured from there until
    /// the probe's first connection is up.
    Opening {
        before: f64,
        from: Option<(Instant, u64)>,
        had: usize,
        pending: usize,
    },
    /// The probe is up since `up`, `conns` connections with it, `had`
    /// without; its window starts at `from`.
    Probing {
        before: f64,
        had: usize,
        conns: usize,
        up: Instant,
        from: Option<(Instant, u64)>,
        /// Since when fewer parts than connections run.
        short: Option<Instant>,
    },
    /// An added connection did not pay: no more growth for this key.
    Stopped,
}

/// The growth of one key's connections.
#[derive(Debug, Clone)]
pub(crate) struct Growth {
    state: State,
    /// The shortest round trip seen on the key's connections.
    rtt: Option<Duration>,
    /// Parts with enough left to move to another connection.
    movable: usize,
    /// The machine's cores as last seen, and as seen when the window
    /// before a probe began.
    cores: Option<CoresSample>,
    cores_from: Option<CoresSample>,
}

/// The machine's CPU time so far, all cores together (`/proc/stat`'s
/// first line, in its ticks): busy (neither idle nor waiting on a disk),
/// and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoresSample {
    pub(crate) busy: u64,
    pub(crate) total: u64,
}

impl CoresSample {
    /// The machine's cores now, where the system tells (Linux).
    pub(crate) fn now() -> Option<CoresSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        Some(CoresSample {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// The share of all cores' time that was busy from `self` to `later`.
    fn busy_until(self, later: CoresSample) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        Some(later.busy.saturating_sub(self.busy) as f64 / total as f64)
    }
}

/// The share of all the machine's cores busy over the window before a
/// probe at which a short link gets none: the cores, not the link, bound
/// it (loopback with 2 cores: 80-95 %, our cipher and sshd's), and one more
/// connection adds a cipher stream and an sshd to them, and costs a
/// handshake and the reopening of the parts that move onto it (W6 took 5-10
/// % more CPU with the probe than without).
const CORES_BOUND: f64 = 0.75;

impl Default for Growth {
    fn default() -> Growth {
        Growth {
            state: State::Measuring { from: None },
            rtt: None,
            movable: 0,
            cores: None,
            cores_from: None,
        }
    }
}

impl Growth {
    /// Whether growth stopped for good.
    #[cfg(test)]
    pub(crate) fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// What the pool saw of its link: the shortest round trip on the key's
    /// connections, and how many parts have enough left to move to another
    /// connection (see `read.rs`).
    pub(crate) fn saw_link(&mut self, rtt: Option<Duration>, movable: usize) {
        self.rtt = rtt;
        self.movable = movable;
    }

    /// Whether it wants to see the machine's cores: in a window before a
    /// probe, which runs only while `readers` parts share `conns`
    /// connections (not all along a file fetched in one part).
    pub(crate) fn wants_cores(&self, conns: usize, readers: usize) -> bool {
        matches!(self.state, State::Measuring { .. }) && readers > conns
    }

    /// What the machine's cores have done so far ([`CoresSample::now`]).
    pub(crate) fn saw_cores(&mut self, cores: Option<CoresSample>) {
        self.cores = cores;
    }

    /// Called from time to time: `received` counts every byte read over
    /// the key's connections so far, `conns` the live connections,
    /// `readers` the parts reading over them, and `room` how many more
    /// connections are allowed (the cap per key and per host).
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        received: u64,
        conns: usize,
        readers: usize,
        room: usize,
    ) -> Step {
        // A probe pays only if a part can move onto it: some connection
        // must carry two parts.
        let crowded = readers > conns;
        match self.state {
            State::Stopped | State::Opening { .. } => Step::Wait,
            State::Measuring { from } => {
                if !crowded || room == 0 || conns == 0 {
                    self.state = State::Measuring { from: None };
                    return Step::Wait;
                }
                let long = self.long();
                match from {
                    _ if long && self.movable > 0 => {
                        // Parts share a connection and one could move (the
                        // server answered: the engine cut the file): the
                        // window before runs while the probe logs in, and
                        // the probe goes to the ceiling (see `LONG_RTT`),
                        // [`AT_ONCE`] at most.
                        // One such part is enough: the others of a large
                        // file are opened on the same connection, behind
                        // the first's reads (waiting for bytes to flow and
                        // for a second cost 0.3 s of a 3.6 s file at 40
                        // ms). Small files, which end before they could
                        // move, probe with one, after a window.
                        let n = room.min(AT_ONCE);
                        tracing::debug!(
                            n,
                            conns,
                            readers,
                            movable = self.movable,
                            "probing a long link to the ceiling"
                        );
                        self.state = State::Opening {
                            before: 0.0,
                            from: Some((now, received)),
                            had: conns,
                            pending: n,
                        };
                        Step::Open(n)
                    }
                    // The window starts once bytes flow: before the first
                    // answers it would count the round trip as a slow link.
                    None => {
                        self.state = State::Measuring {
                            from: Some((now, received)),
                        };
                        self.cores_from = self.cores;
                        Step::Wait
                    }
                    Some((_, b0)) if received == b0 => {
                        self.state = State::Measuring {
                            from: Some((now, received)),
                        };
                        self.cores_from = self.cores;
                        Step::Wait
                    }
                    Some((t0, _)) if now.duration_since(t0) >= WINDOW && self.cores_bound() => {
                        tracing::debug!(
                            conns,
                            readers,
                            "the machine's cores bound this link: no SSH connection more"
                        );
                        self.state = State::Stopped;
                        Step::Wait
                    }
                    Some((t0, b0)) if now.duration_since(t0) >= WINDOW => {
                        tracing::debug!(
                            conns,
                            readers,
                            movable = self.movable,
                            "probing with one SSH connection more"
                        );
                        self.state = State::Opening {
                            before: rate(received - b0, now.duration_since(t0)),
                            from: None,
                            had: conns,
                            pending: 1,
                        };
                        Step::Open(1)
                    }
                    Some(_) => Step::Wait,
                }
            }
            State::Probing {
                before,
                had,
                conns: with_probe,
                up,
                from,
                short,
            } => {
                if conns < with_probe {
                    // A connection died: what follows measures nothing.
                    self.state = State::Measuring { from: None };
                    return Step::Wait;
                }
                // Fewer parts than connections: the window would measure
                // the parts, not the link. Start it again.
                if readers < conns {
                    let since = short.unwrap_or(now);
                    if now.duration_since(since) >= IDLE {
                        // No parts came for some of the probe's
                        // connections: those go, and the others are
                        // judged, if any has a part.
                        tracing::debug!(conns, readers, "SSH connections without parts");
                        if readers <= had {
                            self.state = State::Measuring { from: None };
                            return Step::Retire(conns - had);
                        }
                        self.state = State::Probing {
                            before,
                            had,
                            conns: readers,
                            up: now,
                            from: None,
                            short: None,
                        };
                        return Step::Retire(conns - readers);
                    }
                    if let State::Probing { short, .. } = &mut self.state {
                        *short = Some(since);
                    }
                    self.set_from(None);
                    return Step::Wait;
                }
                if let State::Probing { short, .. } = &mut self.state {
                    *short = None;
                }
                if now.duration_since(up) < SETTLE {
                    self.set_from(None);
                    return Step::Wait;
                }
                let Some((t0, b0)) = from else {
                    self.set_from(Some((now, received)));
                    return Step::Wait;
                };
                let dt = now.duration_since(t0);
                if dt < WINDOW {
                    return Step::Wait;
                }
                let after = rate(received - b0, dt);
                if after < before * GAIN {
                    tracing::debug!(before, after, conns, "an added SSH connection did not pay");
                    self.state = State::Stopped;
                    return Step::Retire(with_probe.saturating_sub(had).max(1));
                }
                tracing::debug!(before, after, conns, "an added SSH connection paid");
                if crowded && room > 0 {
                    // Each connection added as much as those before it
                    // (a cap per connection): double at once, as far as
                    // parts and the cap allow. So on a long link whose
                    // probe paid at all: its window after ends while parts
                    // still move onto the probe's connections (at 40 ms a
                    // probe of eight measured 27 of the 54 MB/s they were
                    // about to carry), and one more at a time took a second
                    // a step there.
                    let linear = after >= 0.9 * before * conns as f64 / had.max(1) as f64;
                    let long = self.long();
                    let n = if linear || long { conns } else { 1 };
                    let n = n.min(readers - conns).min(room).clamp(1, AT_ONCE);
                    self.state = State::Opening {
                        before: after,
                        from: None,
                        had: conns,
                        pending: n,
                    };
                    Step::Open(n)
                } else {
                    self.state = State::Measuring { from: None };
                    Step::Wait
                }
            }
        }
    }

    /// Whether the key's connections are over a long link ([`LONG_RTT`]).
    fn long(&self) -> bool {
        self.rtt.is_some_and(|rtt| rtt >= LONG_RTT)
    }

    /// Whether the cores were busy enough over the window before a probe
    /// to bound the link ([`CORES_BOUND`]); not when unknown.
    fn cores_bound(&self) -> bool {
        (self.cores_from.zip(self.cores))
            .and_then(|(from, to)| from.busy_until(to))
            .is_some_and(|busy| busy >= CORES_BOUND)
    }

    fn set_from(&mut self, new: Option<(Instant, u64)>) {
        if let State::Probing { from, .. } = &mut self.state {
            *from = new;
        }
    }

    /// A connection of the probe is up: `conns` connections now, and
    /// `received` bytes read over the key's connections so far.
    pub(crate) fn opened(&mut self, now: Instant, conns: usize, received: u64) {
        if let State::Opening {
            mut before,
            from,
            had,
            pending,
        } = self.state
        {
            // The window before ends as the first of the probe is up:
            // parts move onto it from then on.
            if let Some((t0, b0)) = from {
                before = rate(received.saturating_sub(b0), now.duration_since(t0));
            }
            self.state = if pending > 1 {
                State::Opening {
                    before,
                    from: None,
                    had,
                    pending: pending - 1,
                }
            } else {
                State::Probing {
                    before,
                    had,
                    conns,
                    up: now,
                    from: None,
                    short: None,
                }
            };
        }
    }

    /// The probe could not be opened (refused, or no room under the host's
    /// cap): the server or the user says no more.
    pub(crate) fn failed(&mut self) {
        self.state = State::Stopped;
    }
}

fn rate(bytes: u64, over: Duration) -> f64 {
    bytes as f64 / over.as_secs_f64().max(1e-3)
}

/// The bytes in flight a connection needs: twice what its measured rate
/// moves in a round trip (so the rate can still double), with the round
/// trip counted as at least `MIN_RTT` (on loopback a read's turnaround is
/// the server's CPU, not the link), and [`UNMEASURED`] before a rate is
/// known.
const MIN_RTT: Duration = Duration::from_millis(4);

/// The bytes in flight per connection before its rate is measured.
pub(crate) const UNMEASURED: u64 = 4 << 20;

/// Reads in flight per part at least: one being answered, one asked.
pub(crate) const MIN_DEPTH: usize = 2;

/// Read requests in flight for one of `readers` parts sharing a
/// connection that moves `rate` bytes per second with round trip `rtt`
/// (`None` until measured), each request of `read_len` bytes, at most
/// `max`. Bounded by what the link needs, so that a part cut short leaves
/// few answered reads to discard.
pub(crate) fn read_depth(
    rate: Option<f64>,
    rtt: Option<Duration>,
    readers: usize,
    read_len: u32,
    max: usize,
) -> usize {
    let budget = match (rate, rtt) {
        (Some(rate), Some(rtt)) if rate > 0.0 => 2.0 * rate * rtt.max(MIN_RTT).as_secs_f64(),
        _ => UNMEASURED as f64,
    };
    let per_reader = budget / readers.max(1) as f64 / f64::from(read_len.max(1));
    (per_reader.ceil() as usize).clamp(MIN_DEPTH, max.max(MIN_DEPTH))
}

/// The rate and round trip a connection sizes its reads by: its own once
/// measured, else those of the key's measured connections, `siblings`
/// (the mean rate, the shortest round trip). A probe's connections share
/// their siblings' link: on a capped one, a fresh connection sized for an
/// unknown rate ([`UNMEASURED`]) kept megabytes in flight for its first
/// quarter second, and a part cut then (the engine splits parts for each
/// connection that comes up) discarded them: 1-2 % more bytes than the
/// file at 10 ms and 4 MB/s per connection, on a busy machine.
pub(crate) fn sizing(
    own: (Option<f64>, Option<Duration>),
    siblings: impl IntoIterator<Item = (Option<f64>, Option<Duration>)>,
) -> (Option<f64>, Option<Duration>) {
    if let (Some(rate), Some(_)) = own
        && rate > 0.0
    {
        return own;
    }
    let (mut sum, mut n, mut rtt) = (0.0, 0u32, own.1);
    for (r, t) in siblings {
        if let Some(r) = r.filter(|&r| r > 0.0) {
            sum += r;
            n += 1;
        }
        if let Some(t) = t {
            rtt = Some(rtt.map_or(t, |o| o.min(t)));
        }
    }
    match n {
        0 => own,
        n => (Some(sum / f64::from(n)), rtt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    /// Drives `g` with a link that moves `rate(conns)` bytes per second,
    /// ticking every 50 ms for `secs`, with `readers` parts and room up to
    /// `cap` connections; returns the connections at the end and the steps
    /// taken.
    fn run(
        g: &mut Growth,
        rate: impl Fn(usize) -> f64,
        readers: usize,
        cap: usize,
        secs: f64,
    ) -> (usize, Vec<Step>) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut received = 0u64;
        let mut conns = 1;
        let mut steps = Vec::new();
        let tick = Duration::from_millis(50);
        while now.duration_since(t0).as_secs_f64() < secs {
            now += tick;
            received += (rate(conns) * tick.as_secs_f64()) as u64;
            match g.tick(now, received, conns, readers, cap - conns) {
                Step::Wait => {}
                Step::Open(n) => {
                    steps.push(Step::Open(n));
                    // The handshake takes a while, the connections up
                    // carrying on meanwhile.
                    let handshake = Duration::from_millis(150);
                    now += handshake;
                    received += (rate(conns) * handshake.as_secs_f64()) as u64;
                    for _ in 0..n {
                        conns += 1;
                        g.opened(now, conns, received);
                    }
                }
                Step::Retire(n) => {
                    steps.push(Step::Retire(n));
                    conns -= n;
                }
            }
        }
        (conns, steps)
    }

    #[test]
    fn a_short_link_whose_cores_are_busy_gets_no_probe() {
        // Loopback: the machine's two cores 90 % busy over the window
        // before the probe (our cipher and sshd's): one more connection
        // adds an sshd and a cipher to the same cores, and its handshake
        // and the parts that move onto it cost more than it could bring.
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_micros(100)), 5);
        g.saw_cores(Some(CoresSample {
            busy: 1000,
            total: 2000,
        }));
        assert_eq!(g.tick(ms(50), 1_000_000, 1, 5, 7), Step::Wait);
        g.saw_cores(Some(CoresSample {
            busy: 1072,
            total: 2080,
        }));
        assert_eq!(g.tick(ms(500), 300_000_000, 1, 5, 7), Step::Wait);
        assert!(g.stopped());
        // The same link with the cores mostly idle (a cap per connection
        // next door) is probed.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_micros(100)), 5);
        g.saw_cores(Some(CoresSample {
            busy: 1000,
            total: 2000,
        }));
        assert_eq!(g.tick(ms(50), 1_000_000, 1, 5, 7), Step::Wait);
        g.saw_cores(Some(CoresSample {
            busy: 1024,
            total: 2080,
        }));
        assert_eq!(g.tick(ms(500), 8_000_000, 1, 5, 7), Step::Open(1));
        // And so is one whose cores are not known.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_micros(100)), 5);
        assert_eq!(g.tick(ms(50), 1_000_000, 1, 5, 7), Step::Wait);
        assert_eq!(g.tick(ms(500), 300_000_000, 1, 5, 7), Step::Open(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_machines_cores_are_read_from_proc_stat() {
        let a = CoresSample::now().expect("/proc/stat");
        assert!(a.busy <= a.total && a.total > 0, "{a:?}");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        let b = CoresSample::now().expect("/proc/stat");
        assert!(b.total >= a.total && b.busy >= a.busy, "{a:?} {b:?}");
    }

    #[test]
    fn a_capped_link_grows_up_to_the_parts() {
        // 16 MB/s per connection: every connection adds as much.
        let mut g = Growth::default();
        let (conns, steps) = run(&mut g, |c| 16.0 * MB * c as f64, 5, 8, 20.0);
        assert_eq!(conns, 5, "{steps:?}");
        // One probe, then doubling, as each added as much as the first.
        assert_eq!(steps, [Step::Open(1), Step::Open(2), Step::Open(1)]);
    }

    #[test]
    fn a_long_link_opens_to_the_ceiling_at_once() {
        // 40 ms round trips, 16 MB/s per connection, eight large parts:
        // one probe of seven, where one at a time took three steps.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 8);
        let (conns, steps) = run(&mut g, |c| 16.0 * MB * c as f64, 8, 8, 20.0);
        assert_eq!(conns, 8, "{steps:?}");
        assert_eq!(steps, [Step::Open(7)]);
        // Five parts that stay five: the three idle connections go, the
        // others are judged and pay.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 5);
        let (conns, steps) = run(&mut g, |c| 16.0 * MB * c as f64, 5, 8, 20.0);
        assert_eq!(steps, [Step::Open(7), Step::Retire(3)]);
        assert_eq!(conns, 5);
        // Where they bring nothing (a total cap), they all go.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 5);
        let (conns, steps) = run(&mut g, |c| (16.0 * c as f64).min(17.0) * MB, 5, 8, 20.0);
        assert_eq!(steps, [Step::Open(7), Step::Retire(3), Step::Retire(4)]);
        assert_eq!(conns, 1);
        // Where they bring some (40 MB/s in all), they stay.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 8);
        let (conns, steps) = run(&mut g, |c| (16.0 * c as f64).min(40.0) * MB, 8, 8, 20.0);
        assert_eq!(steps, [Step::Open(7)]);
        assert_eq!(conns, 8);
        // Small files, which end before they could move, and loopback's
        // round trips keep to one at a time.
        for (rtt, movable) in [(40_000, 0), (300, 5)] {
            let mut g = Growth::default();
            g.saw_link(Some(Duration::from_micros(rtt)), movable);
            let (_, steps) = run(&mut g, |c| 16.0 * MB * c as f64, 5, 8, 20.0);
            assert_eq!(steps[0], Step::Open(1));
        }
    }

    #[test]
    fn a_long_link_probes_as_soon_as_a_part_could_move() {
        // 40 ms round trips, five large parts on one connection: the probe
        // goes at the first tick where a part could move, not a window
        // later, and the rate before it is what flowed while it logged in.
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 5);
        // The file is cut into parts that could move: the probe goes at
        // once, with no window first.
        assert_eq!(g.tick(ms(100), 800_000, 1, 5, 7), Step::Open(7));
        // 16 MB/s while the probe logs in (450 ms); its first connection
        // up ends that window, whatever follows.
        g.opened(ms(550), 2, 800_000 + 7_200_000);
        for c in 3..=8 {
            g.opened(ms(560), c, 30_000_000);
        }
        // Eight connections at 16 MB/s each pay, and no more are asked
        // (the ceiling).
        let mut received = 30_000_000;
        for n in 12..60 {
            received += 6_400_000;
            assert_eq!(g.tick(ms(50 * n), received, 8, 16, 0), Step::Wait);
        }
        assert!(!g.stopped());
        // Where the probe brings nothing (16 MB/s in all), it goes.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 8);
        assert_eq!(g.tick(ms(50), 800_000, 1, 8, 7), Step::Open(7));
        g.opened(ms(500), 2, 800_000 + 7_200_000);
        for c in 3..=8 {
            g.opened(ms(510), c, 8_160_000);
        }
        let mut received = 8_160_000;
        let mut step = Step::Wait;
        for n in 11..40 {
            received += 800_000;
            step = g.tick(ms(50 * n), received, 8, 8, 0);
            if step != Step::Wait {
                break;
            }
        }
        assert_eq!(step, Step::Retire(7));
        assert!(g.stopped());
        // Only the first part knows its size yet (the other four's opens
        // wait behind its reads): that is enough to go.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 1);
        assert_eq!(g.tick(ms(0), 0, 1, 5, 7), Step::Open(7));
        // Nor does a lone large part open any: nothing could move.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 1);
        for n in 0..40 {
            assert_eq!(g.tick(ms(50 * n), 800_000 * n, 1, 1, 7), Step::Wait);
        }
    }

    #[test]
    fn a_long_link_grows_past_eight_in_waves_sshd_accepts() {
        // 40 ms round trips, 6 MB/s per connection, sixteen parts and room
        // for fifteen more: eight at once (sshd's default MaxStartups
        // refuses at random from ten unauthenticated), then eight more
        // once they paid.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 16);
        let (conns, steps) = run(&mut g, |c| 6.0 * MB * c as f64, 16, 16, 20.0);
        assert_eq!(steps, [Step::Open(8), Step::Open(7)]);
        assert_eq!(conns, 16);
        // The window after the first probe ends while parts still move
        // onto it (half of what its nine connections carry a moment
        // later): it paid, and the next goes to the ceiling all the same,
        // not one at a time.
        let mut g = Growth::default();
        g.saw_link(Some(Duration::from_millis(40)), 16);
        let half_at_nine = |c: usize| {
            if c == 9 {
                27.0 * MB
            } else {
                6.0 * MB * c as f64
            }
        };
        let (conns, steps) = run(&mut g, half_at_nine, 16, 16, 20.0);
        assert_eq!(steps, [Step::Open(8), Step::Open(7)]);
        assert_eq!(conns, 16);
    }

    #[test]
    fn a_capped_link_stops_at_the_cap() {
        let mut g = Growth::default();
        let (conns, _) = run(&mut g, |c| 16.0 * MB * c as f64, 16, 3, 20.0);
        assert_eq!(conns, 3);
    }

    #[test]
    fn a_cpu_bound_link_probes_once_and_goes_back_to_one() {
        // Loopback: a second connection is a little slower.
        let mut g = Growth::default();
        let (conns, steps) = run(
            &mut g,
            |c| if c == 1 { 680.0 } else { 640.0 } * MB,
            5,
            8,
            10.0,
        );
        assert_eq!(steps, [Step::Open(1), Step::Retire(1)]);
        assert_eq!(conns, 1);
        assert!(g.stopped());
    }

    #[test]
    fn a_total_cap_stops_where_it_binds() {
        // 16 MB/s per connection, 40 MB/s for all: the second doubles
        // the rate, the third and fourth together gain 25 %, the fifth
        // nothing and goes.
        let mut g = Growth::default();
        let (conns, steps) = run(&mut g, |c| (16.0 * c as f64).min(40.0) * MB, 8, 8, 20.0);
        assert_eq!(
            steps,
            [Step::Open(1), Step::Open(2), Step::Open(1), Step::Retire(1)]
        );
        assert_eq!(conns, 4);
    }

    #[test]
    fn one_part_never_opens_a_second_connection() {
        let mut g = Growth::default();
        let (conns, steps) = run(&mut g, |c| 16.0 * MB * c as f64, 1, 8, 10.0);
        assert_eq!(conns, 1);
        assert!(steps.is_empty());
        assert!(!g.stopped());
    }

    #[test]
    fn the_window_before_needs_parts_sharing_the_whole_time() {
        let mut g = Growth::default();
        let t = Instant::now();
        let w = WINDOW.as_millis() as u64;
        let ms = |n: u64| t + Duration::from_millis(n);
        assert_eq!(g.tick(ms(0), 0, 1, 2, 1), Step::Wait);
        // One part left for a moment: the window starts again.
        assert_eq!(g.tick(ms(w - 100), 100, 1, 1, 1), Step::Wait);
        assert_eq!(g.tick(ms(w), 200, 1, 2, 1), Step::Wait);
        assert_eq!(g.tick(ms(2 * w - 100), 300, 1, 2, 1), Step::Wait);
        assert_eq!(g.tick(ms(2 * w), 400, 1, 2, 1), Step::Open(1));
        // Waits for the probe.
        assert_eq!(g.tick(ms(10 * w), 500, 1, 2, 1), Step::Wait);
    }

    #[test]
    fn a_probe_that_cannot_open_stops_growth() {
        let mut g = Growth::default();
        let t = Instant::now();
        g.tick(t, 0, 1, 3, 1);
        assert_eq!(g.tick(t + WINDOW, 1_000_000, 1, 3, 1), Step::Open(1));
        g.failed();
        assert!(g.stopped());
        assert_eq!(g.tick(t + 10 * WINDOW, 9_000_000, 1, 3, 1), Step::Wait);
    }

    #[test]
    fn a_connection_lost_during_a_probe_measures_again() {
        let mut g = Growth::default();
        let t = Instant::now();
        g.tick(t, 0, 1, 3, 1);
        assert_eq!(g.tick(t + WINDOW, 1_000_000, 1, 3, 1), Step::Open(1));
        g.opened(t + WINDOW, 2, 1_000_000);
        assert_eq!(g.tick(t + 2 * WINDOW, 1_100_000, 1, 3, 1), Step::Wait);
        assert!(!g.stopped());
        // Measuring again: a new window, then a new probe.
        g.tick(t + 3 * WINDOW, 2_000_000, 1, 3, 1);
        assert_eq!(g.tick(t + 4 * WINDOW, 3_000_000, 1, 3, 1), Step::Open(1));
    }

    #[test]
    fn depth_follows_bandwidth_times_round_trip() {
        let len = 255 * 1024;
        // 16 MB/s at 40 ms: 1.28 MB in flight, over 5 parts: 1 read each,
        // at least 2.
        assert_eq!(
            read_depth(Some(16e6), Some(Duration::from_millis(40)), 5, len, 32),
            2
        );
        // One part alone: 1.28 MB / 255 KiB, rounded up.
        assert_eq!(
            read_depth(Some(16e6), Some(Duration::from_millis(40)), 1, len, 32),
            5
        );
        // A fast, long link is bounded by `max`.
        assert_eq!(
            read_depth(Some(500e6), Some(Duration::from_millis(100)), 1, len, 32),
            32
        );
        // Loopback: the round trip counts as `MIN_RTT`.
        assert_eq!(
            read_depth(Some(680e6), Some(Duration::from_micros(200)), 1, len, 32),
            21
        );
        // Before any measurement.
        assert_eq!(read_depth(None, None, 1, len, 32), 17);
        assert_eq!(
            read_depth(Some(0.0), Some(Duration::from_millis(1)), 4, len, 32),
            5
        );
    }

    #[test]
    fn depth_never_ends_the_pipeline() {
        assert_eq!(
            read_depth(Some(1.0), Some(Duration::from_millis(1)), 100, 1 << 20, 32),
            2
        );
        assert_eq!(read_depth(None, None, 0, 0, 0), MIN_DEPTH);
    }

    #[test]
    fn a_fresh_connection_sizes_its_reads_by_its_measured_siblings() {
        let len = 255 * 1024;
        let ms = Duration::from_millis;
        // Siblings capped at 4 MB/s over 20 ms: two reads in flight, not
        // the 17 of an unmeasured connection.
        let siblings = [(Some(4e6), Some(ms(20))), (Some(4e6), Some(ms(21)))];
        let (rate, rtt) = sizing((None, None), siblings);
        assert_eq!((rate, rtt), (Some(4e6), Some(ms(20))));
        assert_eq!(read_depth(rate, rtt, 1, len, 32), MIN_DEPTH);
        // Its own round trip, shorter, counts too.
        assert_eq!(sizing((None, Some(ms(5))), siblings).1, Some(ms(5)));
        // Once measured, its own figures.
        let own = (Some(9e6), Some(ms(30)));
        assert_eq!(sizing(own, siblings), own);
        // No sibling measured: unknown, as before.
        assert_eq!(sizing((None, None), [(None, Some(ms(20)))]), (None, None));
        // Mean of the measured ones.
        let mixed = [(Some(2e6), None), (None, None), (Some(6e6), Some(ms(40)))];
        assert_eq!(sizing((None, None), mixed), (Some(4e6), Some(ms(40))));
    }
}
