//! `cargo xtask servers start`: the test servers of `pymatris-harness`, with
//! a few sample files, until Ctrl-C, for trying the CLI by hand.

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use pymatris_harness::{Options, Servers, Which};

#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Starts the servers and waits for Ctrl-C (all of them when no flag is given).
    Start(StartArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// nginx: HTTP and HTTPS.
    #[arg(long)]
    http: bool,
    /// vsftpd: FTP and explicit FTPS.
    #[arg(long)]
    ftp: bool,
    /// sshd: SFTP.
    #[arg(long)]
    sftp: bool,
    /// Limit vsftpd to this many clients per address.
    #[arg(long, value_name = "N")]
    ftp_max_per_ip: Option<u32>,
}

pub(crate) fn run(action: Action) -> Result<()> {
    match action {
        Action::Start(args) => start(args),
    }
}

fn start(args: StartArgs) -> Result<()> {
    let which = if args.http || args.ftp || args.sftp {
        Which {
            http: args.http,
            ftp: args.ftp,
            sftp: args.sftp,
        }
    } else {
        Which::all()
    };
    // Set up before starting anything: a SIGINT or SIGTERM then ends the
    // wait below, and `servers` drops normally, killing its children and
    // removing the temp dir.
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let t = Instant::now();
    let servers = Servers::start_with(
        which,
        Options {
            ftp_max_per_ip: args.ftp_max_per_ip,
        },
    )?;
    let elapsed = t.elapsed();
    servers.write_file("hello.txt", b"Hello from pymatris-harness!\n");
    servers.write_file("empty.bin", b"");
    servers.write_random("big.bin", 8 << 20, 1);
    for i in 0..10 {
        servers.write_file(
            &format!("small/{i}.txt"),
            format!("small file {i}\n").as_bytes(),
        );
    }
    println!("Servers started in {elapsed:.2?}.\n");
    print!("{}", servers.describe());
    println!("\nSample files: hello.txt, empty.bin, big.bin (8 MiB), small/0.txt … small/9.txt");
    println!("Press Ctrl-C to stop.");
    let _ = rx.recv();
    println!("\nStopping.");
    drop(servers);
    Ok(())
}
