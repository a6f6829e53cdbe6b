//! `cargo xtask ci`: the checks that must hold on main, in the order that
//! fails fastest: formatting, lints, the tidy rules, builds of each protocol alone, a smoke
//! run of the benchmark, the demo, the Python package's wheel and its
//! pytest tests, and every Rust test (which start real servers through the
//! harness).

use std::process::Command;

use anyhow::{Context, bail};

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

pub(crate) fn run() -> anyhow::Result<()> {
    // Tests send SIGINT to the CLI and to Python and expect Ctrl-C's
    // handling. A shell without job control starts a background command
    // with SIGINT ignored, an exec keeps it ignored, and the CLI then
    // rightly keeps ignoring it (as under `nohup`): every such test failed
    // when CI was started that way. A handler is reset to the default at
    // exec, so with one here every child starts with Ctrl-C's default.
    // It does nothing: a terminal's Ctrl-C reaches the children too, and
    // this waits for them to end.
    ctrlc::set_handler(|| {}).context("installing the Ctrl-C handler")?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The workspace's shape (core free of protocol libraries, file sizes,
    // docs without warnings).
    cargo(&["xtask", "tidy"])?;
    // A build of the CLI with each protocol alone proves the features are
    // independent (and that a missing one is reported, not fatal).
    for features in ["http", "ftp", "sftp"] {
        cargo(&[
            "check",
            "-p",
            "pymatris-cli",
            "--no-default-features",
            "--features",
            features,
        ])?;
    }
    // One small workload of the benchmark, so its harness cannot rot (on
    // the dev build of the CLI, which the tests use too).
    cargo(&["build", "-p", "pymatris-cli"])?;
    cargo(&["xtask", "bench", "--smoke"])?;
    // The README's first command as a newcomer runs it: a release build, the
    // servers, a mixed batch over every protocol, every byte compared.
    cargo(&["xtask", "demo"])?;
    // The Python package as a newcomer installs it, then its tests; their
    // counts join the closing line below.
    let python = python_tests()?;
    // Issue 18's million URLs in bounded memory, against the release CLI
    // the demo built (a debug build takes minutes more). `--workspace`, as
    // below, so that the build is the one the tests reuse.
    let release = crate::demo::build_cli()?;
    eprintln!(
        "$ PYMATRIS_LONG_LIST_CLI=target/release/pymatris cargo test --workspace -- --ignored --exact {MILLION}"
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["test", "--workspace", "--", "--ignored", "--exact", MILLION])
        .env("PYMATRIS_LONG_LIST_CLI", &release)
        .status()
        .context("running the million-URL test")?;
    let mut counts = python;
    if status.success() {
        counts.passed += 1;
    } else {
        counts.failed += 1;
    }
    // Tests that compare rates on the link they shape: another test
    // running beside them takes the CPU their growth is measured against.
    for name in ALONE {
        eprintln!("$ cargo test --workspace -- --ignored --exact {name}");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["test", "--workspace", "--", "--ignored", "--exact", name])
            .status()
            .with_context(|| format!("running {name}"))?;
        if status.success() {
            counts.passed += 1;
        } else {
            counts.failed += 1;
        }
    }
    // Last, so that the tests' summary closes the log.
    // `--workspace` builds the `pymatris` binary that the end-to-end tests run.
    tests(&["test", "--workspace", "--no-fail-fast"], counts)
}

/// The ignored end-to-end test that CI runs against the release CLI.
const MILLION: &str = "long_lists::a_million_urls_run_in_bounded_memory";

/// Ignored end-to-end tests that CI runs one at a time, with the machine
/// to themselves.
const ALONE: &[&str] = &["adapt::a_long_list_over_a_capped_link_grows_early"];

/// Passed, failed and skipped tests.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// The pinned tools of the Python package's build and tests, installed
/// from PyPI into the harness's venv under `target/`.
const PY_REQUIREMENTS: &[&str] = &[
    "maturin==1.16.0",
    "pytest==9.2.0",
    "tqdm==4.70.1",
    // The Dask recipe's test (crates/py/tests/test_dask.py).
    "dask[distributed]==2026.8.0",
];

/// Builds the wheel with `pip wheel crates/py` (maturin as its PEP 517
/// backend), installs it into the venv, and runs `crates/py/tests` against
/// the harness's servers. A build or install that fails stops CI; failing
/// tests are counted.
fn python_tests() -> anyhow::Result<Counts> {
    let root = workspace_root();
    let python = pymatris_harness::python::venv_python(PY_REQUIREMENTS)?;
    let wheels = root.join("target/wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    run_python(
        &python,
        &[
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
        ],
        &[wheels.as_os_str(), root.join("crates/py").as_os_str()],
    )?;
    let wheel = std::fs::read_dir(&wheels)
        .context("reading target/wheels")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip wheel crates/py made no wheel")?;
    run_python(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--force-reinstall",
            "--disable-pip-version-check",
        ],
        &[wheel.as_os_str()],
    )?;
    use std::io::{BufRead, BufReader};
    eprintln!("$ python -m pytest crates/py/tests");
    let mut child = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            "crates/py/tests",
        ])
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running pytest")?;
    let stdout = child.stdout.take().context("pytest output")?;
    let mut counts = Counts::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if line.contains(" in ") && (line.contains(" passed") || line.contains(" failed")) {
            counts = pytest_counts(&line);
        }
    }
    let status = child.wait()?;
    if !status.success() && counts.failed == 0 {
        // Collection errors, or pytest's exit 5 (no test ran).
        counts.failed = 1;
    }
    Ok(counts)
}

/// The counts of pytest's closing line (`== 3 passed, 1 failed, 2 skipped
/// in 9.1s ==`); errors count as failures.
fn pytest_counts(line: &str) -> Counts {
    let mut counts = Counts::default();
    let words: Vec<&str> = line
        .split(|c: char| c == ',' || c.is_whitespace() || c == '=')
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        let Ok(n) = pair[0].parse::<u64>() else {
            continue;
        };
        match pair[1] {
            "passed" => counts.passed += n,
            "failed" | "error" | "errors" => counts.failed += n,
            "skipped" => counts.skipped += n,
            _ => {}
        }
    }
    counts
}

fn run_python(
    python: &std::path::Path,
    args: &[&str],
    paths: &[&std::ffi::OsStr],
) -> anyhow::Result<()> {
    eprintln!("$ python {}", args.join(" "));
    let status = Command::new(python)
        .args(args)
        .args(paths)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running python {}", args.join(" ")))?;
    if !status.success() {
        bail!("`python {}` failed", args.join(" "));
    }
    Ok(())
}

pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs the tests, passing their output through, and closes with one line
/// that adds up every test binary's `test result:` line.
fn tests(args: &[&str], python: Counts) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let (mut passed, mut failed, mut ignored) = (python.passed, python.failed, python.skipped);
    let stdout = child.stdout.take().context("test output")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split([';', '.']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    // With the Python package's tests.
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pytest_closing_lines() {
        let c = pytest_counts("===== 3 passed, 1 failed, 2 skipped, 1 error in 9.10s =====");
        assert_eq!((c.passed, c.failed, c.skipped), (3, 2, 2));
        let c = pytest_counts("24 passed in 19.52s");
        assert_eq!((c.passed, c.failed, c.skipped), (24, 0, 0));
    }
}
