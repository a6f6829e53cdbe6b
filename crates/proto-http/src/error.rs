//! Every failure of the HTTP client, mapped to a [`pymatris_core::Error`]
//! in one place: status codes, transport errors, body errors.

use std::error::Error as StdError;
use std::io;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use pymatris_core::proto_util::io_error_kind;
use pymatris_core::socks::ProxyRefusal;
use pymatris_core::{Error, ErrorKind, Hint};

use crate::connector::ProxyAuthRequired;

/// The error for a response whose status is a failure (or one pymatris
/// cannot use). The message names the status line, e.g. `HTTP 404 Not Found`.
pub(crate) fn status_error(status: StatusCode, headers: &HeaderMap) -> Error {
    let message = status_line(status);
    let code = status.as_u16();
    match code {
        404 | 410 => Error::new(ErrorKind::NotFound, message),
        401 | 407 => Error::new(ErrorKind::Auth, message),
        403 => Error::new(ErrorKind::PermissionDenied, message),
        408 | 429 | 500..=599 => {
            let err = Error::new(ErrorKind::Protocol, message).retryable(true);
            match headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
            {
                Some(wait) => err.with_retry_after(wait),
                None => err,
            }
        }
        _ => Error::new(ErrorKind::Protocol, message),
    }
}

/// `HTTP 404 Not Found`.
pub(crate) fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// A `Retry-After` value: delay seconds or an HTTP date (a date in the
/// past means "now").
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than being ignored.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A failure to get a response (connect, TLS, send, read the head).
/// `context` says what was being done, with the URL already redacted.
pub(crate) fn transport_error(
    err: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    context: &str,
) -> Error {
    let err = err.into();
    let (kind, retryable, what) = classify(err.as_ref());
    // A connection closed before the response head is a network failure;
    // `Truncated` is for bodies.
    let kind = match kind {
        ErrorKind::Truncated => ErrorKind::Network,
        kind => kind,
    };
    let untrusted = flatten(err.as_ref()).iter().any(|e| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        )
    });
    let out = Error::new(kind, format!("{context}: {what}")).retryable(retryable);
    let out = if untrusted {
        out.with_hint(Hint::TrustCa)
    } else {
        out
    };
    out.with_source(err)
}

/// A failure while reading a response body: the body ended before its
/// announced length (`Truncated`) or the connection failed (`Network`);
/// either way another attempt from the last byte received could help.
pub(crate) fn body_error(err: hyper::Error, context: &str) -> Error {
    let (kind, _, what) = classify(&err);
    let kind = match kind {
        ErrorKind::Truncated | ErrorKind::Timeout => kind,
        _ => ErrorKind::Network,
    };
    Error::new(kind, format!("{context}: {what}"))
        .retryable(true)
        .with_source(err)
}

/// The kind of a transport error, whether another attempt could help, and
/// a short description. Walks the whole source chain, looking inside
/// `io::Error`s too (their `source()` skips the error they wrap).
pub(crate) fn classify(err: &(dyn StdError + 'static)) -> (ErrorKind, bool, String) {
    let chain = flatten(err);

    if let Some(tls) = chain.iter().find_map(|e| e.downcast_ref::<rustls::Error>()) {
        return (ErrorKind::Tls, false, tls_description(tls));
    }
    if chain.iter().any(|e| e.is::<ProxyAuthRequired>()) {
        return (ErrorKind::Auth, false, ProxyAuthRequired.to_string());
    }
    if chain
        .iter()
        .any(|e| e.is::<rustls::pki_types::InvalidDnsNameError>())
    {
        return (
            ErrorKind::InvalidUrl,
            false,
            "invalid host name for TLS".into(),
        );
    }
    // hyper-util's HttpConnector reports resolver failures as "dns error"
    // (its error type is not public, so its text is all there is).
    if chain.iter().any(|e| e.to_string().starts_with("dns error")) {
        return (
            ErrorKind::Network,
            true,
            describe_deepest(&chain, "DNS lookup failed"),
        );
    }
    if let Some(refusal) = (chain.iter()).find_map(|e| e.downcast_ref::<ProxyRefusal>()) {
        return (refusal.kind(), false, refusal.to_string());
    }
    for e in &chain {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(kind) = io_error_kind(io)
        {
            return (kind, true, io.to_string());
        }
    }
    if let Some(hyper) = chain.iter().find_map(|e| e.downcast_ref::<hyper::Error>()) {
        if hyper.is_timeout() {
            return (ErrorKind::Timeout, true, hyper.to_string());
        }
        if hyper.is_parse() || hyper.is_parse_status() {
            return (ErrorKind::Protocol, false, hyper.to_string());
        }
        if hyper.is_incomplete_message() {
            return (ErrorKind::Network, true, hyper.to_string());
        }
    }
    // Unknown: likely a connection problem; let the scheduler's attempt
    // budget decide.
    (
        ErrorKind::Network,
        true,
        describe_deepest(&chain, "connection failed"),
    )
}

/// The error and everything under it, `io::Error` payloads included.
fn flatten<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut stack = vec![err];
    while let Some(e) = stack.pop() {
        if out.len() > 32 {
            break;
        }
        out.push(e);
        if let Some(next) = e.source() {
            stack.push(next);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            stack.push(inner);
        }
    }
    out
}

/// The text of the innermost error, which names the actual cause.
fn describe_deepest(chain: &[&(dyn StdError + 'static)], fallback: &str) -> String {
    chain
        .iter()
        .rev()
        .map(|e| e.to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}

fn tls_description(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => format!("invalid peer certificate: {cert:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn status_mapping() {
        let check = |code: u16, kind: ErrorKind, retryable: bool| {
            let err = status_error(StatusCode::from_u16(code).unwrap(), &headers(None));
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.is_retryable(), retryable, "{code}");
        };
        check(404, ErrorKind::NotFound, false);
        check(410, ErrorKind::NotFound, false);
        check(401, ErrorKind::Auth, false);
        check(407, ErrorKind::Auth, false);
        check(403, ErrorKind::PermissionDenied, false);
        check(408, ErrorKind::Protocol, true);
        check(429, ErrorKind::Protocol, true);
        check(500, ErrorKind::Protocol, true);
        check(503, ErrorKind::Protocol, true);
        check(599, ErrorKind::Protocol, true);
        check(400, ErrorKind::Protocol, false);
        check(405, ErrorKind::Protocol, false);
        check(418, ErrorKind::Protocol, false);
        check(300, ErrorKind::Protocol, false);
        let err = status_error(StatusCode::NOT_FOUND, &headers(None));
        assert_eq!(err.message(), "HTTP 404 Not Found");
        let err = status_error(StatusCode::from_u16(599).unwrap(), &headers(None));
        assert_eq!(err.message(), "HTTP 599");
    }

    #[test]
    fn retry_after_on_retryable_statuses() {
        let err = status_error(StatusCode::SERVICE_UNAVAILABLE, &headers(Some("7")));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        let err = status_error(StatusCode::TOO_MANY_REQUESTS, &headers(Some("soon")));
        assert_eq!(err.retry_after(), None);
        // Not honoured where nothing will be retried.
        let err = status_error(StatusCode::NOT_FOUND, &headers(Some("7")));
        assert_eq!(err.retry_after(), None);
    }

    #[test]
    fn retry_after_parsing() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // RFC 850 and asctime forms are valid HTTP dates too.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        // In the past: no wait.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("tomorrow", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn transport_classification() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let err = transport_error(refused, "connecting to http://h/");
        assert_eq!(err.kind(), ErrorKind::Network);
        assert!(err.is_retryable());
        assert!(std::error::Error::source(&err).is_some());

        // rustls errors hide inside io::Errors, twice over in hyper-rustls.
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = io::Error::new(io::ErrorKind::InvalidData, tls);
        let outer = io::Error::other(inner);
        let err = transport_error(outer, "connecting");
        assert_eq!(err.kind(), ErrorKind::Tls);
        assert!(!err.is_retryable());
        // The words of the hint are the front end's: no flag here.
        assert_eq!(err.hint(), Some(&Hint::TrustCa));
        assert!(!err.to_string().contains("--"), "{err}");
        let alert = io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(transport_error(alert, "x").hint(), None);

        let timeout = io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
        assert_eq!(transport_error(timeout, "x").kind(), ErrorKind::Timeout);

        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        let err = transport_error(eof, "x");
        assert_eq!(err.kind(), ErrorKind::Network);
        assert!(err.is_retryable());

        let other = io::Error::other("something odd");
        let err = transport_error(other, "x");
        assert_eq!(err.kind(), ErrorKind::Network);
        assert!(err.is_retryable());
    }
}
