//! OpenSSH's sshd for SFTP: a private host key and config, one user who may
//! log in with a password or with a generated client key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::process::{Proc, SSH_KEYGEN, SSHD, StartError, free_port, run, with_port_retries};
use crate::users::{SFTP_USER, ensure_user};

#[derive(Debug)]
pub(crate) struct Sshd {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) client_key: PathBuf,
    pub(crate) known_hosts: PathBuf,
    pub(crate) host_key_pub: String,
}

/// `max_startups`: see `Options::sshd_max_startups`.
pub(crate) fn start(dir: &Path, max_startups: Option<u32>) -> Result<Sshd> {
    let sshd = SSHD.check()?;
    SSH_KEYGEN.check()?;
    ensure_user(SFTP_USER)?;
    // sshd's privilege separation directory; the Debian package creates it
    // only when its service starts.
    fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;

    let host_key = dir.join("host_key");
    let client_key = dir.join("client_key");
    keygen(&host_key, "pymatris-harness-host")?;
    keygen(&client_key, "pymatris-harness-client")?;
    let host_key_pub = key_without_comment(&fs::read_to_string(host_key.with_extension("pub"))?);
    let authorized_keys = dir.join("authorized_keys");
    fs::copy(client_key.with_extension("pub"), &authorized_keys)?;

    with_port_retries(|| {
        let port = free_port()?;
        let conf = dir.join("sshd_config");
        let text = config(dir, &host_key, &authorized_keys, port, max_startups);
        fs::write(&conf, text).map_err(anyhow::Error::from)?;
        let mut proc = Proc::spawn(
            "sshd",
            sshd,
            &["-D", "-e", "-f", &conf.display().to_string()],
            &dir.join("sshd.log"),
        )?;
        if let Err(e) = proc.wait_ready(&[port]) {
            proc.kill();
            return Err::<_, StartError>(e);
        }
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key_pub}\n"))
            .map_err(anyhow::Error::from)?;
        Ok(Sshd {
            proc,
            port,
            client_key: client_key.clone(),
            known_hosts,
            host_key_pub: host_key_pub.clone(),
        })
    })
}

/// An unencrypted ed25519 key pair at `path` and `path.pub`.
fn keygen(path: &Path, comment: &str) -> Result<()> {
    run(
        SSH_KEYGEN.path,
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path.display().to_string(),
        ],
        None,
    )
}

/// "ssh-ed25519 AAAA… comment" -> "ssh-ed25519 AAAA…".
fn key_without_comment(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(
    dir: &Path,
    host_key: &Path,
    authorized_keys: &Path,
    port: u16,
    max_startups: Option<u32>,
) -> String {
    let (dir, host_key, authorized_keys) =
        (dir.display(), host_key.display(), authorized_keys.display());
    // Tests open many sessions at once; the default (10:30:100) would drop
    // some.
    let startups = max_startups.unwrap_or(200);
    format!(
        "# Written by pymatris-harness.
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {dir}/sshd.pid
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile {authorized_keys}
# The key files live in a root-owned temp dir that the user does not own.
StrictModes no
PermitRootLogin no
AllowUsers {SFTP_USER}
Subsystem sftp internal-sftp
# Tests open many sessions at once; the default MaxSessions (10) would drop some.
MaxStartups {startups}
MaxSessions 200
MaxAuthTries 20
UseDNS no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
LogLevel VERBOSE
"
    )
}
