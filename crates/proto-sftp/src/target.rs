//! What an `sftp://[user[:password]@]host[:port]/path` URL names, decoded
//! once: where to connect, as whom, and which remote path to read.
//!
//! The path is bytes, as SFTP has it: the URL's percent-decoding, UTF-8 or
//! not, so `%FF` reaches a file whose name is the byte 0xFF. Messages show
//! it decoded lossily.

use std::fmt;

use pymatris_core::proto_util;
use pymatris_core::{Error, ErrorKind, Result, Url, redact_url};

/// The default SSH port.
pub(crate) const SSH_PORT: u16 = 22;

/// A decoded `sftp://` URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The host to connect to and to look up in `known_hosts`: a name, an
    /// IPv4 address, or an IPv6 address without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    /// From the URL (where the engine also puts `--netrc`'s). Never shown.
    pub(crate) password: Option<String>,
    /// The remote path: absolute (`/srv/a.bin`), or relative to the login
    /// directory for `sftp://host/~/a.bin`.
    pub(crate) path: Vec<u8>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("path", &self.display_path())
            .finish()
    }
}

impl Target {
    /// Decodes `url`. The user is the URL's, else the local user name.
    pub(crate) fn parse(url: &Url) -> Result<Target> {
        let invalid =
            |why: &str| Error::new(ErrorKind::InvalidUrl, format!("{}: {why}", redact_url(url)));
        if !url.scheme().eq_ignore_ascii_case("sftp") {
            return Err(invalid("not an sftp:// URL"));
        }
        let host = proto_util::url_host(url).ok_or_else(|| invalid("no host"))?;
        let port = url.port().unwrap_or(SSH_PORT);
        let credentials = proto_util::url_credentials(url)?;
        let user = credentials.user.unwrap_or_else(local_user);
        let password = credentials.password;

        let raw_path = proto_util::percent_decode(url.path());
        let path = if let Some(rest) = raw_path.strip_prefix(b"/~/") {
            // Relative to the login directory, where OpenSSH's sftp-server
            // starts (curl's convention for `~`).
            rest.to_owned()
        } else {
            raw_path
        };
        if path.is_empty() || path.ends_with(b"/") || path == b"/~" {
            return Err(invalid("no file path (sftp://host/path/to/file)"));
        }
        if path.contains(&0) {
            return Err(invalid("the path contains a NUL byte"));
        }
        Ok(Target {
            host,
            port,
            user,
            password,
            path,
        })
    }

    /// A directory to list: `sftp://host/srv/tree/` (or `.../tree`) is
    /// `/srv/tree/.`, `sftp://host/~/` the login directory.
    pub(crate) fn parse_dir(url: &Url) -> Result<Target> {
        // A URL's path loses its `.` segments: a file name stands in for
        // the `.` until the path is decoded.
        let mut url = url.clone();
        let path = format!("{}/_", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let mut target = Target::parse(&url)?;
        target.path.pop();
        target.path.push(b'.');
        Ok(target)
    }

    /// The path as shown in messages.
    pub(crate) fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// `host:port`, as shown in messages (`[::1]:22` for IPv6).
    pub(crate) fn host_port(&self) -> String {
        Target::display_host_port(&self.host, self.port)
    }

    /// `host:port`, with brackets around IPv6 addresses.
    pub(crate) fn display_host_port(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

/// The local user name: `$USER`, `$LOGNAME` (`$USERNAME` on Windows), else
/// `root`.
pub(crate) fn local_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Target> {
        Target::parse(&Url::parse(s).unwrap())
    }

    #[test]
    fn directories_to_list() {
        let dir = |s: &str| Target::parse_dir(&Url::parse(s).unwrap()).unwrap().path;
        assert_eq!(dir("sftp://h/srv/tree/"), b"/srv/tree/.");
        assert_eq!(dir("sftp://h/srv/a%20b"), b"/srv/a b/.");
        assert_eq!(dir("sftp://h/~/"), b".");
        assert_eq!(dir("sftp://h/"), b"/.");
    }

    #[test]
    fn full_urls_decode() {
        let t = parse("sftp://bel%40le:p%3Ass%40w@example.org:2222/data/a%20b.bin").unwrap();
        assert_eq!(t.host, "example.org");
        assert_eq!(t.port, 2222);
        assert_eq!(t.user, "bel@le");
        assert_eq!(t.password.as_deref(), Some("p:ss@w"));
        assert_eq!(t.path, b"/data/a b.bin");
        assert_eq!(t.host_port(), "example.org:2222");
        // The password never shows in Debug.
        assert!(!format!("{t:?}").contains("p:ss@w"));
    }

    #[test]
    fn user_defaults_to_the_local_user_and_port_to_22() {
        let t = parse("sftp://example.org/srv/x").unwrap();
        assert_eq!(t.port, 22);
        assert_eq!(t.user, local_user());
        assert!(!t.user.is_empty());
        assert_eq!(t.password, None);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        let t = parse("sftp://u@[::1]:2200/x").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.host_port(), "[::1]:2200");
    }

    #[test]
    fn tilde_paths_are_relative_to_home() {
        assert_eq!(parse("sftp://h/~/a/b.txt").unwrap().path, b"a/b.txt");
        assert_eq!(parse("sftp://h/home/x/f").unwrap().path, b"/home/x/f");
    }

    #[test]
    fn paths_are_bytes_utf8_or_not() {
        let t = parse("sftp://h/d/%FF%FEx.bin").unwrap();
        assert_eq!(t.path, b"/d/\xff\xfex.bin");
        assert_eq!(t.display_path(), "/d/\u{fffd}\u{fffd}x.bin");
        assert_eq!(parse("sftp://h/d/%C3%A9").unwrap().path, "/d/é".as_bytes());
        let nul = parse("sftp://h/a%00b").unwrap_err();
        assert_eq!(nul.kind(), ErrorKind::InvalidUrl);
    }

    #[test]
    fn urls_without_a_file_are_refused_without_showing_the_password() {
        for bad in [
            "sftp://u:secret@h/",
            "sftp://u:secret@h",
            "sftp://u:secret@h/dir/",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{bad}");
            assert!(!err.is_retryable());
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }
}
