//! How many bytes of a file each server sent, read from the server's own
//! transfer log: the measure of what a download cost the server, for tests
//! that bound it (a resume must not fetch much more than what is missing).
//!
//! Logs rather than a counting relay in front of the servers: an FTP data
//! connection goes straight to the port the server names in its (under FTPS,
//! encrypted) PASV reply, so a relay would miss it. The HTTP and FTP logs
//! count the file's bytes (bodies, data connections), not headers or
//! commands. OpenSSH's sftp-server logs nothing that reaches sshd's log, so
//! for sshd the count is every byte of every SSH connection, as sshd logs it
//! when one closes (`LogLevel VERBOSE`): callers take the difference around
//! one download. Each server writes its line when a transfer ends, so callers
//! wait for the count to settle (see
//! [`Servers::bytes_sent`](crate::Servers::bytes_sent)).

use std::fs;
use std::path::Path;

/// A server program of the harness, for [`Servers::bytes_sent`](crate::Servers::bytes_sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Server {
    /// nginx (HTTP, HTTPS).
    Nginx,
    /// lighttpd (HTTP, HTTPS).
    Lighttpd,
    /// vsftpd (FTP, FTPS).
    Vsftpd,
    /// pyftpdlib (FTP, FTPS).
    Pyftpdlib,
    /// OpenSSH's sshd (SFTP).
    Sshd,
    /// asyncssh's SFTP server.
    Asyncssh,
}

impl Server {
    /// The log, under [`Servers::root_dir`](crate::Servers::root_dir),
    /// that records each transfer.
    pub fn log(self) -> &'static str {
        match self {
            Server::Nginx => "nginx/access.log",
            Server::Lighttpd => "lighttpd/access.log",
            Server::Vsftpd => "vsftpd/vsftpd.log",
            Server::Pyftpdlib => "pyftpdlib/pyftpdlib.log",
            Server::Sshd => "sshd/sshd.log",
            Server::Asyncssh => "asyncssh/asyncssh.log",
        }
    }

    /// Sums the bytes sent of every transfer of a path ending in `/rel`
    /// (for sshd: of every connection).
    pub(crate) fn sum(self, log: &Path, rel: &str) -> u64 {
        let text = fs::read_to_string(log).unwrap_or_default();
        let suffix = format!("/{}", rel.trim_start_matches('/'));
        text.lines()
            .filter_map(|line| match self {
                Server::Nginx | Server::Lighttpd => access_log(line, &suffix),
                Server::Vsftpd => vsftpd(line, &suffix),
                Server::Pyftpdlib => pyftpdlib(line, &suffix),
                Server::Sshd => sshd(line),
                Server::Asyncssh => sftp_close(line, &suffix),
            })
            .sum()
    }
}

/// `… "GET /rel HTTP/1.1" 206 1048576 …` (nginx's combined format and the
/// harness's lighttpd format alike).
fn access_log(line: &str, suffix: &str) -> Option<u64> {
    let (_, request) = line.split_once('"')?;
    let (request, rest) = request.split_once('"')?;
    let mut words = request.split(' ');
    let (_method, path) = (words.next()?, words.next()?);
    if !path.ends_with(suffix) {
        return None;
    }
    let mut fields = rest.split_whitespace();
    let _status = fields.next()?;
    // lighttpd writes "-" for no body.
    fields.next()?.parse().ok().or(Some(0))
}

/// `… OK DOWNLOAD: Client "127.0.0.1", "/rel", 1048576 bytes, 12.34Kbyte/sec`
/// (or `FAIL DOWNLOAD`, with the bytes sent before it failed).
fn vsftpd(line: &str, suffix: &str) -> Option<u64> {
    let (_, rest) = line.split_once(" DOWNLOAD: ")?;
    let mut quoted = rest.split('"').skip(1).step_by(2);
    let (_client, path) = (quoted.next()?, quoted.next()?);
    if !path.ends_with(suffix) {
        return None;
    }
    let (_, after) = rest.rsplit_once("\", ")?;
    after.split(' ').next()?.parse().ok()
}

/// `… RETR /abs/path/rel completed=1 bytes=1048576 seconds=0.01`.
fn pyftpdlib(line: &str, suffix: &str) -> Option<u64> {
    let (_, rest) = line.split_once(" RETR ")?;
    let (path, counts) = rest.split_once(" completed=")?;
    if !path.ends_with(suffix) {
        return None;
    }
    let (_, bytes) = counts.split_once(" bytes=")?;
    bytes.split(' ').next()?.parse().ok()
}

/// sshd at `LogLevel VERBOSE`, as a connection closes: `Transferred: sent
/// 3048, received 2468 bytes` (SSH packets, encrypted, with the handshake).
fn sshd(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("Transferred: sent ")?;
    rest.split(',').next()?.parse().ok()
}

/// The harness's asyncssh script, as a file closes: `close "/c/a.bin" bytes
/// read 1048576 written 0` (the file's bytes, without SSH's framing).
fn sftp_close(line: &str, suffix: &str) -> Option<u64> {
    let (_, rest) = line.split_once("close \"")?;
    let (path, counts) = rest.split_once('"')?;
    if !path.ends_with(suffix) {
        return None;
    }
    let (_, read) = counts.split_once("bytes read ")?;
    read.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_log_format_is_read() {
        let s = "/c/a.bin";
        assert_eq!(
            access_log(
                r#"127.0.0.1 - - [01/Dec/2026:15:00:00 +0000] "GET /c/a.bin HTTP/1.1" 206 1048576 "-" "pymatris""#,
                s
            ),
            Some(1048576)
        );
        assert_eq!(
            access_log(r#"127.0.0.1 [t] "GET /c/b.bin HTTP/1.1" 200 5"#, s),
            None
        );
        assert_eq!(
            access_log(r#"127.0.0.1 [t] "GET /c/a.bin HTTP/1.1" 200 -"#, s),
            Some(0)
        );
        assert_eq!(
            vsftpd(
                r#"Tue Dec  1 15:00:00 2026 [pid 7] [ftpuser] FAIL DOWNLOAD: Client "127.0.0.1", "/d/c/a.bin", 65536 bytes, 1.00Kbyte/sec"#,
                s
            ),
            Some(65536)
        );
        assert_eq!(
            pyftpdlib(
                "2026-12-01 15:00:00 Thread-3 127.0.0.1:4242-[ftpuser] RETR /d/c/a.bin completed=0 bytes=77 seconds=0.1",
                s
            ),
            Some(77)
        );
        assert_eq!(
            sshd("Transferred: sent 8413044, received 3016 bytes"),
            Some(8413044)
        );
        assert_eq!(sshd("Accepted publickey for pymatris-sftp"), None);
        assert_eq!(
            sftp_close(r#"close "/c/a.bin" bytes read 99 written 0"#, s),
            Some(99)
        );
        assert_eq!(
            sftp_close(r#"close "/c/xa.bin" bytes read 99 written 0"#, s),
            None
        );
    }
}
