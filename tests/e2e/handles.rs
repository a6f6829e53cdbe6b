//! Running out of file handles: the CLI under a low limit of open files
//! (soft and hard, so raising the soft limit cannot help) against a real
//! nginx with many URLs and high parallelism. Every URL must land; and
//! when no handle can ever be had, the run must end with an error that
//! says so rather than hang.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_harness::{Servers, Which};
use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, sha256_hex};

/// Runs `pymatris` with `args` under a limit of `limit` open files, soft
/// and hard, set by util-linux's `prlimit` before it runs the binary.
fn run_limited(limit: u64, args: &[String]) -> Output {
    Command::new("prlimit")
        .arg(format!("--nofile={limit}:{limit}"))
        .arg(pymatris_bin())
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("run prlimit (util-linux)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output: {e}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            tail(&out.stderr)
        )
    })
}

/// The last lines of a long stderr.
fn tail(bytes: &[u8]) -> String {
    let text = text(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn args_for(dir: &Path, list: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--json",
        "--dir",
        dir.to_str().unwrap(),
        "-i",
        list.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

// 3,000 URLs with 1,024 files at once and up to 64 parts each, under a
// hard limit of 64 open files: the run slows down, and every URL lands.
// (At 256 the limit was reached only when the machine was quiet: under the
// whole suite's load, fewer small files were under way at once.)
#[test]
fn running_out_of_file_handles_fails_no_url() {
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let mut urls = Vec::new();
    let mut expected = Vec::new();
    for i in 0..3000 {
        let name = format!("f{i:04}.bin");
        let bytes = random_bytes(1000 + (i % 7) * 700, i as u64);
        servers.write_file(&format!("many/{name}"), &bytes);
        urls.push(servers.http_url(&format!("many/{name}")));
        expected.push((name, sha256_hex(&bytes)));
    }
    // A few large files, cut into parts when there are handles to spare.
    for i in 0..4 {
        let name = format!("big{i}.bin");
        let path = servers.write_random(&format!("many/{name}"), 8 << 20, 100 + i);
        urls.push(servers.http_url(&format!("many/{name}")));
        expected.push((name, sha256_hex(&std::fs::read(path).unwrap())));
    }
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = work.path().join("out");
    let args = args_for(
        &out,
        &list,
        &[
            "--verbose",
            "--max-parallel",
            "1024",
            "--max-splits",
            "64",
            "--min-split-size",
            "256K",
        ],
    );
    let run = run_limited(64, &args);
    let json = json_of(&run);
    let errors = json["errors"].as_array().expect("errors").len();
    assert_eq!(
        (run.status.code(), errors),
        (Some(0), 0),
        "{errors} errors, the first: {:#}\nstderr: {}",
        json["errors"][0],
        tail(&run.stderr)
    );
    // The limit was reached: the test exercised what it is about.
    assert!(
        text(&run.stderr).contains("out of file handles"),
        "never ran out of file handles: {}",
        tail(&run.stderr)
    );
    expected.sort();
    let mut got: Vec<(String, String)> = list_dir(&out)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(out.join(&name)).unwrap();
            (name, sha256_hex(&bytes))
        })
        .collect();
    got.sort();
    assert!(got == expected, "not every file landed byte for byte");
}

// When no handle can ever be had (a limit that leaves the process none for
// a connection), the run ends with an error naming the cause, after about
// the idle timeout, rather than waiting forever.
#[test]
fn no_file_handle_ever_is_a_clear_error() {
    let server = FaultServer::start([("/a.bin", Route::new(random_bytes(100_000, 1)))]);
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("urls.txt");
    let urls: Vec<String> = (0..20).map(|_| server.url("/a.bin")).collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = work.path().join("out");
    let args = args_for(&out, &list, &["--timeouts", "2", "--max-parallel", "8"]);
    // The smallest limit the process starts with; it needs a few handles
    // of its own (its runtime, its signal handling) before any transfer.
    for limit in 8..24 {
        let started = Instant::now();
        let run = run_limited(limit, &args);
        if run.status.code() == Some(2) && text(&run.stderr).contains("cannot start") {
            continue;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(run.status.code(), Some(1), "{}", tail(&run.stderr));
        let json = json_of(&run);
        let errors = json["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 20, "limit {limit}: {json:#}");
        for e in errors {
            let message = e["error"].as_str().unwrap_or_default();
            assert!(
                message.contains("Too many open files") && message.contains("file handles"),
                "limit {limit}: {json:#}"
            );
        }
        assert!(list_dir(&out).is_empty(), "{:?}", list_dir(&out));
        return;
    }
    panic!("pymatris never started with fewer than 24 open files");
}
