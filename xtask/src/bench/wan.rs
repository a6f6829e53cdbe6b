//! `cargo xtask bench --wan`: the workloads of issue 14 through the
//! harness's shaping proxy, so that round trips and per-connection caps,
//! which loopback hides, decide the results, as they do for users on the
//! internet.
//!
//! The same servers, tools, measurements and checks as the loopback bench
//! (`mod.rs`); each workload's tools reach its server through a proxy
//! whose counters give each run's connections and bytes. The peers get a
//! fixed number of connections (`--wan-connections`), pymatris its
//! defaults and, in a second row, the peers' number.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pymatris_harness::{Servers, Shape, Shaper};

use super::busy;
use super::data::{DataSet, Proto, Workload};
use super::report::{Report, WorkloadResult, median};
use super::tools::{Endpoint, Tool};

/// The link flags of `cargo xtask bench --wan`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct WanArgs {
    /// With --wan: the one-way delay of the capped links, in ms.
    #[arg(long, default_value_t = 20, value_name = "MS")]
    wan_delay: u64,
    /// With --wan: the cap of each HTTP(S) connection, in MB/s (0: none).
    #[arg(long, default_value_t = 8.0, value_name = "MB/S")]
    wan_http_rate: f64,
    /// With --wan: the cap of each SSH connection, in MB/s (0: none).
    #[arg(long, default_value_t = 16.0, value_name = "MB/S")]
    wan_ssh_rate: f64,
    /// With --wan: a cap across all connections of a capped link, in MB/s.
    #[arg(long, value_name = "MB/S")]
    wan_total_rate: Option<f64>,
    /// With --wan: the one-way delay of the uncapped link (the 1 GiB row).
    #[arg(long, default_value_t = 50, value_name = "MS")]
    wan_far_delay: u64,
    /// With --wan: bytes in flight per connection and direction, in KiB (0:
    /// unbounded); with the round trip, what bounds one uncapped connection
    /// (the default is about what Linux's TCP autotuning reaches).
    #[arg(long, default_value_t = 4096, value_name = "KIB")]
    wan_window: u64,
    /// With --wan: the peers' connections (aria2c -x -s, lftp pget -n and
    /// mget -P, curl --parallel-max), and the second pymatris row's
    /// --max-parallel, --max-splits and --max-per-host.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) wan_connections: u32,
}

/// The two links of issue 14.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Link {
    /// `--wan-delay`, and the protocol's per-connection cap.
    Capped,
    /// `--wan-far-delay`, no cap.
    Far,
}

/// Issue 14's workloads and the link of each.
fn table() -> Vec<(Workload, Link)> {
    let w = |id, title, proto, data, per_file| Workload {
        id,
        title,
        proto,
        data,
        parallel: None,
        per_file,
    };
    vec![
        (
            w(
                "N1",
                "256 MiB over HTTP, capped",
                Proto::Http,
                DataSet::Quarter,
                false,
            ),
            Link::Capped,
        ),
        (
            w(
                "N2",
                "300 x 16 KiB over HTTP, capped",
                Proto::Http,
                DataSet::SmallFirst(300),
                true,
            ),
            Link::Capped,
        ),
        (
            w(
                "N3",
                "300 x 16 KiB over HTTPS, capped",
                Proto::Https,
                DataSet::SmallFirst(300),
                true,
            ),
            Link::Capped,
        ),
        (
            w(
                "N4",
                "256 MiB over SFTP, capped",
                Proto::Sftp,
                DataSet::Quarter,
                false,
            ),
            Link::Capped,
        ),
        (
            w(
                "N5",
                "100 x 16 KiB over SFTP, capped",
                Proto::Sftp,
                DataSet::SmallFirst(100),
                true,
            ),
            Link::Capped,
        ),
        (
            w(
                "N6",
                "1 GiB over HTTP, far, uncapped",
                Proto::Http,
                DataSet::Big,
                false,
            ),
            Link::Far,
        ),
    ]
}

pub(super) fn workloads() -> Vec<Workload> {
    table().into_iter().map(|(w, _)| w).collect()
}

fn link_of(wl: &Workload) -> Link {
    table()
        .into_iter()
        .find(|(w, _)| w.id == wl.id)
        .map_or(Link::Capped, |(_, l)| l)
}

/// The tools of the WAN rows: OpenSSH sftp with its default cipher only,
/// and no copy limit (the link is the limit).
pub(super) const TOOLS: [Tool; 7] = [
    Tool::Pymatris,
    Tool::PymatrisAt,
    Tool::Aria2c,
    Tool::Curl,
    Tool::Wget,
    Tool::Lftp,
    Tool::Sftp,
];

/// The WAN rows' tools that `--tools` names (all without it). Naming
/// `pymatris` runs both of its rows, its defaults and the peers' settings:
/// the summary compares the two.
pub(super) fn chosen_tools(chosen: Option<&[Tool]>) -> Vec<Tool> {
    TOOLS
        .into_iter()
        .filter(|t| {
            chosen.is_none_or(|c| {
                c.contains(t) || (*t == Tool::PymatrisAt && c.contains(&Tool::Pymatris))
            })
        })
        .collect()
}

/// A tool's rate in the summary: "not run" where the run left the tool
/// out (`--tools`), FAILED only where it ran and every run failed.
fn summary_rate(r: &WorkloadResult, tool: Tool) -> String {
    match r.cells.iter().find(|c| c.tool == tool) {
        None => "not run".to_owned(),
        Some(c) => r.stats(c).map_or("FAILED".to_owned(), |s| {
            format!("{} {}", num(s.rate), unit(r))
        }),
    }
}

fn mb(rate: f64) -> Option<u64> {
    (rate > 0.0).then_some((rate * 1e6) as u64)
}

/// One proxy per (protocol, link) the chosen workloads use, in front of
/// that protocol's server.
#[derive(Debug)]
pub(super) struct Links {
    args: WanArgs,
    shapers: HashMap<(Proto, Link), (Shaper, Endpoint)>,
}

impl Links {
    pub(super) fn start(
        servers: &Servers,
        args: &WanArgs,
        workloads: &[Workload],
        scratch: &Path,
    ) -> anyhow::Result<Links> {
        let mut shapers = HashMap::new();
        for wl in workloads {
            let link = link_of(wl);
            if shapers.contains_key(&(wl.proto, link)) {
                continue;
            }
            let (port, rate) = match wl.proto {
                Proto::Http => (servers.http_port(), args.wan_http_rate),
                Proto::Https => (servers.https_port(), args.wan_http_rate),
                Proto::Sftp => (servers.sftp_port(), args.wan_ssh_rate),
                // Passive data connections would bypass a proxy.
                Proto::Ftp => bail!("the WAN bench has no FTP workload"),
            };
            let shape = Shape::new()
                .window(Some(args.wan_window * 1024).filter(|&w| w > 0))
                .delay(Duration::from_millis(match link {
                    Link::Capped => args.wan_delay,
                    Link::Far => args.wan_far_delay,
                }));
            let shape = match link {
                Link::Capped => shape
                    .rate(mb(rate))
                    .total_rate(args.wan_total_rate.and_then(mb)),
                Link::Far => shape,
            };
            let shaper = servers.shaped(port, shape)?;
            // The host key is the server's; ssh looks it up by port.
            let known_hosts = if wl.proto == Proto::Sftp {
                let p = scratch.join(format!("known_hosts-{}", shaper.port()));
                std::fs::write(
                    &p,
                    format!(
                        "[127.0.0.1]:{} {}\n",
                        shaper.port(),
                        servers.ssh_host_key_pub()
                    ),
                )
                .with_context(|| format!("writing {}", p.display()))?;
                Some(p)
            } else {
                None
            };
            let endpoint = Endpoint {
                server_port: port,
                port: shaper.port(),
                known_hosts,
            };
            shapers.insert((wl.proto, link), (shaper, endpoint));
        }
        Ok(Links {
            args: args.clone(),
            shapers,
        })
    }

    /// The proxy `wl` goes through, and how the tools reach it.
    pub(super) fn of(&self, wl: &Workload) -> Option<(&Shaper, &Endpoint)> {
        self.shapers
            .get(&(wl.proto, link_of(wl)))
            .map(|(s, e)| (s, e))
    }

    fn describe(&self, link: Link, proto: Proto) -> String {
        let a = &self.args;
        let window = if a.wan_window > 0 {
            format!("window {} KiB", a.wan_window)
        } else {
            "no window".to_owned()
        };
        match link {
            Link::Far => format!("{} ms one way, uncapped, {window}", a.wan_far_delay),
            Link::Capped => {
                let rate = if proto == Proto::Sftp {
                    a.wan_ssh_rate
                } else {
                    a.wan_http_rate
                };
                let cap = mb(rate).map_or("uncapped".to_owned(), |_| {
                    format!("{rate} MB/s per connection")
                });
                let total = a.wan_total_rate.and_then(mb).map_or(String::new(), |_| {
                    format!(", {} MB/s in all", a.wan_total_rate.unwrap_or_default())
                });
                format!("{} ms one way, {cap}{total}, {window}", a.wan_delay)
            }
        }
    }

    /// The flags that set the links, for the report's command line.
    pub(super) fn flags(&self) -> String {
        let a = &self.args;
        let mut s = format!(
            " --wan-delay {} --wan-http-rate {} --wan-ssh-rate {} --wan-far-delay {} --wan-window {} --wan-connections {}",
            a.wan_delay,
            a.wan_http_rate,
            a.wan_ssh_rate,
            a.wan_far_delay,
            a.wan_window,
            a.wan_connections
        );
        if let Some(t) = a.wan_total_rate {
            let _ = write!(s, " --wan-total-rate {t}");
        }
        s
    }
}

/// Marks the WAN part of `docs/benchmarks.md`.
const BEGIN: &str =
    "<!-- wan:begin: generated by `cargo xtask bench --wan`, replaced on each full run -->";
const END: &str = "<!-- wan:end -->";

/// Replaces the WAN part of the docs page at `path`, or appends it with a
/// heading when the page has none yet.
pub(super) fn write_doc(path: &Path, generated: &str) -> anyhow::Result<()> {
    let block = format!("{BEGIN}\n\n{}\n{END}", generated.trim_end());
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n## WAN bench\n\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What the WAN rows add to a cell: medians over its runs.
#[derive(Clone, Copy, Debug)]
struct Wire {
    connections: f64,
    /// Bytes the server sent through the proxy per byte of the files.
    per_file_byte: f64,
}

fn wire(r: &WorkloadResult, tool: Tool) -> Option<Wire> {
    let cell = r.cells.iter().find(|c| c.tool == tool)?;
    let links: Vec<_> = cell.samples.iter().filter_map(|s| s.link).collect();
    Some(Wire {
        connections: median(links.iter().map(|c| c.connections as f64).collect())?,
        per_file_byte: median(
            links
                .iter()
                .map(|c| c.to_client as f64 / r.bytes as f64)
                .collect(),
        )?,
    })
}

fn rate(r: &WorkloadResult, tool: Tool) -> Option<f64> {
    let cell = r.cells.iter().find(|c| c.tool == tool)?;
    Some(r.stats(cell)?.rate)
}

fn best_peer(r: &WorkloadResult) -> Option<(Tool, f64)> {
    r.cells
        .iter()
        .filter(|c| c.tool.is_peer())
        .filter_map(|c| Some((c.tool, r.stats(c)?.rate)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn unit(r: &WorkloadResult) -> &'static str {
    if r.wl.per_file { "files/s" } else { "MB/s" }
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// The WAN part of the docs.
pub(super) fn markdown(report: &Report, links: &Links) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "### Latest WAN run\n");
    let _ = writeln!(
        md,
        "`{}` on {}. {} run(s) per tool and workload (medians), tools alternating run by \
         run. Every file compared byte for byte with its source \
         afterwards. Peers at {} connections; \"pymatris, peers' settings\" is `--max-parallel \
         N --max-splits N --max-per-host N` with the same N. Connections and bytes are the \
         proxy's counters; bytes per file byte counts what the server sent through the proxy \
         (headers, handshakes and SSH framing included) over the files' size. Machine CPU \
         busy is the share of all cores' time not idle during the run (`/proc/stat`; \
         near 100 % the cores, not the link, bound the row), and in brackets the share \
         the tool, the server and the proxy took (the rest is the machine's other work); \
         CPU s are the seconds of the tool, of the server and of the bench's process, where \
         the proxy runs. Load average \
         before {}, after {}.\n",
        report.command,
        report.date,
        report.runs,
        links.args.wan_connections,
        report.load_before,
        report.load_after
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    for (k, v) in report.machine.iter().chain(&report.versions) {
        let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
    }
    let _ = writeln!(md, "\n#### Summary\n");
    let _ = writeln!(
        md,
        "| Workload | Link | best peer | pymatris default | pymatris, peers' settings | default / best peer | bytes per file byte: pymatris default (leanest peer) | issue 14's goal: >= 1.25x best peer, bytes <= 1.02x leanest peer's | machine CPU busy (this run's), pymatris default |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for r in &report.results {
        let u = unit(r);
        let best = best_peer(r);
        let py = rate(r, Tool::Pymatris);
        let ratio = match (py, best) {
            (Some(p), Some((_, b))) => format!("{:.2}x", p / b),
            _ => "n/a".to_owned(),
        };
        let py_wire = wire(r, Tool::Pymatris);
        // The bound is on the files' bytes; the proxy counts
        // headers and handshakes too, which the leanest peer pays as well.
        let leanest = r
            .cells
            .iter()
            .filter(|c| c.tool.is_peer() && r.stats(c).is_some())
            .filter_map(|c| wire(r, c.tool))
            .map(|w| w.per_file_byte)
            .min_by(f64::total_cmp);
        let met = match (py, best, py_wire, leanest) {
            (Some(p), Some((_, b)), Some(w), Some(l)) => {
                if p / b >= 1.25 && w.per_file_byte <= 1.02 * l {
                    "met"
                } else {
                    "**not met**"
                }
            }
            _ => "n/a",
        };
        let bytes = format!(
            "{} ({})",
            py_wire.map_or("n/a".to_owned(), |w| format!("{:.3}", w.per_file_byte)),
            leanest.map_or("n/a".to_owned(), |l| format!("{l:.3}"))
        );
        let _ = writeln!(
            md,
            "| {} {} | {} | {} | {} | {} | {ratio} | {bytes} | {met} | {} |",
            r.wl.id,
            r.wl.title,
            links.describe(link_of(&r.wl), r.wl.proto),
            best.map_or("n/a".to_owned(), |(t, x)| format!(
                "{} {} {u}",
                t.name(),
                num(x)
            )),
            summary_rate(r, Tool::Pymatris),
            summary_rate(r, Tool::PymatrisAt),
            busy::of_tool(r, Tool::Pymatris),
        );
    }
    for note in report.notes.iter().chain(&report.skipped) {
        let _ = writeln!(md, "\n- {note}");
    }
    for r in &report.results {
        let u = unit(r);
        let best = best_peer(r).map(|(_, x)| x);
        let _ = writeln!(
            md,
            "\n#### {}: {} ({} file(s), {:.1} MB)\n",
            r.wl.id,
            r.wl.title,
            r.files,
            r.bytes as f64 / 1e6
        );
        let _ = writeln!(
            md,
            "| Tool | Settings | Wall, median (s) | Spread | {u} | / best peer | Connections | Bytes per file byte | Machine CPU busy (this run's) | CPU s: tool / server / proxy |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        for c in &r.cells {
            let Some(s) = r.stats(c) else {
                let _ = writeln!(
                    md,
                    "| {} | {} | FAILED ({} of {} runs) | | | | | | | |",
                    c.tool.name(),
                    c.settings,
                    c.failures.len(),
                    c.failures.len() + c.samples.len()
                );
                continue;
            };
            let w = wire(r, c.tool);
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.0} % | {} | {} | {} | {} | {} |",
                c.tool.name(),
                c.settings,
                s.median,
                100.0 * s.spread,
                num(s.rate),
                best.map_or("n/a".to_owned(), |b| format!("{:.2}x", s.rate / b)),
                w.map_or("n/a".to_owned(), |w| format!("{:.0}", w.connections)),
                w.map_or("n/a".to_owned(), |w| format!("{:.3}", w.per_file_byte)),
                busy::row(c),
            );
        }
        for c in &r.cells {
            if let Some(first) = c.failures.first() {
                let _ = writeln!(
                    md,
                    "\n{} failed: {}",
                    c.tool.name(),
                    first.replace('|', "\\|")
                );
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_has_its_own_id_and_the_1_gib_row_the_far_link() {
        let t = table();
        let mut ids: Vec<&str> = t.iter().map(|(w, _)| w.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), t.len());
        for (w, link) in &t {
            assert_eq!(link_of(w), *link);
            assert_eq!(*link == Link::Far, w.data == DataSet::Big, "{}", w.id);
        }
    }

    #[test]
    fn naming_pymatris_runs_both_its_rows() {
        assert_eq!(
            chosen_tools(Some(&[Tool::Pymatris, Tool::Curl])),
            [Tool::Pymatris, Tool::PymatrisAt, Tool::Curl]
        );
        assert_eq!(chosen_tools(Some(&[Tool::PymatrisAt])), [Tool::PymatrisAt]);
        assert_eq!(chosen_tools(None), TOOLS);
    }

    #[test]
    fn a_row_left_out_reads_not_run_and_a_failed_one_failed() {
        let (wl, _) = table().swap_remove(0);
        let mut r = WorkloadResult {
            wl,
            files: 1,
            bytes: 1,
            cells: Vec::new(),
            notes: Vec::new(),
        };
        assert_eq!(summary_rate(&r, Tool::PymatrisAt), "not run");
        r.cells.push(super::super::report::Cell {
            tool: Tool::PymatrisAt,
            settings: String::new(),
            command: String::new(),
            inputs: Vec::new(),
            samples: Vec::new(),
            failures: vec!["exit status 1".to_owned()],
        });
        assert_eq!(summary_rate(&r, Tool::PymatrisAt), "FAILED");
    }

    #[test]
    fn every_row_of_a_wan_table_has_its_header_s_cells() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            wan: WanArgs,
        }
        let links = Links {
            args: Cli::parse_from(["bench"]).wan,
            shapers: HashMap::new(),
        };
        let sample = |secs: f64| super::super::measure::Sample {
            wall: Duration::from_secs_f64(secs),
            cpu: 0.5,
            rss_kib: 1024,
            server_cpu: Some(0.1),
            link: None,
            machine: None,
            inner_wall: None,
        };
        let cell = |tool: Tool, samples, failures| super::super::report::Cell {
            tool,
            settings: "s".to_owned(),
            command: String::new(),
            inputs: Vec::new(),
            samples,
            failures,
        };
        let (wl, _) = table().swap_remove(0);
        let report = Report {
            command: "bench --wan".to_owned(),
            runs: 3,
            date: "today".to_owned(),
            machine: Vec::new(),
            versions: Vec::new(),
            load_before: String::new(),
            load_after: String::new(),
            results: vec![WorkloadResult {
                wl,
                files: 1,
                bytes: 1 << 20,
                cells: vec![
                    cell(
                        Tool::Pymatris,
                        vec![sample(1.0), sample(1.2), sample(0.9)],
                        vec![],
                    ),
                    cell(Tool::Aria2c, vec![sample(2.0)], vec![]),
                    cell(Tool::Curl, vec![], vec!["exit status 7".to_owned()]),
                ],
                notes: Vec::new(),
            }],
            skipped: Vec::new(),
            notes: Vec::new(),
        };
        let md = markdown(&report, &links);
        let mut tables = 0;
        for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let widths: Vec<usize> = table.lines().map(|l| l.matches('|').count()).collect();
            assert!(widths.iter().all(|&w| w == widths[0]), "{table}");
            tables += 1;
        }
        // The links table, the summary and the workload's own.
        assert!(tables >= 2, "{md}");
        assert!(md.contains("| 1.00 | 30 % |"), "{md}");
    }

    #[test]
    fn the_wan_part_replaces_its_own_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.md");
        std::fs::write(&p, "# T\n\nloopback\n").unwrap();
        write_doc(&p, "first").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.starts_with("# T\n\nloopback\n") && s.contains("## WAN bench"));
        assert!(s.contains("first"));
        std::fs::write(&p, format!("{s}\n## After\n")).unwrap();
        write_doc(&p, "second").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains("second") && !s.contains("first") && s.ends_with("## After\n"));
        assert_eq!(s.matches("## WAN bench").count(), 1);
    }
}
