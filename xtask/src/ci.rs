//! `cargo xtask ci`: the checks that must hold on main, in the order that
//! fails fastest: formatting, lints, builds of each protocol alone, a smoke
//! run of the benchmark, the demo, and every test (which start real servers
//! through the harness).

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
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
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
    // Last, so that the tests' summary closes the log.
    // `--workspace` builds the `pymatris` binary that the end-to-end tests run.
    tests(&["test", "--workspace", "--no-fail-fast"])
}

/// Runs the tests, passing their output through, and closes with one line
/// that adds up every test binary's `test result:` line.
fn tests(args: &[&str]) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
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
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}
