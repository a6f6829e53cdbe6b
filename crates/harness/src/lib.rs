//! Starts real servers (nginx, vsftpd, sshd) on loopback for the end-to-end
//! tests, the benchmark and the demo, and on request a second implementation
//! of a protocol over the same data (lighttpd: [`Servers::with_lighttpd`];
//! pyftpdlib: [`Servers::with_pyftpdlib`]; asyncssh's SFTP server:
//! [`Servers::with_asyncssh`]), and shaping proxies that put one behind an
//! emulated wide-area link ([`Servers::shaped`]).
//!
//! Each [`Servers`] owns a fresh temp dir holding private configs, logs,
//! keys and one data directory that every server serves, and listens on its
//! own free high ports of 127.0.0.1, so several can run at once in one test
//! process. Dropping it kills the servers and removes the temp dir; if the
//! process dies first, the kernel kills them (see `process.rs`).
//!
//! Linux only, and FTP and SFTP need root: vsftpd and sshd log in real
//! system users, which the harness creates with a fixed password.
#![warn(missing_docs, missing_debug_implementations)]

mod asyncssh;
mod lighttpd;
mod nginx;
mod process;
mod pyftpdlib;
pub mod python;
mod sent;
mod shaper;
mod sshd;
mod tls;
mod urls;
mod users;
mod vsftpd;
mod wire;

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use anyhow::{Context as _, Result, bail};

pub use pyftpdlib::PyftpdlibOptions;
pub use sent::Server;
pub use shaper::{Counters, Shape, Shaper};
pub use wire::WireMeter;

/// Which servers to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Which {
    /// nginx, HTTP and HTTPS.
    pub http: bool,
    /// vsftpd, FTP and explicit FTPS.
    pub ftp: bool,
    /// OpenSSH's sshd, SFTP.
    pub sftp: bool,
}

impl Which {
    /// Every server.
    pub fn all() -> Which {
        Which {
            http: true,
            ftp: true,
            sftp: true,
        }
    }

    /// nginx only (needs no root).
    pub fn http_only() -> Which {
        Which {
            http: true,
            ftp: false,
            sftp: false,
        }
    }

    /// vsftpd only.
    pub fn ftp_only() -> Which {
        Which {
            http: false,
            ftp: true,
            sftp: false,
        }
    }

    /// sshd only.
    pub fn sftp_only() -> Which {
        Which {
            http: false,
            ftp: false,
            sftp: true,
        }
    }

    /// None of the three: for a `Servers` that runs only the servers its
    /// `with_*` methods add.
    pub fn none() -> Which {
        Which {
            http: false,
            ftp: false,
            sftp: false,
        }
    }
}

/// Knobs for [`Servers::start_with`]; `Options::default()` is what
/// [`Servers::start`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// vsftpd's `max_per_ip`: how many clients (control connections) one
    /// address may have at once; vsftpd answers the next with "421 There are
    /// too many connections from your internet address". `None` means
    /// unlimited.
    pub ftp_max_per_ip: Option<u32>,
    /// sshd's `MaxStartups`: how many connections not yet authenticated
    /// it takes at once, refusing every one past them. sshd's default,
    /// 10:30:100, refuses at random from ten; `Some(10)` refuses every one
    /// from ten, what the default may do at worst. `None`: 200, for tests
    /// that open many sessions at once.
    pub sshd_max_startups: Option<u32>,
}

/// Running servers over one shared data directory.
///
/// URL helpers panic when the server they name was not started.
#[derive(Debug)]
pub struct Servers {
    nginx: Option<nginx::Nginx>,
    vsftpd: Option<vsftpd::Vsftpd>,
    sshd: Option<sshd::Sshd>,
    asyncssh: Option<asyncssh::AsyncSsh>,
    pyftpdlib: Option<pyftpdlib::Pyftpdlib>,
    lighttpd: Option<lighttpd::Lighttpd>,
    data: PathBuf,
    ca_cert: PathBuf,
    // Dropped last, after the servers are dead.
    dir: tempfile::TempDir,
}

impl Servers {
    /// Starts the requested servers on free high loopback ports, each with a
    /// private config, logs and data under a fresh temp dir.
    ///
    /// Fails with a message naming the missing binary and the apt package
    /// to install when a server is not installed.
    pub fn start(which: Which) -> Result<Servers> {
        Servers::start_with(which, Options::default())
    }

    /// [`Servers::start`] with options.
    pub fn start_with(which: Which, options: Options) -> Result<Servers> {
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("creating the harness temp dir")?;
        let root = dir.path().to_owned();
        fs::write(root.join(OWNER_FILE), std::process::id().to_string())?;
        // vsftpd's anonymous user and the FTP and SFTP users read the data
        // as themselves, so it must be reachable from /.
        if which.ftp || which.sftp {
            check_traversable(&root)?;
        }
        let mkdir = |name: &str| -> Result<PathBuf> {
            let p = root.join(name);
            fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
            set_mode(&p, 0o755)?;
            Ok(p)
        };
        set_mode(&root, 0o755)?;
        let data = mkdir("data")?;
        let tls_dir = mkdir("tls")?;
        tls::generate(&tls_dir).context("generating TLS certificates")?;

        let mut servers = Servers {
            nginx: None,
            vsftpd: None,
            sshd: None,
            asyncssh: None,
            pyftpdlib: None,
            lighttpd: None,
            data: data.clone(),
            ca_cert: tls_dir.join("ca.pem"),
            dir,
        };
        // On an error below, dropping `servers` kills what did start.
        if which.http {
            let d = mkdir("nginx")?;
            servers.nginx = Some(nginx::start(&d, &data, &tls_dir).context("starting nginx")?);
        }
        if which.ftp {
            let d = mkdir("vsftpd")?;
            // vsftpd chroots into this before dropping privileges: it must
            // be empty and not writable by anyone but root.
            let empty = mkdir("empty")?;
            let config = vsftpd::FtpConfig {
                dir: &d,
                data: &data,
                empty: &empty,
                tls: &tls_dir,
                max_per_ip: options.ftp_max_per_ip,
            };
            servers.vsftpd = Some(vsftpd::start(&config).context("starting vsftpd")?);
        }
        if which.sftp {
            let d = mkdir("sshd")?;
            servers.sshd =
                Some(sshd::start(&d, options.sshd_max_startups).context("starting sshd")?);
        }
        Ok(servers)
    }

    /// Also starts asyncssh's SFTP server (from the harness's Python venv:
    /// the first call installs it from PyPI) over the same data dir, which
    /// it is chrooted to; it hands out binary (non-UTF-8) file handles. The
    /// user and password are [`Servers::sftp_user`] and
    /// [`Servers::sftp_password`]; the key and known_hosts are its own.
    pub fn with_asyncssh(mut self) -> Result<Servers> {
        let dir = self.dir.path().join("asyncssh");
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = asyncssh::start(&dir, &self.data, users::SFTP_USER, users::PASSWORD);
        self.asyncssh = Some(started.context("starting asyncssh's SFTP server")?);
        Ok(self)
    }

    /// Also starts pyftpdlib (FTP and explicit FTPS, from the harness's
    /// Python venv: the first call installs it from PyPI) over the same data
    /// dir, with the FTP user and password of [`Servers::ftp_user`] and
    /// anonymous logins.
    pub fn with_pyftpdlib(mut self, options: PyftpdlibOptions) -> Result<Servers> {
        let dir = self.dir.path().join("pyftpdlib");
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = self.dir.path().join("tls");
        self.pyftpdlib =
            Some(pyftpdlib::start(&dir, &self.data, &tls, options).context("starting pyftpdlib")?);
        Ok(self)
    }

    /// Also starts lighttpd (HTTP and HTTPS, with the certificate of
    /// [`Servers::ca_cert`]) over the same data dir.
    pub fn with_lighttpd(mut self) -> Result<Servers> {
        let dir = self.dir.path().join("lighttpd");
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = self.dir.path().join("tls");
        self.lighttpd = Some(lighttpd::start(&dir, &self.data, &tls).context("starting lighttpd")?);
        Ok(self)
    }

    /// The file bytes `server` has sent of every path ending in `/rel`, as
    /// its transfer log says (for sshd: the bytes of every SSH connection;
    /// see `sent.rs`). A server logs a transfer when it ends, so this waits,
    /// up to 30 s, until the count is at least `at_least` and then unchanged
    /// for half a second. sshd logs a connection only as the process that
    /// served it ends; on a heavily loaded machine its line was twice not
    /// there after 10 s. The wait costs nothing once the count is there.
    pub fn bytes_sent(&self, server: Server, rel: &str, at_least: u64) -> u64 {
        let log = self.dir.path().join(server.log());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut last = server.sum(&log, rel);
        loop {
            thread::sleep(std::time::Duration::from_millis(500));
            let now = server.sum(&log, rel);
            if (now == last && now >= at_least) || std::time::Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// The local ports whose packets carry `server`'s file bytes, to count
    /// with a [`WireMeter`] what it put on the wire: an FTP server's passive
    /// (data connection) range, sshd's one port (SSH carries everything on
    /// one connection); `None` for a server that is not running or is
    /// counted by its log. sshd logs a connection's bytes only when the
    /// client ends it with a FIN, not after an SSH disconnect message
    /// (OpenSSH's own sftp sends one) or a reset.
    pub fn wire_ports(&self, server: Server) -> Option<(u16, u16)> {
        match server {
            Server::Vsftpd => self.vsftpd.as_ref().map(|v| v.pasv.bounds()),
            Server::Pyftpdlib => self.pyftpdlib.as_ref().map(|p| p.pasv.bounds()),
            Server::Sshd => self.sshd.as_ref().map(|s| (s.port, s.port)),
            _ => None,
        }
    }

    /// The process id of each running server's main process, by name
    /// ("nginx", "vsftpd", "sshd"). The CPU of the processes nginx and
    /// vsftpd fork for connections is added to theirs as they reap them;
    /// sshd's listener showed only a small part of its sessions' CPU.
    pub fn server_pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids = Vec::new();
        if let Some(n) = &self.nginx {
            pids.push(("nginx", n.proc.id()));
        }
        if let Some(v) = &self.vsftpd {
            pids.push(("vsftpd", v.proc.id()));
        }
        if let Some(s) = &self.sshd {
            pids.push(("sshd", s.proc.id()));
        }
        if let Some(a) = &self.asyncssh {
            pids.push(("asyncssh", a.proc.id()));
        }
        if let Some(p) = &self.pyftpdlib {
            pids.push(("pyftpdlib", p.proc.id()));
        }
        if let Some(l) = &self.lighttpd {
            pids.push(("lighttpd", l.proc.id()));
        }
        pids
    }

    /// The directory every server serves; files placed here appear on all.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temp dir holding configs and logs (`nginx/error.log`,
    /// `nginx/access.log`, `vsftpd/vsftpd.log`, `sshd/sshd.log`,
    /// `pyftpdlib/pyftpdlib.log`, `lighttpd/access.log`,
    /// `asyncssh/asyncssh.log`).
    pub fn root_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `rel` under the data dir, creating parent dirs,
    /// readable by every server. Panics on I/O errors (a test helper).
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.prepare(rel);
        let mut f = create_public(&path);
        f.write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Writes `size` bytes of [`random_bytes`]`(…, seed)` to `rel`, streamed
    /// in 1 MiB blocks so that gigabytes need no memory. Panics on I/O errors.
    pub fn write_random(&self, rel: &str, size: u64, seed: u64) -> PathBuf {
        let path = self.prepare(rel);
        let mut f = create_public(&path);
        // Generating costs about as much as writing (in dev builds), so one
        // thread fills blocks while this one writes, with a few blocks in
        // flight and recycled.
        let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..3 {
            let _ = empty_tx.send(vec![0u8; BLOCK]);
        }
        thread::scope(|scope| {
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut left = size;
                while left > 0 {
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    let n = left.min(BLOCK as u64) as usize;
                    buf.truncate(n);
                    rng.fill(&mut buf);
                    if full_tx.send(buf).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
            for mut buf in full_rx {
                f.write_all(&buf)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                buf.resize(BLOCK, 0);
                let _ = empty_tx.send(buf);
            }
        });
        path
    }

    /// Makes the parent dirs of `rel` (mode 0755) and returns its path.
    fn prepare(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        assert!(
            !rel.is_empty() && !rel.split('/').any(|c| c == ".."),
            "bad relative path {rel:?}"
        );
        let path = self.data.join(rel);
        let parent = path.parent().expect("a file under the data dir");
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        for dir in parent.ancestors().take_while(|d| d.starts_with(&self.data)) {
            set_mode(dir, 0o755).unwrap_or_else(|e| panic!("{e:#}"));
        }
        path
    }

    /// Human text listing each URL base and the credentials.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "data dir:  {}", self.data.display());
        let _ = writeln!(s, "logs:      {}", self.dir.path().display());
        if self.nginx.is_some() {
            let _ = writeln!(s, "http:      {}", self.http_url(""));
            let _ = writeln!(s, "https:     {}", self.https_url(""));
            let _ = writeln!(s, "  CA cert: {}", self.ca_cert.display());
        }
        if self.vsftpd.is_some() {
            let (user, pass) = self.ftp_user();
            let _ = writeln!(s, "ftp:       {}", self.ftp_url(""));
            let _ = writeln!(s, "  anon:    {}", self.ftp_anon_url(""));
            let (lo, hi) = self.vsftpd().pasv.bounds();
            let _ = writeln!(s, "  passive: ports {lo}-{hi}");
            let _ = writeln!(s, "  user:    {user} / password: {pass}");
            let _ = writeln!(
                s,
                "  FTPS:    explicit (AUTH TLS) on the same port, CA cert {}",
                self.ca_cert.display()
            );
        }
        if self.lighttpd.is_some() {
            let _ = writeln!(s, "lighttpd:  {}", self.lighttpd_http_url(""));
            let _ = writeln!(s, "           {}", self.lighttpd_https_url(""));
        }
        if let Some(p) = &self.pyftpdlib {
            let _ = writeln!(s, "pyftpdlib: {}", self.pyftpdlib_url(""));
            let _ = writeln!(s, "  anon:    {}", self.pyftpdlib_anon_url(""));
            let _ = writeln!(s, "  passive: ports {}-{}", p.pasv.lo, p.pasv.hi);
            let _ = writeln!(s, "  FTPS:    explicit (AUTH TLS) on the same port");
        }
        if self.sshd.is_some() {
            let _ = writeln!(s, "sftp:      {}", self.sftp_url(""));
            let _ = writeln!(
                s,
                "  user:    {} / password: {}",
                self.sftp_user(),
                self.sftp_password()
            );
            let _ = writeln!(s, "  key:     {}", self.ssh_client_key().display());
            let _ = writeln!(s, "  known_hosts: {}", self.ssh_known_hosts().display());
            let _ = writeln!(s, "  host key: {}", self.ssh_host_key_pub());
            let _ = writeln!(
                s,
                "  try:     sftp -i {} -o UserKnownHostsFile={} -P {} {}@127.0.0.1",
                self.ssh_client_key().display(),
                self.ssh_known_hosts().display(),
                self.sftp_port(),
                self.sftp_user()
            );
        }
        if self.asyncssh.is_some() {
            let _ = writeln!(s, "asyncssh:  {}", self.asyncssh_url(""));
            let _ = writeln!(s, "  key:     {}", self.asyncssh_client_key().display());
            let _ = writeln!(
                s,
                "  known_hosts: {}",
                self.asyncssh_known_hosts().display()
            );
        }
        s
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let procs = [
            self.nginx.as_mut().map(|s| &mut s.proc),
            self.vsftpd.as_mut().map(|s| &mut s.proc),
            self.sshd.as_mut().map(|s| &mut s.proc),
            self.asyncssh.as_mut().map(|s| &mut s.proc),
            self.pyftpdlib.as_mut().map(|s| &mut s.proc),
            self.lighttpd.as_mut().map(|s| &mut s.proc),
        ];
        for p in procs.into_iter().flatten() {
            p.kill();
        }
    }
}

// Tests keep one `Servers` in a `static` and share it across threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Servers>();
};

const BLOCK: usize = 1 << 20;

/// The first `len` bytes that [`Servers::write_random`] writes for `seed`,
/// for tests that need the expected bytes without reading the file back.
///
/// The bytes come from `fastrand`'s seeded generator (wyrand), in 1 MiB
/// blocks. A dependency is built with `opt-level = 1` even in dev builds
/// (see the root `Cargo.toml`), so this costs far less than a hand-written
/// generator in this unoptimised crate would (figures in
/// `docs/benchmarks.md`, "Figures behind the code"). A test pins the
/// stream, so a change in `fastrand` shows up as a failing test here.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut rng = fastrand::Rng::with_seed(seed);
    for block in buf.chunks_mut(BLOCK) {
        rng.fill(block);
    }
    buf
}

const DIR_PREFIX: &str = "pymatris-harness-";
const OWNER_FILE: &str = "owner.pid";

/// Removes the temp dirs of harness processes that died without running
/// `Drop` (killed tests, Ctrl-C'd benchmarks), which may hold gigabytes.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        // A dir without an owner is being created right now: leave it.
        let Ok(pid) = fs::read_to_string(entry.path().join(OWNER_FILE)) else {
            continue;
        };
        // An empty or half-written owner file is being written right now.
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `pid` runs; a zombie (dead, not yet reaped) does not.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')'.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Creates (or truncates) a 0644 file, whatever the umask.
fn create_public(path: &Path) -> File {
    let f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.set_permissions(fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    f
}

/// Writes a file only its owner can read (private keys).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Fails when some parent of `dir` cannot be traversed by other users.
fn check_traversable(dir: &Path) -> Result<()> {
    for parent in dir.ancestors().skip(1) {
        let mode = fs::metadata(parent)
            .with_context(|| format!("stat {}", parent.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "{} is not traversable by other users (mode {:o}), so the FTP and SFTP users \
                 could not reach the data: point TMPDIR elsewhere (e.g. /tmp)",
                parent.display(),
                mode & 0o7777
            );
        }
    }
    Ok(())
}
