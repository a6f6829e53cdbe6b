//! `cargo xtask bench --only L1`: a long list (issue 18). Every tool gets
//! the same list of `--urls` URLs (200,000 by default), each answering 404
//! from the harness's nginx, as in the first measurement: what is
//! measured is the cost of each URL (requests per second, CPU) and whether
//! memory grows with the list (peak RSS), not bytes. pymatris reads the
//! list with `-i` and logs each URL with `--jsonl`, which is checked (one
//! line per URL, each a `NotFound`) with its peak RSS against the issue's
//! bound; aria2c reads it with `-i` (`--deferred-input`, its setting for
//! long lists), curl with `--parallel` from a `-K` config. Each run is
//! measured by the bench's wrapper; no tool's exit status counts, since
//! every URL fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use pymatris_harness::{Servers, Which};

use super::machine;

/// The workload's id for `--only`.
pub(super) const ID: &str = "L1";

/// Files at once, for every tool.
const PARALLEL: usize = 32;

/// The bound on pymatris's peak RSS, whatever the list's length.
const RSS_BOUND_MIB: f64 = 256.0;

/// Whether `--only PATTERN` asks for this workload (alone).
pub(super) fn selected(pattern: &str) -> bool {
    let p = pattern.trim().to_lowercase();
    p == ID.to_lowercase() || p == "long list"
}

/// One run's figures, from the measuring wrapper.
struct Run {
    tool: &'static str,
    wall: f64,
    cpu: f64,
    rss_kib: u64,
    code: i32,
}

pub(super) fn run(urls: usize, runs: u32, cli: &Path, timeout: Duration) -> anyhow::Result<()> {
    eprintln!("starting nginx…");
    let servers = Servers::start(Which::http_only()).context("starting nginx")?;
    let scratch = tempfile::Builder::new()
        .prefix("pymatris-bench-list-")
        .tempdir()
        .context("creating the bench's temp dir")?;
    let dir = scratch.path();
    let wrapper = dir.join("measure");
    std::fs::copy(std::env::current_exe()?, &wrapper).context("copying the xtask binary")?;
    let (list, config) = (dir.join("list.txt"), dir.join("curl.cfg"));
    let mut text = String::with_capacity(urls * 48);
    let mut curl = String::with_capacity(urls * 56);
    for i in 0..urls {
        let url = servers.http_url(&format!("long-list/gone/{i}"));
        writeln!(text, "{url}")?;
        writeln!(curl, "url = \"{url}\"")?;
    }
    std::fs::write(&list, text)?;
    std::fs::write(&config, curl)?;
    let (out, jsonl) = (dir.join("out"), dir.join("run.jsonl"));
    let p = PARALLEL.to_string();
    let path = |p: &Path| p.display().to_string();
    let tools: Vec<(&'static str, String, Vec<String>)> = vec![
        (
            "pymatris",
            path(cli),
            vec![
                "--quiet".into(),
                "--max-parallel".into(),
                p.clone(),
                "--dir".into(),
                path(&out),
                "-i".into(),
                path(&list),
                "--jsonl".into(),
                path(&jsonl),
            ],
        ),
        (
            "aria2c",
            "aria2c".into(),
            vec![
                "-j".into(),
                p.clone(),
                "--deferred-input=true".into(),
                "--max-tries=1".into(),
                "--console-log-level=error".into(),
                "--summary-interval=0".into(),
                "--download-result=hide".into(),
                "-d".into(),
                path(&out),
                "-i".into(),
                path(&list),
            ],
        ),
        (
            "curl",
            "curl".into(),
            vec![
                "--parallel".into(),
                "--parallel-max".into(),
                p.clone(),
                "--fail".into(),
                "--silent".into(),
                "--remote-name-all".into(),
                "-K".into(),
                path(&config),
            ],
        ),
    ];
    let tools: Vec<_> = (tools.into_iter())
        .filter(|(name, program, _)| {
            let found = *name == "pymatris" || machine::find_in_path(program).is_some();
            if !found {
                eprintln!("{name}: not installed, left out");
            }
            found
        })
        .collect();
    let load_before = machine::load_average();
    let mut done = Vec::new();
    for r in 0..runs as usize {
        for j in 0..tools.len() {
            let (name, program, args) = &tools[(j + r) % tools.len()];
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out)?;
            let _ = std::fs::remove_file(&jsonl);
            let log = dir.join(format!("{name}-{}.log", r + 1));
            let run = measured(name, program, args, &out, &log, &wrapper, timeout)?;
            eprintln!(
                "{ID} run {}/{runs} {name:<9} {:>8.2} s {:>8.0} URLs/s  cpu {:.2} s  rss {:.1} MiB  exit {}",
                r + 1,
                run.wall,
                urls as f64 / run.wall,
                run.cpu,
                run.rss_kib as f64 / 1024.0,
                run.code,
            );
            if *name == "pymatris" {
                check_jsonl(&jsonl, urls)?;
                let mib = run.rss_kib as f64 / 1024.0;
                if mib >= RSS_BOUND_MIB {
                    bail!("pymatris peaked at {mib:.1} MiB (bound {RSS_BOUND_MIB} MiB)");
                }
            }
            done.push(run);
        }
    }
    println!(
        "{}",
        markdown(urls, &done, &tools, &load_before, &machine::load_average())
    );
    Ok(())
}

/// Runs `program` under the measuring wrapper, killed after `timeout`.
fn measured(
    tool: &'static str,
    program: &str,
    args: &[String],
    cwd: &Path,
    log: &Path,
    wrapper: &Path,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let into: PathBuf = log.with_extension("rusage");
    let output = std::fs::File::create(log)?;
    let mut child = Command::new(wrapper)
        .arg("bench")
        .arg("--measure-into")
        .arg(&into)
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .with_context(|| format!("starting {tool}"))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{tool} took over {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // `CODE WALL CPU RSS_KIB`, as `measure::exec_measured` writes it.
    let text = std::fs::read_to_string(&into).with_context(|| format!("{tool}: no figures"))?;
    let f: Vec<&str> = text.split_whitespace().collect();
    let [code, wall, cpu, rss] = f[..] else {
        bail!("{tool}: unexpected figures {text:?}");
    };
    Ok(Run {
        tool,
        code: code.parse()?,
        wall: wall.parse()?,
        cpu: cpu.parse()?,
        rss_kib: rss.parse()?,
    })
}

/// One `--jsonl` line per URL, each a `NotFound` failure.
fn check_jsonl(jsonl: &Path, urls: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(jsonl).context("reading pymatris's --jsonl")?;
    let mut lines = vec![false; urls + 1];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).context("a --jsonl line")?;
        let n = v["line"]
            .as_u64()
            .context("a --jsonl line without its line")? as usize;
        if v["ok"] != false || v["kind"] != "NotFound" || n == 0 || n > urls {
            bail!("unexpected --jsonl line {line}");
        }
        if std::mem::replace(&mut lines[n], true) {
            bail!("list line {n} twice in --jsonl");
        }
    }
    let missing = lines[1..].iter().filter(|seen| !**seen).count();
    if missing > 0 {
        bail!("{missing} of {urls} URLs have no --jsonl line");
    }
    Ok(())
}

/// The results as a Markdown table (medians when several runs).
fn markdown(
    urls: usize,
    runs: &[Run],
    tools: &[(&'static str, String, Vec<String>)],
    load_before: &str,
    load_after: &str,
) -> String {
    let mut md = format!(
        "{ID}: {urls} URLs, each a 404 from nginx, {PARALLEL} at once ({}; load {load_before} before, {load_after} after)\n\n\
         | tool | wall s | URLs/s | CPU s | peak RSS MiB | exit |\n|---|---:|---:|---:|---:|---:|\n",
        machine::now()
    );
    for (name, _, _) in tools {
        let mut mine: Vec<&Run> = runs.iter().filter(|r| r.tool == *name).collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let median = mine[mine.len() / 2];
        let rss = mine.iter().map(|r| r.rss_kib).max().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
            median.wall,
            urls as f64 / median.wall,
            median.cpu,
            rss as f64 / 1024.0,
            median.code
        );
    }
    md
}
