//! `pymatris` against a real OpenSSH sshd on loopback (started by the
//! harness with its own host key, client key, password and known_hosts):
//! whole files, parts, empty and missing files, every way of logging in,
//! host keys unknown, accepted and changed, a server that never answers,
//! and 200 small files over one connection.
//!
//! Every run gets an empty `HOME` (no default keys, no `~/.ssh/known_hosts`,
//! no `~/.netrc` but the test's own) and no ssh-agent unless the test starts
//! one, so only what the test gives can log in. Kinds and retry policies are
//! read from `--json`. A connection killed mid-transfer is tested in
//! `crates/proto-sftp/tests/loopback.rs`, where a reporter sees the bytes
//! arrive.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_harness::{Server, Servers, Which};
use pymatris_tests::{list_dir, pymatris_bin, sha256_hex};
use serde_json::Value;

fn sshd() -> Servers {
    Servers::start(Which::sftp_only()).expect("start sshd (apt-get install openssh-server)")
}

/// `pymatris ARGS` with `HOME` set to `home` and no ssh-agent unless
/// `agent` names its socket.
fn run(args: &[&str], home: &Path, agent: Option<&Path>) -> Output {
    let mut cmd = Command::new(pymatris_bin());
    cmd.args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    if let Some(sock) = agent {
        cmd.env("SSH_AUTH_SOCK", sock);
    }
    cmd.output().expect("run pymatris")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `--json` results on stdout.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

/// The one error of a `--json` result: (kind, retryable, chain).
fn one_error(out: &Output) -> (String, bool, String) {
    let v = json(out);
    let errors = v["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{v:#}");
    let e = &errors[0];
    (
        e["kind"].as_str().unwrap_or_default().to_owned(),
        e["retryable"].as_bool().expect("retryable"),
        e["chain"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The chain of the one error of a run that failed (exit status 1) with
/// `kind`, which is `retryable` or not.
fn assert_failed(result: &Output, kind: &str, retryable: bool) -> String {
    assert_eq!(result.status.code(), Some(1), "{}", stderr(result));
    let (got_kind, got_retryable, chain) = one_error(result);
    assert_eq!(got_kind, kind, "{chain}");
    assert_eq!(got_retryable, retryable, "retryable: {chain}");
    chain
}

/// A run that succeeded (exit status 0) and left `name` in `dir` holding
/// `bytes`.
fn assert_fetched(result: &Output, dir: &Path, name: &str, bytes: &[u8]) {
    assert_eq!(result.status.code(), Some(0), "{}", stderr(result));
    let got = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
    assert_eq!(got, bytes, "{name}");
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The `SHA256:…` fingerprint of the harness's host key, from ssh-keygen.
fn host_key_fingerprint(servers: &Servers, dir: &Path) -> String {
    let pubfile = dir.join("host_key.pub");
    std::fs::write(&pubfile, format!("{}\n", servers.ssh_host_key_pub())).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&pubfile)
        .output()
        .expect("ssh-keygen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fp = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(fp.starts_with("SHA256:"), "ssh-keygen -l said {text:?}");
    fp
}

/// A fresh ed25519 key pair at `path` and `path.pub`.
fn keygen(path: &Path, passphrase: &str) {
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen");
    assert!(made.status.success(), "ssh-keygen: {}", stderr(&made));
}

/// `pw.txt` (holding `by password`) fetched from `url` into `dir`.
fn assert_password_logs_in(url: &str, kh: &str, dir: &Path, home: &Path) {
    let result = run(
        &["--quiet", "--known-hosts", kh, "--dir", s(dir), url],
        home,
        None,
    );
    assert_fetched(&result, dir, "pw.txt", b"by password");
}

/// A run of `url`, whose password `secret` is wrong, with `extra` flags
/// after `--json`: a permanent `Auth` error that names the method tried,
/// the password shown nowhere, nothing in `dir`. Returns all it printed.
fn assert_wrong_password_refused(
    url: &str,
    secret: &str,
    kh: &str,
    dir: &Path,
    home: &Path,
    extra: &[&str],
) -> String {
    let mut args = vec!["--json"];
    args.extend(extra);
    args.extend([
        "--show-errors",
        "--max-tries",
        "5",
        "--known-hosts",
        kh,
        "--dir",
        s(dir),
        url,
    ]);
    let result = run(&args, home, None);
    let chain = assert_failed(&result, "Auth", false);
    assert!(chain.contains("password"), "names the method: {chain}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        stderr(&result)
    );
    assert!(!all.contains(secret), "the password leaked: {all}");
    assert!(list_dir(dir).is_empty());
    all
}

#[test]
fn whole_files_parts_empty_and_missing() {
    let servers = sshd();
    let big = std::fs::read(servers.write_random("d/big.bin", 16 << 20, 11)).unwrap();
    let small = std::fs::read(servers.write_random("d/small.bin", 100_000, 12)).unwrap();
    servers.write_file("d/empty.bin", b"");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dl");
    let key = servers.ssh_client_key().to_str().unwrap();
    let kh = servers.ssh_known_hosts().to_str().unwrap();
    let urls =
        ["d/big.bin", "d/small.bin", "d/empty.bin", "d/missing.bin"].map(|f| servers.sftp_url(f));
    let mut args = vec![
        "--json",
        "--identity",
        key,
        "--known-hosts",
        kh,
        "--max-splits",
        "4",
        "--min-split-size",
        "1M",
        "--max-tries",
        "5",
        "--dir",
        s(&dir),
    ];
    args.extend(urls.iter().map(String::as_str));
    let t = Instant::now();
    let result = run(&args, home.path(), None);
    let took = t.elapsed();
    // The missing file: not found, permanent, so not retried (four
    // retries would wait over 1.8 s of backoff).
    let chain = assert_failed(&result, "NotFound", false);
    assert!(chain.contains("missing.bin"), "{chain}");
    assert!(took < Duration::from_secs(20), "{took:?}");

    assert_eq!(list_dir(&dir), ["big.bin", "empty.bin", "small.bin"]);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("big.bin")).unwrap()),
        sha256_hex(&big)
    );
    assert_eq!(std::fs::read(dir.join("small.bin")).unwrap(), small);
    assert_eq!(std::fs::read(dir.join("empty.bin")).unwrap(), b"");
    let err = stderr(&result);
    assert!(err.contains(&urls[3]), "stderr names the URL: {err}");
}

#[test]
fn passwords_and_netrc_log_in_and_wrong_passwords_never_show() {
    let servers = sshd();
    servers.write_file("pw.txt", b"by password");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let kh = servers.ssh_known_hosts().to_str().unwrap();
    let (user, port) = (servers.sftp_user(), servers.sftp_port());
    let path = format!("{}/pw.txt", servers.data_dir().display());

    let good = format!(
        "sftp://{user}:{}@127.0.0.1:{port}{path}",
        servers.sftp_password()
    );
    assert_password_logs_in(&good, kh, &out.path().join("a"), home.path());

    // --netrc: the URL names neither user nor password.
    std::fs::write(
        home.path().join(".netrc"),
        format!(
            "machine 127.0.0.1\n  login {user}\n  password {}\n",
            servers.sftp_password()
        ),
    )
    .unwrap();
    let bare = format!("sftp://127.0.0.1:{port}{path}");
    let b = out.path().join("b");
    let result = run(
        &[
            "--quiet",
            "--netrc",
            "--known-hosts",
            kh,
            "--dir",
            s(&b),
            &bare,
        ],
        home.path(),
        None,
    );
    assert_fetched(&result, &b, "pw.txt", b"by password");

    // A wrong password: permanent, named as the method tried, and shown
    // nowhere, not even with --verbose and --show-errors.
    let secret = "Wr0ng-S3cret";
    let bad = format!("sftp://{user}:{secret}@127.0.0.1:{port}{path}");
    let c = out.path().join("c");
    let all = assert_wrong_password_refused(&bad, secret, kh, &c, home.path(), &["--verbose"]);
    assert!(all.contains(&format!("{user}:***@")), "{all}");
}

/// An `ssh-agent` of our own, holding one key; killed on drop.
struct Agent {
    child: std::process::Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(key: &Path) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (apt-get install openssh-client)");
        let agent = Agent {
            child,
            sock,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .output()
            .expect("ssh-add");
        assert!(added.status.success(), "ssh-add: {}", stderr(&added));
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn key_auth_agent_auth_and_nothing_to_log_in_with() {
    let servers = sshd();
    let bytes = std::fs::read(servers.write_random("k.bin", 300_000, 5)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let kh = servers.ssh_known_hosts().to_str().unwrap();
    let key = servers.ssh_client_key().to_str().unwrap();
    let url = servers.sftp_url("k.bin");

    let a = out.path().join("a");
    let result = run(
        &[
            "--quiet",
            "--identity",
            key,
            "--known-hosts",
            kh,
            "--dir",
            s(&a),
            &url,
        ],
        home.path(),
        None,
    );
    assert_fetched(&result, &a, "k.bin", &bytes);

    // No key, password or agent: the error says what to give.
    let b = out.path().join("b");
    let result = run(
        &["--json", "--known-hosts", kh, "--dir", s(&b), &url],
        home.path(),
        None,
    );
    let chain = assert_failed(&result, "Auth", false);
    assert!(chain.contains("--identity"), "{chain}");

    // The same run with an agent holding the key: the agent logs in.
    let agent = Agent::start(servers.ssh_client_key());
    let result = run(
        &["--quiet", "--known-hosts", kh, "--dir", s(&b), &url],
        home.path(),
        Some(&agent.sock),
    );
    assert_fetched(&result, &b, "k.bin", &bytes);
}

#[test]
fn an_encrypted_key_without_passphrase_fails_clearly_and_fast() {
    let servers = sshd();
    servers.write_file("e.txt", b"e");
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("locked");
    keygen(&key, "a passphrase");
    let t = Instant::now();
    let result = run(
        &[
            "--json",
            "--identity",
            s(&key),
            "--known-hosts",
            servers.ssh_known_hosts().to_str().unwrap(),
            "--dir",
            s(&tmp.path().join("dl")),
            &servers.sftp_url("e.txt"),
        ],
        home.path(),
        None,
    );
    let chain = assert_failed(&result, "Auth", false);
    assert!(chain.contains("encrypted"), "{chain}");
    assert!(chain.contains(s(&key)), "{chain}");
    assert!(chain.contains("ssh-add"), "says how to use it: {chain}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn an_unknown_host_is_refused_then_accepted_then_known() {
    let servers = sshd();
    servers.write_file("h.txt", b"host");
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let fingerprint = host_key_fingerprint(&servers, tmp.path());
    let key = servers.ssh_client_key().to_str().unwrap();
    let url = servers.sftp_url("h.txt");
    let dir = tmp.path().join("out");
    let with = |extra: &[&str]| {
        let mut args = vec!["--identity", key, "--known-hosts", s(&kh), "--dir", s(&dir)];
        args.extend_from_slice(extra);
        args.push(&url);
        run(&args, home.path(), None)
    };

    let refused = with(&["--json"]);
    assert_failed(&refused, "HostKey", false);
    let text = stderr(&refused);
    assert!(text.contains("--accept-new-host-keys"), "{text}");
    assert!(text.contains(&fingerprint), "{text} lacks {fingerprint}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), "", "nothing added");
    assert!(list_dir(&dir).is_empty());

    // A dry run touches no file: the new key is trusted for that run
    // alone.
    let dry = with(&["--dry-run", "--accept-new-host-keys"]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).starts_with("download "),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        "",
        "a dry run added the key"
    );
    assert!(list_dir(&dir).is_empty());

    let accepted = with(&["--quiet", "--accept-new-host-keys"]);
    assert_eq!(accepted.status.code(), Some(0), "{}", stderr(&accepted));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        recorded,
        format!(
            "[127.0.0.1]:{} {}\n",
            servers.sftp_port(),
            servers.ssh_host_key_pub()
        )
    );

    let known = with(&["--quiet"]);
    assert_eq!(known.status.code(), Some(0), "{}", stderr(&known));
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);
    assert_eq!(list_dir(&dir), ["h.1.txt", "h.txt"]);
}

#[test]
fn a_changed_host_key_is_always_fatal() {
    let servers = sshd();
    servers.write_file("c.txt", b"changed");
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Another ed25519 key recorded for the server's [127.0.0.1]:port.
    let other = tmp.path().join("other");
    keygen(&other, "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let kh = tmp.path().join("known_hosts");
    let line = format!("[127.0.0.1]:{} {}\n", servers.sftp_port(), other_pub.trim());
    std::fs::write(&kh, &line).unwrap();
    let key = servers.ssh_client_key().to_str().unwrap();
    let url = servers.sftp_url("c.txt");
    let dir = tmp.path().join("out");

    for accept in [false, true] {
        let mut args = vec![
            "--json",
            "--max-tries",
            "3",
            "--identity",
            key,
            "--known-hosts",
            s(&kh),
            "--dir",
            s(&dir),
        ];
        if accept {
            args.push("--accept-new-host-keys");
        }
        args.push(&url);
        let result = run(&args, home.path(), None);
        let chain = assert_failed(&result, "HostKey", false);
        assert!(chain.contains("HOST KEY CHANGED"), "{chain}");
        assert!(chain.contains("man-in-the-middle"), "{chain}");
        assert!(stderr(&result).contains("HOST KEY CHANGED"));
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            line,
            "file untouched"
        );
        assert!(list_dir(&dir).is_empty());
    }

    // --insecure skips the check.
    let result = run(
        &[
            "--quiet",
            "--insecure",
            "--identity",
            key,
            "--known-hosts",
            s(&kh),
            "--dir",
            s(&dir),
            &url,
        ],
        home.path(),
        None,
    );
    assert_fetched(&result, &dir, "c.txt", b"changed");
}

#[test]
fn a_server_that_never_answers_times_out() {
    // The kernel completes TCP handshakes for a listener that never
    // accepts: the connection opens, and no SSH banner ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let result = run(
        &[
            "--json",
            "--timeouts",
            "1",
            "--max-tries",
            "2",
            "--dir",
            s(&home.path().join("dl")),
            &format!("sftp://u@127.0.0.1:{port}/x.bin"),
        ],
        home.path(),
        None,
    );
    let chain = assert_failed(&result, "Timeout", true);
    assert!(chain.contains(&format!("127.0.0.1:{port}")), "{chain}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    drop(listener);
}

#[test]
fn two_hundred_small_files_over_one_connection() {
    let servers = sshd();
    let mut expected = Vec::new();
    let mut urls = Vec::new();
    for i in 0..200u64 {
        let name = format!("f{i:03}.bin");
        let path = servers.write_random(&format!("many/{name}"), 16 << 10, i);
        let bytes = std::fs::read(path).unwrap();
        expected.push((name.clone(), sha256_hex(&bytes)));
        urls.push(servers.sftp_url(&format!("many/{name}")));
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--quiet",
        "--max-parallel",
        "32",
        "--identity",
        servers.ssh_client_key().to_str().unwrap(),
        "--known-hosts",
        servers.ssh_known_hosts().to_str().unwrap(),
        "--dir",
        s(out.path()),
    ];
    args.extend(urls.iter().map(String::as_str));
    let result = run(&args, home.path(), None);
    assert_eq!(result.status.code(), Some(0), "{}", stderr(&result));
    let got: Vec<(String, String)> = list_dir(out.path())
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.path().join(&name)).unwrap();
            (name, sha256_hex(&bytes))
        })
        .collect();
    assert_eq!(got, expected);
    // One SSH connection (one login) served all 200.
    let log = std::fs::read_to_string(servers.root_dir().join("sshd/sshd.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
}

// asyncssh's SFTP server: a second implementation, whose file handles are
// 4-byte binary counters (the 129th, `00 00 00 80`, is not UTF-8), with an
// ECDSA host key. Its URLs are relative to the data dir (it is chrooted).

fn asyncssh() -> Servers {
    Servers::start(Which::none())
        .and_then(Servers::with_asyncssh)
        .expect("start asyncssh's SFTP server (python3-venv and PyPI)")
}

/// `--identity` and `--known-hosts` for asyncssh, then `extra`.
fn asyncssh_args<'a>(servers: &'a Servers, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--identity",
        s(servers.asyncssh_client_key()),
        "--known-hosts",
        s(servers.asyncssh_known_hosts()),
    ];
    args.extend_from_slice(extra);
    args
}

/// Fails on a client that keeps handles as text: from the 129th open file
/// on, it sends back a handle the server never gave. One connection
/// (`--max-per-host 1`), so that its server hands out all 200 handles
/// whatever the growth of the pool decides on a busy machine.
#[test]
fn asyncssh_two_hundred_small_files_over_one_connection() {
    let servers = asyncssh();
    let mut expected = Vec::new();
    let mut urls = Vec::new();
    for i in 0..200u64 {
        let name = format!("f{i:03}.bin");
        let path = servers.write_random(&format!("many/{name}"), 4 << 10, i);
        expected.push((name.clone(), sha256_hex(&std::fs::read(path).unwrap())));
        urls.push(servers.asyncssh_url(&format!("many/{name}")));
    }
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = asyncssh_args(
        &servers,
        &[
            "--json",
            "--max-parallel",
            "16",
            "--max-per-host",
            "1",
            "--dir",
            s(out.path()),
        ],
    );
    args.extend(urls.iter().map(String::as_str));
    let result = run(&args, home.path(), None);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stdout)
    );
    let got: Vec<(String, String)> = list_dir(out.path())
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.path().join(&name)).unwrap();
            (name, sha256_hex(&bytes))
        })
        .collect();
    assert_eq!(got, expected);
    let log = std::fs::read_to_string(servers.root_dir().join("asyncssh/asyncssh.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
}

#[test]
fn asyncssh_a_large_file_in_parts_empty_and_missing() {
    let servers = asyncssh();
    let big = std::fs::read(servers.write_random("d/big.bin", 24 << 20, 21)).unwrap();
    servers.write_file("d/empty.bin", b"");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("dl");
    let urls = ["d/big.bin", "d/empty.bin", "d/missing.bin"].map(|f| servers.asyncssh_url(f));
    let mut args = asyncssh_args(
        &servers,
        &[
            "--json",
            "--max-splits",
            "4",
            "--min-split-size",
            "1M",
            "--dir",
            s(&dir),
        ],
    );
    args.extend(urls.iter().map(String::as_str));
    let result = run(&args, home.path(), None);
    let chain = assert_failed(&result, "NotFound", false);
    assert!(chain.contains("missing.bin"), "{chain}");
    assert_eq!(list_dir(&dir), ["big.bin", "empty.bin"]);
    assert_eq!(
        sha256_hex(&std::fs::read(dir.join("big.bin")).unwrap()),
        sha256_hex(&big)
    );
    assert_eq!(std::fs::read(dir.join("empty.bin")).unwrap(), b"");
    // In parts: the file was opened more than once.
    let log = std::fs::read_to_string(servers.root_dir().join("asyncssh/asyncssh.log")).unwrap();
    assert!(log.matches("close \"/d/big.bin\"").count() >= 2, "{log}");
}

#[test]
fn asyncssh_passwords_and_keys_log_in_and_bad_credentials_fail_as_auth() {
    let servers = asyncssh();
    servers.write_file("pw.txt", b"by password");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let kh = s(servers.asyncssh_known_hosts());
    let (user, port) = (servers.sftp_user(), servers.asyncssh_port());
    let good = format!(
        "sftp://{user}:{}@127.0.0.1:{port}/pw.txt",
        servers.sftp_password()
    );
    assert_password_logs_in(&good, kh, &out.path().join("a"), home.path());

    let secret = "Wr0ng-S3cret";
    let bad = format!("sftp://{user}:{secret}@127.0.0.1:{port}/pw.txt");
    let b = out.path().join("b");
    assert_wrong_password_refused(&bad, secret, kh, &b, home.path(), &[]);

    // A key the server does not know.
    let stranger = out.path().join("stranger");
    keygen(&stranger, "");
    let c = out.path().join("c");
    let result = run(
        &[
            "--json",
            "--identity",
            s(&stranger),
            "--known-hosts",
            kh,
            "--dir",
            s(&c),
            &servers.asyncssh_url("pw.txt"),
        ],
        home.path(),
        None,
    );
    assert_failed(&result, "Auth", false);
    let log = std::fs::read_to_string(servers.root_dir().join("asyncssh/asyncssh.log")).unwrap();
    assert_eq!(log.matches("Accepted").count(), 1, "{log}");
}

/// Its host key is ECDSA (sshd's is ed25519): refused when unknown, with
/// its fingerprint; recorded with --accept-new-host-keys, then known; a
/// different ECDSA key recorded for it is fatal.
#[test]
fn asyncssh_host_keys_are_checked() {
    let servers = asyncssh();
    servers.write_file("h.txt", b"host");
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let pubfile = tmp.path().join("host_key.pub");
    std::fs::write(&pubfile, format!("{}\n", servers.asyncssh_host_key_pub())).unwrap();
    let listed = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&pubfile)
        .output()
        .expect("ssh-keygen");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let fingerprint = listed.split_whitespace().nth(1).unwrap_or_default();
    assert!(fingerprint.starts_with("SHA256:"), "{listed}");
    let url = servers.asyncssh_url("h.txt");
    let dir = tmp.path().join("out");
    let with = |known_hosts: &Path, extra: &[&str]| {
        let mut args = vec![
            "--identity",
            s(servers.asyncssh_client_key()),
            "--known-hosts",
            s(known_hosts),
            "--dir",
            s(&dir),
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        run(&args, home.path(), None)
    };

    let refused = with(&kh, &["--json"]);
    assert_failed(&refused, "HostKey", false);
    assert!(
        stderr(&refused).contains(fingerprint),
        "{}",
        stderr(&refused)
    );
    assert!(list_dir(&dir).is_empty());

    let accepted = with(&kh, &["--quiet", "--accept-new-host-keys"]);
    assert_eq!(accepted.status.code(), Some(0), "{}", stderr(&accepted));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        recorded,
        format!(
            "[127.0.0.1]:{} {}\n",
            servers.asyncssh_port(),
            servers.asyncssh_host_key_pub()
        )
    );
    let known = with(&kh, &["--quiet"]);
    assert_eq!(known.status.code(), Some(0), "{}", stderr(&known));

    let other = tmp.path().join("other");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&other)
        .output()
        .expect("ssh-keygen");
    assert!(made.status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let changed_kh = tmp.path().join("changed_known_hosts");
    let line = format!(
        "[127.0.0.1]:{} {}\n",
        servers.asyncssh_port(),
        other_pub.trim()
    );
    std::fs::write(&changed_kh, &line).unwrap();
    let changed = with(&changed_kh, &["--json", "--accept-new-host-keys"]);
    let chain = assert_failed(&changed, "HostKey", false);
    assert!(chain.contains("HOST KEY CHANGED"), "{chain}");
    assert_eq!(std::fs::read_to_string(&changed_kh).unwrap(), line);
    assert_eq!(list_dir(&dir), ["h.1.txt", "h.txt"]);
}

/// A run interrupted (SIGINT) half-way leaves a part that `-c` finishes,
/// asking the server for no more than the missing bytes.
#[test]
fn asyncssh_resume_after_interrupt() {
    let servers = asyncssh();
    let size: u64 = 32 << 20;
    let source = std::fs::read(servers.write_random("r/resume.bin", size, 41)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = servers.asyncssh_url("r/resume.bin");
    let args = asyncssh_args(
        &servers,
        &[
            "--quiet",
            "-c",
            "--max-splits",
            "1",
            "--dir",
            s(out.path()),
            &url,
        ],
    );
    let mut slow = args.clone();
    slow.extend(["--max-speed", "4M"]);
    let child = Command::new(pymatris_bin())
        .args(&slow)
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pymatris");
    let state = out.path().join("resume.bin.pymatris-part.state");
    let written = |state: &Path| -> u64 {
        let Ok(text) = std::fs::read_to_string(state) else {
            return 0;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return 0;
        };
        v["spans"]
            .as_array()
            .map(|spans| {
                spans
                    .iter()
                    .map(|sp| sp[1].as_u64().unwrap_or(0) - sp[0].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    };
    // The state is written when the run stops; the part file appears when
    // the transfer starts, and 4 MB/s then brings some 8 MB in 2 s.
    let part = out.path().join("resume.bin.pymatris-part");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !part.exists() {
        assert!(Instant::now() < deadline, "the transfer never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let first = child.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(130), "{}", stderr(&first));
    let have = written(&state);
    assert!(
        have > 0 && have < size,
        "{have} of {size} after the interrupt"
    );
    let sent_before = servers.bytes_sent(Server::Asyncssh, "r/resume.bin", have);

    let second = run(&args, home.path(), None);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(list_dir(out.path()), ["resume.bin"]);
    assert!(std::fs::read(out.path().join("resume.bin")).unwrap() == source);
    let missing = size - have;
    let cost =
        servers.bytes_sent(Server::Asyncssh, "r/resume.bin", sent_before + missing) - sent_before;
    assert!(
        cost >= missing && cost <= missing + missing / 20,
        "the resume read {cost} bytes for {missing} missing"
    );
}

/// SFTP paths are bytes: a remote name that is not UTF-8 is reached by
/// percent-encoding its bytes, on both servers. (The local name is the
/// engine's: the bytes decoded lossily.)
#[test]
fn a_name_that_is_not_utf8_is_reached_by_its_bytes() {
    use std::os::unix::ffi::OsStrExt as _;
    let servers = Servers::start(Which::sftp_only())
        .and_then(Servers::with_asyncssh)
        .expect("start sshd and asyncssh");
    let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.bin");
    let path = servers.data_dir().join(name);
    std::fs::write(&path, b"not UTF-8").unwrap();
    let home = tempfile::tempdir().unwrap();
    let rel = "latin1-%E9t%E9.bin";
    let runs = [
        (
            servers.sftp_url(rel),
            servers.ssh_client_key(),
            servers.ssh_known_hosts(),
        ),
        (
            servers.asyncssh_url(rel),
            servers.asyncssh_client_key(),
            servers.asyncssh_known_hosts(),
        ),
    ];
    for (url, key, kh) in runs {
        let out = tempfile::tempdir().unwrap();
        let result = run(
            &[
                "--json",
                "--identity",
                s(key),
                "--known-hosts",
                s(kh),
                "--dir",
                s(out.path()),
                &url,
            ],
            home.path(),
            None,
        );
        assert_eq!(result.status.code(), Some(0), "{url}: {}", stderr(&result));
        let names = list_dir(out.path());
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            std::fs::read(out.path().join(&names[0])).unwrap(),
            b"not UTF-8"
        );
    }
}
