//! What the bench knows of the machine it runs on: the hardware, the load,
//! the tools' versions and where they are; kept apart from the tables
//! (`report.rs`) and the command lines (`tools.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::tools::Tool;

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `/proc/loadavg`'s first three fields.
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".to_owned())
}

/// `date -u`, as `2026-11-26 08:00 UTC`.
pub(super) fn now() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown date".to_owned())
}

/// nproc, CPU, memory, kernel, OS, and the file system of `scratch`.
pub(super) fn machine(scratch: &Path) -> Vec<(String, String)> {
    let mut m = Vec::new();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    m.push(("nproc".to_owned(), nproc.to_string()));
    m.push((
        "CPU".to_owned(),
        proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".to_owned()),
    ));
    let mem = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1u64 << 20) as f64)
        });
    m.push(("memory".to_owned(), mem));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    m.push(("kernel".to_owned(), kernel));
    if let Some(os) = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
    {
        m.push(("OS".to_owned(), os));
    }
    let fs = fs_type(scratch).unwrap_or_else(|| "unknown".to_owned());
    // The docs name no path of the machine: the variable, when set.
    let place = match std::env::var_os("TMPDIR") {
        Some(_) => "`$TMPDIR`".to_owned(),
        None => std::env::temp_dir().display().to_string(),
    };
    m.push((
        "disk".to_owned(),
        format!("{fs}; data and outputs under {place} (servers read from the page cache)"),
    ));
    m
}

/// The type of the file system `dir` is on (`ext4`, `tmpfs`, ...).
pub(super) fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.display().to_string();
    first_line("findmnt", &["-n", "-o", "FSTYPE", "-T", &dir])
        .or_else(|| first_line("stat", &["-f", "-c", "%T", &dir]))
}

/// Versions of pymatris, the peers and the servers.
pub(super) fn versions(cli: &Path, tools: &[Tool]) -> Vec<(String, String)> {
    let mut v = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let cli_version = first_line(&cli.display().to_string(), &["--version"]);
    v.push((
        "pymatris".to_owned(),
        format!(
            "{} (git {})",
            cli_version.unwrap_or_else(|| "?".to_owned()),
            git.unwrap_or_else(|| "?".to_owned())
        ),
    ));
    if let Some(rustc) = first_line("rustc", &["--version"]) {
        v.push(("rustc".to_owned(), rustc));
    }
    for &t in tools {
        if matches!(
            t,
            Tool::Pymatris | Tool::Python | Tool::Baseline | Tool::SftpGcm
        ) {
            continue;
        }
        if let Some(line) = first_line(t.version_program(), t.version_args()) {
            v.push((t.name().to_owned(), line));
        }
    }
    for (name, prog, args) in [
        ("nginx", "nginx", &["-v"][..]),
        ("vsftpd", "vsftpd", &["-v"][..]),
        ("sshd", "sshd", &["-V"][..]),
    ] {
        let found = first_line(prog, args)
            .or_else(|| first_line(&format!("/usr/sbin/{prog}"), args))
            .filter(|l| !l.contains("unknown option") && !l.contains("illegal option"));
        if let Some(line) = found {
            v.push((name.to_owned(), line));
        }
    }
    v
}

/// The SHA-256 fingerprint of the server's host key, as curl's
/// `--hostpubsha256` wants it (base64, no `SHA256:`).
pub(super) fn host_key_sha256(known_hosts: &Path) -> anyhow::Result<String> {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(known_hosts)
        .output()
        .context("running ssh-keygen -l")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen -l failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("SHA256:"))
        .map(str::to_owned)
        .context("no SHA256 fingerprint in ssh-keygen's output")
}

/// `name` on `PATH`.
pub(super) fn find_in_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
