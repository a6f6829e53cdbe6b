//! Small pieces every protocol crate needs in the same shape, kept here so
//! they are written (and fixed) once: how a failed connection's
//! `io::Error` maps to an [`ErrorKind`], and how a URL's host, user name,
//! password and path are percent-decoded.
//!
//! Nothing here names a protocol library; a protocol calls these from its
//! own `error.rs` and `target.rs`.

use std::fmt;
use std::io;

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use crate::error::{Error, ErrorKind, Result};
use crate::redact::redact_url;

/// The kind of an `io::Error` met on a connection, when its
/// [`io::ErrorKind`] says something about the network: a timeout, a
/// stream that ended early ([`ErrorKind::Truncated`]), or a connection
/// that failed or broke ([`ErrorKind::Network`]). `None` when it does not,
/// so the caller can look further (a library's own error under it).
pub fn io_error_kind(err: &io::Error) -> Option<ErrorKind> {
    use io::ErrorKind as K;
    match err.kind() {
        K::TimedOut => Some(ErrorKind::Timeout),
        K::UnexpectedEof => Some(ErrorKind::Truncated),
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::NotConnected
        | K::AddrNotAvailable
        | K::AddrInUse
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::Interrupted
        | K::WouldBlock => Some(ErrorKind::Network),
        _ => None,
    }
}

/// The error for an `io::Error` of a connection (connecting, a handshake,
/// a command) while doing `what`: `what: err`, with `err` as its source.
/// A timeout is [`ErrorKind::Timeout`]; anything else is
/// [`ErrorKind::Network`], a connection that ended early included (a
/// body's end is the protocol's to judge). Both are retried.
/// A SOCKS proxy's refusal keeps its own kind and is not retried.
pub fn connection_error(what: impl fmt::Display, err: io::Error) -> Error {
    if let Some(refusal) = crate::socks::refusal(&err) {
        let kind = refusal.kind();
        return Error::new(kind, format!("{what}: {err}"))
            .retryable(false)
            .with_source(err);
    }
    let kind = match io_error_kind(&err) {
        Some(ErrorKind::Timeout) => ErrorKind::Timeout,
        _ => ErrorKind::Network,
    };
    Error::new(kind, format!("{what}: {err}")).with_source(err)
}

/// The host of `url` as a connection takes it: a domain name, or an IP
/// address without brackets. `None` when the URL has none.
pub fn url_host(url: &Url) -> Option<String> {
    match url.host()? {
        Host::Domain(d) if !d.is_empty() => Some(d.to_owned()),
        Host::Domain(_) => None,
        Host::Ipv4(ip) => Some(ip.to_string()),
        Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// A part of a URL percent-decoded to bytes, UTF-8 or not (`%FF` is the
/// byte 0xFF).
pub fn percent_decode(part: &str) -> Vec<u8> {
    percent_decode_str(part).collect()
}

/// A part of a URL percent-decoded to text; `None` when the bytes are not
/// UTF-8.
pub fn percent_decode_utf8(part: &str) -> Option<String> {
    percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// The user name and password of a URL, percent-decoded (`b%40b` is
/// `b@b`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user name; `None` when the URL names none.
    pub user: Option<String>,
    /// The password; `None` when the URL has none (`user@host`).
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The decoded credentials of `url`. Fails with [`ErrorKind::InvalidUrl`]
/// (the URL shown redacted) when a part is not UTF-8 once decoded.
pub fn url_credentials(url: &Url) -> Result<Credentials> {
    let decode = |part: &str, what: &str| {
        percent_decode_utf8(part).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidUrl,
                format!(
                    "{}: the {what} is not UTF-8 once percent-decoded",
                    redact_url(url)
                ),
            )
        })
    };
    let user = match url.username() {
        "" => None,
        user => Some(decode(user, "user name")?),
    };
    let password = url.password().map(|p| decode(p, "password")).transpose()?;
    Ok(Credentials { user, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn connection_io_errors_are_retried_as_network_or_timeout() {
        let cases = [
            (io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (io::ErrorKind::ConnectionReset, ErrorKind::Network),
            (io::ErrorKind::UnexpectedEof, ErrorKind::Network),
            (io::ErrorKind::Other, ErrorKind::Network),
        ];
        for (io_kind, kind) in cases {
            let e = connection_error("connecting to h:21", io::Error::new(io_kind, "boom"));
            assert_eq!(e.kind(), kind, "{io_kind:?}");
            assert!(e.is_retryable(), "{io_kind:?}");
            assert_eq!(e.message(), "connecting to h:21: boom");
            assert!(std::error::Error::source(&e).is_some());
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_error_kind(&eof), Some(ErrorKind::Truncated));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(io_error_kind(&denied), None);
    }

    #[test]
    fn hosts_lose_their_brackets() {
        assert_eq!(
            url_host(&url("ftp://example.org/a")).unwrap(),
            "example.org"
        );
        assert_eq!(url_host(&url("sftp://[::1]:22/a")).unwrap(), "::1");
        assert_eq!(url_host(&url("http://127.0.0.1/")).unwrap(), "127.0.0.1");
        assert_eq!(url_host(&url("file:///a")), None);
    }

    #[test]
    fn credentials_are_percent_decoded_and_never_shown() {
        let c = url_credentials(&url("ftp://b%40b:p%3Aw%2Fd%20x@h/a")).unwrap();
        assert_eq!(c.user.as_deref(), Some("b@b"));
        assert_eq!(c.password.as_deref(), Some("p:w/d x"));
        assert!(!format!("{c:?}").contains("p:w"));
        let c = url_credentials(&url("ftp://h/a")).unwrap();
        assert_eq!((c.user, c.password), (None, None));
        let c = url_credentials(&url("sftp://u@h/a")).unwrap();
        assert_eq!((c.user.as_deref(), c.password), (Some("u"), None));
        let bad = url_credentials(&url("ftp://u:secret%FF@h/a")).unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::InvalidUrl);
        assert!(!bad.is_retryable());
        assert!(
            bad.to_string().contains("the password is not UTF-8"),
            "{bad}"
        );
        assert!(!bad.to_string().contains("secret"), "{bad}");
    }

    #[test]
    fn parts_decode_to_bytes_or_text() {
        assert_eq!(percent_decode("/d/%FF%20x"), b"/d/\xff x");
        assert_eq!(percent_decode_utf8("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode_utf8("%FF"), None);
    }
}
