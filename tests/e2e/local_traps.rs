//! Traps on the local disk, laid by a hostile neighbour who can write in
//! the download directory (a shared `/tmp`, a group-writable data dir) or
//! by a hostile server through the names it gives: links planted where
//! pymatris will create its files, FIFOs, names that mimic pymatris's own
//! working files, hidden and disguised names. Nothing may be written
//! outside `--dir`, no file may be lost, no run may hang.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_tests::fault_server::{Behaviour, FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, run_pymatris};

const MIB: usize = 1 << 20;
const PRECIOUS: &[u8] = b"a file of the user's, outside --dir";

/// `ROOT/dl`, the download directory, beside `ROOT/outside/victim`, a file
/// that must never change.
struct Trap {
    _root: tempfile::TempDir,
    dir: PathBuf,
    outside: PathBuf,
}

impl Trap {
    fn new() -> Trap {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dl");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), PRECIOUS).unwrap();
        Trap {
            _root: root,
            dir,
            outside,
        }
    }

    fn dir(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn victim(&self) -> PathBuf {
        self.outside.join("victim")
    }

    /// A link at `dl/NAME` to `target`.
    fn plant_link(&self, name: &str, target: &Path) {
        symlink(target, self.dir.join(name)).unwrap();
    }

    /// Nothing outside `dl` changed or appeared.
    fn assert_outside_untouched(&self, case: &str) {
        assert!(
            std::fs::read(self.victim()).unwrap() == PRECIOUS,
            "{case}: the file outside --dir was written"
        );
        assert_eq!(
            list_dir(&self.outside),
            ["victim"],
            "{case}: a file was created outside --dir"
        );
    }

    /// `dl/NAME` is a regular file (not a link) holding `body`.
    fn assert_regular(&self, name: &str, body: &[u8], case: &str) {
        let path = self.dir.join(name);
        let meta = path
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("{case}: {name}: {e}; dir holds {:?}", self.files()));
        assert!(meta.is_file(), "{case}: {name} is not a regular file");
        assert!(
            std::fs::read(&path).unwrap() == body,
            "{case}: {name} differs"
        );
    }

    fn files(&self) -> Vec<String> {
        list_dir(&self.dir)
    }
}

/// `out` exited with `code`, or its stderr says why not.
fn assert_exit(out: &Output, code: i32, case: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{case}: stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs pymatris, killed if it has not ended within a minute (a FIFO
/// opened the wrong way blocks forever).
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(pymatris_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pymatris hung: {:?}", child.wait_with_output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// `/f.bin` holding `body`, its transfers cut after 300 000 bytes the
/// first `times` times.
fn dropping_server(body: &[u8], times: usize) -> FaultServer {
    FaultServer::start([(
        "/f.bin",
        Route::new(body.to_vec()).behaviour(Behaviour::DropAfter {
            bytes: 300_000,
            times,
        }),
    )])
}

/// `--continue` with one try and one connection into `trap`: a cut
/// transfer leaves its part file and state for the next run.
fn resumable_args<'a>(trap: &'a Trap, url: &'a str) -> [&'a str; 9] {
    [
        "--quiet",
        "-c",
        "--max-tries",
        "1",
        "--max-splits",
        "1",
        "--dir",
        trap.dir(),
        url,
    ]
}

/// Runs `args`, which must fail and leave `f.bin`'s part file in `trap`:
/// its path.
fn leave_part(trap: &Trap, args: &[&str]) -> PathBuf {
    assert_exit(&run_bounded(args), 1, "first run");
    trap.dir.join("f.bin.pymatris-part")
}

/// A link at `NAME.pymatris-part` (to a file elsewhere, or to a name
/// elsewhere that does not exist yet) is replaced, never written through,
/// however the part file is made: `--overwrite`, `--continue` or both.
#[test]
fn a_link_at_the_part_file_is_never_written_through() {
    let body = random_bytes(MIB, 61);
    let server = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let url = server.url("/f.bin");
    for flags in [
        &["--overwrite"][..],
        &["-c"][..],
        &["-c", "--overwrite"][..],
        &[][..],
    ] {
        for dangling in [false, true] {
            let case = format!("{flags:?}, dangling link: {dangling}");
            let trap = Trap::new();
            let target = if dangling {
                trap.outside.join("new")
            } else {
                trap.victim()
            };
            trap.plant_link("f.bin.pymatris-part", &target);
            let mut args = vec!["--quiet", "--dir", trap.dir()];
            args.extend(flags);
            args.push(&url);
            let out = run_bounded(&args);
            assert_exit(&out, 0, &case);
            trap.assert_outside_untouched(&case);
            trap.assert_regular("f.bin", &body, &case);
            if flags.is_empty() {
                // The download had no name until complete: the link was
                // never in its way, and is not its to remove.
                assert_eq!(trap.files(), ["f.bin", "f.bin.pymatris-part"], "{case}");
                let link = trap.dir.join("f.bin.pymatris-part");
                assert_eq!(std::fs::read_link(link).unwrap(), target, "{case}");
            } else {
                assert_eq!(trap.files(), ["f.bin"], "{case}");
            }
        }
    }
}

/// The resume state and its temporary are written whole to new files: a
/// link at either is replaced, never written through.
#[test]
fn a_link_at_the_state_files_is_never_written_through() {
    let body = random_bytes(MIB, 62);
    for name in ["f.bin.pymatris-part.state.tmp", "f.bin.pymatris-part.state"] {
        for dangling in [false, true] {
            let case = format!("link at {name}, dangling: {dangling}");
            let server = dropping_server(&body, 100);
            let trap = Trap::new();
            let target = if dangling {
                trap.outside.join("new")
            } else {
                trap.victim()
            };
            trap.plant_link(name, &target);
            let url = server.url("/f.bin");
            let out = run_bounded(&resumable_args(&trap, &url));
            assert_exit(&out, 1, &case);
            trap.assert_outside_untouched(&case);
            assert_eq!(
                trap.files(),
                ["f.bin.pymatris-part", "f.bin.pymatris-part.state"],
                "{case}"
            );
            for kept in trap.files() {
                let meta = trap.dir.join(&kept).symlink_metadata().unwrap();
                assert!(meta.is_file(), "{case}: {kept} is not a regular file");
            }
        }
    }
}

/// A part file and state left by an interrupted run, whose part file is
/// then swapped for a link (to a copy elsewhere, as long as it was): the
/// next `--continue` starts over in a file of its own.
#[test]
fn a_resumable_part_swapped_for_a_link_is_not_resumed_through_it() {
    let body = random_bytes(MIB, 63);
    let server = dropping_server(&body, 2);
    let url = server.url("/f.bin");
    let trap = Trap::new();
    let args = resumable_args(&trap, &url);
    let part = leave_part(&trap, &args);
    let partial = std::fs::read(&part).unwrap();
    assert!(!partial.is_empty());
    // The victim is as long as the part, so the state's claims fit it.
    std::fs::write(trap.victim(), &partial).unwrap();
    std::fs::remove_file(&part).unwrap();
    symlink(trap.victim(), &part).unwrap();

    let second = run_bounded(&args);
    assert_exit(&second, 0, "second run");
    assert!(
        std::fs::read(trap.victim()).unwrap() == partial,
        "the file outside --dir was written"
    );
    trap.assert_regular("f.bin", &body, "second run");
    assert_eq!(trap.files(), ["f.bin"]);
}

/// A FIFO at the part file, or a link to one: no run hangs on it, and the
/// download lands in a regular file.
#[test]
fn a_fifo_at_the_part_file_neither_hangs_nor_is_written_into() {
    let body = random_bytes(300_000, 64);
    let server = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let url = server.url("/f.bin");
    for flags in [&["-c"][..], &["--overwrite"][..]] {
        for through_link in [false, true] {
            let case = format!("{flags:?}, through a link: {through_link}");
            let trap = Trap::new();
            let part = trap.dir.join("f.bin.pymatris-part");
            if through_link {
                let fifo = trap.outside.join("fifo");
                mkfifo(&fifo);
                symlink(&fifo, &part).unwrap();
            } else {
                mkfifo(&part);
            }
            let mut args = vec!["--quiet", "--dir", trap.dir()];
            args.extend(flags);
            args.push(&url);
            let out = run_bounded(&args);
            assert_exit(&out, 0, &case);
            trap.assert_regular("f.bin", &body, &case);
            assert_eq!(trap.files(), ["f.bin"], "{case}");
        }
    }
}

/// A link at the final name is left alone without `--overwrite` (even
/// when what it points to looks like the complete file to `--continue`);
/// `--overwrite` replaces the link itself, never what it points to.
#[test]
fn a_link_at_the_final_name_is_kept_or_replaced_never_followed() {
    let body = random_bytes(200_000, 65);
    let server = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let url = server.url("/f.bin");
    for flags in [
        &[][..],
        &["-c"][..],
        &["--overwrite"][..],
        &["-c", "--overwrite"][..],
    ] {
        let case = format!("{flags:?}");
        let trap = Trap::new();
        // As long as the remote file: `--continue` must not take it for
        // the complete download.
        let victim = random_bytes(body.len(), 66);
        std::fs::write(trap.victim(), &victim).unwrap();
        trap.plant_link("f.bin", &trap.victim());
        let mut args = vec!["--quiet", "--json", "--dir", trap.dir()];
        args.extend(flags);
        args.push(&url);
        let out = run_bounded(&args);
        assert_exit(&out, 0, &case);
        assert!(
            std::fs::read(trap.victim()).unwrap() == victim,
            "{case}: the file outside --dir was written"
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let saved = json["success"][0]["path"].as_str().unwrap().to_owned();
        if flags.contains(&"--overwrite") {
            trap.assert_regular("f.bin", &body, &case);
            assert_eq!(trap.files(), ["f.bin"], "{case}");
            assert!(saved.ends_with("/f.bin"), "{case}: {saved}");
        } else {
            let link = trap.dir.join("f.bin");
            assert!(link.symlink_metadata().unwrap().is_symlink(), "{case}");
            assert_eq!(std::fs::read_link(&link).unwrap(), trap.victim());
            trap.assert_regular("f.1.bin", &body, &case);
            assert_eq!(trap.files(), ["f.1.bin", "f.bin"], "{case}");
            assert!(saved.ends_with("/f.1.bin"), "{case}: {saved}");
        }
    }
}

/// A server names its file after another download's part file, by
/// `Content-Disposition` or by where it redirects: all files land whole,
/// under names of their own, whatever the flags.
#[test]
fn a_server_name_never_lands_on_another_downloads_working_file() {
    let big = random_bytes(2 * MIB, 67);
    let small = random_bytes(10_000, 68);
    let third = random_bytes(20_000, 69);
    for flags in [
        &["--overwrite"][..],
        &["-c"][..],
        &["-c", "--overwrite"][..],
        &[][..],
    ] {
        let case = format!("{flags:?}");
        let server = FaultServer::start([
            (
                "/bigx",
                // Dropped once, so that its retry is still running when
                // the small file is done.
                Route::new(big.clone()).behaviour(Behaviour::DropAfter {
                    bytes: 100_000,
                    times: 2,
                }),
            ),
            (
                "/other",
                Route::new(small.clone()).header(
                    "Content-Disposition",
                    "attachment; filename=\"bigx.pymatris-part\"",
                ),
            ),
            ("/r", Route::redirect(302, "/d/bigx.pymatris-part.state")),
            ("/d/bigx.pymatris-part.state", Route::new(third.clone())),
        ]);
        let trap = Trap::new();
        let urls = [server.url("/bigx"), server.url("/other"), server.url("/r")];
        let mut args = vec![
            "--quiet",
            "--json",
            "--max-splits",
            "1",
            "--dir",
            trap.dir(),
        ];
        args.extend(flags);
        args.extend(urls.iter().map(String::as_str));
        let out = run_bounded(&args);
        assert_exit(&out, 0, &case);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let success = json["success"].as_array().unwrap();
        assert_eq!(success.len(), 3, "{case}: {json:#}");
        let mut names = Vec::new();
        for (entry, body) in success.iter().zip([&big, &small, &third]) {
            let path = PathBuf::from(entry["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                !name.contains(".pymatris-part"),
                "{case}: saved under a working name: {name}"
            );
            trap.assert_regular(&name, body, &case);
            names.push(name);
        }
        // Whichever was named first took `bigx`.
        names.sort();
        assert_eq!(names, ["bigx", "bigx.1", "bigx.2"], "{case}");
        assert_eq!(trap.files(), names, "{case}");
    }
}

/// A server cannot make a hidden file, nor disguise a name with invisible
/// format characters, whether the name comes from `Content-Disposition`
/// or from where a redirect points.
#[test]
fn a_server_makes_no_hidden_or_disguised_file() {
    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|i| random_bytes(1000 + i, 70 + i as u64))
        .collect();
    let server = FaultServer::start([
        (
            "/a",
            Route::new(bodies[0].clone()).header(
                "Content-Disposition",
                "attachment; filename=\".bash_login\"",
            ),
        ),
        (
            "/b",
            Route::new(bodies[1].clone()).header(
                "Content-Disposition",
                "attachment; filename=\"x.pdf\"; filename*=UTF-8''invoice%E2%80%AEfdp.exe",
            ),
        ),
        ("/c", Route::redirect(302, "/d/.profile")),
        ("/d/.profile", Route::new(bodies[2].clone())),
        (
            "/e",
            Route::new(bodies[3].clone())
                .header("Content-Disposition", "attachment; filename=\"..\\\\.ssh\""),
        ),
    ]);
    let trap = Trap::new();
    let urls: Vec<String> = ["/a", "/b", "/c", "/e"]
        .iter()
        .map(|p| server.url(p))
        .collect();
    let mut args = vec!["--quiet", "--dir", trap.dir()];
    args.extend(urls.iter().map(String::as_str));
    let out = run_bounded(&args);
    assert_exit(&out, 0, "hidden names");
    assert_eq!(
        trap.files(),
        ["bash_login", "invoicefdp.exe", "profile", "ssh"]
    );
    for (name, body) in ["bash_login", "invoicefdp.exe", "profile", "ssh"]
        .iter()
        .zip(&bodies)
    {
        trap.assert_regular(name, body, name);
    }
}

/// A name the user gives is taken as given: a leading dot is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_user_gives_keeps_its_leading_dot() {
    use pymatris_core::{Config, Downloader, Request};
    let body = random_bytes(5000, 75);
    let server = FaultServer::start([(
        "/f",
        Route::new(body.clone()).header("Content-Disposition", "attachment; filename=\".x\""),
    )]);
    let trap = Trap::new();
    let mut dl = Downloader::new(Config::default());
    dl.enqueue(
        Request::new(server.url("/f"))
            .dir(trap.dir())
            .filename(".netrc-like"),
    );
    let results = dl.download().await;
    assert!(results.errors.is_empty(), "{results}");
    trap.assert_regular(".netrc-like", &body, "user name");
    assert_eq!(trap.files(), [".netrc-like"]);
}

/// A link at a name that numbering would take is passed over like a file.
#[test]
fn a_link_at_a_numbered_name_is_skipped_too() {
    let body = random_bytes(1000, 76);
    let server = FaultServer::start([("/n.txt", Route::new(body.clone()))]);
    let trap = Trap::new();
    std::fs::write(trap.dir.join("n.txt"), b"old").unwrap();
    trap.plant_link("n.1.txt", &trap.victim());
    let out = run_pymatris(["--quiet", "--dir", trap.dir(), &server.url("/n.txt")]);
    assert_exit(&out, 0, "numbered");
    trap.assert_outside_untouched("numbered");
    trap.assert_regular("n.2.txt", &body, "numbered");
}

/// A part file left for `--continue` whose name is then made a hard link
/// to someone else's file (of the same length): the next run does not
/// write into that file, it starts over in one of its own.
#[test]
fn a_hard_link_at_a_resumable_part_is_not_written_into() {
    let body = random_bytes(MIB, 77);
    let server = dropping_server(&body, 2);
    let url = server.url("/f.bin");
    let trap = Trap::new();
    let args = resumable_args(&trap, &url);
    let part = leave_part(&trap, &args);
    let partial = std::fs::read(&part).unwrap();
    std::fs::write(trap.victim(), &partial).unwrap();
    std::fs::remove_file(&part).unwrap();
    std::fs::hard_link(trap.victim(), &part).unwrap();

    assert_exit(&run_bounded(&args), 0, "second run");
    assert!(
        std::fs::read(trap.victim()).unwrap() == partial,
        "the hard-linked file was written"
    );
    trap.assert_regular("f.bin", &body, "second run");
    assert_eq!(trap.files(), ["f.bin"]);
}

/// The part file is swapped for a link while pymatris writes to it (it
/// writes through its open file, not the name): the link is not renamed
/// into place, the download is.
#[test]
fn a_part_file_swapped_for_a_link_mid_download_is_not_published() {
    let body = random_bytes(2 * MIB, 78);
    for flags in [&["-c"][..], &["-c", "--overwrite"][..]] {
        let case = format!("{flags:?}");
        // The HEAD of -c is the first request; the first GET stalls.
        let server = FaultServer::start([(
            "/f.bin",
            Route::new(body.clone()).behaviour(Behaviour::StallAfter {
                bytes: 500_000,
                times: 2,
            }),
        )]);
        let url = server.url("/f.bin");
        let trap = Trap::new();
        let mut args = vec![
            "--quiet",
            "--timeouts",
            "3",
            "--max-splits",
            "1",
            "--dir",
            trap.dir(),
        ];
        args.extend(flags);
        args.push(&url);
        let child = Command::new(pymatris_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.body_bytes("/f.bin") < 500_000 {
            assert!(
                Instant::now() < deadline,
                "{case}: the server never stalled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The transfer is stalled now, for the 3 s of the timeout.
        let part = trap.dir.join("f.bin.pymatris-part");
        std::fs::remove_file(&part).unwrap();
        symlink(trap.victim(), &part).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_exit(&out, 0, &case);
        trap.assert_outside_untouched(&case);
        trap.assert_regular("f.bin", &body, &case);
        assert_eq!(trap.files(), ["f.bin"], "{case}");
    }
}

/// A part file left for `--continue`, its state still beside it, replaced
/// by a FIFO: the next run neither waits on it nor writes into it.
#[test]
fn a_resumable_part_swapped_for_a_fifo_is_not_waited_on() {
    let body = random_bytes(MIB, 79);
    let server = dropping_server(&body, 2);
    let url = server.url("/f.bin");
    let trap = Trap::new();
    let args = resumable_args(&trap, &url);
    let part = leave_part(&trap, &args);
    std::fs::remove_file(&part).unwrap();
    mkfifo(&part);
    assert_exit(&run_bounded(&args), 0, "second run");
    trap.assert_regular("f.bin", &body, "second run");
    assert_eq!(trap.files(), ["f.bin"]);
}

/// `--overwrite` without `--continue` over what an interrupted `--continue`
/// run left (its part file and state, maybe beside an old copy of the
/// file): the part is replaced, and its state, which described that part,
/// goes with it rather than stay behind stale. A link at the state file is
/// removed, not followed.
#[test]
fn overwrite_leaves_no_stale_state_of_an_earlier_continue() {
    let body = random_bytes(MIB, 69);
    let full = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let url = full.url("/f.bin");
    for (old_copy, linked_state) in [(false, false), (true, false), (true, true)] {
        let case = format!("old copy: {old_copy}, state a link: {linked_state}");
        let trap = Trap::new();
        let cut = dropping_server(&body, 100);
        let cut_url = cut.url("/f.bin");
        leave_part(&trap, &resumable_args(&trap, &cut_url));
        let state = trap.dir.join("f.bin.pymatris-part.state");
        assert!(state.is_file(), "{case}: the first run left no state");
        if linked_state {
            std::fs::remove_file(&state).unwrap();
            trap.plant_link("f.bin.pymatris-part.state", &trap.victim());
        }
        if old_copy {
            std::fs::write(trap.dir.join("f.bin"), b"an older copy").unwrap();
        }
        let out = run_bounded(&["--quiet", "--overwrite", "--dir", trap.dir(), &url]);
        assert_exit(&out, 0, &case);
        trap.assert_regular("f.bin", &body, &case);
        assert_eq!(trap.files(), ["f.bin"], "{case}");
        trap.assert_outside_untouched(&case);
    }
}
