//! What an `ftp://` or `ftps://` URL asks for: which server, which login,
//! which file.

use std::fmt;

use pymatris_core::proto_util;
use pymatris_core::{Error, ErrorKind, Url, redact_url};

/// The default control port of `ftp://`.
pub(crate) const FTP_PORT: u16 = 21;
/// The default control port of `ftps://` (implicit TLS).
pub(crate) const FTPS_PORT: u16 = 990;

/// How the control connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Security {
    /// Plain FTP.
    Plain,
    /// `AUTH TLS` right after the greeting (`ftp://` with `ftp_tls`).
    Explicit,
    /// TLS from the first byte (`ftps://`).
    Implicit,
}

impl Security {
    pub(crate) fn is_tls(self) -> bool {
        self != Security::Plain
    }
}

/// A server: connections to it share one limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostId {
    /// A domain name or an IP address, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a session is logged in as: sessions are only reused for the same
/// login (the password included, so a wrong password in one URL never
/// rides on a session another URL opened).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) security: Security,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"***")
            .field("security", &self.security)
            .finish()
    }
}

/// One file on one server, as one login sees it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: HostId,
    pub(crate) login: Login,
    /// The path sent with `SIZE`, `MDTM` and `RETR`: relative to the login
    /// directory, as RFC 1738 wants (`ftp://h/%2Fetc/x` names `/etc/x`).
    pub(crate) path: String,
    /// The URL as it may be shown (password hidden).
    pub(crate) shown: String,
}

/// Reads `url`. `ftp_tls` makes `ftp://` require `AUTH TLS`.
pub(crate) fn parse(url: &Url, ftp_tls: bool) -> Result<Target, Error> {
    parse_as(url, ftp_tls, false)
}

/// A directory to list: its path may be empty (the login directory) or
/// end in `/`, which is then dropped.
pub(crate) fn parse_dir(url: &Url, ftp_tls: bool) -> Result<Target, Error> {
    let mut target = parse_as(url, ftp_tls, true)?;
    if target.path.len() > 1 {
        target
            .path
            .truncate(target.path.trim_end_matches('/').len().max(1));
    }
    Ok(target)
}

fn parse_as(url: &Url, ftp_tls: bool, dir: bool) -> Result<Target, Error> {
    let shown = redact_url(url);
    let invalid = |why: &str| Error::new(ErrorKind::InvalidUrl, format!("{shown}: {why}"));
    let (security, default_port) = match url.scheme() {
        "ftp" if ftp_tls => (Security::Explicit, FTP_PORT),
        "ftp" => (Security::Plain, FTP_PORT),
        "ftps" => (Security::Implicit, FTPS_PORT),
        other => {
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!("{shown}: the FTP protocol does not serve {other}:// URLs"),
            ));
        }
    };
    let host = proto_util::url_host(url).ok_or_else(|| invalid("no host"))?;
    let port = url.port().unwrap_or(default_port);

    // Every part goes out on a command line, which CR, LF or NUL would end.
    let sendable = |text: String, what: &str| -> Result<String, Error> {
        if text.contains(['\r', '\n', '\0']) {
            return Err(invalid(&format!(
                "the {what} holds a line break or NUL, which FTP cannot send"
            )));
        }
        Ok(text)
    };
    let credentials = proto_util::url_credentials(url)?;
    let user = sendable(credentials.user.unwrap_or_default(), "user name")?;
    let password = credentials
        .password
        .map(|p| sendable(p, "password"))
        .transpose()?;
    let (user, password) = match (user.is_empty(), password) {
        (true, _) => ("anonymous".to_owned(), "anonymous@".to_owned()),
        (false, Some(p)) => (user, p),
        (false, None) if is_anonymous(&user) => (user, "anonymous@".to_owned()),
        (false, None) => (user, String::new()),
    };

    // The first `/` only separates the host from the path.
    let raw = url.path().strip_prefix('/').unwrap_or(url.path());
    // RFC 1738's `;type=i|a|d` suffix: binary is the only mode spoken here.
    let raw = match raw.rfind(";type=") {
        Some(i) if raw.len() == i + 7 => &raw[..i],
        _ => raw,
    };
    let path = proto_util::percent_decode_utf8(raw)
        .ok_or_else(|| invalid("the path is not UTF-8 once percent-decoded"))?;
    let path = sendable(path, "path")?;
    if !dir && (path.is_empty() || path.ends_with('/')) {
        return Err(invalid("no file name in the path"));
    }
    Ok(Target {
        host: HostId { host, port },
        login: Login {
            user,
            password,
            security,
        },
        path,
        shown,
    })
}

fn is_anonymous(user: &str) -> bool {
    user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        parse(&Url::parse(url).unwrap(), false).unwrap()
    }

    fn err(url: &str) -> Error {
        parse(&Url::parse(url).unwrap(), false).unwrap_err()
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let t = target("ftp://b%40b:p%3Aw%2Fd%20x@example.org:2121/a.bin");
        assert_eq!(t.login.user, "b@b");
        assert_eq!(t.login.password, "p:w/d x");
        assert_eq!(t.host.host, "example.org");
        assert_eq!(t.host.port, 2121);
        assert_eq!(t.login.security, Security::Plain);
        assert!(!t.shown.contains("p%3Aw"), "{}", t.shown);
        assert!(t.shown.contains("***"));
        assert!(!format!("{:?}", t.login).contains("p:w/d x"));
    }

    #[test]
    fn no_user_means_anonymous() {
        let t = target("ftp://example.org/pub/a.bin");
        assert_eq!(t.login.user, "anonymous");
        assert_eq!(t.login.password, "anonymous@");
        let t = target("ftp://ftp@example.org/pub/a.bin");
        assert_eq!(t.login.user, "ftp");
        assert_eq!(t.login.password, "anonymous@");
        let t = target("ftp://bob@example.org/pub/a.bin");
        assert_eq!(t.login.user, "bob");
        assert_eq!(t.login.password, "");
    }

    #[test]
    fn ports_default_by_scheme() {
        assert_eq!(target("ftp://h/a").host.port, 21);
        assert_eq!(target("ftp://h:21/a").host.port, 21);
        assert_eq!(target("ftps://h/a").host.port, 990);
        assert_eq!(target("ftps://h:2990/a").host.port, 2990);
        assert_eq!(target("ftps://h/a").login.security, Security::Implicit);
        let t = parse(&Url::parse("ftp://h/a").unwrap(), true).unwrap();
        assert_eq!(t.login.security, Security::Explicit);
        assert_eq!(t.host.port, 21);
        let t = target("ftp://[::1]:2121/a");
        assert_eq!(t.host.host, "::1");
        assert_eq!(t.host.to_string(), "[::1]:2121");
    }

    #[test]
    fn paths_are_relative_and_decoded() {
        assert_eq!(target("ftp://h/dir/a%20b.bin").path, "dir/a b.bin");
        assert_eq!(target("ftp://h/%2Fetc/motd").path, "/etc/motd");
        assert_eq!(target("ftp://h/caf%C3%A9.txt").path, "café.txt");
        assert_eq!(target("ftp://h/a.bin;type=i").path, "a.bin");
        assert_eq!(target("ftp://h/a.bin?x=1").path, "a.bin");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert_eq!(err("ftp://h/").kind(), ErrorKind::InvalidUrl);
        assert_eq!(err("ftp://h/dir/").kind(), ErrorKind::InvalidUrl);
        assert_eq!(err("ftp://h/a%0D%0ADELE%20x").kind(), ErrorKind::InvalidUrl);
        assert_eq!(err("ftp://h/%FF").kind(), ErrorKind::InvalidUrl);
        assert_eq!(err("ftp://u:p%0A@h/a").kind(), ErrorKind::InvalidUrl);
        assert!(!err("ftp://u:secret@h/").to_string().contains("secret"));
        assert_eq!(err("http://h/a").kind(), ErrorKind::UnsupportedScheme);
        assert!(!err("ftp://h/").is_retryable());
    }
}
