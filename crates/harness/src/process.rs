//! Child server processes: spawning them so they die with the test process,
//! waiting until they listen, and killing them on drop.
//!
//! Two details make this more than `Command::spawn`:
//!
//! - A test process killed with SIGKILL runs no `Drop`, so each server is
//!   started under `setpriv --pdeathsig KILL` (util-linux), which asks the
//!   kernel to kill it when its parent goes away, without any `unsafe`
//!   `pre_exec` here. The kernel ties that signal to the parent *thread*, not
//!   the process, and test threads come and go (a `Servers` in a shared
//!   `static` outlives the test that started it). So every child is spawned
//!   from one long-lived thread that lives as long as the process.
//! - Free ports are found by binding port 0 and letting go of it, which
//!   leaves a moment in which another process can take the port. A TCP
//!   connect would then succeed against the stranger, so readiness means
//!   "the child itself holds a listening socket on the port", read from
//!   `/proc/net/tcp` and `/proc/PID/fd`.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

/// How long a server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

const SETPRIV: &str = "/usr/bin/setpriv";

/// A binary the harness needs, with the Debian package that installs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) path: &'static str,
    pub(crate) package: &'static str,
}

impl Tool {
    /// Fails with a message naming the package when the binary is missing.
    pub(crate) fn check(self) -> Result<&'static str> {
        if Path::new(self.path).is_file() {
            Ok(self.path)
        } else {
            bail!(
                "{} is not installed; install it with `apt-get install {}`",
                self.path,
                self.package
            )
        }
    }
}

pub(crate) const NGINX: Tool = Tool {
    path: "/usr/sbin/nginx",
    package: "nginx-light",
};
pub(crate) const VSFTPD: Tool = Tool {
    path: "/usr/sbin/vsftpd",
    package: "vsftpd",
};
pub(crate) const SSHD: Tool = Tool {
    path: "/usr/sbin/sshd",
    package: "openssh-server",
};
pub(crate) const SSH_KEYGEN: Tool = Tool {
    path: "/usr/bin/ssh-keygen",
    package: "openssh-client",
};

/// A running server process and the file its output goes to.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) log: PathBuf,
}

impl Proc {
    /// The server's process id (setpriv execs it, so it is the child's).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Starts `program args…` with stdout and stderr written to `log`.
    pub(crate) fn spawn(
        name: &'static str,
        program: &str,
        args: &[&str],
        log: &Path,
    ) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = if Path::new(SETPRIV).is_file() {
            let mut cmd = Command::new(SETPRIV);
            cmd.args(["--pdeathsig", "KILL", "--", program]);
            cmd
        } else {
            Command::new(program)
        };
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_from_keeper(cmd).with_context(|| format!("starting {program}"))?;
        Ok(Proc {
            name,
            child,
            log: log.to_owned(),
        })
    }

    /// Waits until this process listens on every port in `ports`.
    pub(crate) fn wait_ready(&mut self, ports: &[u16]) -> Result<(), StartError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(anyhow::Error::from)? {
                let tail = log_tail(&self.log);
                // nginx and sshd report EADDRINUSE; vsftpd says only this.
                if tail.contains("Address already in use")
                    || tail.contains("could not bind listening")
                {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Other(anyhow!(
                    "{} exited during startup ({status}); last lines of {}:\n{tail}",
                    self.name,
                    self.log.display()
                )));
            }
            let mut ready = true;
            for &port in ports {
                match listener_owner(port, self.child.id()) {
                    Owner::Us => {}
                    Owner::Nobody => ready = false,
                    Owner::Stranger => return Err(StartError::PortTaken),
                }
            }
            if ready {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(StartError::Other(anyhow!(
                    "{} did not listen on {ports:?} within {READY_TIMEOUT:?}; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                )));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn kill(&mut self) {
        // Every server here is a single listening process (nginx runs without
        // a master), so SIGKILL leaves no orphan listening on the port. Open
        // vsftpd and sshd sessions are their own processes and end when their
        // client disconnects.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a server did not come up.
#[derive(Debug)]
pub(crate) enum StartError {
    /// Another process took one of the ports we picked; try other ports.
    PortTaken,
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// Runs `attempt` with fresh ports until it does not lose a port race.
pub(crate) fn with_port_retries<T>(
    mut attempt: impl FnMut() -> Result<T, StartError>,
) -> Result<T> {
    for _ in 0..5 {
        match attempt() {
            Ok(t) => return Ok(t),
            Err(StartError::PortTaken) => continue,
            Err(StartError::Other(e)) => return Err(e),
        }
    }
    bail!("could not find free ports after 5 attempts")
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, so that the
/// parent-death signal fires when the process dies, not when a test thread
/// ends.
fn spawn_from_keeper(cmd: Command) -> io::Result<Child> {
    static KEEPER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the harness spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    keeper
        .send((cmd, tx))
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("harness spawner thread is gone"))?
}

/// Ports handed out by this process, never handed out twice, so that
/// `Servers` started in parallel by one test binary cannot collide.
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port found on 127.0.0.1")
}

/// A run of consecutive free ports, held (never handed out again by this
/// process) until dropped.
#[derive(Debug)]
pub(crate) struct PortRange {
    pub(crate) lo: u16,
    pub(crate) hi: u16,
}

impl PortRange {
    pub(crate) fn bounds(&self) -> (u16, u16) {
        (self.lo, self.hi)
    }
}

impl Drop for PortRange {
    fn drop(&mut self) {
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(taken) = taken.as_mut() {
            for p in self.lo..=self.hi {
                taken.remove(&p);
            }
        }
    }
}

/// A run of `len` consecutive free ports below the kernel's ephemeral range
/// (32768 and up on Linux), for an FTP server's passive data connections.
/// There are 60 runs of 200: a test binary starts more FTP servers than
/// that, so a run goes back to the pool when its server stops.
pub(crate) fn free_port_range(len: u16) -> Result<PortRange> {
    const LOW: u16 = 20000;
    const HIGH: u16 = 32000;
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let slots = (HIGH - LOW) / len;
    for _ in 0..50 {
        let first = LOW + fastrand::u16(0..slots) * len;
        let ports = first..first + len;
        if ports.clone().any(|p| taken.contains(&p)) {
            continue;
        }
        let all_free = ports
            .clone()
            .all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
        if all_free {
            taken.extend(ports);
            return Ok(PortRange {
                lo: first,
                hi: first + len - 1,
            });
        }
    }
    bail!("no free range of {len} ports found on 127.0.0.1")
}

enum Owner {
    Us,
    Nobody,
    Stranger,
}

/// Who listens on 127.0.0.1:`port`: the process `pid`, nobody, or another.
fn listener_owner(port: u16, pid: u32) -> Owner {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        // Without /proc, fall back to a connect (and accept the small race).
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        return match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Owner::Us,
            Err(_) => Owner::Nobody,
        };
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl local rem st … inode (10th); 0A is LISTEN.
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_owned())
        })
        .collect();
    if inodes.is_empty() {
        return Owner::Nobody;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Owner::Nobody;
    };
    let ours = fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            inodes.iter().any(|i| target == format!("socket:[{i}]"))
        })
    });
    if ours { Owner::Us } else { Owner::Stranger }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs a short command to completion, failing with its output.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_its_package() {
        let tool = Tool {
            path: "/usr/sbin/no-such-server",
            package: "no-such-package",
        };
        let err = tool.check().unwrap_err().to_string();
        assert!(err.contains("/usr/sbin/no-such-server"), "{err}");
        assert!(err.contains("apt-get install no-such-package"), "{err}");
    }

    #[test]
    fn port_ranges_do_not_overlap_ports_handed_out() {
        let a = free_port_range(50).unwrap();
        let (lo, hi) = a.bounds();
        assert_eq!(hi - lo, 49);
        let (lo2, hi2) = free_port_range(50).unwrap().bounds();
        assert!(hi2 < lo || lo2 > hi);
        assert!(lo >= 20000 && hi < 32768);
    }

    /// A test binary starts more FTP servers, one after another, than
    /// there are runs of 200 ports (CI once ran out).
    #[test]
    fn a_port_range_goes_back_when_dropped() {
        for _ in 0..200 {
            drop(free_port_range(200).unwrap());
        }
    }
}
