//! vsftpd for FTP and explicit FTPS: anonymous and local-user logins over
//! the same data directory, passive mode on a private range of ports.

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::process::{
    PortRange, Proc, StartError, VSFTPD, free_port, free_port_range, with_port_retries,
};
use crate::users::{FTP_USER, ensure_user};

/// How many passive ports each vsftpd gets. Every transfer takes one for the
/// life of its data connection, and TIME_WAIT does not block reuse (vsftpd
/// sets SO_REUSEADDR), so this bounds concurrent transfers only.
const PASV_PORTS: u16 = 200;

#[derive(Debug)]
pub(crate) struct Vsftpd {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) pasv: PortRange,
}

pub(crate) struct FtpConfig<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) data: &'a Path,
    pub(crate) empty: &'a Path,
    pub(crate) tls: &'a Path,
    pub(crate) max_per_ip: Option<u32>,
}

pub(crate) fn start(c: &FtpConfig<'_>) -> Result<Vsftpd> {
    let vsftpd = VSFTPD.check()?;
    ensure_user(FTP_USER)?;
    with_port_retries(|| {
        let port = free_port()?;
        let pasv = free_port_range(PASV_PORTS)?;
        let conf = c.dir.join("vsftpd.conf");
        fs::write(&conf, config(c, port, pasv.bounds())).map_err(anyhow::Error::from)?;
        let mut proc = Proc::spawn(
            "vsftpd",
            vsftpd,
            &[&conf.display().to_string()],
            &c.dir.join("stderr.log"),
        )?;
        match proc.wait_ready(&[port]) {
            Ok(()) => Ok(Vsftpd { proc, port, pasv }),
            Err(e) => {
                proc.kill();
                Err::<_, StartError>(e)
            }
        }
    })
}

fn config(c: &FtpConfig<'_>, port: u16, (pasv_min, pasv_max): (u16, u16)) -> String {
    let max_per_ip = c.max_per_ip.unwrap_or(0);
    let (dir, data, empty) = (c.dir.display(), c.data.display(), c.empty.display());
    let (cert, key) = (
        c.tls.join("server.pem").display().to_string(),
        c.tls.join("server.key").display().to_string(),
    );
    format!(
        "# Written by pymatris-harness.
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
# 0 means unlimited.
max_clients=0
max_per_ip={max_per_ip}

anonymous_enable=YES
anon_root={data}
no_anon_password=YES
local_enable=YES
local_root={data}
chroot_local_user=NO
write_enable=NO
check_shell=NO
userlist_enable=NO
pam_service_name=vsftpd
# Bad-credential tests would otherwise wait a second per attempt.
delay_failed_login=0
max_login_fails=100
secure_chroot_dir={empty}
# The sandbox and the per-session namespaces fail or cost time in containers.
seccomp_sandbox=NO
isolate=NO
isolate_network=NO

pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
connect_from_port_20=NO

ssl_enable=YES
allow_anon_ssl=YES
force_local_logins_ssl=NO
force_local_data_ssl=NO
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
# Data connections must resume the control connection's TLS session; curl
# (OpenSSL) and suppaftp (rustls) both do, so keep vsftpd's secure default.
require_ssl_reuse=YES
ssl_ciphers=HIGH
# vsftpd asks clients for a certificate by default; nobody here has one.
ssl_request_cert=NO
rsa_cert_file={cert}
rsa_private_key_file={key}

xferlog_enable=YES
xferlog_std_format=NO
vsftpd_log_file={dir}/vsftpd.log
syslog_enable=NO
idle_session_timeout=600
data_connection_timeout=300
"
    )
}
