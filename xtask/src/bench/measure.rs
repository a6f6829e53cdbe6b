//! One timed run of one command, and the check of what it wrote.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use super::data::{DataFile, Workload};
use super::invocation::Invocation;
use super::tools::Ctx;
use crate::demo::same_file_contents;

/// Set by the Ctrl-C handler: the current run is killed and the bench stops.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Environment variables that would send a tool through a proxy.
const PROXY_VARS: [&str; 10] = [
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// What one successful run cost.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    /// From spawning the tool to its exit.
    pub(super) wall: Duration,
    /// User + system CPU seconds of the tool and of every process it
    /// started, orphans included.
    pub(super) cpu: f64,
    /// Peak resident set of the largest of those processes, KiB.
    pub(super) rss_kib: u64,
    /// CPU seconds the server spent in the run (set by the caller; `None`
    /// for `cp` or when it could not be read).
    pub(super) server_cpu: Option<f64>,
    /// What the shaping proxy carried in the run (`--wan`; set by the
    /// caller).
    pub(super) link: Option<pymatris_harness::Counters>,
    /// How busy the machine was during the run (`--wan`; set by the
    /// caller).
    pub(super) machine: Option<super::busy::Machine>,
    /// The time the tool says its transfer took, when it says so: the
    /// Python API's `download()` call, without the interpreter's start.
    pub(super) inner_wall: Option<Duration>,
}

/// The line of `pymatris_api.py` that gives its `download()` time.
const INNER_WALL: &str = "download() wall: ";

/// The `download()` time a run's log reports, if any.
fn inner_wall(log: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(log).ok()?;
    let secs = text.lines().find_map(|l| l.strip_prefix(INNER_WALL))?;
    Duration::try_from_secs_f64(secs.strip_suffix(" s")?.parse().ok()?).ok()
}

/// Waits (up to `limit`) until process `pid` has no children left: the
/// per-connection processes of vsftpd and sshd end a little after the
/// client, and their CPU reaches the server's counters when reaped.
pub(super) fn wait_childless(pid: u32, limit: Duration) {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let start = Instant::now();
    while start.elapsed() < limit {
        match std::fs::read_to_string(&path) {
            Ok(children) if !children.trim().is_empty() => {
                thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// User + system CPU seconds of process `pid` and of the children it has
/// reaped (vsftpd's and sshd's per-connection processes), from
/// `/proc/PID/stat`.
pub(super) fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": utime, stime, cutime and cstime are the
    // 14th to 17th fields, the 12th to 15th after the ")".
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    // In USER_HZ, which Linux fixes at 100 for this interface.
    Some(ticks as f64 / 100.0)
}

/// Runs `inv` in `cwd` under the measuring wrapper (`WRAPPER bench
/// --measure-into FILE -- PROGRAM ARGS`, see [`exec_measured`]), its output
/// to `log`, killing it (its process group) after `timeout`.
pub(super) fn run_timed(
    inv: &Invocation,
    cwd: &Path,
    log: &Path,
    timeout: Duration,
    wrapper: &Path,
) -> Result<Sample, String> {
    use std::os::unix::process::CommandExt as _;

    let measured = log.with_extension("rusage");
    let _ = std::fs::remove_file(&measured);
    let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(wrapper);
    cmd.arg("bench")
        .arg("--measure-into")
        .arg(&measured)
        .arg("--")
        .arg(&inv.program)
        .args(&inv.args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: a timeout kills the tool and its children too, and
        // the terminal's Ctrl-C reaches only the bench, which then does so.
        .process_group(0);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }

    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", wrapper.display()))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<ExitStatus>>();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(done) => break done,
            Err(RecvTimeoutError::Timeout) => {
                let interrupted = INTERRUPTED.load(Ordering::SeqCst);
                if interrupted || start.elapsed() > timeout {
                    kill_group(pid);
                    let _ = rx.recv();
                    return Err(if interrupted {
                        "interrupted".to_owned()
                    } else {
                        format!("killed after {timeout:?}")
                    });
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Err("lost the child".to_owned()),
        }
    };
    let status = status.map_err(|e| format!("waiting for {}: {e}", inv.program))?;
    if !status.success() {
        return Err(format!(
            "the measuring wrapper failed ({status}): {}",
            log_tail(log)
        ));
    }
    let text = std::fs::read_to_string(&measured)
        .map_err(|e| format!("reading {}: {e}", measured.display()))?;
    let m = Measured::parse(&text).ok_or_else(|| format!("unexpected wrapper output {text:?}"))?;
    if m.code != 0 {
        let how = if m.code < 0 {
            format!("killed by signal {}", -m.code)
        } else {
            format!("exit status {}", m.code)
        };
        return Err(format!("{how}: {}", log_tail(log)));
    }
    Ok(Sample {
        server_cpu: None,
        link: None,
        machine: None,
        inner_wall: inner_wall(log),
        wall: Duration::from_secs_f64(m.wall),
        cpu: m.cpu,
        rss_kib: m.rss_kib,
    })
}

fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// What the wrapper writes: `CODE WALL CPU RSS_KIB` (a negative code is a
/// signal).
#[derive(Debug, PartialEq)]
struct Measured {
    code: i32,
    wall: f64,
    cpu: f64,
    rss_kib: u64,
}

impl Measured {
    fn parse(text: &str) -> Option<Measured> {
        let mut f = text.split_whitespace();
        let m = Measured {
            code: f.next()?.parse().ok()?,
            wall: f.next()?.parse().ok()?,
            cpu: f.next()?.parse().ok()?,
            rss_kib: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some(m)
    }
}

/// The measuring wrapper, run as `xtask bench --measure-into FILE --
/// PROGRAM ARGS` in a process of its own: it becomes a child subreaper, runs
/// the command, then reaps every process the command left behind (lftp's
/// ssh, for one, outlives lftp and would escape a plain `wait4`), so that
/// its `RUSAGE_CHILDREN` holds the CPU of the whole tree and the peak RSS of
/// its largest process. Writes `CODE WALL CPU RSS_KIB` to FILE.
pub(super) fn exec_measured(into: &Path, command: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt as _;

    use anyhow::Context as _;
    use nix::errno::Errno;
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::wait::waitpid;

    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let (program, args) = command.split_first().context("no command to measure")?;
    let start = Instant::now();
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("running {program}"))?;
    let wall = start.elapsed();
    // Every orphan of the tool is now our child: wait for them all.
    loop {
        match waitpid(None::<nix::unistd::Pid>, None) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => break,
            Err(e) => return Err(e).context("reaping the tool's processes"),
        }
    }
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let cpu = secs(usage.user_time()) + secs(usage.system_time());
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1);
    std::fs::write(
        into,
        format!(
            "{code} {:.6} {cpu:.6} {}\n",
            wall.as_secs_f64(),
            usage.max_rss()
        ),
    )
    .with_context(|| format!("writing {}", into.display()))
}

/// The last lines of a log, for a failure message.
pub(super) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    let mut tail: String = tail.chars().take(400).collect();
    if tail.is_empty() {
        tail = "(no output)".to_owned();
    }
    tail
}

/// Every expected file in `out`, byte for byte equal to its source, and
/// nothing else there (no leftover part or control file).
/// Every file under `out` (a tree's included), by its `/`-separated path
/// below it; a directory holding nothing counts as a file.
fn all_files(out: &Path) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut todo = vec![out.to_owned()];
    while let Some(dir) = todo.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        let mut empty = true;
        for e in entries.filter_map(Result::ok) {
            empty = false;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(out) {
                found.push(rel.to_string_lossy().into_owned());
            }
        }
        if empty && dir != out {
            found.push(
                dir.strip_prefix(out)
                    .unwrap_or(&dir)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    Ok(found)
}

pub(super) fn verify(out: &Path, files: &[DataFile]) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut bad = 0usize;
    for f in files {
        let got = out.join(&f.name);
        match same_file_contents(&f.source, &got) {
            Ok(true) => {}
            Ok(false) => {
                bad += 1;
                if problems.len() < 3 {
                    let len = std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0);
                    problems.push(format!(
                        "{} differs from its source ({len} of {} bytes)",
                        f.name, f.size
                    ));
                }
            }
            Err(e) => {
                bad += 1;
                if problems.len() < 3 {
                    problems.push(format!("{}: {e:#}", f.name));
                }
            }
        }
    }
    let expected: HashSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut extra: Vec<String> = all_files(out)?
        .into_iter()
        .filter(|n| !expected.contains(n.as_str()))
        .collect();
    extra.sort();
    if bad == 0 && extra.is_empty() {
        return Ok(());
    }
    let mut msg = String::new();
    if bad > 0 {
        msg = format!(
            "{bad} of {} files wrong or missing: {}",
            files.len(),
            problems.join("; ")
        );
    }
    if !extra.is_empty() {
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        let shown: Vec<&str> = extra.iter().take(3).map(String::as_str).collect();
        msg.push_str(&format!(
            "{} unexpected files left: {}",
            extra.len(),
            shown.join(", ")
        ));
    }
    Err(msg)
}

/// From this many files on, a run's output on a disk is set aside until
/// the bench ends instead of deleted before the next run. On ext4 without
/// a journal (the disk of the recorded runs), creating a file scans past
/// every inode of its block group freed in the last minute (five while
/// the inode table is dirty), and the next run's directory lands in the
/// same group: with each run's 2000 files deleted, W4's creates,
/// whichever tool made them, became mostly that scan (`recently_deleted`
/// in `perf`), slower run after run (`docs/benchmarks.md`, "Figures
/// behind the code").
///
/// On a tmpfs there is no such scan, and outputs set aside cost more
/// than they spare: each run's bytes then go to memory never written
/// since the machine gave it back to the hypervisor (free page
/// reporting, paused only for the bench), which backs it again page by
/// page on first touch. On this machine a `cp` of the mirror tree (231.5
/// MB) took 0.58 s into such memory and 0.19-0.27 s into memory a deleted
/// copy had just used, and the mirror workloads' `cp` row took 0.86 s run
/// after run: a cost of every tool alike, per byte, that hid their
/// differences and moved with the memory the run happened to get.
pub(super) const MANY_FILES: usize = 100;

/// Deletes a run's output, or sets it aside (see [`MANY_FILES`]).
pub(super) fn keep_or_clean(
    ctx: &Ctx<'_>,
    wl: &Workload,
    files: &[DataFile],
    out: &Path,
    tag: &str,
) -> anyhow::Result<()> {
    if ctx.keep_outputs && files.len() >= MANY_FILES {
        let aside = ctx
            .scratch
            .join("kept")
            .join(format!("{}-{tag}", wl.id.to_lowercase()));
        set_aside(out, &aside)
    } else {
        clean(out);
        Ok(())
    }
}

/// An empty directory at `path` (removed first if there).
pub(super) fn fresh_dir(path: &Path) -> anyhow::Result<PathBuf> {
    if path.exists() {
        std::fs::remove_dir_all(path)?;
    }
    std::fs::create_dir_all(path)?;
    Ok(path.to_owned())
}

/// Moves a run's output to `aside` (a rename: nothing is freed until the
/// bench's temp dir goes).
pub(super) fn set_aside(path: &Path, aside: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if let Some(parent) = aside.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(path, aside)?;
    Ok(())
}

/// Removes a run's output.
pub(super) fn clean(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
}

/// Reads every source file once before a run, so that the servers serve
/// it from the page cache in every run, the first included, even where
/// proactive reclaim (DAMON's `pageout`, on in some VMs) evicts cold pages.
pub(super) fn warm(files: &[DataFile]) {
    use std::io::Read as _;
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        if let Ok(mut file) = File::open(&f.source) {
            while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// Copies the workload's files into `out`, unmeasured, before its first
/// run. The first writes to a disk after the bench created its data cost
/// up to three times more than the next ones (`cp` of 1 GiB: 0.95 s, then
/// 0.31-0.48 s; the block allocator warming up), and would otherwise fall
/// on whichever tool runs first.
pub(super) fn warm_up_disk(files: &[DataFile], out: &Path) -> anyhow::Result<()> {
    for f in files {
        let to = out.join(&f.name);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(&f.source, to)?;
    }
    Ok(())
}

/// Free page reporting paused for the bench's lifetime (restored on drop).
///
/// In a VM whose balloon device has free page reporting (this one), the
/// guest hands pages it frees back to the hypervisor, and touching them
/// again costs a fault in the host, invisible in the guest but for slow
/// memory copies. Each run frees its output's page cache and the next
/// run's writes get those pages, so the runs of every tool swung at
/// random; with reporting paused they agree (`docs/benchmarks.md`,
/// "Figures behind the code").
pub(super) struct PageReportingPause {
    previous: String,
}

/// Linux's `page_reporting` module: pages are reported from this order on;
/// one above the largest order (10) reports none.
const PAGE_REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

impl PageReportingPause {
    /// `Ok(None)` when the machine reports no free pages (no such module).
    pub(super) fn start() -> Result<Option<PageReportingPause>, String> {
        let Ok(previous) = std::fs::read_to_string(PAGE_REPORTING_ORDER) else {
            return Ok(None);
        };
        std::fs::write(PAGE_REPORTING_ORDER, "11").map_err(|e| {
            format!("cannot pause free page reporting ({PAGE_REPORTING_ORDER}: {e})")
        })?;
        Ok(Some(PageReportingPause {
            previous: previous.trim().to_owned(),
        }))
    }

    /// For the report.
    pub(super) fn describe(&self) -> String {
        format!(
            "paused during the run (`page_reporting_order` {} -> 11, restored after)",
            self.previous
        )
    }
}

impl Drop for PageReportingPause {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(PAGE_REPORTING_ORDER, &self.previous) {
            eprintln!(
                "cannot restore {PAGE_REPORTING_ORDER} to {}: {e}",
                self.previous
            );
        }
    }
}

/// Flushes every dirty page of the machine before a run, so that it starts
/// with none of the writeback of the run before it (or of other work).
pub(super) fn settle() {
    let _ = Command::new("sync").status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_wrapper_line() {
        assert_eq!(
            Measured::parse("0 1.500000 0.750000 20480\n"),
            Some(Measured {
                code: 0,
                wall: 1.5,
                cpu: 0.75,
                rss_kib: 20480
            })
        );
        assert_eq!(Measured::parse("-9 1 2 3").map(|m| m.code), Some(-9));
        assert_eq!(Measured::parse("0 1 2"), None);
    }

    #[test]
    fn reads_the_download_time_the_python_script_prints() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w4-python-1.log");
        std::fs::write(&log, "a warning\ndownload() wall: 0.250000 s\n").unwrap();
        assert_eq!(inner_wall(&log), Some(Duration::from_millis(250)));
        std::fs::write(&log, "curl: nothing of the kind\n").unwrap();
        assert_eq!(inner_wall(&log), None);
    }

    #[test]
    fn a_wrong_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("out"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let source = src.join("a.bin");
        std::fs::write(&source, b"abcdef").unwrap();
        let files = [DataFile {
            rel: "a.bin".to_owned(),
            name: "a.bin".to_owned(),
            source,
            size: 6,
        }];
        assert!(
            verify(&out, &files)
                .unwrap_err()
                .contains("1 of 1 files wrong or missing")
        );
        std::fs::write(out.join("a.bin"), b"abcdeX").unwrap();
        assert!(verify(&out, &files).unwrap_err().contains("differs"));
        std::fs::write(out.join("a.bin"), b"abcdef").unwrap();
        assert_eq!(verify(&out, &files), Ok(()));
        std::fs::write(out.join("a.bin.part"), b"").unwrap();
        assert!(verify(&out, &files).unwrap_err().contains("unexpected"));
    }
}
