//! The cases every protocol must pass alike, as one set of cases run
//! against every (protocol, server) pair the harness can start: nginx and
//! lighttpd (HTTP, HTTPS), vsftpd and pyftpdlib (FTP, explicit FTPS; and a
//! pyftpdlib that logs in slowly and caps its sessions, FTP),
//! OpenSSH's sshd and asyncssh (SFTP), all serving the same files: whole files, parts, a
//! zero-byte file, UTF-8 names, a missing file, bad credentials, many small
//! files, trust, and a resume (of a planted part, and after a Ctrl-C) that
//! fetches only what is missing and costs the server not much more than that.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_harness::{PyftpdlibOptions, Server, Servers, Which, WireMeter};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http,
    Https,
    Ftp,
    /// Explicit FTPS: `ftp://` with `--ftp-tls`.
    Ftps,
    Sftp,
}

/// One (server, protocol) pair of the suite.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    server: Server,
    proto: Proto,
    /// The suite's second pyftpdlib, which logs in slowly and caps sessions.
    slow_login: bool,
}

const fn ep(server: Server, proto: Proto) -> Endpoint {
    Endpoint {
        server,
        proto,
        slow_login: false,
    }
}

/// Longer than a part may go without a byte before it counts as stalled,
/// and a cap on sessions: what pure-ftpd does with its default password
/// hashing (issue 19).
const SLOW_LOGIN: PyftpdlibOptions = PyftpdlibOptions {
    login_delay: Duration::from_secs(4),
    max_sessions: Some(7),
    max_sessions_per_ip: None,
};

const ALL: [Endpoint; 11] = [
    ep(Server::Nginx, Proto::Http),
    ep(Server::Nginx, Proto::Https),
    ep(Server::Lighttpd, Proto::Http),
    ep(Server::Lighttpd, Proto::Https),
    ep(Server::Vsftpd, Proto::Ftp),
    ep(Server::Vsftpd, Proto::Ftps),
    ep(Server::Pyftpdlib, Proto::Ftp),
    ep(Server::Pyftpdlib, Proto::Ftps),
    Endpoint {
        server: Server::Pyftpdlib,
        proto: Proto::Ftp,
        slow_login: true,
    },
    ep(Server::Sshd, Proto::Sftp),
    ep(Server::Asyncssh, Proto::Sftp),
];

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:?}", self.server, self.proto)?;
        if self.slow_login {
            f.write_str(" (slow login, 7 sessions)")?;
        }
        Ok(())
    }
}

impl Endpoint {
    fn is_ftp(&self) -> bool {
        matches!(self.proto, Proto::Ftp | Proto::Ftps)
    }

    fn url(self, s: &Suite, rel: &str) -> String {
        if self.slow_login {
            return s.slow.pyftpdlib_url(rel);
        }
        match (self.server, self.proto) {
            (Server::Nginx, Proto::Http) => s.http_url(rel),
            (Server::Nginx, Proto::Https) => s.https_url(rel),
            (Server::Lighttpd, Proto::Http) => s.lighttpd_http_url(rel),
            (Server::Lighttpd, Proto::Https) => s.lighttpd_https_url(rel),
            (Server::Vsftpd, Proto::Ftp | Proto::Ftps) => s.ftp_url(rel),
            (Server::Pyftpdlib, Proto::Ftp | Proto::Ftps) => s.pyftpdlib_url(rel),
            (Server::Sshd, Proto::Sftp) => s.sftp_url(rel),
            (Server::Asyncssh, Proto::Sftp) => s.asyncssh_url(rel),
            _ => unreachable!("{self} is not in the suite"),
        }
    }

    /// The flags this endpoint needs besides trust.
    fn args(self) -> &'static [&'static str] {
        match self.proto {
            Proto::Ftps => &["--ftp-tls"],
            _ => &[],
        }
    }

    /// The SSH key that logs in, and the known_hosts file that trusts the
    /// server (each SSH server of the harness has its own).
    fn ssh_files(self, s: &Servers) -> (&Path, &Path) {
        match self.server {
            Server::Asyncssh => (s.asyncssh_client_key(), s.asyncssh_known_hosts()),
            _ => (s.ssh_client_key(), s.ssh_known_hosts()),
        }
    }

    /// Whether a login with a password is part of the URL.
    fn has_password(self) -> bool {
        matches!(self.proto, Proto::Ftp | Proto::Ftps | Proto::Sftp)
    }
}

/// Every server of the suite: one `Servers` with one of each, which this
/// derefs to, and the slow-login pyftpdlib on a data dir of its own.
struct Suite {
    main: Servers,
    slow: Servers,
}

impl std::ops::Deref for Suite {
    type Target = Servers;

    fn deref(&self) -> &Servers {
        &self.main
    }
}

impl Suite {
    /// Writes the file on every server.
    fn write_file(&self, rel: &str, bytes: &[u8]) {
        self.main.write_file(rel, bytes);
        self.slow.write_file(rel, bytes);
    }

    /// The `Servers` that runs `e`.
    fn of(&self, e: Endpoint) -> &Servers {
        if e.slow_login { &self.slow } else { &self.main }
    }
}

fn servers() -> Suite {
    let main = Servers::start(Which::all())
        .and_then(|s| s.with_lighttpd())
        .and_then(|s| s.with_pyftpdlib(PyftpdlibOptions::default()))
        .and_then(|s| s.with_asyncssh())
        .expect("start every server of the suite (see .ci/run)");
    let slow = Servers::start(Which::none())
        .and_then(|s| s.with_pyftpdlib(SLOW_LOGIN))
        .expect("start the slow-login pyftpdlib");
    Suite { main, slow }
}

/// `pymatris --json` with what every protocol needs to trust the servers,
/// an empty HOME and no ssh-agent.
fn pymatris(servers: &Servers, home: &Path, e: Endpoint, args: &[&str]) -> (Output, Value) {
    let (key, known_hosts) = e.ssh_files(servers);
    let mut cmd = Command::new(pymatris_bin());
    cmd.arg("--ca-cert")
        .arg(servers.ca_cert())
        .arg("--identity")
        .arg(key)
        .arg("--known-hosts")
        .arg(known_hosts);
    run(cmd, home, e, args)
}

/// `pymatris --json` as `cmd` starts it, for `e`, with an empty HOME and no
/// ssh-agent.
fn run(mut cmd: Command, home: &Path, e: Endpoint, args: &[&str]) -> (Output, Value) {
    let out = cmd
        .arg("--json")
        .args(e.args())
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("run pymatris");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "{e}: --json: {err}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn error_kinds(json: &Value) -> Vec<String> {
    json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Percent-encodes every byte of `rel` but unreserved ones and `/`.
fn encode(rel: &str) -> String {
    let mut out = String::new();
    for b in rel.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn whole_files_parts_and_empty_files_on_every_server() {
    let servers = servers();
    let big = random_bytes(3 << 20, 21);
    let small = random_bytes(1000, 22);
    servers.write_file("c/big.bin", &big);
    servers.write_file("c/small.bin", &small);
    servers.write_file("c/empty.bin", b"");
    for e in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let urls: Vec<String> = ["c/big.bin", "c/small.bin", "c/empty.bin"]
            .iter()
            .map(|r| e.url(&servers, r))
            .collect();
        let mut args = vec![
            "--dir",
            out.to_str().unwrap(),
            "--max-splits",
            "4",
            "--min-split-size",
            "512K",
        ];
        args.extend(urls.iter().map(String::as_str));
        let (run, json) = pymatris(&servers, home.path(), e, &args);
        assert_eq!(run.status.code(), Some(0), "{e}: {json:#}");
        assert_eq!(list_dir(&out), ["big.bin", "empty.bin", "small.bin"], "{e}");
        assert!(
            std::fs::read(out.join("big.bin")).unwrap() == big,
            "{e}: big.bin differs"
        );
        assert_eq!(std::fs::read(out.join("small.bin")).unwrap(), small, "{e}");
        assert!(
            std::fs::read(out.join("empty.bin")).unwrap().is_empty(),
            "{e}"
        );
    }
}

#[test]
fn utf8_names_on_every_server() {
    let servers = servers();
    let name = "Grüße, 世界 ✓.bin";
    let bytes = random_bytes(70_000, 23);
    servers.write_file(&format!("c/ütf/{name}"), &bytes);
    for e in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let url = e.url(&servers, &encode(&format!("c/ütf/{name}")));
        let (run, json) = pymatris(
            &servers,
            home.path(),
            e,
            &["--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(0), "{e}: {json:#}");
        assert_eq!(list_dir(&out), [name], "{e}");
        assert!(std::fs::read(out.join(name)).unwrap() == bytes, "{e}");
    }
}

#[test]
fn a_missing_file_is_not_found_on_every_server() {
    let servers = servers();
    for e in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let url = e.url(&servers, "c/no-such-file.bin");
        let (run, json) = pymatris(
            &servers,
            home.path(),
            e,
            &["--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(1), "{e}");
        assert_eq!(error_kinds(&json), ["NotFound"], "{e}: {json:#}");
        assert!(list_dir(&out).is_empty(), "{e}: {:?}", list_dir(&out));
    }
}

#[test]
fn bad_credentials_fail_as_auth_and_never_show() {
    let servers = servers();
    servers.write_file("c/secret.bin", b"x");
    let (ftp_user, ftp_pass) = servers.ftp_user();
    for e in ALL.into_iter().filter(|e| e.has_password()) {
        let good = e.url(&servers, "c/secret.bin");
        let url = if e.proto == Proto::Sftp {
            let user = servers.sftp_user();
            good.replacen(&format!("{user}@"), &format!("{user}:wrong-pw-123@"), 1)
        } else {
            good.replacen(
                &format!("{ftp_user}:{ftp_pass}@"),
                &format!("{ftp_user}:wrong-pw-123@"),
                1,
            )
        };
        assert!(url.contains("wrong-pw-123"), "{url}");
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        // Only the password may log in: the key of the harness is not given.
        let mut cmd = Command::new(pymatris_bin());
        cmd.args(["--max-tries", "3", "--ca-cert"])
            .arg(servers.ca_cert())
            .arg("--known-hosts")
            .arg(e.ssh_files(&servers).1);
        let (run, json) = run(cmd, home.path(), e, &["--dir", out.to_str().unwrap(), &url]);
        assert_eq!(run.status.code(), Some(1), "{e}");
        assert_eq!(error_kinds(&json), ["Auth"], "{e}: {json:#}");
        assert_eq!(json["errors"][0]["retryable"], false, "{e}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            !all.contains("wrong-pw-123"),
            "{e}: the password leaked: {all}"
        );
    }
}

/// Without `--ca-cert` the test CA is not trusted, and without
/// `--known-hosts` (and an empty HOME) neither is the SSH host key: every
/// endpoint that authenticates its server refuses it.
#[test]
fn an_untrusted_server_is_refused_on_every_server() {
    let servers = servers();
    servers.write_file("c/trust.bin", b"t");
    for e in ALL {
        let expected = match e.proto {
            Proto::Http | Proto::Ftp => continue,
            Proto::Https | Proto::Ftps => "Tls",
            Proto::Sftp => "HostKey",
        };
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let mut cmd = Command::new(pymatris_bin());
        cmd.arg("--identity").arg(e.ssh_files(&servers).0);
        let url = e.url(&servers, "c/trust.bin");
        let (run, json) = run(cmd, home.path(), e, &["--dir", out.to_str().unwrap(), &url]);
        assert_eq!(run.status.code(), Some(1), "{e}: {json:#}");
        assert_eq!(error_kinds(&json), [expected], "{e}: {json:#}");
        assert!(list_dir(&out).is_empty(), "{e}: {:?}", list_dir(&out));
        // The summary and the JSON name the flag that would let it through
        // (the library gives a hint, the CLI its own words).
        let flag = match e.proto {
            Proto::Sftp => "--accept-new-host-keys",
            _ => "--ca-cert FILE",
        };
        let summary = String::from_utf8_lossy(&run.stderr);
        assert!(summary.contains(flag), "{e}: {summary}");
        let said = json["errors"][0]["error"].as_str().unwrap_or_default();
        assert!(said.contains(flag), "{e}: {json:#}");
    }
}

#[test]
fn many_small_files_on_every_server() {
    let servers = servers();
    let files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("many/f{i:03}.txt"),
                random_bytes(100 + i * 37, i as u64),
            )
        })
        .collect();
    for (rel, bytes) in &files {
        servers.write_file(rel, bytes);
    }
    for e in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let urls: Vec<String> = files.iter().map(|(rel, _)| e.url(&servers, rel)).collect();
        let mut args = vec!["--dir", out.to_str().unwrap(), "--max-parallel", "8"];
        args.extend(urls.iter().map(String::as_str));
        let (run, json) = pymatris(&servers, home.path(), e, &args);
        assert_eq!(run.status.code(), Some(0), "{e}: {json:#}");
        for (rel, bytes) in &files {
            let name = rel.rsplit('/').next().unwrap();
            assert_eq!(&std::fs::read(out.join(name)).unwrap(), bytes, "{e} {name}");
        }
    }
}

/// Parts left half done by an earlier run are resumed, not fetched again.
///
/// The state is planted as an interrupted split download leaves it: four
/// parts, each with its first half on disk. Those halves are zeros, which a
/// resumed download keeps and a restarted one would replace.
#[test]
fn continue_fetches_only_what_is_missing_on_every_server() {
    resume_on_every_server(4 << 20, false, |_| true);
}

/// Resuming costs each HTTP and SFTP server not much more than the missing
/// bytes: at most 1.05 times them plus a little for headers, framing and a
/// handshake. What a server sent is read from its transfer log (see the
/// harness's `sent.rs`).
#[test]
fn resuming_costs_about_the_missing_bytes_on_http_and_sftp_servers() {
    assert_resume_costs_about_the_missing_bytes(|e| !e.is_ftp());
}

/// The same on FTP servers, counting what their data connections put on the
/// wire (the harness's `WireMeter`), not what their logs say they sent.
///
/// A RETR from a REST offset has no end, so the client closes the data
/// connection of each part but the file's last at the part's end. By then
/// the server has written more of the file into its socket, as much as its
/// send buffer holds (megabytes on Linux), and logs it as sent; but only
/// what the client's receive window let through ever left the server, and
/// that is what the client bounds (`DataWindow` in proto-ftp). The rest
/// costs the server a disk read, not the network.
#[test]
fn resuming_costs_about_the_missing_bytes_on_ftp_servers() {
    assert_costs_about_the_missing_bytes(resume_on_every_server(16 << 20, true, Endpoint::is_ftp));
}

/// The same on FTP servers after a run stopped by Ctrl-C.
#[test]
fn resuming_after_ctrl_c_costs_about_the_missing_bytes_on_ftp_servers() {
    assert_costs_about_the_missing_bytes(interrupt_and_resume_on_every_server(
        true,
        Endpoint::is_ftp,
    ));
}

fn assert_resume_costs_about_the_missing_bytes(pick: fn(&Endpoint) -> bool) {
    let mut costs = resume_on_every_server(16 << 20, true, pick);
    costs.extend(interrupt_and_resume_on_every_server(true, pick));
    assert_costs_about_the_missing_bytes(costs);
}

fn assert_costs_about_the_missing_bytes(costs: Vec<Cost>) {
    // Headers, framing, an SSH handshake and a little read-ahead per part.
    const SLACK: u64 = 64 << 10;
    let costly: Vec<String> = costs
        .iter()
        .filter(|c| c.wire.unwrap_or(c.sent) > c.missing + c.missing / 20 + SLACK)
        .map(|c| format!("{c:#?}"))
        .collect();
    let summary: Vec<String> = costs
        .iter()
        .map(|c| {
            format!(
                "{}: missing {}, the server's log {:.2}x, on the wire {}",
                c.endpoint,
                c.missing,
                c.sent as f64 / c.missing as f64,
                c.wire.map_or("-".to_owned(), |w| format!(
                    "{:.2}x",
                    w as f64 / c.missing as f64
                ))
            )
        })
        .collect();
    // For whoever runs the test by hand (`--nocapture`): how close each came.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{}", summary.join("\n"));
    }
    assert!(
        costly.is_empty(),
        "resuming cost more than 1.05 x the missing bytes + {SLACK}:\n{}\n\nEvery resume:\n{}",
        costly.join("\n"),
        summary.join("\n")
    );
}

/// A download stopped by Ctrl-C under `-c` halfway through is finished by
/// a second `-c` run, without fetching again what the first one had.
#[test]
fn a_run_interrupted_under_continue_resumes_on_every_server() {
    interrupt_and_resume_on_every_server(false, |_| true);
}

/// For every endpoint: a throttled `-c` run of a file is sent SIGINT about
/// halfway, then rerun with `-c`; checks the bytes and, if `measure`,
/// returns what each server sent on the rerun.
fn interrupt_and_resume_on_every_server(measure: bool, pick: fn(&Endpoint) -> bool) -> Vec<Cost> {
    const SIZE: usize = 8 << 20;
    // The cap gives the test time to see a third of the file on disk and
    // signal before the first run could finish (two seconds at least).
    const SPEED: &str = "4M";
    let servers = servers();
    let source = random_bytes(SIZE, 32);
    let mut costs = Vec::new();
    for (i, e) in ALL.into_iter().enumerate().filter(|(_, e)| pick(e)) {
        let name = format!("interrupted-{i}.bin");
        let rel = format!("c/{name}");
        servers.write_file(&rel, &source);
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let url = e.url(&servers, &rel);
        let (key, known_hosts) = e.ssh_files(&servers);
        let mut first = Command::new(pymatris_bin())
            .arg("--ca-cert")
            .arg(servers.ca_cert())
            .arg("--identity")
            .arg(key)
            .arg("--known-hosts")
            .arg(known_hosts)
            .args(e.args())
            .args(["-c", "--quiet", "--max-speed", SPEED, "--dir"])
            .arg(&out)
            .arg(&url)
            .env("HOME", home.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let part = out.join(format!("{name}.pymatris-part"));
        let deadline = Instant::now() + Duration::from_secs(60);
        // The part file is written at each part's offset, sparse: its
        // allocated blocks are the bytes received so far.
        while std::fs::metadata(&part).map_or(0, |m| m.blocks() * 512) < SIZE as u64 / 3 {
            assert!(
                first.try_wait().unwrap().is_none(),
                "{e}: the first run ended before a third of the file arrived"
            );
            assert!(
                Instant::now() < deadline,
                "{e}: no third of the file in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = Command::new("kill")
            .args(["-INT", &first.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "{e}: kill -INT");
        let first = first.wait_with_output().unwrap();
        assert_eq!(
            first.status.code(),
            Some(130),
            "{e}: the first run was not interrupted: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        let state_file = out.join(format!("{name}.pymatris-part.state"));
        let state: Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        let have: u64 = state["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[1].as_u64().unwrap() - s[0].as_u64().unwrap())
            .sum();
        assert!(have > 0, "{e}: the state records no byte: {state}");
        let missing = SIZE as u64 - have;

        // The first run's transfers must all be in the log before the
        // second begins: they sent at least what is on disk.
        let counter =
            measure.then(|| Counter::start(&servers, e, || settled_sent(&servers, e, &rel, have)));
        let (run, json) = pymatris(
            &servers,
            home.path(),
            e,
            &["-c", "--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(0), "{e}: {json:#}");
        assert_eq!(list_dir(&out), [name.as_str()], "{e}");
        assert!(
            std::fs::read(out.join(&name)).unwrap() == source,
            "{e}: the resumed file differs"
        );
        if let Some(counter) = counter {
            costs.push(counter.cost(
                &servers,
                e,
                &rel,
                &name,
                missing,
                format!("{e}, after Ctrl-C from {}", state["spans"]),
            ));
        }
    }
    costs
}

/// What `e`'s server has sent of `rel` (see `Servers::bytes_sent`), once its
/// log has been quiet for a while: lighttpd writes its access log in
/// batches, seconds after the transfers (of a client that was killed)
/// ended.
fn settled_sent(servers: &Suite, e: Endpoint, rel: &str, at_least: u64) -> u64 {
    let mut last = servers.of(e).bytes_sent(e.server, rel, at_least);
    if e.server != Server::Lighttpd {
        return last;
    }
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let now = servers.of(e).bytes_sent(e.server, rel, at_least);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Counts what one run costs `e`'s server: on the wire where its file
/// bytes leave known ports (FTP data connections, sshd), and from its log
/// (less what the log held before the run) except for sshd, which logs a
/// connection's bytes only if the client ends it with a FIN (see
/// `Servers::wire_ports`).
struct Counter {
    /// What the log said before the run, if the log counts.
    logged_before: Option<u64>,
    meter: Option<WireMeter>,
}

impl Counter {
    fn start(servers: &Suite, e: Endpoint, logged: impl FnOnce() -> u64) -> Counter {
        Counter {
            logged_before: (e.server != Server::Sshd).then(logged),
            meter: wire_meter(servers, e),
        }
    }

    /// The cost of the run just ended, which fetched `missing` bytes.
    fn cost(
        self,
        servers: &Suite,
        e: Endpoint,
        rel: &str,
        name: &str,
        missing: u64,
        endpoint: String,
    ) -> Cost {
        let wire = self.meter.map(|m| m.bytes().unwrap());
        let sent = match (self.logged_before, wire) {
            (Some(before), _) => servers.of(e).bytes_sent(e.server, rel, before + missing) - before,
            (None, Some(wire)) => wire,
            (None, None) => unreachable!("{e} is counted neither by its log nor on the wire"),
        };
        assert!(
            sent >= missing,
            "{e}: the server shows {sent} bytes sent, fewer than the {missing} fetched"
        );
        Cost {
            endpoint,
            missing,
            sent,
            wire,
            log: log_lines(servers, e, name),
        }
    }
}

/// A meter of what `e`'s server put on the wire, for a server whose file
/// bytes leave known ports (FTP data connections, sshd).
fn wire_meter(servers: &Suite, e: Endpoint) -> Option<WireMeter> {
    let (lo, hi) = servers.of(e).wire_ports(e.server)?;
    Some(WireMeter::ports(lo, hi).expect("count the data ports with nft (see .ci/run)"))
}

/// The lines of `e`'s server log about the file `name`.
fn log_lines(servers: &Suite, e: Endpoint, name: &str) -> Vec<String> {
    let log = std::fs::read_to_string(servers.of(e).root_dir().join(e.server.log())).unwrap();
    log.lines()
        .filter(|l| l.contains(name))
        .map(str::to_owned)
        .collect()
}

/// What one resumed download cost its server.
#[derive(Debug)]
#[allow(dead_code, reason = "read by Debug")]
struct Cost {
    endpoint: String,
    missing: u64,
    /// What the server's log says it sent (sshd: what left its port).
    sent: u64,
    /// What left the server's data ports (FTP servers and sshd): the cost
    /// bounded where the server has one (see `WireMeter`).
    wire: Option<u64>,
    /// The server's log lines about the file.
    log: Vec<String>,
}

/// Resumes, on every endpoint, a file of `size` bytes left as four parts
/// each half done; checks the bytes and, if `measure`, returns what each
/// server sent.
fn resume_on_every_server(size: usize, measure: bool, pick: fn(&Endpoint) -> bool) -> Vec<Cost> {
    const PARTS: usize = 4;
    let servers = servers();
    let source = random_bytes(size, 31);
    let part = size / PARTS;
    let spans: Vec<[usize; 3]> = (0..PARTS)
        .map(|i| [i * part, i * part + part / 2, (i + 1) * part])
        .collect();
    let missing: u64 = spans.iter().map(|[_, pos, end]| (end - pos) as u64).sum();
    let mut costs = Vec::new();
    for (i, e) in ALL.into_iter().enumerate().filter(|(_, e)| pick(e)) {
        // A file of its own per endpoint: the servers' logs are counted by name.
        let rel = format!("c/resume-{i}.bin");
        servers.write_file(&rel, &source);
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let name = format!("resume-{i}.bin");
        let mut planted = vec![0xAAu8; size];
        for &[start, pos, _] in &spans {
            planted[start..pos].fill(0);
        }
        std::fs::write(out.join(format!("{name}.pymatris-part")), &planted).unwrap();
        let state = serde_json::json!({
            "url": "planted by the test",
            "size": size,
            "validator": {"etag": null, "modified": null},
            "spans": spans,
        });
        std::fs::write(
            out.join(format!("{name}.pymatris-part.state")),
            state.to_string(),
        )
        .unwrap();

        let url = e.url(&servers, &rel);
        // A log counts the earlier runs too: count this one alone.
        let counter = measure
            .then(|| Counter::start(&servers, e, || servers.of(e).bytes_sent(e.server, &rel, 0)));
        let (run, json) = pymatris(
            &servers,
            home.path(),
            e,
            &["-c", "--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(0), "{e}: {json:#}");
        assert_eq!(list_dir(&out), [name.as_str()], "{e}");
        let got = std::fs::read(out.join(&name)).unwrap();
        for &[start, pos, end] in &spans {
            assert!(
                got[start..pos].iter().all(|&b| b == 0),
                "{e}: bytes {start}..{pos} were fetched again"
            );
            assert!(
                got[pos..end] == source[pos..end],
                "{e}: bytes {pos}..{end} are not the remote bytes"
            );
        }
        if let Some(counter) = counter {
            costs.push(counter.cost(&servers, e, &rel, &name, missing, e.to_string()));
        }
    }
    costs
}
