//! Proves the harness: starts the servers and fetches files from each with
//! the system's own clients (curl, OpenSSH's sftp), comparing bytes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use pymatris_harness::{Options, Servers, Which, random_bytes};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a client");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn curl(args: &[&str]) -> Vec<u8> {
    run(Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30"])
        .args(args))
    .stdout
}

fn sftp_get(s: &Servers, remote: &Path, local: &Path, dir: &Path) {
    let batch = dir.join("batch");
    fs::write(
        &batch,
        format!("get {} {}\n", remote.display(), local.display()),
    )
    .unwrap();
    run(Command::new("sftp")
        .arg("-q")
        .arg("-i")
        .arg(s.ssh_client_key())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            s.ssh_known_hosts().display()
        ))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg("-P")
        .arg(s.sftp_port().to_string())
        .arg("-b")
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", s.sftp_user())));
}

#[test]
fn every_server_serves_the_same_bytes() {
    // How long the start takes is no part of the test: on a shared,
    // loaded machine it once took 4.9 s.
    let s = Servers::start(Which::all()).expect("starting servers");

    s.write_file("hello.txt", b"hello, pymatris\n");
    s.write_file("sub/dir/nested.txt", b"nested\n");
    s.write_file("empty.bin", b"");
    let big = s.write_random("big.bin", 3 * 1024 * 1024 + 5, 42);
    let expected = random_bytes(3 * 1024 * 1024 + 5, 42);
    assert_eq!(fs::read(&big).unwrap(), expected);

    let ca = s.ca_cert().display().to_string();
    for (name, url) in [
        ("http", s.http_url("big.bin")),
        ("https", s.https_url("big.bin")),
        ("ftp", s.ftp_url("big.bin")),
        ("ftp anon", s.ftp_anon_url("big.bin")),
    ] {
        let got = curl(&["--cacert", &ca, &url]);
        assert!(
            got == expected,
            "{name} {url}: wrong bytes ({} long)",
            got.len()
        );
    }
    assert_eq!(curl(&[&s.http_url("sub/dir/nested.txt")]), b"nested\n");
    assert_eq!(curl(&[&s.ftp_anon_url("empty.bin")]), b"");
    assert_eq!(curl(&[&s.http_url("empty.bin")]), b"");

    // Explicit FTPS (AUTH TLS), control and data encrypted, user and anonymous.
    for url in [s.ftp_url("hello.txt"), s.ftp_anon_url("hello.txt")] {
        let got = curl(&["--ssl-reqd", "--cacert", &ca, &url]);
        assert_eq!(got, b"hello, pymatris\n", "FTPS {url}");
    }

    // HTTPS by IP too: the certificate names 127.0.0.1.
    let by_ip = format!("https://127.0.0.1:{}/hello.txt", s.https_port());
    assert_eq!(curl(&["--cacert", &ca, &by_ip]), b"hello, pymatris\n");

    // Ranges.
    let part = curl(&["-r", "100-199", &s.http_url("big.bin")]);
    assert_eq!(part, &expected[100..200]);

    // SFTP with OpenSSH's client, key auth and strict host key checking.
    let out = tempfile::tempdir().unwrap();
    let local = out.path().join("big.bin");
    let remote = s.data_dir().join("big.bin");
    sftp_get(&s, &remote, &local, out.path());
    assert!(fs::read(&local).unwrap() == expected, "sftp: wrong bytes");
    // And the URL form, with curl's libssh2 and password auth (libssh2
    // cannot be pointed at our known_hosts file, hence -k).
    let got = curl(&[
        "-k",
        "--user",
        &format!("{}:{}", s.sftp_user(), s.sftp_password()),
        &s.sftp_url("hello.txt"),
    ]);
    assert_eq!(got, b"hello, pymatris\n");
}

#[test]
fn failures_look_like_failures() {
    let s = Servers::start(Which::all()).expect("starting servers");
    s.write_file("hello.txt", b"hi\n");
    let status = |args: &[&str]| {
        Command::new("curl")
            .args(["-s", "--fail", "--max-time", "30", "-o", "/dev/null", "-k"])
            .args(args)
            .status()
            .unwrap()
            .code()
    };
    // curl exit codes: 22 HTTP error, 78 remote file not found, 67 login denied.
    assert_eq!(status(&[&s.http_url("missing")]), Some(22));
    assert_eq!(status(&[&s.ftp_anon_url("missing")]), Some(78));
    let bad = s.ftp_url("hello.txt").replace(s.ftp_user().1, "wrong");
    assert_eq!(status(&[&bad]), Some(67));
    let bad_sftp = ["--user", "pymatris-sftp:wrong"];
    assert_eq!(
        status(&[bad_sftp[0], bad_sftp[1], &s.sftp_url("hello.txt")]),
        Some(67)
    );
}

#[test]
fn instances_are_independent_and_drop_cleans_up() {
    let a = Servers::start(Which::http_only()).unwrap();
    let b = Servers::start(Which::http_only()).unwrap();
    assert_ne!(a.http_port(), b.http_port());
    a.write_file("x", b"a");
    b.write_file("x", b"b");
    assert_eq!(curl(&[&a.http_url("x")]), b"a");
    assert_eq!(curl(&[&b.http_url("x")]), b"b");
    let (root, url) = (a.root_dir().to_owned(), a.http_url("x"));
    drop(a);
    assert!(!root.exists(), "temp dir left behind");
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "5", &url])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(7), "nginx still answers");
}

#[test]
fn ftp_max_per_ip_limits_clients() {
    let s = Servers::start_with(
        Which::ftp_only(),
        Options {
            ftp_max_per_ip: Some(1),
            ..Options::default()
        },
    )
    .unwrap();
    s.write_file("hello.txt", b"hi\n");
    // Hold one control connection open, then a second client is refused.
    let port = s.ftp_port();
    let mut first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut banner = [0u8; 3];
    std::io::Read::read_exact(&mut first, &mut banner).unwrap();
    assert_eq!(&banner, b"220");
    let mut second = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reply = [0u8; 3];
    std::io::Read::read_exact(&mut second, &mut reply).unwrap();
    assert_eq!(&reply, b"421");
    drop((first, second));
}

#[test]
fn random_data_is_deterministic_and_streams() {
    let s = Servers::start(Which::http_only()).unwrap();
    let a = s.write_random("a", (1 << 20) * 2 + 3, 7);
    let b = s.write_random("b", (1 << 20) * 2 + 3, 7);
    let c = s.write_random("c", 1000, 8);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert_ne!(fs::read(&c).unwrap(), random_bytes(1000, 7));
    assert_eq!(fs::read(&a).unwrap(), random_bytes((1 << 20) * 2 + 3, 7));
    // The stream is pinned: if fastrand ever changes it, this says so.
    assert_eq!(random_bytes(8, 0), [214, 240, 89, 141, 136, 205, 69, 154]);
}

#[test]
fn servers_outlive_the_thread_that_started_them() {
    // The kernel sends the parent-death signal when the spawning *thread*
    // ends; tests that share a `static` `Servers` rely on the harness
    // spawning from a thread of its own.
    let s = std::thread::spawn(|| Servers::start(Which::http_only()).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    s.write_file("x", b"alive");
    assert_eq!(curl(&[&s.http_url("x")]), b"alive");
}
