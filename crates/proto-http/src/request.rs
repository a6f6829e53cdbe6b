//! The request sent for a URL: which of the user's headers and
//! credentials go with it (only to the origin they were given for, unless
//! trusted), its URI in the form a server or proxy wants, and where a
//! redirect points.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, HOST, LOCATION, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Empty;
use pymatris_core::proto_util;
use pymatris_core::{ByteRange, Error, ErrorKind, Url, redact_url, redact_url_str};

use crate::{HttpProtocol, error, headers};

impl HttpProtocol {
    /// The request for `current`, reached from `original` by redirects.
    pub(crate) fn build_request(
        &self,
        method: &Method,
        original: &Url,
        current: &Url,
        extra: &HeaderMap,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<Request<Empty<Bytes>>, Error> {
        let uri = request_uri(current)?;
        let same_origin = may_send_credentials(original, current);
        // The user's headers and the URL's credentials were given for the
        // origin of the URL; another origin gets them only when the user
        // says it may (a redirect from https:// to http:// of the same host
        // would otherwise put an API key on the wire in clear text).
        let credentials_allowed = same_origin || self.location_trusted;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| Error::new(ErrorKind::InvalidUrl, redact_url(current)).with_source(e))?;
        let headers = request.headers_mut();
        if let Some(ua) = &self.user_agent {
            headers.insert(USER_AGENT, ua.clone());
        }
        // The bytes as stored: a compressed body could not be cut in ranges.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let mut replaced = Vec::new();
        // The file's own headers replace the batch's of the same name, and
        // follow the same rules.
        let batch = (self.headers.iter()).filter(|(name, _)| !file.iter().any(|(n, _)| n == name));
        for (name, value) in batch.chain(file) {
            if !same_origin && (!credentials_allowed || is_origin_bound(name)) {
                continue;
            }
            // The first occurrence of a name replaces a default, later ones
            // add to it (several `Accept`s, say).
            if replaced.contains(name) {
                headers.append(name.clone(), value.clone());
            } else {
                headers.insert(name.clone(), value.clone());
                replaced.push(name.clone());
            }
        }
        if !headers.contains_key(AUTHORIZATION) {
            let userinfo = if has_userinfo(current) {
                Some(current)
            } else if credentials_allowed && has_userinfo(original) {
                Some(original)
            } else {
                None
            };
            if let Some(auth) = userinfo.and_then(basic_auth) {
                headers.insert(AUTHORIZATION, auth);
            }
        }
        if current.scheme() == "http" && !headers.contains_key(PROXY_AUTHORIZATION) {
            // Plain http:// through a proxy: the proxy reads the request
            // itself, so its credentials go in a header (for https:// they
            // go in the CONNECT).
            let intercept = self.proxy.as_ref().and_then(|m| m.intercept(request.uri()));
            if let Some(auth) = intercept.as_ref().and_then(|i| i.basic_auth()) {
                request
                    .headers_mut()
                    .insert(PROXY_AUTHORIZATION, auth.clone());
            }
        }
        for (name, value) in extra {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        if !request.headers().contains_key(HOST) {
            let host = host_header(current)?;
            request.headers_mut().insert(HOST, host);
        }
        Ok(request)
    }
}

/// `bytes=START-` or `bytes=START-LAST`.
pub(crate) fn range_header(range: ByteRange) -> String {
    match range.end {
        Some(end) if end > range.start => format!("bytes={}-{}", range.start, end - 1),
        _ => format!("bytes={}-", range.start),
    }
}

pub(crate) fn header_value(text: &str) -> HeaderValue {
    // Only called with ASCII digits and punctuation.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect points, resolved against the URL that sent it.
pub(crate) fn redirect_target(
    current: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Url, Error> {
    let location = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("{} without a Location", error::status_line(status)),
            )
        })?;
    let next = current.join(location).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("redirect to an invalid URL {}", redact_url_str(location)),
        )
        .with_source(e)
    })?;
    Ok(next)
}

pub(crate) fn check_scheme(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(Error::new(
            ErrorKind::UnsupportedScheme,
            format!("{other}:// is not HTTP ({})", redact_url(url)),
        )),
    }
}

/// The URI to request: no user info (it goes in `Authorization`), no
/// fragment.
fn request_uri(url: &Url) -> Result<Uri, Error> {
    let invalid = |what: &str| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("{}: {what}", redact_url(url)),
        )
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    let mut bare = url.clone();
    // Cannot fail for http(s) URLs, which have a host.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    bare.set_fragment(None);
    bare.as_str()
        .parse::<Uri>()
        .map_err(|e| invalid("not a valid HTTP URI").with_source(e))
}

/// Origin-form (`/path?query`), for a request that goes straight to the
/// server rather than to a proxy.
pub(crate) fn origin_form(request: &mut Request<Empty<Bytes>>) {
    let path = request.uri().path_and_query().cloned();
    let path = path.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    if let Ok(uri) = Uri::builder().path_and_query(path).build() {
        *request.uri_mut() = uri;
    }
}

/// The `Host` header of a request to `url`: its host, and its port unless
/// it is the scheme's default.
fn host_header(url: &Url) -> Result<HeaderValue, Error> {
    let host = url.host_str().unwrap_or("");
    let value = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    HeaderValue::from_str(&value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("{}: not a valid host", redact_url(url)),
        )
        .with_source(e)
    })
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `Authorization: Basic` from the URL's user info (percent-decoded).
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    let mut raw = proto_util::percent_decode(url.username());
    raw.push(b':');
    raw.extend(proto_util::percent_decode(url.password().unwrap_or("")));
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Whether credentials given for `original` (its user info, and
/// `Authorization`/`Cookie` headers of the config) may go with a request
/// to `current`: only to the same scheme, host and port.
fn may_send_credentials(original: &Url, current: &Url) -> bool {
    headers::same_origin(original, current)
}

/// Headers that only make sense for the origin the user named, dropped
/// after a redirect to another one even when the user trusts it.
fn is_origin_bound(name: &HeaderName) -> bool {
    name == HOST
}

#[cfg(test)]
mod tests {
    use http::header::COOKIE;

    use http::header::RANGE;
    use pymatris_core::ProtocolConfig;

    use super::*;
    use crate::HttpOptions;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn range_headers() {
        assert_eq!(range_header(ByteRange::from(0)), "bytes=0-");
        assert_eq!(range_header(ByteRange::from(10)), "bytes=10-");
        assert_eq!(range_header(ByteRange::new(0, 1)), "bytes=0-0");
        assert_eq!(range_header(ByteRange::new(100, 200)), "bytes=100-199");
    }

    fn protocol(options: HttpOptions) -> HttpProtocol {
        let mut cfg = ProtocolConfig::default();
        cfg.set(options);
        HttpProtocol::new(&cfg).unwrap()
    }

    fn request(p: &HttpProtocol, original: &str, current: &str) -> Request<Empty<Bytes>> {
        p.build_request(
            &Method::GET,
            &url(original),
            &url(current),
            &HeaderMap::new(),
            &[],
        )
        .unwrap()
    }

    #[test]
    fn redirect_credential_stripping() {
        let p = protocol(
            HttpOptions::default()
                .header("Authorization", "Bearer t0ken")
                .header("Cookie", "s=1")
                .header("X-Other", "kept"),
        );
        let same = request(&p, "http://a.example/x", "http://a.example/y");
        assert_eq!(same.headers()[AUTHORIZATION], "Bearer t0ken");
        assert_eq!(same.headers()[COOKIE], "s=1");
        let other = request(&p, "http://a.example/x", "http://b.example/y");
        assert!(other.headers().get(AUTHORIZATION).is_none());
        assert!(other.headers().get(COOKIE).is_none());
        // Any header of the user's may hold a secret (`X-Api-Key`).
        assert!(other.headers().get("x-other").is_none());
        let port = request(&p, "http://a.example/x", "http://a.example:81/y");
        assert!(port.headers().get(AUTHORIZATION).is_none());
        let scheme = request(&p, "https://a.example/x", "http://a.example/x");
        assert!(scheme.headers().get(AUTHORIZATION).is_none());

        let p = protocol(HttpOptions::default());
        let own = request(
            &p,
            "http://u:p%40ss@a.example/x",
            "http://u:p%40ss@a.example/x",
        );
        // "u:p@ss"
        assert_eq!(own.headers()[AUTHORIZATION], "Basic dTpwQHNz");
        assert_eq!(own.uri(), "http://a.example/x");
        let moved = request(&p, "http://u:pw@a.example/x", "http://a.example/y");
        assert_eq!(moved.headers()[AUTHORIZATION], "Basic dTpwdw==");
        let away = request(&p, "http://u:pw@a.example/x", "http://b.example/y");
        assert!(away.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn location_trusted_lets_credentials_follow_but_not_host() {
        let p = protocol(
            HttpOptions::default()
                .header("X-Api-Key", "k")
                .header("Host", "a.example")
                .location_trusted(true),
        );
        let away = request(&p, "https://u:pw@a.example/x", "http://b.example/y");
        assert_eq!(away.headers()["x-api-key"], "k");
        assert_eq!(away.headers()[AUTHORIZATION], "Basic dTpwdw==");
        assert_eq!(away.headers()[HOST], "b.example");
        let home = request(&p, "https://u:pw@a.example/x", "https://a.example/y");
        assert_eq!(home.headers()[HOST], "a.example");
    }

    #[test]
    fn default_request_headers() {
        let p = protocol(
            HttpOptions::default()
                .user_agent("ua/1")
                .header("Range", "bytes=5-")
                .header("Accept", "a/b")
                .header("Accept", "c/d")
                .header("User-Agent", "mine"),
        );
        let r = request(&p, "http://a.example/#frag", "http://a.example/#frag");
        assert_eq!(r.uri(), "http://a.example/");
        assert!(r.headers().get(RANGE).is_none());
        assert_eq!(r.headers()[ACCEPT_ENCODING], "identity");
        assert_eq!(r.headers()[USER_AGENT], "mine");
        let accepts: Vec<_> = r.headers().get_all("accept").iter().collect();
        assert_eq!(accepts, ["a/b", "c/d"]);
    }

    #[test]
    fn redirect_targets() {
        let mut h = HeaderMap::new();
        h.insert(LOCATION, "../b?q=1".parse().unwrap());
        let next = redirect_target(&url("http://h/a/x"), StatusCode::FOUND, &h).unwrap();
        assert_eq!(next.as_str(), "http://h/b?q=1");
        h.insert(LOCATION, "//other:81/z".parse().unwrap());
        let next = redirect_target(&url("https://h/a"), StatusCode::FOUND, &h).unwrap();
        assert_eq!(next.as_str(), "https://other:81/z");
        let err =
            redirect_target(&url("http://h/"), StatusCode::FOUND, &HeaderMap::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }
}
