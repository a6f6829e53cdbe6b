//! The mirror workloads (issue 16): a tree of 2,000 files of mixed sizes
//! in 40 nested directories, fetched whole with `pymatris -r` over FTP,
//! SFTP and HTTP (nginx's autoindex pages), against the tools people
//! mirror with: lftp's `mirror --parallel`, `wget -r` (HTTP) and
//! `rclone copy` with on-the-fly remotes. Every tool starts from the
//! tree's URL alone, so listing is part of what is measured.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use pymatris_harness::{Servers, random_bytes};

use super::data::{DataFile, Proto, Workload};
use super::invocation::{Invocation, path, quote};
use super::tools::{Ctx, Tool};

/// The tree's directory under the servers' data: below `mirror/`, where
/// the harness's nginx makes index pages.
const ROOT: &str = "mirror/bench-tree";
/// Top-level directories, each with [`SUBDIRS`] below it: 40 in all.
const TOPS: usize = 8;
const SUBDIRS: usize = 4;
/// Files per directory: 2,000 in all.
const PER_DIR: usize = 50;

/// Files and tools of a mirror workload.
pub(super) fn is_tree(wl: &Workload) -> bool {
    wl.data == super::data::DataSet::Tree
}

/// The size of file `i` of the tree: mostly small (half under 16 KiB),
/// some of 64 and 256 KiB, one in twenty of 1 MiB (16 times smaller under
/// `--quick`).
fn size_of(i: usize, divisor: u64) -> u64 {
    match i % 20 {
        0..=9 => 1024 + (i as u64 * 1553) % (15 * 1024),
        10..=15 => 64 << 10,
        16..=18 => 256 << 10,
        _ => (1 << 20) / divisor,
    }
}

/// Writes the tree; each file's name is its path below the tree's root,
/// as every tool reproduces it under its output directory.
pub(super) fn create(servers: &Servers, divisor: u64) -> Vec<DataFile> {
    let started = std::time::Instant::now();
    let mut dirs = Vec::new();
    for t in 0..TOPS {
        dirs.push(format!("d{t:02}"));
        for s in 0..SUBDIRS {
            dirs.push(format!("d{t:02}/s{s}"));
        }
    }
    let mut files = Vec::new();
    for (d, dir) in dirs.iter().enumerate() {
        for k in 0..PER_DIR {
            let i = d * PER_DIR + k;
            let name = format!("{dir}/f{i:04}.bin");
            let rel = format!("{ROOT}/{name}");
            let size = size_of(i, divisor);
            let seed = 200_000 + i as u64;
            let source = if size >= 1 << 20 {
                servers.write_random(&rel, size, seed)
            } else {
                servers.write_file(&rel, &random_bytes(size as usize, seed))
            };
            files.push(DataFile {
                rel,
                name,
                source,
                size,
            });
        }
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    eprintln!(
        "created a tree of {} files ({:.0} MB) in {} directories in {:.1?}",
        files.len(),
        bytes as f64 / 1e6,
        dirs.len(),
        started.elapsed()
    );
    files
}

/// Whether `tool` can fetch a whole tree over `proto`.
pub(super) fn supports(tool: Tool, proto: Proto) -> bool {
    match tool {
        Tool::Pymatris | Tool::PymatrisAt | Tool::Baseline | Tool::Lftp | Tool::Rclone => true,
        Tool::Cp => true,
        Tool::Wget => matches!(proto, Proto::Http | Proto::Https),
        Tool::Python | Tool::Aria2c | Tool::Curl | Tool::Sftp | Tool::SftpGcm => false,
    }
}

/// rclone's obscured form of a password (`rclone obscure`), which its
/// on-the-fly remotes take.
fn obscure(pass: &str) -> anyhow::Result<String> {
    let out = Command::new("rclone")
        .args(["obscure", pass])
        .output()
        .context("running rclone obscure")?;
    if !out.status.success() {
        bail!("rclone obscure failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The command of `tool` mirroring the tree of `wl` into `out`.
pub(super) fn invocation(
    ctx: &Ctx<'_>,
    tool: Tool,
    wl: &Workload,
    out: &Path,
) -> anyhow::Result<Invocation> {
    let proto = wl.proto;
    let n = wl.parallel.unwrap_or(ctx.defaults.max_parallel);
    let s = ctx.servers;
    let port = ctx.port(proto);
    let stem = format!("{}-{}", wl.id.to_lowercase(), tool.slug());
    // The tree as a path on the server, once logged in.
    let remote = match proto {
        Proto::Http | Proto::Https => format!("/{ROOT}/"),
        Proto::Ftp => format!("{ROOT}/"),
        Proto::Sftp => format!("{}/{ROOT}/", s.data_dir().display()),
    };
    let url = match proto {
        Proto::Http => s.http_url(&format!("{ROOT}/")),
        Proto::Https => s.https_url(&format!("{ROOT}/")),
        Proto::Ftp => s.ftp_url(&format!("{ROOT}/")),
        Proto::Sftp => s.sftp_url(&format!("{ROOT}/")),
    };
    let mut inv;
    match tool {
        Tool::Pymatris | Tool::PymatrisAt | Tool::Baseline => {
            inv = Invocation::new(path(ctx.pymatris_program(tool)?));
            inv.args(["--quiet", "-r", "--dir"]).arg(path(out));
            inv.arg("--max-parallel").arg(n.to_string());
            inv.settings = format!("-r --max-parallel {n}");
            ctx.pymatris_access(&mut inv, proto);
            inv.arg(url);
        }
        Tool::Lftp => {
            inv = Invocation::new("lftp");
            let mut script = String::from(
                "set cmd:fail-exit yes\n\
                 set cmd:verify-path no\n\
                 set net:max-retries 2\n\
                 set net:timeout 30\n",
            );
            let open = match proto {
                Proto::Http => format!("open -p {port} http://127.0.0.1"),
                Proto::Https => {
                    let _ = writeln!(script, "set ssl:ca-file {}", quote(&path(s.ca_cert())));
                    format!("open -p {port} https://localhost")
                }
                Proto::Ftp => {
                    script.push_str("set ftp:ssl-allow no\n");
                    let (user, pass) = s.ftp_user();
                    format!("open -u {user},{pass} -p {port} ftp://127.0.0.1")
                }
                Proto::Sftp => {
                    let ssh = format!(
                        "ssh -a -x -F none -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                        path(s.ssh_client_key()),
                        ctx.known_hosts()
                    );
                    let _ = writeln!(script, "set sftp:connect-program \"{ssh}\"");
                    format!("open -u {}, -p {port} sftp://127.0.0.1", s.sftp_user())
                }
            };
            let _ = writeln!(script, "{open}");
            let _ = writeln!(
                script,
                "mirror --parallel={n} {} {}",
                quote(&remote),
                quote(&path(out))
            );
            let script = inv.input(ctx.scratch.join(format!("{stem}.lftp")), script);
            inv.args(["--norc", "-f"]).arg(script);
            inv.settings = format!("mirror --parallel={n}");
        }
        Tool::Wget => {
            inv = Invocation::new("wget");
            inv.args(["--no-config", "--quiet", "-r", "-np", "-nH"])
                .args([
                    "--cut-dirs=2",
                    "-e",
                    "robots=off",
                    "--reject",
                    "index.html*",
                ])
                .arg("--directory-prefix")
                .arg(path(out));
            if proto == Proto::Https {
                inv.arg(format!("--ca-certificate={}", path(s.ca_cert())));
            }
            inv.arg(url);
            inv.settings = "-r -np, one file at a time (no parallelism)".to_owned();
        }
        Tool::Rclone => {
            inv = Invocation::new("rclone");
            // An empty config file: nothing of the machine's own remotes.
            let config = inv.input(ctx.scratch.join("rclone.conf"), String::new());
            let source = match proto {
                Proto::Http => format!(":http,url='http://127.0.0.1:{port}/':{ROOT}/"),
                Proto::Https => bail!("rclone over HTTPS is not set up"),
                Proto::Ftp => {
                    let (user, pass) = s.ftp_user();
                    let pass = obscure(pass)?;
                    format!(":ftp,host=127.0.0.1,port={port},user={user},pass={pass}:{remote}")
                }
                Proto::Sftp => format!(
                    ":sftp,host=127.0.0.1,port={port},user={},key_file='{}',known_hosts_file='{}':{remote}",
                    s.sftp_user(),
                    path(s.ssh_client_key()),
                    ctx.known_hosts()
                ),
            };
            inv.args(["--config"]).arg(config);
            inv.args(["copy", "-q", "--transfers"]).arg(n.to_string());
            inv.arg("--checkers").arg(n.to_string());
            inv.arg(source).arg(path(out));
            inv.settings = format!("copy --transfers {n} --checkers {n}");
        }
        Tool::Cp => {
            inv = Invocation::new("cp");
            inv.arg("-r")
                .arg(format!("{}/{ROOT}/.", path(s.data_dir())))
                .arg(format!("{}/", path(out)));
            inv.settings = "same files, same disk".to_owned();
        }
        Tool::Python | Tool::Aria2c | Tool::Curl | Tool::Sftp | Tool::SftpGcm => {
            bail!("{} does not mirror trees", tool.name())
        }
    }
    Ok(inv)
}
