//! Job arrays simulated on one machine: N processes of the CLI share one
//! list, each told its place by the variables a Kubernetes Indexed Job or a
//! Slurm array sets, with `--shard auto`. One of them is killed mid-run (a
//! lost node, an evicted pod) and run again with `--continue`. Then the
//! union of the shards must be exactly the list, with no file requested by
//! two shards (each shard has its own User-Agent, which nginx's access log
//! records), every file byte-exact, and the shards' `--json` reports merged
//! by the `jq` line of docs/scaling.md into one report of every URL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pymatris_harness::{Server, Servers, Which};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes};

const FILES: usize = 120;
const SIZE: usize = 64 << 10;

/// docs/scaling.md's merge of the shards' `--json` reports.
const JQ_MERGE: &str = "{success: (map(.success) | add), errors: (map(.errors) | add)}";

/// The CLI as task `shard` of the array, given `env`, on `list`.
fn task(
    list: &Path,
    dir: &Path,
    shard: usize,
    env: &[(String, String)],
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(pymatris_bin());
    cmd.args(["--quiet", "--json", "--continue", "--shard", "auto", "-i"])
        .arg(list)
        .arg("--dir")
        .arg(dir)
        .args(["--user-agent", &format!("shard-{shard}")])
        .args(extra)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("JOB_COMPLETIONS")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `shards` tasks at once, task `victim` throttled and killed
/// mid-run then run again, and checks the outcome (see the module's doc).
fn simulate(shards: usize, victim: usize, env_of: impl Fn(usize) -> Vec<(String, String)>) {
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut urls = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..FILES {
        let name = format!("f{i:03}.bin");
        let body = random_bytes(SIZE, i as u64);
        servers.write_file(&format!("list/{name}"), &body);
        urls.push(servers.http_url(&format!("list/{name}")));
        expected.insert(name, body);
    }
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();

    // The victim is slowed down so that it is surely mid-run when killed.
    let slow = ["--max-speed", "200K", "--max-parallel", "2"];
    let mut running: Vec<_> = (0..shards)
        .map(|i| {
            let extra: &[&str] = if i == victim { &slow } else { &[] };
            task(&list, &out, i, &env_of(i), extra).spawn().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = &mut running[victim];
    assert!(
        killed.try_wait().unwrap().is_none(),
        "the throttled task ended before it could be killed"
    );
    killed.kill().unwrap();
    killed.wait().unwrap();
    let mut reports = Vec::new();
    for (i, child) in running.into_iter().enumerate() {
        if i == victim {
            continue;
        }
        let done = child.wait_with_output().unwrap();
        assert_eq!(
            done.status.code(),
            Some(0),
            "task {i}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        reports.push(done.stdout);
    }
    let left = list_dir(&out);
    assert!(
        left.iter().any(|n| n.ends_with(".pymatris-part")) || left.len() < FILES,
        "the kill left the victim's shard unfinished: {left:?}"
    );
    let rerun = task(&list, &out, victim, &env_of(victim), &[])
        .output()
        .unwrap();
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "rerun: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    reports.push(rerun.stdout);

    // The union is the list, byte-exact, with nothing else left.
    assert_eq!(list_dir(&out), expected.keys().cloned().collect::<Vec<_>>());
    for (name, body) in &expected {
        assert!(
            std::fs::read(out.join(name)).unwrap() == *body,
            "{name} differs"
        );
    }

    // No file requested by two shards (any method: a HEAD too).
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(servers.root_dir().join(Server::Nginx.log())).unwrap();
    let mut askers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in log.lines() {
        let quoted: Vec<&str> = line.split('"').collect();
        // `… "GET /list/f000.bin HTTP/1.1" 200 65536 "-" "shard-0"`
        let (Some(request), Some(agent)) = (quoted.get(1), quoted.get(5)) else {
            continue;
        };
        let Some(path) = request.split(' ').nth(1) else {
            continue;
        };
        if let Some(name) = path.strip_prefix("/list/") {
            askers
                .entry(name.to_owned())
                .or_default()
                .insert((*agent).to_owned());
        }
    }
    assert_eq!(askers.len(), FILES, "every file was requested");
    for (name, agents) in &askers {
        assert_eq!(agents.len(), 1, "{name} requested by {agents:?}");
    }
    let per_shard: BTreeSet<&String> = askers.values().flatten().collect();
    assert_eq!(
        per_shard.len(),
        shards,
        "every shard had work: {per_shard:?}"
    );

    // The shards' reports, merged, account for every URL once.
    let files: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(i, report)| {
            let path = work.path().join(format!("shard-{i}.json"));
            std::fs::write(&path, report).unwrap();
            path
        })
        .collect();
    let merged = Command::new("jq")
        .arg("-s")
        .arg(JQ_MERGE)
        .args(&files)
        .output()
        .expect("run jq");
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let merged: serde_json::Value = serde_json::from_slice(&merged.stdout).unwrap();
    let mut reported: Vec<String> = merged["success"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap().to_owned())
        .collect();
    reported.sort();
    let mut all = urls.clone();
    all.sort();
    assert_eq!(reported, all);
    assert_eq!(merged["errors"], serde_json::json!([]));
}

fn vars(pairs: &[(&str, usize)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_string()))
        .collect()
}

/// An Indexed Job of 4 completions (docs/scaling.md's manifest).
#[test]
fn a_kubernetes_indexed_job_splits_the_list_and_survives_a_lost_pod() {
    simulate(4, 1, |i| {
        vars(&[("JOB_COMPLETION_INDEX", i), ("JOB_COMPLETIONS", 4)])
    });
}

/// A Slurm array `--array=1-3` (docs/scaling.md's script): task ids from 1.
#[test]
fn a_slurm_array_splits_the_list_and_survives_a_lost_node() {
    simulate(3, 2, |i| {
        vars(&[
            ("SLURM_ARRAY_TASK_ID", i + 1),
            ("SLURM_ARRAY_TASK_COUNT", 3),
            ("SLURM_ARRAY_TASK_MIN", 1),
            ("SLURM_ARRAY_TASK_MAX", 3),
        ])
    });
}

/// An engine's speculative retry: the same shard run twice at once, on the
/// same list and directory, with `--continue`. Neither run may corrupt a
/// file, leave a second copy under another name, or fail: the one that
/// finds a file taken waits for it and then finds it complete.
#[test]
fn two_runs_of_one_shard_at_once_never_corrupt_a_file() {
    const TWINS_FILES: usize = 12;
    let servers = Servers::start(Which::http_only()).expect("start nginx");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut urls = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..TWINS_FILES {
        let name = format!("t{i:02}.bin");
        let body = random_bytes(512 << 10, 1000 + i as u64);
        servers.write_file(&format!("twins/{name}"), &body);
        urls.push(servers.http_url(&format!("twins/{name}")));
        expected.insert(name, body);
    }
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let env = vars(&[("JOB_COMPLETION_INDEX", 0), ("JOB_COMPLETIONS", 1)]);
    // Throttled, so that the twins overlap on every file.
    let slow = [
        "--max-speed",
        "3M",
        "--max-splits",
        "2",
        "--min-split-size",
        "128K",
    ];
    let twins: Vec<_> = (0..2)
        .map(|i| task(&list, &out, i, &env, &slow).spawn().unwrap())
        .collect();
    for (i, twin) in twins.into_iter().enumerate() {
        let done = twin.wait_with_output().unwrap();
        assert_eq!(
            done.status.code(),
            Some(0),
            "twin {i}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
        assert_eq!(
            report["success"].as_array().map(Vec::len),
            Some(TWINS_FILES),
            "twin {i}: {report}"
        );
    }
    assert_eq!(list_dir(&out), expected.keys().cloned().collect::<Vec<_>>());
    for (name, body) in &expected {
        assert!(
            std::fs::read(out.join(name)).unwrap() == *body,
            "{name} differs"
        );
    }
}
