//! Developer tasks, run as `cargo xtask <task>`: real test servers on
//! loopback, the demo, the CI checks and the benchmark.
// A command-line tool: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod ci;
mod demo;
mod deps;
mod man;
mod servers;
mod tidy;

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
    /// Installs the Debian packages the tests, demo and benchmark use, where
    /// missing (as root).
    Deps,
    /// Starts the local servers and downloads a mixed batch from them with
    /// the CLI, progress bars showing.
    Demo,
    /// `cargo fmt --check`, clippy with `-D warnings`, every test, and a
    /// smoke run of the benchmark: what CI runs.
    Ci,
    /// The workspace's shape: core free of protocol libraries, protocol
    /// crates independent, no source file over 600 lines, docs without
    /// warnings.
    Tidy,
    /// Writes the man pages of pymatris (from its clap definition) to
    /// target/man, or to --out.
    Man {
        /// The directory to write the pages to.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// Compares pymatris with aria2c, curl, wget, lftp and OpenSSH sftp on
    /// the local servers.
    Bench(Box<bench::Args>),
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Servers { action } => servers::run(action),
        Task::Deps => deps::run(),
        Task::Demo => demo::run(),
        Task::Ci => ci::run(),
        Task::Tidy => tidy::run(),
        Task::Man { out } => man::run(out),
        Task::Bench(args) => bench::run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
