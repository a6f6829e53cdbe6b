//! asyncssh's SFTP server (Python, from PyPI): a second SFTP implementation
//! beside OpenSSH's, whose file handles are 4-byte binary counters (the
//! 129th, `00 00 00 80`, is not UTF-8), with an ECDSA host key where sshd
//! has ed25519.
//!
//! It runs `asyncssh_sftp.py` (kept beside this file) in the harness's
//! venv, chrooted to the data dir, so its URLs are `/rel` where sshd's
//! are the data dir's absolute path. It needs no system user: the script
//! checks the user, password and key itself.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::process::{Proc, SSH_KEYGEN, StartError, free_port, run, with_port_retries};
use crate::python::venv_python;

/// The asyncssh release the tests run against.
pub(crate) const ASYNCSSH: &str = "asyncssh==2.24.1";

const SCRIPT: &str = include_str!("asyncssh_sftp.py");

#[derive(Debug)]
pub(crate) struct AsyncSsh {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) client_key: PathBuf,
    pub(crate) known_hosts: PathBuf,
    pub(crate) host_key_pub: String,
}

/// Starts the server in `dir` (keys, script, log) serving `data`, logging
/// in `user` with `password` or the generated client key.
pub(crate) fn start(dir: &Path, data: &Path, user: &str, password: &str) -> Result<AsyncSsh> {
    SSH_KEYGEN.check()?;
    let python = venv_python(&[ASYNCSSH]).context("installing asyncssh in the venv")?;
    let host_key = dir.join("host_key");
    let client_key = dir.join("client_key");
    keygen(&host_key, "ecdsa", "pymatris-harness-asyncssh-host")?;
    keygen(&client_key, "ed25519", "pymatris-harness-asyncssh-client")?;
    let host_key_pub = first_two_fields(&fs::read_to_string(host_key.with_extension("pub"))?);
    let script = dir.join("asyncssh_sftp.py");
    fs::write(&script, SCRIPT).context("writing the asyncssh script")?;
    let python = python.display().to_string();
    let paths = [&script, &host_key, &client_key.with_extension("pub"), data]
        .map(|p| p.display().to_string());

    with_port_retries(|| {
        let port = free_port()?;
        let port_arg = port.to_string();
        let mut proc = Proc::spawn(
            "asyncssh",
            &python,
            &[
                // Unbuffered, so the log shows each login as it happens.
                "-u",
                &paths[0],
                "--port",
                &port_arg,
                "--host-key",
                &paths[1],
                "--authorized-keys",
                &paths[2],
                "--user",
                user,
                "--password",
                password,
                "--root",
                &paths[3],
            ],
            &dir.join("asyncssh.log"),
        )?;
        if let Err(e) = proc.wait_ready(&[port]) {
            proc.kill();
            return Err::<_, StartError>(e);
        }
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key_pub}\n"))
            .map_err(anyhow::Error::from)?;
        Ok(AsyncSsh {
            proc,
            port,
            client_key: client_key.clone(),
            known_hosts,
            host_key_pub: host_key_pub.clone(),
        })
    })
}

/// An unencrypted key pair of `kind` at `path` and `path.pub`.
fn keygen(path: &Path, kind: &str, comment: &str) -> Result<()> {
    run(
        SSH_KEYGEN.path,
        &[
            "-q",
            "-t",
            kind,
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

/// "ecdsa-sha2-nistp256 AAAA… comment" -> "ecdsa-sha2-nistp256 AAAA…".
fn first_two_fields(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn it_serves_the_host_key_it_records() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let mut server = start(dir.path(), &data, "u", "pw").unwrap();
        let scan = Command::new("ssh-keyscan")
            .args(["-t", "ecdsa", "-p", &server.port.to_string(), "127.0.0.1"])
            .output()
            .expect("ssh-keyscan (apt-get install openssh-client)");
        server.proc.kill();
        let scanned = String::from_utf8_lossy(&scan.stdout);
        assert!(scanned.contains(&server.host_key_pub), "{scanned}");
        assert!(server.host_key_pub.starts_with("ecdsa-sha2-nistp256 "));
        let recorded = fs::read_to_string(&server.known_hosts).unwrap();
        assert_eq!(
            recorded,
            format!("[127.0.0.1]:{} {}\n", server.port, server.host_key_pub)
        );
    }
}
