//! `cargo xtask deps`: installs the Debian packages that the tests, the
//! demo and the benchmark use, where they are missing. `.ci/run` calls it,
//! and `cargo xtask demo` does when a server is not installed, so that a
//! newcomer on a fresh machine needs no other step.

use std::process::Command;

use anyhow::{Context, bail};

/// The real servers the harness starts, the peers of the benchmark, and the
/// tools the tests call (`kill`, `pgrep`, `mount`, `ssh-keygen`, `ssh-agent`).
/// `python3-venv` holds the harness's servers written in Python (pyftpdlib,
/// asyncssh), which it installs from PyPI into a venv under `target/`;
/// lighttpd is the second HTTP(S) server of the conformance tests;
/// `libpython3-dev` lets cargo's own builds of `crates/py` (tests, the
/// workspace's `cargo test`) link libpython, as pyo3 does outside maturin;
/// `nftables` counts what servers put on the wire (the harness's
/// `WireMeter`), iproute2's `ss` what the kernel says it sent (the
/// meter's own test); microsocks is the SOCKS5 server the proxy tests go
/// through; rclone is a peer of the bench's mirror workloads.
pub(crate) const PACKAGES: &[&str] = &[
    "nginx-light",
    "lighttpd",
    "lighttpd-mod-openssl",
    "vsftpd",
    "openssh-server",
    "python3-venv",
    "libpython3-dev",
    "openssh-client",
    "curl",
    "wget",
    "aria2",
    "microsocks",
    "lftp",
    "rclone",
    "procps",
    "util-linux",
    "nftables",
    "iproute2",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// The packages of [`PACKAGES`] that are not installed.
pub(crate) fn missing() -> Vec<&'static str> {
    PACKAGES.iter().copied().filter(|p| !installed(p)).collect()
}

pub(crate) fn run() -> anyhow::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        eprintln!("all of {} are installed", PACKAGES.join(", "));
        return Ok(());
    }
    eprintln!("installing: {}", missing.join(" "));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (this needs Debian or Ubuntu, as root)")?;
        if !status.success() {
            bail!("apt-get {} failed (run as root)", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    apt(&args)
}
