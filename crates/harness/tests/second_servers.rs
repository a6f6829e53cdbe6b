//! Proves the second implementation of each protocol that the harness can
//! add (lighttpd, pyftpdlib), with the system's own clients, and its knobs: a slow
//! login and a cap on sessions.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use pymatris_harness::{PyftpdlibOptions, Servers, Which};

fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "30"])
        .args(args)
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Reads one FTP reply (the last line of a multi-line one).
fn reply(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return line;
        }
    }
}

fn login(port: u16, s: &Servers) -> (BufReader<TcpStream>, String) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = BufReader::new(stream);
    let banner = reply(&mut r);
    if !banner.starts_with("220") {
        return (r, banner);
    }
    let (user, pass) = s.ftp_user();
    write!(r.get_mut(), "USER {user}\r\n").unwrap();
    assert!(reply(&mut r).starts_with("331"));
    write!(r.get_mut(), "PASS {pass}\r\n").unwrap();
    let answer = reply(&mut r);
    (r, answer)
}

#[test]
fn lighttpd_serves_the_data_over_http_and_https_with_ranges() {
    let s = Servers::start(Which::none())
        .unwrap()
        .with_lighttpd()
        .unwrap();
    s.write_file("hello.txt", b"hello, pymatris\n");
    s.write_file("empty.bin", b"");
    let big = std::fs::read(s.write_random("big.bin", 3 << 20, 6)).unwrap();
    let ca = s.ca_cert().display().to_string();
    assert_eq!(
        curl(&[&s.lighttpd_http_url("hello.txt")]),
        b"hello, pymatris\n"
    );
    assert_eq!(curl(&[&s.lighttpd_http_url("empty.bin")]), b"");
    assert_eq!(
        curl(&["--cacert", &ca, &s.lighttpd_https_url("big.bin")]),
        big
    );
    assert_eq!(
        curl(&["-r", "100-199", &s.lighttpd_http_url("big.bin")]),
        &big[100..200]
    );
    let missing = Command::new("curl")
        .args(["-sS", "--fail", &s.lighttpd_http_url("nope")])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(22));
    assert!(s.describe().contains(&s.lighttpd_https_url("")));
}

#[test]
fn pyftpdlib_serves_the_data_over_ftp_and_ftps() {
    let s = Servers::start(Which::http_only())
        .unwrap()
        .with_pyftpdlib(PyftpdlibOptions::default())
        .unwrap();
    s.write_file("hello.txt", b"hello, pymatris\n");
    s.write_file("sub/dir/nested.txt", b"nested\n");
    s.write_file("empty.bin", b"");
    let big = s.write_random("big.bin", 3 << 20, 5);
    let ca = s.ca_cert().display().to_string();

    assert_eq!(curl(&[&s.pyftpdlib_url("hello.txt")]), b"hello, pymatris\n");
    assert_eq!(
        curl(&[&s.pyftpdlib_anon_url("sub/dir/nested.txt")]),
        b"nested\n"
    );
    assert_eq!(curl(&[&s.pyftpdlib_url("empty.bin")]), b"");
    assert_eq!(
        curl(&["--ssl-reqd", "--cacert", &ca, &s.pyftpdlib_url("big.bin")]),
        std::fs::read(big).unwrap()
    );
    // The same file on nginx: one data dir for every server.
    assert_eq!(curl(&[&s.http_url("hello.txt")]), b"hello, pymatris\n");
    assert!(s.describe().contains(&s.pyftpdlib_url("")));
}

#[test]
fn pyftpdlib_can_log_in_slowly() {
    let delay = Duration::from_millis(1500);
    let s = Servers::start(Which::none())
        .unwrap()
        .with_pyftpdlib(PyftpdlibOptions {
            login_delay: delay,
            ..PyftpdlibOptions::default()
        })
        .unwrap();
    let port = s.pyftpdlib_port();
    // Two logins at once both take the delay, not one after the other: a
    // slow login holds up only its own session.
    let t = Instant::now();
    let logins: Vec<_> = (0..2)
        .map(|_| {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut r = BufReader::new(stream);
            assert!(reply(&mut r).starts_with("220"));
            let (user, pass) = s.ftp_user();
            write!(r.get_mut(), "USER {user}\r\nPASS {pass}\r\n").unwrap();
            r
        })
        .collect();
    for mut r in logins {
        assert!(reply(&mut r).starts_with("331"));
        assert!(reply(&mut r).starts_with("230"));
    }
    let took = t.elapsed();
    assert!(took >= delay, "logged in in {took:?}");
    assert!(took < delay * 2, "logins waited for each other: {took:?}");
}

#[test]
fn pyftpdlib_refuses_sessions_over_its_limits() {
    for options in [
        PyftpdlibOptions {
            max_sessions: Some(2),
            ..PyftpdlibOptions::default()
        },
        PyftpdlibOptions {
            max_sessions_per_ip: Some(2),
            ..PyftpdlibOptions::default()
        },
    ] {
        let s = Servers::start(Which::none())
            .unwrap()
            .with_pyftpdlib(options)
            .unwrap();
        let port = s.pyftpdlib_port();
        let (first, a) = login(port, &s);
        let (mut second, b) = login(port, &s);
        assert!(a.starts_with("230") && b.starts_with("230"), "{a}{b}");
        let (_, refused) = login(port, &s);
        assert!(refused.starts_with("421"), "{options:?}: {refused}");
        // The sessions in are served in full: a data channel is no session.
        write!(second.get_mut(), "PASV\r\n").unwrap();
        let pasv = reply(&mut second);
        assert!(pasv.starts_with("227"), "{options:?}: {pasv}");
        // A session that ends frees its slot.
        let mut first = first;
        write!(first.get_mut(), "QUIT\r\n").unwrap();
        assert!(reply(&mut first).starts_with("221"));
        drop(first);
        let t = Instant::now();
        loop {
            let (_, again) = login(port, &s);
            if again.starts_with("230") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{options:?}: the slot was not freed: {again}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(second);
    }
}
