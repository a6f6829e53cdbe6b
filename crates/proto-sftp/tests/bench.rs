//! Loopback throughput against the harness's sshd, next to OpenSSH's own
//! `sftp` client. Not a test: run it by hand, in release mode,
//!
//! ```text
//! cargo test --release -p pymatris-proto-sftp --test bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_MIB` (default 1024) sets the big file's size, `BENCH_SPLITS`
//! (default 1) its parts, `BENCH_PARALLEL` (default 32) the small files in
//! flight, `BENCH_OPENSSH=1` times `sftp -b` on the same files.
#![allow(missing_docs, clippy::print_stderr)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pymatris_core::camino::Utf8Path;
use pymatris_core::{Config, Downloader};
use pymatris_harness::{Servers, Which};

extern crate pymatris_proto_sftp as _;
use pymatris_proto_sftp::SftpOptions;

/// CPU seconds (own, reaped children) of process `pid` ("self" for us).
fn cpu(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0;
    if f.len() < 15 {
        return (0.0, 0.0);
    }
    ((f[11] + f[12]) / tick, (f[13] + f[14]) / tick)
}

/// CPU seconds spent since `before` by us, our children, and sshd's
/// sessions (reaped by the listener).
struct Cpu {
    sshd: String,
    me: (f64, f64),
    server: f64,
}

impl Cpu {
    fn start(servers: &Servers) -> Cpu {
        let sshd = std::fs::read_to_string(servers.root_dir().join("sshd/sshd.pid"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Cpu {
            me: cpu("self"),
            server: cpu(&sshd).1,
            sshd,
        }
    }

    fn report(&self) -> String {
        // sshd reaps its session children a moment after they exit.
        std::thread::sleep(Duration::from_millis(300));
        let me = cpu("self");
        format!(
            "CPU: client {:.2}s, child {:.2}s, sshd {:.2}s",
            me.0 - self.me.0,
            me.1 - self.me.1,
            cpu(&self.sshd).1 - self.server
        )
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(servers: &Servers) -> Config {
    Config::default()
        .with(
            SftpOptions::default()
                .identity(Some(servers.ssh_client_key().to_owned()))
                .known_hosts(Some(servers.ssh_known_hosts().to_owned())),
        )
        .min_split_size(1 << 20)
        .max_tries(1)
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let mut got = 0;
        while got < n {
            let m = b.read(&mut y[got..n]).unwrap();
            if m == 0 {
                return false;
            }
            got += m;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if x[..n] != y[..n] {
            return false;
        }
    }
}

fn openssh_batch(servers: &Servers, cipher: &str, commands: &str) -> Duration {
    let port = servers.sftp_port().to_string();
    let target = format!("{}@127.0.0.1", servers.sftp_user());
    let mut cmd = Command::new("sftp");
    if cipher != "default" {
        cmd.args(["-c", cipher]);
    }
    let mut child = cmd
        .args(["-q", "-b", "-", "-P", &port, "-i"])
        .arg(servers.ssh_client_key())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            servers.ssh_known_hosts().display()
        ))
        .args(["-o", "BatchMode=yes", &target])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sftp");
    let t = Instant::now();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run by hand in release mode"]
async fn bench() {
    let servers = Servers::start(Which::sftp_only()).unwrap();
    let mib = env("BENCH_MIB", 1024);
    let splits = env("BENCH_SPLITS", 1) as usize;
    let parallel = env("BENCH_PARALLEL", 32) as usize;
    let big = servers.write_random("big.bin", mib << 20, 7);
    for i in 0..200 {
        servers.write_random(&format!("small/f{i:03}.bin"), 16 << 10, i);
    }
    let out = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(out.path()).unwrap();

    let mut dl = Downloader::new(config(&servers).max_splits(splits));
    dl.enqueue_file(&servers.sftp_url("big.bin"), dir);
    let c = Cpu::start(&servers);
    let t = Instant::now();
    let res = dl.download().await;
    let secs = t.elapsed().as_secs_f64();
    drop(dl);
    let c = c.report();
    assert!(res.errors.is_empty(), "{res}");
    assert!(same_file(&big, &out.path().join("big.bin")));
    eprintln!(
        "pymatris: {mib} MiB, {splits} part(s): {secs:.2}s, {:.0} MB/s; {c}",
        (mib << 20) as f64 / secs / 1e6
    );

    let small_dir = dir.join("small");
    let mut dl = Downloader::new(config(&servers).max_parallel(parallel));
    for i in 0..200 {
        dl.enqueue_file(&servers.sftp_url(&format!("small/f{i:03}.bin")), &small_dir);
    }
    let t = Instant::now();
    let res = dl.download().await;
    let secs = t.elapsed().as_secs_f64();
    assert!(res.errors.is_empty(), "{res}");
    eprintln!(
        "pymatris: 200 x 16 KiB, {parallel} at once: {secs:.3}s, {:.0} files/s",
        200.0 / secs
    );

    if env("BENCH_OPENSSH", 0) == 1 {
        let data = servers.data_dir().display().to_string();
        let dest = out.path().join("openssh");
        std::fs::create_dir_all(dest.join("small")).unwrap();
        for cipher in ["default", "aes128-gcm@openssh.com"] {
            let c = Cpu::start(&servers);
            let d = openssh_batch(
                &servers,
                cipher,
                &format!("get {data}/big.bin {}/big.bin\n", dest.display()),
            );
            let c = c.report();
            assert!(same_file(&big, &dest.join("big.bin")));
            eprintln!(
                "OpenSSH sftp ({cipher}): {mib} MiB: {:.2}s, {:.0} MB/s; {c}",
                d.as_secs_f64(),
                (mib << 20) as f64 / d.as_secs_f64() / 1e6
            );
        }
        let mut cmds = String::new();
        for i in 0..200 {
            cmds.push_str(&format!(
                "get {data}/small/f{i:03}.bin {}/small/\n",
                dest.display()
            ));
        }
        let d = openssh_batch(&servers, "default", &cmds);
        eprintln!(
            "OpenSSH sftp: 200 x 16 KiB: {:.3}s, {:.0} files/s",
            d.as_secs_f64(),
            200.0 / d.as_secs_f64()
        );
    }
}
