//! SOCKS5 proxies (`socks5://`, `socks5h://`), dialled the same way by
//! every protocol: HTTP's connector, FTP's control and data connections and
//! SFTP's SSH connection each open their TCP streams through [`dial`], so
//! the rules (which proxy, `NO_PROXY`, who resolves names) are written once.
//!
//! `socks5://` resolves the server's name here and hands the proxy an
//! address; `socks5h://` hands it the name, for the proxy to resolve (names
//! only the proxy's side can resolve, and no DNS query leaves this side).
//! The proxy's user and password never appear in a message.

use std::fmt;
use std::io;

use tokio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};
use crate::redact::redact_url_str;

/// The port of a SOCKS proxy whose URL names none.
const DEFAULT_PORT: u16 = 1080;

/// A SOCKS5 proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct SocksProxy {
    host: String,
    port: u16,
    /// `socks5h`: the proxy resolves names.
    remote_dns: bool,
    auth: Option<(String, String)>,
}

impl SocksProxy {
    /// Reads `socks5://[user:pass@]host[:port]` or `socks5h://...`. Errors
    /// show the URL without its password.
    pub fn parse(text: &str) -> Result<SocksProxy> {
        let shown = redact_url_str(text);
        let url = url::Url::parse(text.trim()).map_err(|e| {
            Error::new(ErrorKind::InvalidUrl, format!("invalid proxy {shown}: {e}"))
        })?;
        let remote_dns = match url.scheme() {
            "socks5" => false,
            "socks5h" => true,
            other => {
                return Err(Error::new(
                    ErrorKind::UnsupportedScheme,
                    format!("proxy {shown}: {other}:// is not a SOCKS5 proxy"),
                ));
            }
        };
        let host = crate::proto_util::url_host(&url)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Error::new(ErrorKind::InvalidUrl, format!("proxy {shown} has no host"))
            })?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let auth = (!url.username().is_empty()).then(|| {
            (
                decode(url.username()),
                decode(url.password().unwrap_or_default()),
            )
        });
        Ok(SocksProxy {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            remote_dns,
            auth,
        })
    }

    /// Whether `text` names a SOCKS5 proxy (by its scheme), whatever else
    /// is wrong with it.
    pub fn is_socks(text: &str) -> bool {
        let lower = text.trim().to_ascii_lowercase();
        lower.starts_with("socks5://") || lower.starts_with("socks5h://")
    }

    /// The proxy of `ALL_PROXY` (or `all_proxy`), when that is a SOCKS5
    /// URL, as curl reads it for every protocol. A variable that names
    /// another kind of proxy, or no usable one, is left to HTTP.
    pub fn from_env() -> Option<SocksProxy> {
        let text = ["ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))?;
        if !SocksProxy::is_socks(&text) {
            return None;
        }
        match SocksProxy::parse(&text) {
            Ok(proxy) => Some(proxy),
            Err(e) => {
                tracing::warn!("ALL_PROXY ignored: {e}");
                None
            }
        }
    }

    /// Builds one from the parts HTTP's proxy matcher hands over.
    pub fn new(
        host: &str,
        port: Option<u16>,
        remote_dns: bool,
        auth: Option<(&str, &str)>,
    ) -> Self {
        SocksProxy {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.unwrap_or(DEFAULT_PORT),
            remote_dns,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// Whether the proxy resolves names (`socks5h`).
    pub fn remote_dns(&self) -> bool {
        self.remote_dns
    }

    /// A TCP stream to `host:port` through the proxy.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        use tokio_socks::TargetAddr;
        use tokio_socks::tcp::Socks5Stream;
        let proxy = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("connecting to the SOCKS proxy {self}: {e}"),
                )
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            TargetAddr::Ip(std::net::SocketAddr::new(ip, port))
        } else if self.remote_dns {
            TargetAddr::Domain(host.into(), port)
        } else {
            let addr = tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"))
                })?;
            TargetAddr::Ip(addr)
        };
        let stream = match &self.auth {
            Some((user, pass)) => {
                Socks5Stream::connect_with_password_and_socket(proxy, target, user, pass).await
            }
            None => Socks5Stream::connect_with_socket(proxy, target).await,
        };
        let stream = stream.map_err(|e| socks_error(self, host, port, e))?;
        Ok(stream.into_inner())
    }
}

/// A SOCKS proxy's answer that another attempt cannot change: it refused
/// the credentials, forbids the destination, or cannot do what was asked.
/// It travels inside the `io::Error` of [`SocksProxy::connect`], so each
/// protocol reports it with its own kind ([`refusal`]), not retried, rather
/// than as a network failure.
#[derive(Debug)]
pub struct ProxyRefusal {
    kind: ErrorKind,
    message: String,
}

impl ProxyRefusal {
    /// [`ErrorKind::Auth`], [`ErrorKind::PermissionDenied`] or
    /// [`ErrorKind::Protocol`].
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ProxyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProxyRefusal {}

/// The proxy's refusal inside a connection's `io::Error`, if that is what
/// it is.
pub fn refusal(err: &io::Error) -> Option<&ProxyRefusal> {
    err.get_ref()?.downcast_ref::<ProxyRefusal>()
}

/// The error of a SOCKS handshake, as an `io::Error` whose kind says what
/// the proxy answered (refused, unreachable, ...), naming the proxy
/// without its password. Answers no retry can change carry a
/// [`ProxyRefusal`].
fn socks_error(proxy: &SocksProxy, host: &str, port: u16, e: tokio_socks::Error) -> io::Error {
    use tokio_socks::Error as E;
    let to = format!("(to reach {host}:{port})");
    let refused = |kind, what: String| {
        let message = format!("the SOCKS proxy {proxy} {what} {to}");
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            ProxyRefusal { kind, message },
        )
    };
    let kind = match &e {
        E::PasswordAuthFailure(_) => {
            return refused(ErrorKind::Auth, "refused the user name and password".into());
        }
        E::NoAcceptableAuthMethods | E::AuthorizationRequired if proxy.auth.is_none() => {
            let what = "wants a login: give the user and password in the proxy URL";
            return refused(ErrorKind::Auth, what.into());
        }
        E::NoAcceptableAuthMethods | E::AuthorizationRequired => {
            let what = "accepts no user name and password login";
            return refused(ErrorKind::Auth, what.into());
        }
        E::InvalidAuthValues(why) => {
            return refused(ErrorKind::Auth, format!("cannot take this login: {why}"));
        }
        E::ConnectionNotAllowedByRuleset => {
            let what = "does not allow this connection";
            return refused(ErrorKind::PermissionDenied, what.into());
        }
        E::CommandNotSupported
        | E::AddressTypeNotSupported
        | E::InvalidResponseVersion
        | E::UnknownAuthMethod => {
            return refused(ErrorKind::Protocol, format!("cannot serve this: {e}"));
        }
        E::Io(io) => io.kind(),
        E::ConnectionRefused => io::ErrorKind::ConnectionRefused,
        E::HostUnreachable | E::NetworkUnreachable => io::ErrorKind::HostUnreachable,
        E::TtlExpired => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("SOCKS proxy {proxy} to {host}:{port}: {e}"))
}

/// Whether `NO_PROXY` (or `no_proxy`) exempts `host` from proxies: `*`,
/// a name and its subdomains (`example.org`, `.example.org`), or an
/// address, as curl reads it.
pub fn no_proxy(host: &str) -> bool {
    let list = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    matches_no_proxy(&list, host)
}

fn matches_no_proxy(list: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches("*.").trim_start_matches('.');
        let entry = entry.trim_end_matches('.').to_ascii_lowercase();
        entry == "*"
            || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
    })
}

/// A TCP stream to `host:port`: through `proxy` unless `NO_PROXY` exempts
/// the host, else direct.
pub async fn dial(proxy: Option<&SocksProxy>, host: &str, port: u16) -> io::Result<TcpStream> {
    match proxy {
        Some(proxy) if !no_proxy(host) => proxy.connect(host, port).await,
        _ => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            TcpStream::connect((host, port)).await
        }
    }
}

impl fmt::Display for SocksProxy {
    /// `socks5h://user:***@host:port`: never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.remote_dns { "socks5h" } else { "socks5" };
        let user = match &self.auth {
            Some((user, _)) => format!("{user}:***@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{user}{host}:{}", self.port)
    }
}

impl fmt::Debug for SocksProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocksProxy({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let p = SocksProxy::parse("socks5h://me:s%40cret@proxy.example:9050").unwrap();
        assert!(p.remote_dns());
        assert_eq!(p.auth, Some(("me".to_owned(), "s@cret".to_owned())));
        assert_eq!(p.to_string(), "socks5h://me:***@proxy.example:9050");
        assert!(!format!("{p:?}").contains("cret"));
        let p = SocksProxy::parse("socks5://[::1]").unwrap();
        assert!(!p.remote_dns());
        assert_eq!(p.to_string(), "socks5://[::1]:1080");
        for bad in ["http://h:1", "socks5://", "socks4://h", "socks5://u:pw@"] {
            let e = SocksProxy::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert!(SocksProxy::is_socks("SOCKS5H://h"));
        assert!(!SocksProxy::is_socks("http://h"));
    }

    #[test]
    fn refusals_keep_their_kind_and_are_not_retried() {
        use crate::proto_util::connection_error;
        use tokio_socks::Error as E;
        let p = SocksProxy::parse("socks5://me:s3cret@proxy:1080").unwrap();
        let cases = [
            (E::PasswordAuthFailure(1), ErrorKind::Auth),
            (E::NoAcceptableAuthMethods, ErrorKind::Auth),
            (
                E::ConnectionNotAllowedByRuleset,
                ErrorKind::PermissionDenied,
            ),
            (E::AddressTypeNotSupported, ErrorKind::Protocol),
        ];
        for (socks, kind) in cases {
            let err = connection_error("GET http://h/f", socks_error(&p, "h", 80, socks));
            assert_eq!((err.kind(), err.is_retryable()), (kind, false), "{err}");
            let text = err.to_string();
            assert!(text.contains("socks5://me:***@proxy:1080"), "{text}");
            assert!(text.contains("h:80") && !text.contains("s3cret"), "{text}");
        }
        // What the proxy met on its way to the server may pass.
        let err = connection_error("x", socks_error(&p, "h", 80, E::ConnectionRefused));
        assert_eq!((err.kind(), err.is_retryable()), (ErrorKind::Network, true));
    }

    #[test]
    fn no_proxy_lists() {
        assert!(matches_no_proxy("*", "a.b"));
        assert!(matches_no_proxy("example.org", "example.org"));
        assert!(matches_no_proxy(" .example.org", "dl.Example.org"));
        assert!(matches_no_proxy("a, 127.0.0.1", "127.0.0.1"));
        assert!(matches_no_proxy("::1", "[::1]"));
        assert!(!matches_no_proxy("example.org", "badexample.org"));
        assert!(!matches_no_proxy("", "example.org"));
    }
}
