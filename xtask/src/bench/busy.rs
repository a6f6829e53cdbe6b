//! How busy the whole machine was during a run, so that a WAN row the
//! cores bound (the link leaves room, the CPU does not) shows it in
//! figures rather than in a guess: the share of all cores' time not idle,
//! from `/proc/stat`, and the CPU seconds of the bench's own process, in
//! which the shaping proxy runs. With the tool's and the server's seconds
//! (`measure.rs`) they say who used the cores.

use super::measure::{Sample, process_cpu};
use super::report::{Cell, WorkloadResult, median};
use super::tools::Tool;

/// The counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Mark {
    /// Ticks of every core, and of those not idle, since boot.
    total: u64,
    busy: u64,
    /// CPU seconds of this process (the proxy's threads included).
    own: Option<f64>,
}

/// What the machine did between two marks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Machine {
    /// The share of all cores' time that was not idle (stolen time counts
    /// as busy: the run could not have it either), from 0 to 1.
    pub(super) busy: f64,
    /// CPU seconds of the bench's process: the shaping proxy, mostly.
    pub(super) proxy_cpu: Option<f64>,
}

/// The machine's counters now (`None` where `/proc/stat` cannot be read).
pub(super) fn mark() -> Option<Mark> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (total, busy) = parse(&stat)?;
    Some(Mark {
        total,
        busy,
        own: process_cpu(std::process::id()),
    })
}

/// All cores' ticks and the busy ones, from the first line of `/proc/stat`:
/// `cpu user nice system idle iowait irq softirq steal ...` (guest time is
/// already in user's).
fn parse(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total, total - idle))
}

impl Mark {
    /// What happened since this mark.
    pub(super) fn until_now(&self) -> Option<Machine> {
        self.until(&mark()?)
    }

    fn until(&self, later: &Mark) -> Option<Machine> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let busy = later.busy.checked_sub(self.busy)?;
        Some(Machine {
            busy: busy as f64 / total as f64,
            proxy_cpu: later.own.zip(self.own).map(|(b, a)| b - a),
        })
    }
}

/// `sample` with what the machine did since `before`, if measured.
pub(super) fn after(mut sample: Sample, before: Option<Mark>) -> Sample {
    sample.machine = before.and_then(|m| m.until_now());
    sample
}

/// The machine's busy share during `tool`'s runs, and this run's own
/// (medians), as [`share`] writes them.
pub(super) fn of_tool(r: &WorkloadResult, tool: Tool) -> String {
    r.cells
        .iter()
        .find(|c| c.tool == tool)
        .map_or("n/a".to_owned(), |c| shares(&c.samples))
}

/// The CPU cells of a row: the machine's busy share (and this run's), and
/// the CPU seconds of the tool, the server and the proxy; medians over the
/// cell's runs ("n/a" for what no run measured).
pub(super) fn row(c: &Cell) -> String {
    let tool = median(c.samples.iter().map(|s| s.cpu).collect());
    let server = median(c.samples.iter().filter_map(|s| s.server_cpu).collect());
    let proxy = median(
        (c.samples.iter())
            .filter_map(|s| s.machine?.proxy_cpu)
            .collect(),
    );
    let secs = |x: Option<f64>| x.map_or("n/a".to_owned(), |x| format!("{x:.2}"));
    format!(
        "{} | {} / {} / {}",
        shares(&c.samples),
        secs(tool),
        secs(server),
        secs(proxy)
    )
}

/// "busy % (run %)": the machine's busy share, and the share of all cores
/// that the tool, the server and the proxy took over the run's wall time
/// (the rest of the busy share is the machine's other work).
fn shares(samples: &[Sample]) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = median(
        samples
            .iter()
            .filter_map(|s| Some(s.machine?.busy))
            .collect(),
    );
    let run = median(
        (samples.iter())
            .filter_map(|s| {
                let used = s.cpu + s.server_cpu.unwrap_or(0.0) + s.machine?.proxy_cpu?;
                Some(used / (s.wall.as_secs_f64().max(1e-3) * cores))
            })
            .collect(),
    );
    format!("{} (run {})", share(busy), share(run))
}

/// A share of all cores as a percentage.
fn share(x: Option<f64>) -> String {
    x.map_or("n/a".to_owned(), |b| format!("{:.0} %", b * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_every_tick_but_idle_and_iowait() {
        let stat = "cpu  100 10 50 800 20 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse(stat), Some((1000, 180)));
        assert_eq!(parse("intr 1 2 3\n"), None);
        let a = Mark {
            total: 1000,
            busy: 180,
            own: Some(1.0),
        };
        let b = Mark {
            total: 1400,
            busy: 480,
            own: Some(1.5),
        };
        let m = a.until(&b).unwrap();
        assert!((m.busy - 0.75).abs() < 1e-9, "{m:?}");
        assert_eq!(m.proxy_cpu, Some(0.5));
        // No time passed: nothing to say.
        assert_eq!(a.until(&a), None);
    }

    #[test]
    fn a_run_takes_its_share_of_the_busy_machine() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let sample = Sample {
            wall: std::time::Duration::from_secs(2),
            cpu: 0.5 * cores,
            rss_kib: 0,
            server_cpu: Some(0.25 * cores),
            link: None,
            machine: Some(Machine {
                busy: 0.9,
                proxy_cpu: Some(0.25 * cores),
            }),
            inner_wall: None,
        };
        assert_eq!(shares(&[sample]), "90 % (run 50 %)");
        assert_eq!(shares(&[]), "n/a (run n/a)");
    }

    #[test]
    fn the_machine_reads_its_own_counters() {
        let m = mark().expect("/proc/stat");
        assert!(m.total >= m.busy && m.own.is_some());
    }
}
