//! The command line as an operator meets it: the signals that stop a run
//! (what `timeout`, systemd, docker and a closed terminal send), checked
//! flags, and input lists with bad lines in them.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_tests::fault_server::{Behaviour, FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, run_pymatris};

const MIB: usize = 1 << 20;

/// `out` exited with `code`, or its stderr says why not.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(args: &[&str]) -> Child {
    Command::new(pymatris_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What the stalling server sends of `/s.bin` before it stalls.
const STALL_AFTER: u64 = 700_000;

/// Waits until the server has sent all it sends of `/s.bin` before it
/// stalls, and a little more for those bytes to land.
fn wait_for_the_stall(server: &FaultServer, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.body_bytes("/s.bin") < STALL_AFTER {
        assert!(
            child.try_wait().unwrap().is_none(),
            "pymatris ended before the server stalled"
        );
        assert!(Instant::now() < deadline, "the server never stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

fn url_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.strip_prefix("http://").unwrap();
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

// SIGTERM and SIGHUP stop a run the way Ctrl-C does: under --continue the
// part and its state stay, and the next --continue fetches only the rest.
#[test]
fn sigterm_and_sighup_under_continue_leave_a_part_the_next_run_resumes() {
    for (signal, code) in [("-TERM", 143), ("-HUP", 129)] {
        let body = random_bytes(4 * MIB, 21);
        let server = FaultServer::start([(
            "/s.bin",
            Route::new(body.clone()).behaviour(Behaviour::StallAfter {
                bytes: STALL_AFTER,
                times: usize::MAX,
            }),
        )]);
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().to_str().unwrap();
        let url = server.url("/s.bin");
        let args = ["-c", "--max-splits", "1", "--timeouts", "30", "--dir", dir];
        let mut child = spawn(&[&args[..], &[&url]].concat());
        wait_for_the_stall(&server, &mut child);
        kill(&child, signal);
        let output = child.wait_with_output().unwrap();
        assert_exit(&output, code);
        assert_eq!(
            list_dir(out.path()),
            ["s.bin.pymatris-part", "s.bin.pymatris-part.state"],
            "{signal}"
        );

        drop(server);
        let server = FaultServer::start_at(url_addr(&url), [("/s.bin", Route::new(body.clone()))]);
        let rerun = run_pymatris([&args[..], &["--quiet", &url]].concat());
        assert_exit(&rerun, 0);
        assert!(
            std::fs::read(out.path().join("s.bin")).unwrap() == body,
            "{signal}: the resumed file differs"
        );
        let fetched = server.body_bytes("/s.bin");
        assert!(
            fetched <= (body.len() as u64) - STALL_AFTER,
            "{signal}: the rerun fetched {fetched} of {} bytes",
            body.len()
        );
        assert_eq!(list_dir(out.path()), ["s.bin"]);
    }
}

// Without --continue, a run stopped by SIGTERM or SIGHUP leaves nothing,
// with --overwrite (a named part file) too.
#[test]
fn sigterm_and_sighup_without_continue_leave_nothing() {
    for (signal, code) in [("-TERM", 143), ("-HUP", 129)] {
        for extra in [None, Some("--overwrite")] {
            let server = FaultServer::start([(
                "/s.bin",
                Route::new(random_bytes(4 * MIB, 22)).behaviour(Behaviour::StallAfter {
                    bytes: STALL_AFTER,
                    times: usize::MAX,
                }),
            )]);
            let out = tempfile::tempdir().unwrap();
            let url = server.url("/s.bin");
            let mut args = vec!["--timeouts", "30", "--dir", out.path().to_str().unwrap()];
            args.extend(extra);
            args.push(&url);
            let mut child = spawn(&args);
            wait_for_the_stall(&server, &mut child);
            kill(&child, signal);
            let output = child.wait_with_output().unwrap();
            assert_exit(&output, code);
            assert_eq!(
                list_dir(out.path()),
                Vec::<String>::new(),
                "{signal} {extra:?}"
            );
        }
    }
}

// Every numeric flag refuses a value out of its range, NaN, infinities and
// negative numbers with a usage error naming the flag, never a panic and
// never a silent "no limit".
#[test]
fn numeric_flags_refuse_values_out_of_range_naming_the_flag() {
    let cases: &[(&str, &[&str])] = &[
        ("--max-parallel", &["0", "-1", "1025", "1.5", "nan", "x"]),
        ("--max-splits", &["0", "-1", "65", "inf"]),
        ("--max-tries", &["0", "-1", "101", "1e3"]),
        ("--max-per-host", &["0", "-1", "1025"]),
        (
            "--timeouts",
            &["0", "-1", "1e20", "nan", "NaN", "inf", "-inf", "1e-9", ""],
        ),
        (
            "--min-split-size",
            &["0", "0.5", "-1", "-1M", "nan", "inf", "1e30", "99999999T"],
        ),
        (
            "--max-speed",
            &[
                "0",
                "0.5",
                "-1",
                "-5K",
                "nan",
                "inf",
                "1e30",
                "99999999T",
                "fast",
            ],
        ),
    ];
    for (flag, values) in cases {
        for value in *values {
            for form in [
                vec![flag.to_string(), value.to_string()],
                vec![format!("{flag}={value}")],
            ] {
                let mut args = form.clone();
                args.extend(["--quiet".into(), "http://127.0.0.1:9/never".into()]);
                let out = run_pymatris(&args);
                let err = stderr(&out);
                assert_eq!(out.status.code(), Some(2), "{form:?}: {err}");
                assert!(
                    err.contains(flag),
                    "{form:?}: the message names no flag: {err}"
                );
                assert!(!err.contains("panicked"), "{form:?}: {err}");
            }
        }
    }
}

/// Good values of the same flags still pass (the checks are not too
/// strict): an unreachable URL then fails with exit 1, not 2.
#[test]
fn numeric_flags_accept_values_in_range() {
    let out = run_pymatris([
        "--quiet",
        "--max-tries",
        "1",
        "--max-parallel",
        "1024",
        "--max-splits",
        "64",
        "--max-per-host",
        "1",
        "--timeouts",
        "0.5",
        "--min-split-size",
        "1.5K",
        "--max-speed",
        "1",
        "http://127.0.0.1:9/never",
    ]);
    assert_exit(&out, 1);
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// In an input list, a malformed line (a raw space in a URL, an unknown
// scheme, a bad checksum column, a URL that does not parse, bytes that are
// not UTF-8) fails alone, named by its line number in the account of
// failures and in --json; the good lines are downloaded.
#[test]
fn a_bad_input_line_fails_alone_with_its_line_number() {
    let a = random_bytes(10_000, 31);
    let b = random_bytes(20_000, 32);
    let server = FaultServer::start([
        ("/a.bin", Route::new(a.clone())),
        ("/b.bin", Route::new(b.clone())),
    ]);
    let out = tempfile::tempdir().unwrap();
    let list_dir_ = tempfile::tempdir().unwrap();
    let list = list_dir_.path().join("urls.txt");
    let mut text = Vec::new();
    text.extend(b"# a list\n\n");
    text.extend(format!("{}\n", server.url("/a.bin")).as_bytes()); // 3
    text.extend(format!("{}\n", server.url("/has space.bin")).as_bytes()); // 4
    text.extend(b"gopher://127.0.0.1/x\n"); // 5
    text.extend(format!("{} sha256=zz\n", server.url("/b.bin")).as_bytes()); // 6
    text.extend(b"http://[::1/broken\n"); // 7
    text.extend(format!("{}\n", server.url("/b.bin")).as_bytes()); // 8
    text.extend(b"http://127.0.0.1:9/\xff\xfe.bin\n"); // 9
    // A good line that fails later keeps its number too.
    text.extend(format!("{}\n", server.url("/missing.bin")).as_bytes()); // 10
    std::fs::write(&list, text).unwrap();

    let output = run_pymatris([
        "--quiet",
        "--json",
        "--dir",
        out.path().to_str().unwrap(),
        "-i",
        list.to_str().unwrap(),
    ]);
    let err = stderr(&output);
    assert_exit(&output, 1);
    assert_eq!(list_dir(out.path()), ["a.bin", "b.bin"], "{err}");
    assert!(std::fs::read(out.path().join("a.bin")).unwrap() == a);
    assert!(std::fs::read(out.path().join("b.bin")).unwrap() == b);

    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["success"].as_array().unwrap().len(), 2, "{json}");
    let mut lines: Vec<u64> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["line"]
                .as_u64()
                .unwrap_or_else(|| panic!("no line in {e}"))
        })
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, [4, 5, 6, 7, 9, 10], "{json}");
    for n in [4, 5, 6, 7, 9, 10] {
        assert!(err.contains(&format!("line {n}")), "line {n} not in: {err}");
    }
}

// An input list with no URL is nothing to do (exit 0, a note on stderr);
// one that cannot be read is a usage error.
#[test]
fn an_empty_input_list_is_nothing_to_do_and_an_unreadable_one_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# nothing yet\n\n   \n").unwrap();
    let out = run_pymatris([
        "--quiet",
        "--dir",
        dir.path().to_str().unwrap(),
        "-i",
        empty.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("no URL"), "{}", stderr(&out));
    assert_eq!(list_dir(dir.path()), ["empty.txt"]);

    let missing = dir.path().join("missing.txt");
    for list in [missing.to_str().unwrap(), dir.path().to_str().unwrap()] {
        let out = run_pymatris(["--quiet", "-i", list]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(list), "{}", stderr(&out));
    }
}

/// `pymatris ARGS` at the most verbose logging (`RUST_LOG=trace
/// --verbose`), with `HOME` at `home` and no ssh-agent: everything it
/// printed, stdout and stderr together.
fn traced(args: &[&str], home: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(pymatris_bin())
        .args(["--verbose", "--json", "--show-errors"])
        .args(args)
        .env("RUST_LOG", "trace")
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

/// `text` holds none of `secrets`, in any of the forms a log could show
/// them in.
fn assert_no_secret(text: &str, secrets: &[&str], what: &str) {
    use base64::Engine as _;
    for secret in secrets {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{what}: {secret:?} leaked:\n{}",
            leaks.join("\n")
        );
    }
    assert!(text.contains("TRACE"), "{what}: not traced:\n{text}");
    // Basic credentials travel base64-encoded.
    for secret in secrets {
        for user in ["bob", "pymatris"] {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            assert!(!text.contains(&basic), "{what}: {basic} leaked:\n{text}");
        }
    }
}

// No secret is printed at any log level, by pymatris or any library it
// uses: URL passwords, netrc passwords, headers, over HTTP(S), FTP, SFTP.
#[test]
fn no_secret_reaches_the_output_even_at_trace_level() {
    use pymatris_harness::{Servers, Which};
    let servers = Servers::start(Which::all()).expect("start nginx, vsftpd and sshd");
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = |name: &str| out.path().join(name).to_str().unwrap().to_owned();
    servers.write_random("f.bin", 300_000, 7);
    let password = servers.sftp_password().to_owned();
    let ca = servers.ca_cert().to_str().unwrap().to_owned();

    // HTTP(S): basic auth in the URL, an API key and a cookie; then a
    // bearer token of the user's.
    for url in [servers.http_url("f.bin"), servers.https_url("f.bin")] {
        let with_user = url.replace("://", "://bob:url-S3CRET-1@");
        let (code, all) = traced(
            &[
                "--ca-cert",
                &ca,
                "-H",
                "X-Api-Key: key-S3CRET-2",
                "-H",
                "Cookie: session=cookie-S3CRET-3",
                "--dir",
                &dir("h1"),
                "--overwrite",
                &with_user,
            ],
            home.path(),
        );
        assert_eq!(code, Some(0), "{all}");
        assert_no_secret(
            &all,
            &["url-S3CRET-1", "key-S3CRET-2", "cookie-S3CRET-3"],
            &url,
        );
        let (code, all) = traced(
            &[
                "--ca-cert",
                &ca,
                "-H",
                "Authorization: Bearer bearer-S3CRET-4",
                "-H",
                "Proxy-Authorization: Basic proxy-S3CRET-5",
                "--dir",
                &dir("h2"),
                "--overwrite",
                &url,
            ],
            home.path(),
        );
        assert_eq!(code, Some(0), "{all}");
        assert_no_secret(&all, &["bearer-S3CRET-4", "proxy-S3CRET-5"], &url);
    }

    // FTP: the password in the URL (sent as `PASS`), then from netrc.
    let (code, all) = traced(
        &["--dir", &dir("f1"), &servers.ftp_url("f.bin")],
        home.path(),
    );
    assert_eq!(code, Some(0), "{all}");
    assert_no_secret(&all, &[&password], "ftp");
    let netrc = home.path().join("netrc");
    let (user, _) = servers.ftp_user();
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {user} password {password}\n"),
    )
    .unwrap();
    let bare = format!("ftp://127.0.0.1:{}/f.bin", servers.ftp_port());
    let netrc_arg = netrc.to_str().unwrap();
    let (code, all) = traced(
        &["--netrc-file", netrc_arg, "--dir", &dir("f2"), &bare],
        home.path(),
    );
    assert_eq!(code, Some(0), "{all}");
    assert_no_secret(&all, &[&password], "ftp with netrc");

    // SFTP: a password in the URL, then from netrc.
    let kh = servers.ssh_known_hosts().to_str().unwrap().to_owned();
    let path = format!("{}/f.bin", servers.data_dir().display());
    let sftp_user = servers.sftp_user();
    let port = servers.sftp_port();
    let url = format!("sftp://{sftp_user}:{password}@127.0.0.1:{port}{path}");
    let (code, all) = traced(
        &["--known-hosts", &kh, "--dir", &dir("s1"), &url],
        home.path(),
    );
    assert_eq!(code, Some(0), "{all}");
    assert_no_secret(&all, &[&password], "sftp");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login {sftp_user} password {password}\n"),
    )
    .unwrap();
    let bare = format!("sftp://127.0.0.1:{port}{path}");
    let (code, all) = traced(
        &[
            "--netrc-file",
            netrc_arg,
            "--known-hosts",
            &kh,
            "--dir",
            &dir("s2"),
            &bare,
        ],
        home.path(),
    );
    assert_eq!(code, Some(0), "{all}");
    assert_no_secret(&all, &[&password], "sftp with netrc");
}

// The other flags are checked before anything starts too: a bad one is a
// usage error naming it, not the failure of every URL, and a header's
// value (often a token) is not shown.
#[test]
fn other_flags_are_checked_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let cases: &[(&str, &[&str])] = &[
        ("--header", &["-H", "X-Token: tok\u{1}S3CRET"]),
        ("--header", &["-H", "Bad Name: v"]),
        ("--header", &["-H", "S3CRET-without-colon"]),
        ("--user-agent", &["--user-agent", "a\nb"]),
        ("--proxy", &["--proxy", "socks4://u:S3CRET@h:1"]),
        ("--proxy", &["--proxy", "socks5h://u:S3CRET@"]),
        ("--proxy", &["--proxy", "http://"]),
        ("--ca-cert", &["--ca-cert", &missing]),
        ("--identity", &["--identity", &missing]),
        ("--netrc-file", &["--netrc-file", &missing]),
        ("--dir", &["--dir", file.to_str().unwrap()]),
    ];
    for (flag, args) in cases {
        let mut all = args.to_vec();
        all.extend(["--quiet", "http://127.0.0.1:9/never"]);
        let out = run_pymatris(&all);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(flag),
            "{args:?}: the message names no flag: {err}"
        );
        assert!(!err.contains("S3CRET"), "{args:?}: {err}");
    }
}

// A signal the parent told us to ignore (`nohup`, a background job of a
// script) stays ignored: the run goes on to its end.
#[test]
fn signals_ignored_by_the_parent_stay_ignored() {
    for signal in ["HUP", "INT"] {
        let body = random_bytes(2 * MIB, 23);
        let server = FaultServer::start([(
            "/s.bin",
            Route::new(body.clone()).behaviour(Behaviour::StallAfter {
                bytes: STALL_AFTER,
                times: 1,
            }),
        )]);
        let out = tempfile::tempdir().unwrap();
        let url = server.url("/s.bin");
        let script = format!(
            "trap '' {signal}; exec \"$0\" --quiet --max-splits 1 --timeouts 2 --dir \"$1\" \"$2\""
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .arg(pymatris_bin())
            .args([out.path().to_str().unwrap(), &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_the_stall(&server, &mut child);
        kill(&child, &format!("-{signal}"));
        let output = child.wait_with_output().unwrap();
        assert_exit(&output, 0);
        assert!(
            std::fs::read(out.path().join("s.bin")).unwrap() == body,
            "{signal}"
        );
    }
}

// Too few file descriptors to start (a tight `ulimit -n`) is said plainly,
// as a setup error, never as a panic of the runtime's signal handling.
#[test]
fn too_few_file_descriptors_is_a_clear_error_not_a_panic() {
    let body = random_bytes(1000, 29);
    let server = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let url = server.url("/f.bin");
    let mut refused = 0;
    // Low enough that the runtime or its signal handling finds no
    // descriptor left (below 4 the loader cannot start the binary at all).
    for limit in 4..=8 {
        let out = tempfile::tempdir().unwrap();
        let output = Command::new("prlimit")
            .arg(format!("--nofile={limit}:{limit}"))
            .arg(pymatris_bin())
            .args(["--quiet", "--dir", out.path().to_str().unwrap(), &url])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = stderr(&output);
        assert!(!text.contains("panicked"), "limit {limit}: {text}");
        if output.status.code() == Some(0) {
            assert!(std::fs::read(out.path().join("f.bin")).unwrap() == body);
            continue;
        }
        assert_exit(&output, 2);
        assert!(
            text.contains("too few file descriptors"),
            "limit {limit}: {text}"
        );
        refused += 1;
    }
    assert!(refused > 0, "no limit was too low to start");
}

// After a first Ctrl-C, the run ends its transfers, cleans up and writes
// its account of failures; should that take long (here the account, a
// `--jsonl` line for each of hundreds of cancelled downloads, goes to a
// pipe nobody reads, as with a paused pager), a second Ctrl-C stops it at
// once, with 130, and no file under a final name.
#[test]
fn a_second_ctrl_c_stops_a_slow_cleanup_at_once() {
    let server = FaultServer::start([(
        "/h.bin",
        Route::new(random_bytes(1000, 31)).behaviour(Behaviour::Hang { times: usize::MAX }),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Each cancelled download in flight is a line of the account
    // (`--jsonl -`): well over what a pipe holds.
    let url = server.url("/h.bin");
    std::fs::write(&list, format!("{url}\n").repeat(3000)).unwrap();
    let mut child = Command::new(pymatris_bin())
        .args(["--quiet", "--show-errors", "--max-parallel", "600"])
        .args(["--jsonl", "-"])
        .args(["--dir", out.to_str().unwrap(), "-i", list.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.hits("/h.bin") < 500 {
        assert!(child.try_wait().unwrap().is_none(), "pymatris ended early");
        assert!(Instant::now() < deadline, "the server got no request");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&child, "-INT");
    // Until the account fills the pipe and the run waits on it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the run did not wait");
    kill(&child, "-INT");
    // A bound for a hang, not a measure of speed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second Ctrl-C did not stop the run");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(list_dir(&out), Vec::<String>::new());
}
