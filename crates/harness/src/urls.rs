//! The URLs, ports and credentials of the running servers: what a test
//! needs to reach each one, apart from how they are started (`lib.rs`).

use std::path::Path;

use crate::{Servers, asyncssh, lighttpd, nginx, pyftpdlib, sshd, users, vsftpd};

impl Servers {
    pub(crate) fn nginx(&self) -> &nginx::Nginx {
        self.nginx
            .as_ref()
            .expect("the HTTP server was not started (Which { http: true, .. })")
    }

    pub(crate) fn vsftpd(&self) -> &vsftpd::Vsftpd {
        self.vsftpd
            .as_ref()
            .expect("the FTP server was not started (Which { ftp: true, .. })")
    }

    pub(crate) fn sshd(&self) -> &sshd::Sshd {
        self.sshd
            .as_ref()
            .expect("the SFTP server was not started (Which { sftp: true, .. })")
    }

    /// `http://127.0.0.1:PORT/rel`.
    pub fn http_url(&self, rel: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.http_port(), strip(rel))
    }

    /// `https://localhost:PORT/rel`; the certificate is valid for
    /// `localhost` and `127.0.0.1` and signed by [`Servers::ca_cert`].
    pub fn https_url(&self, rel: &str) -> String {
        format!("https://localhost:{}/{}", self.https_port(), strip(rel))
    }

    pub(crate) fn lighttpd(&self) -> &lighttpd::Lighttpd {
        self.lighttpd
            .as_ref()
            .expect("lighttpd was not started (Servers::with_lighttpd)")
    }

    /// [`Servers::http_url`] on lighttpd.
    pub fn lighttpd_http_url(&self, rel: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.lighttpd().http_port,
            strip(rel)
        )
    }

    /// [`Servers::https_url`] on lighttpd.
    pub fn lighttpd_https_url(&self, rel: &str) -> String {
        format!(
            "https://localhost:{}/{}",
            self.lighttpd().https_port,
            strip(rel)
        )
    }

    /// nginx's plain HTTP port.
    pub fn http_port(&self) -> u16 {
        self.nginx().http_port
    }

    /// nginx's HTTPS port.
    pub fn https_port(&self) -> u16 {
        self.nginx().https_port
    }

    /// PEM of the CA that signed the HTTPS and FTPS server certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// `ftp://USER:PASS@127.0.0.1:PORT/rel`, a local user's login. The same
    /// server offers explicit FTPS (AUTH TLS) with the certificate of
    /// [`Servers::ca_cert`].
    pub fn ftp_url(&self, rel: &str) -> String {
        let (user, pass) = self.ftp_user();
        format!(
            "ftp://{user}:{pass}@127.0.0.1:{}/{}",
            self.ftp_port(),
            strip(rel)
        )
    }

    /// `ftp://127.0.0.1:PORT/rel`, anonymous, same data.
    pub fn ftp_anon_url(&self, rel: &str) -> String {
        format!("ftp://127.0.0.1:{}/{}", self.ftp_port(), strip(rel))
    }

    /// vsftpd's control port.
    pub fn ftp_port(&self) -> u16 {
        self.vsftpd().port
    }

    /// The FTP user and password.
    pub fn ftp_user(&self) -> (&str, &str) {
        (users::FTP_USER, users::PASSWORD)
    }

    /// `sftp://USER@127.0.0.1:PORT/ABSOLUTE-PATH-OF-DATA-DIR/rel`.
    pub fn sftp_url(&self, rel: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}/{}",
            self.sftp_user(),
            self.sftp_port(),
            self.data.display(),
            strip(rel)
        )
    }

    /// sshd's port.
    pub fn sftp_port(&self) -> u16 {
        self.sshd().port
    }

    pub(crate) fn pyftpdlib(&self) -> &pyftpdlib::Pyftpdlib {
        self.pyftpdlib
            .as_ref()
            .expect("pyftpdlib was not started (Servers::with_pyftpdlib)")
    }

    /// [`Servers::ftp_url`] on pyftpdlib: same user, password and data.
    pub fn pyftpdlib_url(&self, rel: &str) -> String {
        let (user, pass) = self.ftp_user();
        format!(
            "ftp://{user}:{pass}@127.0.0.1:{}/{}",
            self.pyftpdlib_port(),
            strip(rel)
        )
    }

    /// [`Servers::ftp_anon_url`] on pyftpdlib.
    pub fn pyftpdlib_anon_url(&self, rel: &str) -> String {
        format!("ftp://127.0.0.1:{}/{}", self.pyftpdlib_port(), strip(rel))
    }

    /// pyftpdlib's control port (explicit FTPS on the same port).
    pub fn pyftpdlib_port(&self) -> u16 {
        self.pyftpdlib().port
    }

    /// The SFTP user.
    pub fn sftp_user(&self) -> &str {
        users::SFTP_USER
    }

    /// The SFTP user's password (password authentication is enabled too).
    pub fn sftp_password(&self) -> &str {
        users::PASSWORD
    }

    /// An unencrypted ed25519 private key authorised for the SFTP user.
    pub fn ssh_client_key(&self) -> &Path {
        &self.sshd().client_key
    }

    /// A known_hosts file holding the server's host key as `[127.0.0.1]:PORT`.
    pub fn ssh_known_hosts(&self) -> &Path {
        &self.sshd().known_hosts
    }

    /// The server's host key, `ssh-ed25519 AAAA…`.
    pub fn ssh_host_key_pub(&self) -> &str {
        &self.sshd().host_key_pub
    }

    pub(crate) fn asyncssh(&self) -> &asyncssh::AsyncSsh {
        self.asyncssh
            .as_ref()
            .expect("asyncssh was not started (Servers::with_asyncssh)")
    }

    /// [`Servers::sftp_url`] on asyncssh: `sftp://USER@127.0.0.1:PORT/rel`
    /// (it is chrooted to the data dir).
    pub fn asyncssh_url(&self, rel: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}/{}",
            self.sftp_user(),
            self.asyncssh_port(),
            strip(rel)
        )
    }

    /// asyncssh's port.
    pub fn asyncssh_port(&self) -> u16 {
        self.asyncssh().port
    }

    /// An unencrypted ed25519 private key that asyncssh accepts.
    pub fn asyncssh_client_key(&self) -> &Path {
        &self.asyncssh().client_key
    }

    /// A known_hosts file holding asyncssh's host key as `[127.0.0.1]:PORT`.
    pub fn asyncssh_known_hosts(&self) -> &Path {
        &self.asyncssh().known_hosts
    }

    /// asyncssh's host key, `ecdsa-sha2-nistp256 AAAA…`.
    pub fn asyncssh_host_key_pub(&self) -> &str {
        &self.asyncssh().host_key_pub
    }
}

fn strip(rel: &str) -> &str {
    rel.trim_start_matches('/')
}
