//! `cargo xtask bench`: pymatris against aria2c, curl, wget, lftp and
//! OpenSSH sftp on the harness's servers (issue 4).
//!
//! The servers (nginx, vsftpd, sshd) run on loopback with private configs;
//! the data is created once per bench run; each workload runs every tool
//! that can do it, alternating tools run by run, each run into an empty
//! directory, under a wrapper that counts the CPU and peak RSS of every
//! process the tool starts; every file is compared with its source
//! afterwards. `--smoke` is the CI variant: one small workload, pymatris
//! and curl, one run. docs/benchmarks.md describes the method.

mod busy;
mod data;
mod defaults;
mod invocation;
mod long_list;
mod machine;
mod measure;
mod report;
mod setup;
mod tools;
mod tree;
mod wan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use pymatris_harness::{Servers, Shaper, Which};

use self::data::{Data, DataFile, Proto, Workload};
use self::defaults::Defaults;
use self::measure::INTERRUPTED;
use self::report::{Cell, Report, WorkloadResult};
use self::setup::{
    Probe, build_dev_cli, command_line, install_python_package, installed, parse_tool, probe,
    select_workloads,
};
use self::tools::{Ctx, Tool};

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Runs of each tool on each workload.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) runs: u32,
    /// Only the workloads matching this: an id (`W4`), or text of the title
    /// or scheme (`sftp`, `16 KiB`); comma-separated for several. `L1`:
    /// the long list alone (`--urls` 404s), not part of a full run.
    #[arg(long)]
    pub(crate) only: Option<String>,
    /// With `--only L1`: how many URLs the list holds.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) urls: usize,
    /// The CI smoke run: 8 x 1 MiB over HTTP, pymatris and curl, one run,
    /// with a dev build of the CLI; fails if any byte is wrong.
    #[arg(long, conflicts_with = "only")]
    pub(crate) smoke: bool,
    /// With --smoke: use a release build of the CLI, as the full bench does.
    #[arg(long, requires = "smoke")]
    pub(crate) release: bool,
    /// Write the results into this Markdown file (between its
    /// `bench:begin`/`bench:end` markers). Default: docs/benchmarks.md for a
    /// full run (no --only, --smoke, --quick or --pymatris-arg); otherwise
    /// nothing is written.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Data 16 times smaller (64 MiB instead of 1 GiB, 32 x 1 MiB instead of
    /// 32 x 16 MiB), to check the harness quickly; nothing is written to
    /// the docs unless --out is given.
    #[arg(long, conflicts_with = "smoke")]
    pub(crate) quick: bool,
    /// Run the workloads of protocols pymatris does not have yet anyway,
    /// for the peers' numbers (without pymatris).
    #[arg(long, conflicts_with = "smoke")]
    pub(crate) with_unbuilt: bool,
    /// An extra argument for every pymatris run (repeatable), to try a
    /// setting: `--pymatris-arg=--max-splits=1`. Nothing is written to the
    /// docs unless --out is given.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub(crate) pymatris_arg: Vec<String>,
    /// Run this pymatris binary instead of building one.
    #[arg(long, value_name = "FILE")]
    pub(crate) cli: Option<PathBuf>,
    /// Another pymatris binary to run beside the one under test, in the
    /// same run, as the tool "pymatris (baseline)": to compare two builds
    /// (`cp target/release/pymatris /tmp/before`, change, `--baseline
    /// /tmp/before`). Nothing is written to the docs unless --out is given.
    #[arg(long, value_name = "FILE", conflicts_with = "smoke")]
    baseline: Option<PathBuf>,
    /// Only these tools (comma-separated: pymatris, python, aria2c, curl, wget,
    /// lftp, sftp, sftp-gcm, cp), to compare two builds or settings
    /// quickly. Nothing is written to the docs unless --out is given.
    #[arg(
        long,
        value_name = "LIST",
        conflicts_with = "smoke",
        value_delimiter = ',',
        value_parser = parse_tool
    )]
    tools: Option<Vec<Tool>>,
    /// Kill a run that takes longer than this many seconds (counted failed).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub(crate) timeout: u64,
    /// The WAN bench (issue 14): its own workloads through a shaping proxy
    /// in front of each server (delay, per-connection caps: the --wan-*
    /// flags), peers at a fixed number of connections; reports connections
    /// and bytes per file byte too. A full run writes the WAN part of
    /// docs/benchmarks.md. With --quick, files 16 times smaller.
    #[arg(long, conflicts_with_all = ["smoke", "baseline"])]
    pub(crate) wan: bool,
    #[command(flatten)]
    pub(crate) wan_link: wan::WanArgs,
    /// Internal: be the measuring wrapper of one run (see `measure.rs`).
    #[arg(long, hide = true, value_name = "FILE")]
    pub(crate) measure_into: Option<PathBuf>,
    /// Internal: the command the wrapper runs.
    #[arg(last = true, hide = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if let Some(into) = &args.measure_into {
        return measure::exec_measured(into, &args.command);
    }
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_owned();
    if args.only.as_deref().is_some_and(long_list::selected) {
        let cli = match &args.cli {
            Some(p) => std::fs::canonicalize(p)?,
            None => crate::demo::build_cli()?,
        };
        let timeout = Duration::from_secs(args.timeout);
        return long_list::run(args.urls, args.runs, &cli, timeout);
    }
    let runs = if args.smoke { 1 } else { args.runs };
    let workloads = select_workloads(&args)?;
    let tools: Vec<Tool> = if args.smoke {
        vec![Tool::Pymatris, Tool::Curl]
    } else if args.wan {
        wan::chosen_tools(args.tools.as_deref())
    } else {
        let mut tools = args.tools.clone().unwrap_or_else(|| tools::ALL.to_vec());
        if args.baseline.is_some() {
            tools.insert(1.min(tools.len()), Tool::Baseline);
        }
        tools
    };
    let doc = args.out.clone().or_else(|| {
        (!args.smoke
            && !args.quick
            && args.only.is_none()
            && args.tools.is_none()
            && args.baseline.is_none()
            && args.pymatris_arg.is_empty())
        .then(|| root.join("docs").join("benchmarks.md"))
    });

    let cli = match &args.cli {
        Some(p) => std::fs::canonicalize(p).with_context(|| format!("--cli {}", p.display()))?,
        None if args.smoke && !args.release => build_dev_cli(&root)?,
        None => {
            eprintln!("building the release CLI…");
            crate::demo::build_cli()?
        }
    };
    let defaults = Defaults::from_help(&cli)?;
    let baseline = match &args.baseline {
        Some(p) => {
            Some(std::fs::canonicalize(p).with_context(|| format!("--baseline {}", p.display()))?)
        }
        None => None,
    };

    let (mut tools, mut missing) = installed(tools);
    // Not built for workloads it cannot run (the mirrors).
    let python = if tools.contains(&Tool::Python)
        && workloads.iter().any(|w| Tool::Python.supports_workload(w))
    {
        eprintln!("building and installing the Python package…");
        match install_python_package(&root) {
            Ok(python) => Some(python),
            Err(e) => {
                tools.retain(|&t| t != Tool::Python);
                missing.push(format!(
                    "{}: the package did not install ({e:#}): left out",
                    Tool::Python.name()
                ));
                None
            }
        }
    } else {
        None
    };
    let mut protos: Vec<Proto> = Vec::new();
    for w in &workloads {
        if !protos.contains(&w.proto) {
            protos.push(w.proto);
        }
    }
    let which = Which {
        http: protos.contains(&Proto::Http) || protos.contains(&Proto::Https),
        ftp: protos.contains(&Proto::Ftp),
        sftp: protos.contains(&Proto::Sftp),
    };
    eprintln!("starting the servers…");
    let servers = Servers::start(which)
        .context("starting the local servers (run .ci/run once to install them)")?;
    // Held until the bench ends; restores the setting when dropped.
    let page_reporting = measure::PageReportingPause::start();
    let scratch = tempfile::Builder::new()
        .prefix("pymatris-bench-")
        .tempdir()
        .context("creating the bench's temp dir")?;
    std::fs::create_dir(scratch.path().join("logs"))?;
    // The measuring wrapper is this binary; a copy, in case cargo replaces
    // the original during the run.
    let wrapper = scratch.path().join("measure");
    std::fs::copy(
        std::env::current_exe().context("finding the xtask binary")?,
        &wrapper,
    )
    .context("copying the xtask binary")?;
    let host_key_sha256 = if which.sftp {
        match machine::host_key_sha256(servers.ssh_known_hosts()) {
            Ok(h) => Some(h),
            Err(e) => {
                missing.push(format!("curl over SFTP: no host key fingerprint ({e:#})"));
                None
            }
        }
    } else {
        None
    };
    let links = if args.wan {
        Some(wan::Links::start(
            &servers,
            &args.wan_link,
            &workloads,
            scratch.path(),
        )?)
    } else {
        None
    };
    let ctx = Ctx {
        link: None,
        meter: None,
        peers_at: args.wan.then_some(args.wan_link.wan_connections),
        servers: &servers,
        cli: &cli,
        baseline: baseline.as_deref(),
        defaults: &defaults,
        scratch: scratch.path(),
        keep_outputs: machine::fs_type(scratch.path()).is_none_or(|fs| fs != "tmpfs"),
        host_key_sha256,
        extra_args: &args.pymatris_arg,
        python: python.as_deref(),
    };

    let mut report = Report {
        command: command_line(&args, runs)
            + &links.as_ref().map_or_else(String::new, wan::Links::flags),
        runs,
        date: machine::now(),
        machine: {
            let mut m = machine::machine(scratch.path());
            m.push((
                "free page reporting to the hypervisor".to_owned(),
                match &page_reporting {
                    Ok(Some(pause)) => pause.describe(),
                    Ok(None) => "none (no page_reporting module)".to_owned(),
                    Err(e) => format!("left on: {e}"),
                },
            ));
            m.push((
                format!("outputs of {} files or more", measure::MANY_FILES),
                match ctx.keep_outputs {
                    true => "set aside until the bench ends (a disk, where creates scan past files just deleted)",
                    false => "deleted before the next run (in memory: pages used again)",
                }
                .to_owned(),
            ));
            m
        },
        versions: machine::versions(&cli, &tools),
        load_before: machine::load_average(),
        notes: missing,
        ..Report::default()
    };

    let mut probes: HashMap<Proto, Probe> = HashMap::new();
    for &p in &protos {
        let probe = probe(&ctx, p, &wrapper);
        match &probe {
            Probe::Works => {}
            Probe::NotBuilt(why) => eprintln!("{}: not in this build: {why}", p.scheme()),
            Probe::Failed(why) => eprintln!("{}: the probe download failed: {why}", p.scheme()),
        }
        probes.insert(p, probe);
    }

    let mut data = Data::new(if args.quick { 16 } else { 1 });
    if args.quick {
        report.notes.push(
            "--quick: every file 16 times smaller than the titles say (the 16 KiB files excepted)"
                .to_owned(),
        );
    }
    let timeout = Duration::from_secs(args.timeout);
    for wl in &workloads {
        match probes.get(&wl.proto) {
            Some(Probe::NotBuilt(why)) if args.with_unbuilt => {
                report.notes.push(format!(
                    "{} {}: pymatris cannot do {}:// yet ({why}); peers only",
                    wl.id,
                    wl.title,
                    wl.proto.scheme()
                ));
            }
            Some(Probe::NotBuilt(why)) => {
                report.skipped.push(format!(
                    "{} {}: pymatris cannot do {}:// yet ({why})",
                    wl.id,
                    wl.title,
                    wl.proto.scheme()
                ));
                continue;
            }
            Some(Probe::Failed(why)) => report.notes.push(format!(
                "{} {}: the one-file probe of {}:// failed before the runs: {why}",
                wl.id,
                wl.title,
                wl.proto.scheme()
            )),
            _ => {}
        }
        let files = data.files(&servers, wl.data);
        let tools: Vec<Tool> = tools
            .iter()
            .copied()
            .filter(|&t| {
                !matches!(
                    t,
                    Tool::Pymatris | Tool::PymatrisAt | Tool::Python | Tool::Baseline
                ) || !matches!(probes.get(&wl.proto), Some(Probe::NotBuilt(_)))
            })
            .collect();
        let link = links.as_ref().and_then(|l| l.of(wl));
        let ctx = Ctx {
            link: link.map(|(_, endpoint)| endpoint.clone()),
            meter: link.map(|(shaper, _)| shaper),
            ..ctx.clone()
        };
        let result = run_workload(&ctx, wl, &files, &tools, runs, timeout, &wrapper)?;
        report.results.push(result);
    }
    report.load_after = machine::load_average();

    let md = match &links {
        Some(links) => wan::markdown(&report, links),
        None => report.markdown(),
    };
    println!("{md}");
    if let Some(doc) = doc {
        if args.wan {
            wan::write_doc(&doc, &md)?;
        } else {
            report::write_doc(&doc, &md, DOC_TEMPLATE)?;
        }
        eprintln!("wrote {}", doc.display());
    }
    let failed = report.failed_runs();
    if failed > 0 {
        bail!("{failed} run(s) failed (see the tables above)");
    }
    Ok(())
}

/// Shortens the paths of a command line for the docs: no path of the
/// machine the bench ran on is printed.
fn shorten(s: &str, ctx: &Ctx<'_>) -> String {
    let mut paths = vec![
        (ctx.cli, "pymatris"),
        (ctx.scratch, "$TMP"),
        (ctx.servers.root_dir(), "$SRV"),
    ];
    paths.extend(ctx.baseline.map(|p| (p, "$BASELINE")));
    paths.extend(ctx.python.map(|p| (p, "python")));
    shorten_paths(s, &paths)
}

/// `s` with each of `paths` replaced by its short name.
fn shorten_paths(s: &str, paths: &[(&Path, &str)]) -> String {
    paths.iter().fold(s.to_owned(), |s, (path, short)| {
        s.replace(&path.display().to_string(), short)
    })
}

fn run_workload(
    ctx: &Ctx<'_>,
    wl: &Workload,
    files: &[DataFile],
    tools: &[Tool],
    runs: u32,
    timeout: Duration,
    wrapper: &Path,
) -> anyhow::Result<WorkloadResult> {
    let out = ctx.scratch.join("out");
    let mut result = WorkloadResult {
        wl: wl.clone(),
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
        cells: Vec::new(),
        notes: Vec::new(),
    };
    let mut invocations = Vec::new();
    for &tool in tools.iter().filter(|t| t.supports_workload(wl)) {
        if tool == Tool::Curl && wl.proto == Proto::Sftp && ctx.host_key_sha256.is_none() {
            continue;
        }
        let inv = ctx.invocation(tool, wl, files, &out)?;
        inv.write_inputs()?;
        let mut command = String::from(&inv.program);
        for a in &inv.args {
            command.push(' ');
            command.push_str(&invocation::quote(a));
        }
        result.cells.push(Cell {
            tool,
            settings: inv.settings.clone(),
            command: report::abbreviate(&shorten(&command, ctx)),
            inputs: inv
                .inputs
                .iter()
                .map(|(p, c)| {
                    (
                        shorten(&p.display().to_string(), ctx),
                        shorten(&report::excerpt(c), ctx),
                    )
                })
                .collect(),
            samples: Vec::new(),
            failures: Vec::new(),
        });
        invocations.push(inv);
    }
    let k = invocations.len();
    // The server's CPU per run: nginx runs as one process; vsftpd forks a
    // process per login and reaps it. sshd is left out: what its listener
    // accumulates was implausibly low (0.01-0.02 s for 67 MB it must
    // encrypt), so not every session's CPU reaches it.
    let server_name = match wl.proto {
        Proto::Http | Proto::Https => Some("nginx"),
        Proto::Ftp => Some("vsftpd"),
        Proto::Sftp => None,
    };
    let server_pid = ctx
        .servers
        .server_pids()
        .into_iter()
        .find_map(|(name, pid)| (Some(name) == server_name).then_some(pid));
    measure::fresh_dir(&out)?;
    measure::warm_up_disk(files, &out)?;
    measure::keep_or_clean(ctx, wl, files, &out, "warm-up")?;
    for run in 0..runs as usize {
        // Alternate: run r starts with the r-th tool, so no tool always
        // follows the same one.
        for j in 0..k {
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            let i = (j + run) % k;
            let (inv, cell) = (&invocations[i], &mut result.cells[i]);
            measure::fresh_dir(&out)?;
            measure::warm(files);
            measure::settle();
            let log = ctx.scratch.join("logs").join(format!(
                "{}-{}-{}.log",
                wl.id.to_lowercase(),
                cell.tool.slug(),
                run + 1
            ));
            let server = server_pid.filter(|_| cell.tool != Tool::Cp);
            let server_before = server.and_then(|pid| {
                measure::wait_childless(pid, Duration::from_secs(5));
                measure::process_cpu(pid)
            });
            let meter = ctx.meter;
            let link_before = meter.map(Shaper::counters);
            let machine_before = meter.and_then(|_| busy::mark());
            let outcome = measure::run_timed(inv, &out, &log, timeout, wrapper)
                .map(|s| busy::after(s, machine_before))
                .and_then(|s| measure::verify(&out, files).map(|()| s))
                .map(|mut s| {
                    s.link = meter
                        .zip(link_before)
                        .map(|(m, before)| m.counters().since(&before));
                    s.server_cpu = server.zip(server_before).and_then(|(pid, before)| {
                        measure::wait_childless(pid, Duration::from_secs(5));
                        Some(measure::process_cpu(pid)? - before)
                    });
                    s
                });
            measure::keep_or_clean(
                ctx,
                wl,
                files,
                &out,
                &format!("{}-{}", cell.tool.slug(), run + 1),
            )?;
            match outcome {
                Ok(s) => {
                    let secs = s.wall.as_secs_f64();
                    let rate = if wl.per_file {
                        format!("{:.0} files/s", files.len() as f64 / secs)
                    } else {
                        format!("{:.0} MB/s", result.bytes as f64 / 1e6 / secs)
                    };
                    let server = s
                        .server_cpu
                        .map_or_else(String::new, |c| format!("  server cpu {c:.2} s"));
                    let inner = s.inner_wall.map_or_else(String::new, |d| {
                        format!("  download() {:.3} s", d.as_secs_f64())
                    });
                    eprintln!(
                        "{} run {}/{runs} {:<22} {secs:>8.3} s {rate:>14}  cpu {:.2} s  rss {:.1} MiB{server}{inner}",
                        wl.id,
                        run + 1,
                        cell.tool.name(),
                        s.cpu,
                        s.rss_kib as f64 / 1024.0,
                    );
                    cell.samples.push(s);
                }
                Err(e) => {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        bail!("interrupted");
                    }
                    eprintln!(
                        "{} run {}/{runs} {:<22} FAILED: {e}",
                        wl.id,
                        run + 1,
                        cell.tool.name()
                    );
                    cell.failures.push(shorten(&e, ctx));
                }
            }
        }
    }
    if let Some(note) = result.python_split() {
        eprintln!("{} {note}", wl.id);
        result.notes.push(note);
    }
    Ok(result)
}

/// `docs/benchmarks.md` when it does not exist yet; `{GENERATED}` becomes
/// the marked, generated part. Once it exists, only that part is replaced.
const DOC_TEMPLATE: &str = r#"# Benchmarks

`cargo xtask bench` compares pymatris with aria2c, curl, wget, lftp and
OpenSSH's sftp on this machine's loopback (issue 4). Each full run rewrites
the part between the `bench:begin` and `bench:end` markers; the rest of this
page is kept.

{GENERATED}

## 4. Profiling notes

To be written: where the time goes for W1, W4 and W6, and the changes that
followed.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_in_the_docs_names_no_path_of_the_machine() {
        let (base, py) = (
            Path::new("/x/scratch/pre14"),
            Path::new("/x/venv/bin/python"),
        );
        let line = "/x/scratch/pre14 --quiet -i /t/w3.list; /x/venv/bin/python /t/api.py";
        let paths = [
            (base, "$BASELINE"),
            (py, "python"),
            (Path::new("/t"), "$TMP"),
        ];
        assert_eq!(
            shorten_paths(line, &paths),
            "$BASELINE --quiet -i $TMP/w3.list; python $TMP/api.py"
        );
    }
}
