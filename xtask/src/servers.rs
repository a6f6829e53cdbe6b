//! `cargo xtask servers start`: the test servers of `pymatris-harness`, with
//! a few sample files, until Ctrl-C, for trying the CLI by hand.
//!
//! With `--json` it is the server starter of the Python package's tests:
//! one line of JSON on stdout says where everything is, and the servers stop
//! when standard input closes (the test session ended, or died) as well as
//! on SIGINT or SIGTERM.

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
    /// Print the URLs, credentials and paths as one line of JSON, and stop
    /// when standard input closes too.
    #[arg(long)]
    json: bool,
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
    if args.json {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
    }
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let t = Instant::now();
    let servers = Servers::start_with(
        which,
        Options {
            ftp_max_per_ip: args.ftp_max_per_ip,
            ..Options::default()
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
    if args.json {
        println!("{}", describe_json(&servers, which));
        let _ = rx.recv();
        drop(servers);
        return Ok(());
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

/// Where the servers are, for programs (the Python package's tests).
fn describe_json(servers: &Servers, which: Which) -> String {
    let mut out = serde_json::Map::new();
    let path = |p: &std::path::Path| serde_json::Value::from(p.display().to_string());
    out.insert("data_dir".into(), path(servers.data_dir()));
    out.insert("ca_cert".into(), path(servers.ca_cert()));
    // Logs and configs: the Dask test reads nginx's access log there.
    out.insert("root_dir".into(), path(servers.root_dir()));
    if which.http {
        out.insert("http".into(), servers.http_url("").into());
        out.insert("https".into(), servers.https_url("").into());
    }
    if which.ftp {
        let (user, password) = servers.ftp_user();
        out.insert("ftp".into(), servers.ftp_url("").into());
        out.insert("ftp_anon".into(), servers.ftp_anon_url("").into());
        out.insert("ftp_user".into(), user.into());
        out.insert("ftp_password".into(), password.into());
    }
    if which.sftp {
        out.insert("sftp".into(), servers.sftp_url("").into());
        out.insert("sftp_port".into(), servers.sftp_port().into());
        out.insert("sftp_user".into(), servers.sftp_user().into());
        out.insert("sftp_password".into(), servers.sftp_password().into());
        out.insert("ssh_key".into(), path(servers.ssh_client_key()));
        out.insert("known_hosts".into(), path(servers.ssh_known_hosts()));
        out.insert("host_key".into(), servers.ssh_host_key_pub().into());
    }
    serde_json::Value::Object(out).to_string()
}
