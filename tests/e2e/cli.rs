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
