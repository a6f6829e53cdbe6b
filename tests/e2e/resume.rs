//! `--continue` and Ctrl-C through the CLI: what an interrupted or failed
//! run leaves on disk, and what the next run makes of it.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_tests::fault_server::{Behaviour, FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, run_pymatris};

const MIB: usize = 1 << 20;

fn gets(server: &FaultServer, path: &str) -> Vec<pymatris_tests::fault_server::RequestLog> {
    server
        .requests(path)
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

/// `out` exited with `code`, or its stderr says why not.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn continue_resumes_a_failed_run_and_then_skips_the_complete_file() {
    let body = random_bytes(2 * MIB, 11);
    let server = FaultServer::start([(
        "/r.bin",
        // The HEAD of --continue counts as the first response.
        Route::new(body.clone()).behaviour(Behaviour::DropAfter {
            bytes: 300_000,
            times: 2,
        }),
    )]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let url = server.url("/r.bin");
    // One part in the first run, so what it leaves is known exactly; the
    // resumed run may split the rest.
    let first_args = [
        "--quiet",
        "--continue",
        "--max-tries",
        "1",
        "--max-splits",
        "1",
        "--dir",
        dir,
        &url,
    ];
    let args = [
        "--quiet",
        "--continue",
        "--max-tries",
        "1",
        "--max-splits",
        "4",
        "--min-split-size",
        "256K",
        "--dir",
        dir,
        &url,
    ];

    let first = run_pymatris(first_args);
    assert_eq!(
        first.status.code(),
        Some(1),
        "the dropped part fails the first run"
    );
    assert_eq!(
        list_dir(out.path()),
        ["r.bin.pymatris-part", "r.bin.pymatris-part.state"]
    );
    let served_first = server.body_bytes("/r.bin");
    let gets_first = gets(&server, "/r.bin").len();

    let second = run_pymatris(args);
    assert_exit(&second, 0);
    assert_eq!(list_dir(out.path()), ["r.bin"]);
    assert!(
        std::fs::read(out.path().join("r.bin")).unwrap() == body,
        "bytes differ"
    );
    let resumed: Vec<_> = gets(&server, "/r.bin")
        .into_iter()
        .skip(gets_first)
        .collect();
    assert!(!resumed.is_empty());
    assert!(
        resumed
            .iter()
            .all(|r| r.range_start().is_some_and(|s| s > 0)),
        "the second run asked for bytes already on disk: {:?}",
        resumed.iter().map(|r| r.range.clone()).collect::<Vec<_>>()
    );
    let served_second = server.body_bytes("/r.bin") - served_first;
    assert!(
        served_second < body.len() as u64,
        "served {served_second} bytes again"
    );

    let modified = std::fs::metadata(out.path().join("r.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let gets_before = gets(&server, "/r.bin").len();
    let third = run_pymatris(args);
    assert_exit(&third, 0);
    assert_eq!(
        gets(&server, "/r.bin").len(),
        gets_before,
        "a complete file is not fetched again"
    );
    assert_eq!(
        std::fs::metadata(out.path().join("r.bin"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
}

#[test]
fn continue_starts_over_when_the_remote_file_changed() {
    let old = random_bytes(MIB, 1);
    let new = random_bytes(MIB, 2);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap().to_owned();
    {
        let server = FaultServer::start([(
            "/c.bin",
            Route::new(old).behaviour(Behaviour::DropAfter {
                bytes: 200_000,
                times: 2,
            }),
        )]);
        let url = server.url("/c.bin");
        let run = run_pymatris([
            "--quiet",
            "-c",
            "--max-tries",
            "1",
            "--max-splits",
            "1",
            "--dir",
            &dir,
            &url,
        ]);
        assert_exit(&run, 1);
        assert!(list_dir(out.path()).contains(&"c.bin.pymatris-part.state".to_owned()));
        // The new server must listen where the old one did for the state to
        // apply; the URL is what matters, so reuse it below.
        drop(server);
        let server = FaultServer::start_at(url_addr(&url), [("/c.bin", Route::new(new.clone()))]);
        let run = run_pymatris(["--quiet", "-c", "--max-splits", "1", "--dir", &dir, &url]);
        assert_exit(&run, 0);
        assert!(
            std::fs::read(out.path().join("c.bin")).unwrap() == new,
            "old and new bytes mixed"
        );
        assert_eq!(list_dir(out.path()), ["c.bin"]);
        drop(server);
    }
}

fn url_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.strip_prefix("http://").unwrap();
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

/// Waits until the [`stalled_server`] has sent all it sends before it
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

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// What the [`stalled_server`] sends before it stalls.
const STALL_AFTER: u64 = 700_000;

fn stalled_server() -> FaultServer {
    FaultServer::start([(
        "/s.bin",
        Route::new(random_bytes(4 * MIB, 5)).behaviour(Behaviour::StallAfter {
            bytes: STALL_AFTER,
            times: 100,
        }),
    )])
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

/// `pymatris ARGS --dir DIR URL` of a [`stalled_server`], sent `signal`
/// (`-INT`, say) once the server stalled: `DIR` and the run's output.
fn interrupted_run(signal: &str, args: &[&str]) -> (tempfile::TempDir, Output) {
    let server = stalled_server();
    let out = tempfile::tempdir().unwrap();
    let url = server.url("/s.bin");
    let mut all = args.to_vec();
    all.extend(["--dir", out.path().to_str().unwrap(), &url]);
    let mut child = spawn(&all);
    wait_for_the_stall(&server, &mut child);
    kill(&child, signal);
    let output = child.wait_with_output().unwrap();
    (out, output)
}

// Without --continue the download has no name until it is complete
// (with --overwrite too), and nothing is left on Ctrl-C.
#[test]
fn ctrl_c_exits_130_and_leaves_no_temporary_file() {
    for extra in [None, Some("--overwrite")] {
        let mut args = vec!["--timeouts", "30"];
        args.extend(extra);
        let (out, output) = interrupted_run("-INT", &args);
        assert_exit(&output, 130);
        assert_eq!(list_dir(out.path()), Vec::<String>::new(), "{extra:?}");
    }
}

// Without --continue, even a process killed outright leaves nothing, with
// --overwrite too.
#[test]
fn a_killed_run_leaves_no_file_behind() {
    for extra in [None, Some("--overwrite")] {
        let mut args = vec!["--timeouts", "30"];
        args.extend(extra);
        let (out, output) = interrupted_run("-KILL", &args);
        assert_eq!(output.status.code(), None, "not killed: {output:?}");
        assert_eq!(list_dir(out.path()), Vec::<String>::new(), "{extra:?}");
    }
}

// Under --continue the state is checkpointed while the file downloads: a
// process killed outright (which writes nothing on its way out) is resumed
// from its last checkpoint, and the checkpoint claims no byte that was not
// on disk.
#[test]
fn a_killed_run_under_continue_resumes_from_its_last_checkpoint() {
    let server = stalled_server();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let url = server.url("/s.bin");
    let args = [
        "--quiet",
        "-c",
        "--max-splits",
        "1",
        "--timeouts",
        "30",
        "--dir",
        dir,
        &url,
    ];
    let mut child = spawn(&args);
    wait_for_the_stall(&server, &mut child);
    let state = out.path().join("s.bin.pymatris-part.state");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.exists() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint while the file downloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more checkpoint interval, for the last bytes written to count.
    std::thread::sleep(Duration::from_secs(3));
    kill(&child, "-KILL");
    let killed = child.wait_with_output().unwrap();
    assert_eq!(killed.status.code(), None, "not killed: {killed:?}");
    // The empty lock file too (no run at once with this one), which the
    // next run takes over and removes.
    assert_eq!(
        list_dir(out.path()),
        [
            "s.bin.pymatris-part",
            "s.bin.pymatris-part.lock",
            "s.bin.pymatris-part.state"
        ]
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let on_disk = std::fs::read(out.path().join("s.bin.pymatris-part")).unwrap();
    let body = random_bytes(4 * MIB, 5);
    let mut claimed = 0;
    for span in saved["spans"].as_array().unwrap() {
        let [start, pos] = [span[0].as_u64().unwrap(), span[1].as_u64().unwrap()];
        assert!(pos as usize <= on_disk.len(), "{saved}");
        assert!(
            on_disk[start as usize..pos as usize] == body[start as usize..pos as usize],
            "the checkpoint claims bytes that are not on disk: {saved}"
        );
        claimed += pos - start;
    }
    assert!(claimed > 0, "the checkpoint claims nothing: {saved}");

    // The same file from a server that does not stall, at the same URL.
    let addr = url_addr(&url);
    drop(server);
    let server = FaultServer::start_at(addr, [("/s.bin", Route::new(body.clone()))]);
    let rerun = run_pymatris(args);
    assert_exit(&rerun, 0);
    assert_eq!(list_dir(out.path()), ["s.bin"]);
    assert!(
        std::fs::read(out.path().join("s.bin")).unwrap() == body,
        "bytes differ"
    );
    let served = server.body_bytes("/s.bin");
    assert!(
        served <= body.len() as u64 - claimed,
        "served {served} bytes of {}, {claimed} were on disk",
        body.len()
    );
    assert!(
        gets(&server, "/s.bin")
            .iter()
            .all(|r| r.range_start().is_some_and(|s| s > 0)),
        "the rerun asked for bytes already on disk"
    );
}

#[test]
fn ctrl_c_under_continue_leaves_a_resumable_part() {
    let (out, output) = interrupted_run("-INT", &["-c", "--timeouts", "30"]);
    assert_exit(&output, 130);
    assert_eq!(
        list_dir(out.path()),
        ["s.bin.pymatris-part", "s.bin.pymatris-part.state"]
    );
    let state = std::fs::read_to_string(out.path().join("s.bin.pymatris-part.state")).unwrap();
    assert!(state.contains("\"spans\""), "state: {state}");
}

// With `Config::fsync`, checkpoints sync the part file first: they still
// come while the file downloads, and still claim only bytes on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_with_fsync_claim_only_bytes_on_disk() {
    use pymatris_core::{Config, Downloader, Request};
    let server = stalled_server();
    let out = tempfile::tempdir().unwrap();
    let config = Config::default()
        .resume(true)
        .fsync(true)
        .max_splits(1)
        .timeout(Duration::from_secs(30));
    let mut dl = Downloader::new(config);
    let cancel = dl.cancel_token();
    dl.enqueue(Request::new(server.url("/s.bin")).dir(out.path().to_str().unwrap()));
    let run = tokio::spawn(async move { dl.download().await });
    let state = out.path().join("s.bin.pymatris-part.state");
    let deadline = Instant::now() + Duration::from_secs(20);
    let claimed = loop {
        assert!(Instant::now() < deadline, "no checkpoint with a claim");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(text) = std::fs::read_to_string(&state) else {
            continue;
        };
        let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
        let span = &saved["spans"][0];
        let (start, pos) = (span[0].as_u64().unwrap(), span[1].as_u64().unwrap());
        if pos > start {
            break (start, pos);
        }
    };
    let on_disk = std::fs::read(out.path().join("s.bin.pymatris-part")).unwrap();
    let body = random_bytes(4 * MIB, 5);
    let (start, pos) = (claimed.0 as usize, claimed.1 as usize);
    assert!(pos <= on_disk.len() && on_disk[start..pos] == body[start..pos]);
    cancel.cancel();
    let results = run.await.unwrap();
    assert_eq!(results.errors.len(), 1);
}
