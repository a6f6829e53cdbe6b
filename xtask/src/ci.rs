//! `cargo xtask ci`: the checks that must hold on main, in the order that
//! fails fastest: formatting, lints, builds of each protocol alone, every
//! test (which start real servers through the harness), and a smoke run of
//! the benchmark.

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
    // Last, so that the test runner's summary closes the log.
    // `--workspace` builds the `pymatris` binary that the end-to-end tests run.
    cargo(&["test", "--workspace", "--no-fail-fast"])?;
    Ok(())
}
