//! `--progress json`: the events a program follows a run by, one JSON
//! object a line on stderr, as `docs/progress-json.md` describes them.

use std::collections::HashMap;

use pymatris_tests::fault_server::{Behaviour, FaultServer, Route};
use pymatris_tests::{random_bytes, run_pymatris};
use serde_json::Value;

const MIB: usize = 1 << 20;

#[test]
fn every_stderr_line_is_an_event_of_the_schema() {
    let body = random_bytes(2 * MIB, 7);
    let server = FaultServer::start([
        ("/slow.bin", Route::new(body.clone())),
        (
            "/cut.bin",
            Route::new(random_bytes(MIB, 8)).behaviour(Behaviour::DropAfter {
                bytes: 100_000,
                times: usize::MAX,
            }),
        ),
        ("/missing.bin", Route::status(404)),
    ]);
    let out_dir = tempfile::tempdir().unwrap();
    let dir = out_dir.path().to_str().unwrap();
    let urls = [
        server.url("/slow.bin"),
        server.url("/cut.bin"),
        server.url("/missing.bin"),
    ];
    let mut args = vec![
        "--progress",
        "json",
        "--json",
        "--dir",
        dir,
        "--max-tries",
        "1",
        "--max-splits",
        "1",
        // Slow enough for several progress events of one file.
        "--max-speed",
        "1M",
    ];
    args.extend(urls.iter().map(String::as_str));
    let out = run_pymatris(&args);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stderr).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let kind = |e: &Value| e["event"].as_str().unwrap().to_owned();
    assert_eq!(kind(&events[0]), "batch_start");
    assert_eq!(events[0]["files"], 3);
    assert_eq!(kind(events.last().unwrap()), "batch_done");
    assert_eq!(events.last().unwrap()["succeeded"], 1);
    assert_eq!(events.last().unwrap()["failed"], 2);
    assert_eq!(events.last().unwrap()["bytes"], 2 * MIB);
    let times: Vec<f64> = events.iter().map(|e| e["time"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The file that arrived: started with its name and size, progress
    // counts that grow and are never closer than 500 ms, then done.
    let start = events
        .iter()
        .find(|e| kind(e) == "file_start" && e["name"] == "slow.bin")
        .expect("file_start of slow.bin");
    assert_eq!(start["size"], 2 * MIB);
    assert_eq!(start["url"], urls[0].as_str());
    let id = start["id"].as_u64().unwrap();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|e| kind(e) == "progress" && e["id"] == id)
        .collect();
    assert!(progress.len() >= 2, "{text}");
    for pair in progress.windows(2) {
        let gap = pair[1]["time"].as_f64().unwrap() - pair[0]["time"].as_f64().unwrap();
        assert!(gap >= 0.499, "progress events {gap} s apart: {text}");
        assert!(pair[1]["bytes"].as_u64() >= pair[0]["bytes"].as_u64());
    }
    let done = events
        .iter()
        .find(|e| kind(e) == "file_done" && e["id"] == id)
        .expect("file_done");
    assert_eq!(done["bytes"], 2 * MIB);

    // Failures carry the error kind, the same name as --json's results:
    // the one cut mid-transfer under its id, the one that never started
    // with none.
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: HashMap<&str, &str> = stdout["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["url"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    let failed: Vec<&Value> = events.iter().filter(|e| kind(e) == "file_failed").collect();
    assert_eq!(failed.len(), 2, "{text}");
    for f in failed {
        let url = f["url"].as_str().unwrap();
        assert_eq!(Some(&f["kind"].as_str().unwrap()), kinds.get(url), "{f}");
        assert!(!f["error"].as_str().unwrap().is_empty());
        if url == urls[1] {
            assert!(f["id"].is_u64(), "{f}");
        } else {
            assert_eq!(url, urls[2]);
            assert!(f["id"].is_null(), "{f}");
        }
    }
}
