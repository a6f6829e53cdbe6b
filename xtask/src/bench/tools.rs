//! The tools compared and the exact command line each gets per workload.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use pymatris_harness::Servers;

use super::data::{DataFile, Proto, Workload};
use super::defaults::Defaults;
use super::invocation::{Invocation, path, quote};

/// A downloader (or `cp`, the copy limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Tool {
    Pymatris,
    /// pymatris with the peers' number of connections (`--wan`).
    PymatrisAt,
    /// pymatris's Python API (crates/py): a script that enqueues the
    /// workload's URLs on a `Downloader` (`pymatris_api.py`).
    Python,
    /// Another pymatris binary (`--baseline`), run like pymatris in the
    /// same run, to compare two builds; not a peer.
    Baseline,
    Aria2c,
    Curl,
    Wget,
    Lftp,
    Sftp,
    /// OpenSSH `sftp` with AES-GCM, the cipher pymatris prefers on CPUs with
    /// AES instructions (ssh's own default is chacha20-poly1305).
    SftpGcm,
    /// `rclone copy`, for the mirror workloads (`tree.rs`).
    Rclone,
    /// `cp` of the same files on the same disk: the ceiling.
    Cp,
}

/// Every tool, in the order of the tables.
pub(super) const ALL: [Tool; 10] = [
    Tool::Pymatris,
    Tool::Python,
    Tool::Aria2c,
    Tool::Curl,
    Tool::Wget,
    Tool::Lftp,
    Tool::Sftp,
    Tool::SftpGcm,
    Tool::Rclone,
    Tool::Cp,
];

/// The cipher of [`Tool::SftpGcm`].
const GCM: &str = "aes128-gcm@openssh.com";

/// OpenSSH's `sftp -R` (requests in flight; default 64) and `-B` (bytes per
/// request; default 32768, at most 256 KiB, which sftp-server also caps).
const SFTP_REQUESTS: u32 = 256;
const SFTP_BUFFER: u32 = 262_144;

impl Tool {
    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::Pymatris => "pymatris",
            Tool::PymatrisAt => "pymatris, peers' settings",
            Tool::Python => "pymatris (Python API)",
            Tool::Baseline => "pymatris (baseline)",
            Tool::Aria2c => "aria2c",
            Tool::Curl => "curl",
            Tool::Wget => "wget",
            Tool::Lftp => "lftp",
            Tool::Sftp => "OpenSSH sftp",
            Tool::SftpGcm => "OpenSSH sftp, AES-GCM",
            Tool::Rclone => "rclone",
            Tool::Cp => "cp (copy limit)",
        }
    }

    /// A short file-name-safe name.
    pub(super) fn slug(self) -> &'static str {
        match self {
            Tool::Pymatris => "pymatris",
            Tool::PymatrisAt => "pymatris-at",
            Tool::Python => "python",
            Tool::Baseline => "baseline",
            Tool::Aria2c => "aria2c",
            Tool::Curl => "curl",
            Tool::Wget => "wget",
            Tool::Lftp => "lftp",
            Tool::Sftp => "sftp",
            Tool::SftpGcm => "sftp-gcm",
            Tool::Rclone => "rclone",
            Tool::Cp => "cp",
        }
    }

    /// The executable looked up on `PATH` (pymatris is built instead).
    pub(super) fn program(self) -> &'static str {
        match self {
            Tool::Pymatris | Tool::PymatrisAt | Tool::Baseline => "pymatris",
            Tool::Python => "python3",
            Tool::Aria2c => "aria2c",
            Tool::Curl => "curl",
            Tool::Wget => "wget",
            Tool::Lftp => "lftp",
            Tool::Sftp | Tool::SftpGcm => "sftp",
            Tool::Rclone => "rclone",
            Tool::Cp => "cp",
        }
    }

    /// The Debian package that has it, for the "missing" note.
    pub(super) fn package(self) -> &'static str {
        match self {
            Tool::Pymatris | Tool::PymatrisAt | Tool::Baseline => "(built from this workspace)",
            Tool::Python => "(crates/py, built from this workspace)",
            Tool::Aria2c => "aria2",
            Tool::Curl => "curl",
            Tool::Wget => "wget",
            Tool::Lftp => "lftp",
            Tool::Sftp | Tool::SftpGcm => "openssh-client",
            Tool::Rclone => "rclone",
            Tool::Cp => "coreutils",
        }
    }

    /// A peer: a downloader other than pymatris.
    pub(super) fn is_peer(self) -> bool {
        !matches!(
            self,
            Tool::Pymatris | Tool::PymatrisAt | Tool::Python | Tool::Baseline | Tool::Cp
        )
    }

    /// Whether it can do `wl` (the mirror workloads take a tree's URL).
    pub(super) fn supports_workload(self, wl: &Workload) -> bool {
        if super::tree::is_tree(wl) {
            super::tree::supports(self, wl.proto)
        } else {
            self.supports(wl.proto)
        }
    }

    pub(super) fn supports(self, proto: Proto) -> bool {
        match self {
            Tool::Pymatris
            | Tool::PymatrisAt
            | Tool::Python
            | Tool::Baseline
            | Tool::Cp
            | Tool::Curl
            | Tool::Lftp => true,
            Tool::Aria2c | Tool::Wget => proto != Proto::Sftp,
            Tool::Sftp | Tool::SftpGcm => proto == Proto::Sftp,
            Tool::Rclone => false,
        }
    }

    /// The command that prints its version (first line kept).
    pub(super) fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Sftp | Tool::SftpGcm => &["-V"], // `ssh -V`, see `version_program`
            _ => &["--version"],
        }
    }

    pub(super) fn version_program(self) -> &'static str {
        match self {
            Tool::Sftp | Tool::SftpGcm => "ssh",
            other => other.program(),
        }
    }
}

/// A shaping proxy in front of a workload's server (`--wan`), which the
/// tools reach instead.
#[derive(Clone, Debug)]
pub(super) struct Endpoint {
    /// The server's own port.
    pub(super) server_port: u16,
    /// The proxy's.
    pub(super) port: u16,
    /// For SFTP: the server's host key under the proxy's port.
    pub(super) known_hosts: Option<PathBuf>,
}

/// What the commands need to know about the servers.
#[derive(Clone, Debug)]
pub(super) struct Ctx<'a> {
    pub(super) servers: &'a Servers,
    pub(super) cli: &'a Path,
    /// The binary of [`Tool::Baseline`] (`--baseline`).
    pub(super) baseline: Option<&'a Path>,
    pub(super) defaults: &'a Defaults,
    /// Where input files (URL lists, scripts) go.
    pub(super) scratch: &'a Path,
    /// Whether the outputs of many files are set aside until the bench
    /// ends rather than deleted between runs (`keep_or_clean` in
    /// `measure.rs`): on a disk, not in memory.
    pub(super) keep_outputs: bool,
    /// `--hostpubsha256` for curl, when the servers include sshd.
    pub(super) host_key_sha256: Option<String>,
    /// Extra arguments for pymatris (`--pymatris-arg`), for experiments.
    pub(super) extra_args: &'a [String],
    /// The Python with the package installed, for [`Tool::Python`].
    pub(super) python: Option<&'a Path>,
    /// Where the tools connect instead of the server (`--wan`).
    pub(super) link: Option<Endpoint>,
    /// The proxy of [`Ctx::link`], whose counters each run reads.
    pub(super) meter: Option<&'a pymatris_harness::Shaper>,
    /// The peers' connections and files at once, and [`Tool::PymatrisAt`]'s
    /// (`--wan`); otherwise pymatris's defaults.
    pub(super) peers_at: Option<u32>,
}

/// The script of [`Tool::Python`].
const PYTHON_SCRIPT: &str = include_str!("pymatris_api.py");

impl Ctx<'_> {
    fn url(&self, proto: Proto, f: &DataFile) -> String {
        let s = self.servers;
        let url = match proto {
            Proto::Http => s.http_url(&f.rel),
            Proto::Https => s.https_url(&f.rel),
            Proto::Ftp => s.ftp_url(&f.rel),
            Proto::Sftp => s.sftp_url(&f.rel),
        };
        match &self.link {
            Some(l) => url.replacen(&format!(":{}/", l.server_port), &format!(":{}/", l.port), 1),
            None => url,
        }
    }

    /// The port the tools connect to for `proto`.
    pub(super) fn port(&self, proto: Proto) -> u16 {
        let s = self.servers;
        self.link.as_ref().map_or_else(
            || match proto {
                Proto::Http => s.http_port(),
                Proto::Https => s.https_port(),
                Proto::Ftp => s.ftp_port(),
                Proto::Sftp => s.sftp_port(),
            },
            |l| l.port,
        )
    }

    /// The known_hosts file naming the SFTP server's key at [`Ctx::port`].
    pub(super) fn known_hosts(&self) -> String {
        let hosts = self.link.as_ref().and_then(|l| l.known_hosts.as_deref());
        path(hosts.unwrap_or(self.servers.ssh_known_hosts()))
    }

    /// The binary a pymatris tool runs: the one under test, or the
    /// `--baseline` one.
    pub(super) fn pymatris_program(&self, tool: Tool) -> anyhow::Result<&Path> {
        match (tool, self.baseline) {
            (Tool::Baseline, Some(baseline)) => Ok(baseline),
            (Tool::Baseline, None) => bail!("no --baseline binary"),
            _ => Ok(self.cli),
        }
    }

    /// Gives a pymatris run what `proto`'s server needs to be trusted and
    /// logged in to, then the bench's `--pymatris-arg`s.
    pub(super) fn pymatris_access(&self, inv: &mut Invocation, proto: Proto) {
        match proto {
            Proto::Https => {
                inv.arg("--ca-cert").arg(path(self.servers.ca_cert()));
            }
            Proto::Sftp => {
                inv.arg("--identity")
                    .arg(path(self.servers.ssh_client_key()));
                inv.arg("--known-hosts").arg(self.known_hosts());
            }
            Proto::Http | Proto::Ftp => {}
        }
        if !self.extra_args.is_empty() {
            inv.args(self.extra_args.iter().cloned());
            inv.settings = format!("{}, {}", inv.settings, self.extra_args.join(" "));
        }
    }

    /// Gives `inv` the URLs of `files`: the one URL as an argument, or
    /// several in a list file (`list`) read with `flag`.
    fn hand_urls(
        &self,
        inv: &mut Invocation,
        flag: &str,
        list: PathBuf,
        proto: Proto,
        files: &[DataFile],
    ) {
        if let [one] = files {
            inv.arg(self.url(proto, one));
            return;
        }
        let urls = files.iter().fold(String::new(), |mut s, f| {
            let _ = writeln!(s, "{}", self.url(proto, f));
            s
        });
        let list = inv.input(list, urls);
        inv.arg(flag).arg(list);
    }

    /// The file's path as lftp and sftp name it once connected.
    fn remote_path(&self, proto: Proto, f: &DataFile) -> String {
        match proto {
            Proto::Http | Proto::Https => format!("/{}", f.rel),
            // vsftpd logs the user in at the data dir.
            Proto::Ftp => f.rel.clone(),
            Proto::Sftp => format!("{}/{}", self.servers.data_dir().display(), f.rel),
        }
    }

    /// The files at once for `wl`.
    fn parallel(&self, wl: &Workload) -> u32 {
        wl.parallel.unwrap_or(self.defaults.max_parallel)
    }

    /// The command of `tool` downloading `files` of `wl` into `out`.
    pub(super) fn invocation(
        &self,
        tool: Tool,
        wl: &Workload,
        files: &[DataFile],
        out: &Path,
    ) -> anyhow::Result<Invocation> {
        if files.is_empty() {
            bail!("no files");
        }
        if super::tree::is_tree(wl) {
            return super::tree::invocation(self, tool, wl, out);
        }
        let proto = wl.proto;
        let many = files.len() > 1;
        let n = self.peers_at.unwrap_or_else(|| self.parallel(wl));
        let splits = self.peers_at.unwrap_or(self.defaults.max_splits);
        let min_split = &self.defaults.min_split_size;
        let stem = format!("{}-{}", wl.id.to_lowercase(), tool.slug());
        let list_path = self.scratch.join(format!("{stem}.list"));
        let s = self.servers;
        let mut inv;
        match tool {
            Tool::Pymatris | Tool::PymatrisAt | Tool::Baseline => {
                inv = Invocation::new(path(self.pymatris_program(tool)?));
                inv.args(["--quiet", "--dir"]).arg(path(out));
                if let Some(p) = wl.parallel {
                    inv.arg("--max-parallel").arg(p.to_string());
                    inv.settings = format!("--max-parallel {p}");
                } else {
                    inv.settings = format!(
                        "defaults: {} files, {} splits >= {}",
                        self.defaults.max_parallel, self.defaults.max_splits, min_split
                    );
                }
                if tool == Tool::PymatrisAt {
                    let k = self.peers_at.context("no peers' setting")?.to_string();
                    for flag in ["--max-parallel", "--max-splits", "--max-per-host"] {
                        inv.arg(flag).arg(&k);
                    }
                    inv.settings =
                        format!("--max-parallel {k} --max-splits {k} --max-per-host {k}");
                }
                self.pymatris_access(&mut inv, proto);
                self.hand_urls(&mut inv, "-i", list_path, proto, files);
            }
            Tool::Python => {
                let python = self.python.context("the Python package is not installed")?;
                inv = Invocation::new(path(python));
                let script = inv.input(
                    self.scratch.join("pymatris_api.py"),
                    PYTHON_SCRIPT.to_owned(),
                );
                let urls = files.iter().fold(String::new(), |mut u, f| {
                    let _ = writeln!(u, "{}", self.url(proto, f));
                    u
                });
                let list = inv.input(list_path, urls);
                inv.arg(script).arg(list).arg(path(out));
                if let Some(p) = wl.parallel {
                    inv.arg(format!("max_parallel={p}"));
                    inv.settings = format!("max_parallel={p}");
                } else {
                    inv.settings = "Downloader() defaults".to_owned();
                }
                match proto {
                    Proto::Https => {
                        inv.arg(format!("ca_cert={}", path(s.ca_cert())));
                    }
                    Proto::Sftp => {
                        inv.arg(format!("identity={}", path(s.ssh_client_key())));
                        inv.arg(format!("known_hosts={}", self.known_hosts()));
                    }
                    Proto::Http | Proto::Ftp => {}
                }
            }
            Tool::Aria2c => {
                inv = Invocation::new("aria2c");
                inv.args(["--no-conf", "--quiet", "--file-allocation=none"])
                    .args(["--auto-file-renaming=false", "--allow-overwrite=false"])
                    .arg(format!("--max-connection-per-server={splits}"))
                    .arg(format!("--split={splits}"))
                    .arg(format!("--min-split-size={min_split}"))
                    .arg(format!("--max-concurrent-downloads={n}"))
                    .arg("--dir")
                    .arg(path(out));
                inv.settings = format!("-j {n} -x {splits} -s {splits} -k {min_split}");
                if proto == Proto::Ftp && many {
                    // aria2 1.36 with several FTP downloads at once and its
                    // default connection reuse sits idle for its --timeout
                    // (60 s) at the end against vsftpd.
                    inv.arg("--ftp-reuse-connection=false");
                    inv.settings.push_str(" --ftp-reuse-connection=false");
                }
                if proto == Proto::Https {
                    inv.arg(format!("--ca-certificate={}", path(s.ca_cert())));
                }
                self.hand_urls(&mut inv, "--input-file", list_path, proto, files);
            }
            Tool::Curl => {
                inv = Invocation::new("curl");
                // `-q` first: no ~/.curlrc.
                inv.args(["-q", "--silent", "--show-error", "--fail"]);
                match proto {
                    Proto::Https => {
                        inv.arg("--cacert").arg(path(s.ca_cert()));
                    }
                    Proto::Sftp => {
                        let sha = self
                            .host_key_sha256
                            .clone()
                            .context("no host key fingerprint for curl")?;
                        inv.arg("--key").arg(path(s.ssh_client_key()));
                        inv.arg("--hostpubsha256").arg(sha);
                    }
                    Proto::Http | Proto::Ftp => {}
                }
                if many {
                    inv.args(["--parallel", "--parallel-max"])
                        .arg(n.to_string())
                        .args(["--remote-name-all", "--output-dir"])
                        .arg(path(out));
                    let cfg = files.iter().fold(String::new(), |mut c, f| {
                        let _ = writeln!(c, "url = \"{}\"", self.url(proto, f));
                        c
                    });
                    let cfg = inv.input(self.scratch.join(format!("{stem}.curlrc")), cfg);
                    inv.arg("--config").arg(cfg);
                    inv.settings = format!("--parallel --parallel-max {n}");
                } else {
                    inv.arg("--output")
                        .arg(path(&out.join(&files[0].name)))
                        .arg(self.url(proto, &files[0]));
                    inv.settings = "one connection (no split)".to_owned();
                }
            }
            Tool::Wget => {
                inv = Invocation::new("wget");
                inv.args(["--no-config", "--quiet", "--directory-prefix"])
                    .arg(path(out));
                if proto == Proto::Https {
                    inv.arg(format!("--ca-certificate={}", path(s.ca_cert())));
                }
                self.hand_urls(&mut inv, "--input-file", list_path, proto, files);
                inv.settings = if many {
                    "one file at a time (no parallelism)"
                } else {
                    "one connection (no split)"
                }
                .to_owned();
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
                    Proto::Http => format!("open -p {} http://127.0.0.1", self.port(proto)),
                    Proto::Https => {
                        let _ = writeln!(script, "set ssl:ca-file {}", quote(&path(s.ca_cert())));
                        format!("open -p {} https://localhost", self.port(proto))
                    }
                    Proto::Ftp => {
                        // Plain FTP like every other tool (lftp tries AUTH TLS
                        // first by default).
                        script.push_str("set ftp:ssl-allow no\n");
                        let (user, pass) = s.ftp_user();
                        format!(
                            "open -u {user},{pass} -p {} ftp://127.0.0.1",
                            self.port(proto)
                        )
                    }
                    Proto::Sftp => {
                        let ssh = format!(
                            "ssh -a -x -F none -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                            path(s.ssh_client_key()),
                            self.known_hosts()
                        );
                        let _ = writeln!(script, "set sftp:connect-program \"{ssh}\"");
                        format!(
                            "open -u {}, -p {} sftp://127.0.0.1",
                            s.sftp_user(),
                            self.port(proto)
                        )
                    }
                };
                let _ = writeln!(script, "{open}");
                if many {
                    let _ = write!(script, "mget -P {n} -O {}", quote(&path(out)));
                    for f in files {
                        let _ = write!(script, " {}", quote(&self.remote_path(proto, f)));
                    }
                    script.push('\n');
                    inv.settings = format!("mget -P {n}");
                } else {
                    let _ = writeln!(
                        script,
                        "pget -n {splits} -O {} {}",
                        quote(&path(out)),
                        quote(&self.remote_path(proto, &files[0]))
                    );
                    inv.settings = format!("pget -n {splits}");
                }
                let script = inv.input(self.scratch.join(format!("{stem}.lftp")), script);
                inv.args(["--norc", "-f"]).arg(script);
            }
            Tool::Sftp | Tool::SftpGcm => {
                inv = Invocation::new("sftp");
                let batch = files.iter().fold(String::new(), |mut b, f| {
                    let _ = writeln!(
                        b,
                        "get {} {}/",
                        quote(&self.remote_path(proto, f)),
                        quote(&path(out))
                    );
                    b
                });
                let batch = inv.input(self.scratch.join(format!("{stem}.batch")), batch);
                inv.args(["-q", "-F", "none", "-b"]).arg(batch);
                if tool == Tool::SftpGcm {
                    inv.args(["-c", GCM]);
                }
                inv.arg("-R")
                    .arg(SFTP_REQUESTS.to_string())
                    .arg("-B")
                    .arg(SFTP_BUFFER.to_string())
                    .arg("-P")
                    .arg(self.port(proto).to_string())
                    .arg("-i")
                    .arg(path(s.ssh_client_key()))
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={}", self.known_hosts()))
                    .args(["-o", "StrictHostKeyChecking=yes"])
                    .args(["-o", "IdentitiesOnly=yes"])
                    .arg(format!("{}@127.0.0.1", s.sftp_user()));
                inv.settings = format!(
                    "-R {SFTP_REQUESTS} -B {SFTP_BUFFER}, one file at a time, one connection"
                );
                if tool == Tool::SftpGcm {
                    inv.settings.push_str(&format!(", -c {GCM}"));
                }
            }
            Tool::Rclone => bail!("rclone runs the mirror workloads only"),
            Tool::Cp => {
                inv = Invocation::new("cp");
                inv.args(files.iter().map(|f| path(&f.source)))
                    .arg(format!("{}/", path(out)));
                inv.settings = "same files, same disk".to_owned();
            }
        }
        Ok(inv)
    }
}
