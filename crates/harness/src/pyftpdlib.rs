//! pyftpdlib, a second FTP and explicit FTPS implementation beside vsftpd,
//! run from the harness's Python venv (see `python.rs`) with a small script
//! kept beside this file. It can log in slowly and cap its sessions, the two
//! habits of pure-ftpd that vsftpd does not show: see [`PyftpdlibOptions`].

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::process::{PortRange, Proc, StartError, free_port, free_port_range, with_port_retries};
use crate::python::venv_python;
use crate::users::{FTP_USER, PASSWORD};

/// The pinned packages: pyOpenSSL is what pyftpdlib's FTPS handler needs.
const REQUIREMENTS: &[&str] = &["pyftpdlib==2.2.0", "pyopenssl==26.4.0"];

const SCRIPT: &str = include_str!("scripts/pyftpdlib_server.py");

/// As for vsftpd: bounds concurrent transfers only.
const PASV_PORTS: u16 = 200;

/// How pyftpdlib behaves; `PyftpdlibOptions::default()` is a plain,
/// unlimited server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyftpdlibOptions {
    /// How long every password check takes (the session's own thread
    /// sleeps; other sessions go on).
    pub login_delay: Duration,
    /// pyftpdlib's `max_cons`: sessions at once in all; the next connection
    /// gets "421 Too many connections. Service temporarily unavailable."
    pub max_sessions: Option<u32>,
    /// pyftpdlib's `max_cons_per_ip`: sessions at once from one address; the
    /// next gets "421 Too many connections from the same IP address."
    pub max_sessions_per_ip: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Pyftpdlib {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) pasv: PortRange,
}

pub(crate) fn start(
    dir: &Path,
    data: &Path,
    tls: &Path,
    options: PyftpdlibOptions,
) -> Result<Pyftpdlib> {
    let python = venv_python(REQUIREMENTS).context("installing pyftpdlib in the venv")?;
    let python = python.to_str().context("the venv's path is not UTF-8")?;
    let script = dir.join("pyftpdlib_server.py");
    fs::write(&script, SCRIPT)?;
    let script = script.display().to_string();
    with_port_retries(|| {
        let port = free_port()?;
        let pasv = free_port_range(PASV_PORTS)?;
        let config = config(dir, data, tls, port, pasv.bounds(), options);
        let conf = dir.join("pyftpdlib.json");
        fs::write(&conf, config).map_err(anyhow::Error::from)?;
        let mut proc = Proc::spawn(
            "pyftpdlib",
            python,
            &["-u", &script, &conf.display().to_string()],
            &dir.join("stderr.log"),
        )?;
        match proc.wait_ready(&[port]) {
            Ok(()) => Ok(Pyftpdlib { proc, port, pasv }),
            Err(e) => {
                proc.kill();
                Err::<_, StartError>(e)
            }
        }
    })
}

/// The script's JSON config.
fn config(
    dir: &Path,
    data: &Path,
    tls: &Path,
    port: u16,
    (pasv_min, pasv_max): (u16, u16),
    o: PyftpdlibOptions,
) -> String {
    serde_json::json!({
        "port": port,
        "pasv_min": pasv_min,
        "pasv_max": pasv_max,
        "data": data,
        "log": dir.join("pyftpdlib.log"),
        "cert": tls.join("server.pem"),
        "key": tls.join("server.key"),
        "user": FTP_USER,
        "password": PASSWORD,
        "login_delay": o.login_delay.as_secs_f64(),
        "max_cons": o.max_sessions.unwrap_or(0),
        "max_cons_per_ip": o.max_sessions_per_ip.unwrap_or(0),
    })
    .to_string()
}
