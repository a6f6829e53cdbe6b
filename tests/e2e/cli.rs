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
    assert_eq!(lines, [4, 5, 6, 7, 9], "{json}");
    for n in [4, 5, 6, 7, 9] {
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
