//! Developer tasks, run as `cargo xtask <task>`: real test servers, and the
//! entry points (still stubs) for the demo, CI and the benchmark.
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod servers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(bin_name = "cargo xtask", about = "pymatris developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Real servers (nginx, vsftpd, sshd) on loopback.
    Servers {
        #[command(subcommand)]
        action: servers::Action,
    },
    /// Downloads from every protocol with the CLI, for show (not yet implemented).
    Demo,
    /// fmt, clippy and the tests, as CI runs them (not yet implemented).
    Ci,
    /// Compares pymatris with curl and aria2 on the real servers (not yet implemented).
    Bench,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Servers { action } => servers::run(action),
        Task::Demo => demo(),
        Task::Ci => ci(),
        Task::Bench => bench(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// TODO(lead): the demo.
fn demo() -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask demo` is not yet implemented")
}

// TODO(lead): fmt --check, clippy -D warnings, the tests.
fn ci() -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask ci` is not yet implemented")
}

// TODO(lead): the benchmark.
fn bench() -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask bench` is not yet implemented")
}
