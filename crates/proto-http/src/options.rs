//! The settings only HTTP reads, handed over in the batch's config
//! ([`pymatris_core::Config::with`]) so that core names none of them, and
//! checked once when the protocol is built.

use std::fmt;

use http::header::{ACCEPT_ENCODING, IF_RANGE, RANGE};
use http::{HeaderName, HeaderValue};
use pymatris_core::{Error, ErrorKind, redact_url_str};

/// Headers that pymatris sets itself and a user may not override.
const RESERVED_HEADERS: [HeaderName; 3] = [RANGE, IF_RANGE, ACCEPT_ENCODING];

/// What HTTP(S) downloads send and where they go through. Absent from the
/// config, [`HttpOptions::default`] applies: no extra header, credentials
/// kept to their origin, the `pymatris/VERSION` user agent, and the proxy
/// of the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
/// `NO_PROXY`).
///
/// ```
/// use pymatris_core::Config;
/// use pymatris_proto_http::HttpOptions;
///
/// let config = Config::default()
///     .with(HttpOptions::default().header("Authorization", "Bearer t0ken"));
/// assert_eq!(config.options::<HttpOptions>().unwrap().headers.len(), 1);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Extra headers, sent with every request to the origin (scheme, host
    /// and port) of the request's URL, and after a redirect to another
    /// origin only when `location_trusted`.
    pub headers: Vec<(String, String)>,
    /// Send the extra headers and the URL's credentials after a redirect to
    /// another origin too (curl's `--location-trusted`).
    pub location_trusted: bool,
    /// The `User-Agent` (none at all when empty).
    pub user_agent: String,
    /// An explicit proxy URL (`http://[user:pass@]host:port`, or
    /// `socks5://`/`socks5h://`), instead of the environment's.
    pub proxy: Option<String>,
    /// Never offer HTTP/2 (by default https:// servers are offered it, and
    /// a file's first request and small files share its connections).
    pub http1_only: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            headers: Vec::new(),
            location_trusted: false,
            user_agent: concat!("pymatris/", env!("CARGO_PKG_VERSION")).to_owned(),
            proxy: None,
            http1_only: false,
        }
    }
}

impl HttpOptions {
    /// Adds a header to send.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the headers to send.
    pub fn headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    /// Keeps to HTTP/1.1 (never offers HTTP/2).
    pub fn http1_only(mut self, only: bool) -> Self {
        self.http1_only = only;
        self
    }

    /// Lets headers and credentials follow redirects to other origins.
    pub fn location_trusted(mut self, trusted: bool) -> Self {
        self.location_trusted = trusted;
        self
    }

    /// Sets the `User-Agent`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Goes through this proxy.
    pub fn proxy(mut self, proxy: Option<String>) -> Self {
        self.proxy = proxy;
        self
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry tokens (`Authorization`), so only their
        // names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpOptions")
            .field("headers", &header_names)
            .field("location_trusted", &self.location_trusted)
            .field("user_agent", &self.user_agent)
            .field("proxy", &self.proxy.as_deref().map(redact_url_str))
            .field("http1_only", &self.http1_only)
            .finish()
    }
}

/// The extra headers, checked once. Values are marked sensitive and never
/// shown, not even in errors.
pub(crate) fn parse_headers(
    raw: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let name = name.trim();
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::new(ErrorKind::Protocol, format!("invalid header name {name:?}"))
        })?;
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
            Error::new(
                ErrorKind::Protocol,
                format!("invalid value for header {name}"),
            )
        })?;
        if RESERVED_HEADERS.contains(&parsed) {
            tracing::warn!("ignoring header {name}: pymatris sets it itself");
            continue;
        }
        value.set_sensitive(true);
        out.push((parsed, value));
    }
    Ok(out)
}

/// The user agent as a header, unless it is empty.
pub(crate) fn parse_user_agent(user_agent: &str) -> Result<Option<HeaderValue>, Error> {
    if user_agent.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(user_agent).map(Some).map_err(|_| {
        Error::new(
            ErrorKind::Protocol,
            "the user agent is not a valid header value",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_header_values_and_proxy_passwords() {
        let options = HttpOptions::default()
            .header("X-Token", "s3cr3t-value")
            .proxy(Some("http://u:pr0xy-pw@proxy.example:3128".into()));
        let shown = format!("{options:?}");
        assert!(shown.contains("X-Token"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("pr0xy-pw"), "{shown}");
    }
}
