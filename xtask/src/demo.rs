//! `cargo xtask demo`: what a newcomer runs first. It needs no internet
//! beyond Debian's packages (installed on first use, as root): it starts
//! the harness's servers (nginx, vsftpd, sshd) on loopback, puts
//! a mixed batch of files on them, and downloads it with a release build of
//! the CLI, progress bars showing, then checks every byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use pymatris_harness::{Servers, Which};

/// Builds the release CLI and returns its path.
pub(crate) fn build_cli() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "pymatris-cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the pymatris CLI failed");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target
        .join("release")
        .join(format!("pymatris{}", std::env::consts::EXE_SUFFIX)))
}

pub(crate) fn run() -> anyhow::Result<()> {
    // A newcomer's first command: install the servers if they are missing.
    if !crate::deps::missing().is_empty() {
        crate::deps::run()?;
    }
    let cli = build_cli()?;
    eprintln!("starting nginx, vsftpd and sshd on loopback…");
    let servers = Servers::start(Which::all())
        .context("starting the local servers (run .ci/run once to install them)")?;

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut urls = Vec::new();
    let mut add = |url: String, name: &str, source: PathBuf| {
        urls.push(url);
        files.push((name.to_owned(), source));
    };
    let big = servers.write_random("http/big.bin", 256 << 20, 1);
    add(servers.http_url("http/big.bin"), "big.bin", big);
    let tls = servers.write_random("https/secure.bin", 64 << 20, 2);
    add(servers.https_url("https/secure.bin"), "secure.bin", tls);
    let ftp = servers.write_random("ftp/archive.bin", 128 << 20, 3);
    add(servers.ftp_url("ftp/archive.bin"), "archive.bin", ftp);
    let sftp = servers.write_random("sftp/weights.bin", 64 << 20, 4);
    add(servers.sftp_url("sftp/weights.bin"), "weights.bin", sftp);
    for i in 0..24 {
        let name = format!("month-{:02}.csv", i + 1);
        let rel = format!("small/{name}");
        let source = servers.write_file(
            &rel,
            format!("month,{i}\n").repeat(2000 + i * 100).as_bytes(),
        );
        let url = match i % 3 {
            0 => servers.http_url(&rel),
            1 => servers.ftp_anon_url(&rel),
            _ => servers.sftp_url(&rel),
        };
        add(url, &name, source);
    }
    let empty = servers.write_file("empty.txt", b"");
    add(servers.http_url("empty.txt"), "empty.txt", empty);

    let out = tempfile::Builder::new()
        .prefix("pymatris-demo-")
        .tempdir()?;
    eprintln!("{}", servers.describe());
    eprintln!(
        "downloading {} files into {} (capped at 150 MiB/s so that the bars can be seen) …\n",
        urls.len(),
        out.path().display()
    );
    let status = Command::new(&cli)
        .arg("--dir")
        .arg(out.path())
        .arg("--ca-cert")
        .arg(servers.ca_cert())
        .arg("--identity")
        .arg(servers.ssh_client_key())
        .arg("--known-hosts")
        .arg(servers.ssh_known_hosts())
        .args(["--max-splits", "8", "--max-parallel", "6"])
        // On loopback the whole batch takes about half a second; capped,
        // the progress bars stay long enough to be seen.
        .args(["--max-speed", "150M"])
        .args(&urls)
        .status()
        .context("running pymatris")?;
    if !status.success() {
        bail!("pymatris exited with {status}");
    }
    for (name, source) in &files {
        let got = out.path().join(name);
        if !same_file_contents(source, &got)? {
            bail!("{} differs from its source", got.display());
        }
    }
    eprintln!("\nall {} files verified byte for byte.", files.len());
    Ok(())
}

/// Compares two files a block at a time.
pub(crate) fn same_file_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::io::Read;
    let open =
        |p: &Path| std::fs::File::open(p).with_context(|| format!("opening {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
