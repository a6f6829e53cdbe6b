//! The engine with this crate against the harness's sshd, for what the CLI
//! tests (`tests/e2e/sftp.rs`) cannot reach: a connection killed
//! mid-transfer (a reporter watches the bytes arrive, kills the server's
//! sessions, and counts the logins), and a second sshd that takes
//! passwords only through keyboard-interactive (PAM).

#![allow(missing_docs)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pymatris_core::camino::Utf8PathBuf;
use pymatris_core::{Config, Downloader, Error, ReportId, Reporter};
use pymatris_harness::{Servers, Which};

// Link this crate's registration into the test binary.
extern crate pymatris_proto_sftp as _;
use pymatris_proto_sftp::SftpOptions;

/// Kills this harness's sshd sessions (the children of its listener and
/// theirs) once `at` bytes have been written.
struct Killer {
    listener: u32,
    at: u64,
    progress: AtomicU64,
    killed: AtomicBool,
}

fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .expect("pgrep (procps)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Killer {
    fn kill_sessions(&self) {
        let mut pids = Vec::new();
        for child in children(self.listener) {
            pids.extend(children(child));
            pids.push(child);
        }
        assert!(!pids.is_empty(), "no sshd session to kill");
        for pid in pids {
            // A session's own child may be gone with its parent already.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Reporter for Killer {
    fn on_start(&self, _url: &str, _name: &str, _size: Option<u64>) -> ReportId {
        1
    }

    fn on_progress(&self, _id: ReportId, bytes: u64) {
        let total = self.progress.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if total >= self.at && !self.killed.swap(true, Ordering::SeqCst) {
            self.kill_sessions();
        }
    }

    fn on_finish(&self, _id: ReportId, _error: Option<&Error>) {}
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn a_connection_killed_mid_transfer_is_resumed_byte_for_byte() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let size: u64 = 192 << 20;
    let big = servers.write_random("killed.bin", size, 99);
    let pidfile = servers.root_dir().join("sshd/sshd.pid");
    let listener: u32 = std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(out.path().to_owned()).unwrap();
    let mut logins_before = 0;
    for splits in [1, 3] {
        let killer = Arc::new(Killer {
            listener,
            at: 24 << 20,
            progress: AtomicU64::new(0),
            killed: AtomicBool::new(false),
        });
        let config = Config::default()
            .with(
                SftpOptions::default()
                    .identity(Some(servers.ssh_client_key().to_owned()))
                    .known_hosts(Some(servers.ssh_known_hosts().to_owned())),
            )
            .backoff_base(Duration::from_millis(50))
            .max_splits(splits)
            .min_split_size(1 << 20)
            .overwrite(true);
        let mut dl = Downloader::new(config).with_reporter(killer.clone());
        dl.enqueue_file(&servers.sftp_url("killed.bin"), &dir);
        let results = dl.download_blocking();
        assert!(results.errors.is_empty(), "{splits} part(s): {results}");
        assert!(killer.killed.load(Ordering::SeqCst), "never killed");
        // The engine reports no retry for an attempt that made progress:
        // the new login after the kill shows the reconnection.
        let logins = std::fs::read_to_string(servers.root_dir().join("sshd/sshd.log"))
            .unwrap()
            .matches("Accepted publickey")
            .count();
        assert!(logins >= logins_before + 2, "no new login after the kill");
        logins_before = logins;
        // Resumed, not restarted: every byte was written once.
        assert_eq!(killer.progress.load(Ordering::SeqCst), size);
        assert!(
            same_file(&big, &out.path().join("killed.bin")),
            "{splits} part(s): bytes differ"
        );
    }
}

/// A second sshd beside the harness's, with its config but `settings`
/// (sshd_config lines) in place of the lines with the same keywords:
/// killed on drop.
struct ExtraSshd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ExtraSshd {
    fn start(servers: &Servers, settings: &str) -> ExtraSshd {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ours = format!(
            "Port {port}\nPidFile {}/sshd.pid\n{settings}",
            dir.path().display()
        );
        let replaced: Vec<&str> = ours
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let base = std::fs::read_to_string(servers.root_dir().join("sshd/sshd_config")).unwrap();
        let mut conf = String::new();
        for line in base.lines() {
            let key = line.split_whitespace().next().unwrap_or_default();
            if !replaced.contains(&key) {
                conf.push_str(line);
                conf.push('\n');
            }
        }
        conf.push_str(&ours);
        conf.push('\n');
        let path = dir.path().join("sshd_config");
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "sshd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ExtraSshd {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for ExtraSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keyboard_interactive_takes_the_password() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    servers.write_file("kbd.txt", b"keyboard");
    // Logins through PAM's keyboard-interactive only, as many servers
    // have them.
    let kbd = ExtraSshd::start(
        &servers,
        "UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes\n\
         PubkeyAuthentication no",
    );
    let kh = tempfile::tempdir().unwrap();
    let known = kh.path().join("known_hosts");
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}\n", kbd.port, servers.ssh_host_key_pub()),
    )
    .unwrap();
    let url = |password: &str| {
        format!(
            "sftp://{}:{password}@127.0.0.1:{}{}/kbd.txt",
            servers.sftp_user(),
            kbd.port,
            servers.data_dir().display()
        )
    };
    let out = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(out.path().to_owned()).unwrap();
    let config = || {
        Config::default()
            .with(SftpOptions::default().known_hosts(Some(known.clone())))
            .max_tries(1)
    };

    let mut dl = Downloader::new(config());
    dl.enqueue_file(&url(servers.sftp_password()), &dir);
    let results = dl.download_blocking();
    assert!(results.errors.is_empty(), "{results}");
    assert_eq!(
        std::fs::read(out.path().join("kbd.txt")).unwrap(),
        b"keyboard"
    );

    let mut dl = Downloader::new(config());
    dl.enqueue_file(&url("not-it"), &dir);
    let results = dl.download_blocking();
    let err = &results
        .errors
        .first()
        .expect("a wrong password fails")
        .error;
    assert_eq!(
        err.kind(),
        pymatris_core::ErrorKind::Auth,
        "{}",
        err.chain()
    );
    assert!(
        err.chain().contains("keyboard-interactive"),
        "{}",
        err.chain()
    );
    assert!(!err.chain().contains("not-it"), "{}", err.chain());
}

/// A server that allows one key exchange, MAC or cipher only, each one
/// that OpenSSH's client offers by default: an OpenSSH client gets in, so
/// must we.
#[test]
fn servers_restricted_to_one_algorithm_openssh_offers() {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let bytes = std::fs::read(servers.write_random("algo.bin", 3 << 20, 7)).unwrap();
    let restrictions = [
        "KexAlgorithms ecdh-sha2-nistp256",
        "KexAlgorithms ecdh-sha2-nistp384",
        "KexAlgorithms ecdh-sha2-nistp521",
        "KexAlgorithms diffie-hellman-group14-sha256",
        "MACs hmac-sha1\nCiphers aes128-ctr",
        "MACs hmac-sha1-etm@openssh.com\nCiphers aes256-ctr",
        "MACs hmac-sha2-256\nCiphers aes192-ctr",
        "Ciphers chacha20-poly1305@openssh.com",
        "Ciphers aes256-gcm@openssh.com",
    ];
    for restriction in restrictions {
        let sshd = ExtraSshd::start(&servers, restriction);
        let kh = tempfile::tempdir().unwrap();
        let known = kh.path().join("known_hosts");
        std::fs::write(
            &known,
            format!("[127.0.0.1]:{} {}\n", sshd.port, servers.ssh_host_key_pub()),
        )
        .unwrap();
        let out = tempfile::tempdir().unwrap();
        let dir = Utf8PathBuf::from_path_buf(out.path().to_owned()).unwrap();
        let config = Config::default()
            .with(
                SftpOptions::default()
                    .identity(Some(servers.ssh_client_key().to_owned()))
                    .known_hosts(Some(known)),
            )
            .max_splits(2)
            .min_split_size(1 << 20)
            .max_tries(1);
        let url = format!(
            "sftp://{}@127.0.0.1:{}{}/algo.bin",
            servers.sftp_user(),
            sshd.port,
            servers.data_dir().display()
        );
        let mut dl = Downloader::new(config);
        dl.enqueue_file(&url, &dir);
        let results = dl.download_blocking();
        assert!(results.errors.is_empty(), "{restriction}: {results}");
        assert!(
            std::fs::read(out.path().join("algo.bin")).unwrap() == bytes,
            "{restriction}: bytes differ"
        );
    }
}
