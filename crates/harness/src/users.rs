//! The system users that vsftpd and sshd log in.
//!
//! Both servers authenticate real accounts, so the harness creates them
//! (once, idempotently) with a fixed, well-known password. That is fine on a
//! throwaway CI machine or container and is why the harness refuses to do it
//! unless it runs as root: never run it where a system sshd accepts password
//! logins from other hosts.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::process::run;

/// The password of both test users.
pub(crate) const PASSWORD: &str = "pymatris-test-pw";
pub(crate) const FTP_USER: &str = "pymatris-ftp";
pub(crate) const SFTP_USER: &str = "pymatris-sftp";

pub(crate) fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Creates `name` if missing and sets its password, once per process.
pub(crate) fn ensure_user(name: &str) -> Result<()> {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == name) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the FTP and SFTP servers log in the system user {name}, which the harness creates \
             with useradd: run as root (e.g. in the CI container)"
        );
    }
    // useradd and chpasswd lock /etc/passwd and /etc/shadow and fail rather
    // than wait when another process (another test binary) holds the lock.
    let mut last_err = None;
    for _ in 0..30 {
        let attempt = (|| -> Result<()> {
            if !user_exists(name) {
                // A listed login shell: the Debian PAM stack of vsftpd
                // requires one (pam_shells), and sshd refuses users without.
                run(
                    "/usr/sbin/useradd",
                    &[
                        "--system",
                        "--no-create-home",
                        "--home-dir",
                        "/",
                        "--shell",
                        "/bin/sh",
                        name,
                    ],
                    None,
                )?;
            }
            run(
                "/usr/sbin/chpasswd",
                &[],
                Some(&format!("{name}:{PASSWORD}\n")),
            )
        })();
        match attempt {
            Ok(()) => {
                done.push(name.to_owned());
                return Ok(());
            }
            Err(e) => last_err = Some(e),
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(last_err.expect("at least one attempt")).with_context(|| format!("creating user {name}"))
}

fn user_exists(name: &str) -> bool {
    let prefix = format!("{name}:");
    fs::read_to_string("/etc/passwd").is_ok_and(|p| p.lines().any(|l| l.starts_with(&prefix)))
}
