//! HTTP and HTTPS for pymatris, on hyper 1's HTTP/1.1 connections, a pool
//! of our own (`pool.rs`) and rustls (ring provider, system roots plus
//! `--ca-cert`).
//!
//! [`HttpProtocol`] implements [`pymatris_core::Protocol`] and registers
//! itself for `http` and `https`. It follows redirects (never carrying
//! credentials to another origin), sends a `Range` header with every GET so
//! one round trip tells size and range support, and maps every failure to a
//! [`pymatris_core::Error`] the scheduler can act on (see `error.rs`).
//!
//! Choices worth knowing:
//!
//! - HTTP/1.1 only (ALPN `http/1.1`): parallel parts each get their own
//!   TCP connection, which beats multiplexing them over one HTTP/2
//!   connection for bulk transfers.
//! - TLS trusts the system store (`rustls-native-certs`, which honours
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus every certificate of every
//!   `--ca-cert` PEM file; `--insecure` accepts any certificate but still
//!   checks handshake signatures. The ring provider is passed explicitly.
//! - Proxies: `--proxy http://[user:pass@]host:port`, else `HTTP_PROXY`,
//!   `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (curl's rules, through
//!   hyper-util's matcher; `NO_PROXY` applies to `--proxy` too). `http://`
//!   URLs go to the proxy in absolute form, `https://` ones through a
//!   `CONNECT` tunnel. SOCKS proxies and TLS to the proxy are not supported.
//! - Credentials (URL user info) and every header of the config go only to
//!   the scheme, host and port of the URL they came with, also after
//!   redirects, unless `ProtocolConfig::location_trusted` lets them follow
//!   (`Host` never does). Pass the URL the user gave to every `fetch`, not
//!   `meta.final_url`: credentials would follow it.

#![warn(missing_docs, missing_debug_implementations)]

mod body;
mod connector;
mod error;
mod headers;
mod pool;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_RANGE, HOST, IF_RANGE, LOCATION, PROXY_AUTHORIZATION,
    RANGE, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use percent_encoding::percent_decode_str;
use pymatris_core::{
    ByteRange, ByteStream, Error, ErrorKind, Fetched, Protocol, ProtocolConfig, RemoteMeta, Url,
    Validator, redact_url, redact_url_str,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::connector::Connector;
use crate::headers::ContentRange;
use crate::pool::{Key, Lease, Pool, SendError};

pymatris_core::inventory::submit! {
    pymatris_core::ProtocolPlugin {
        schemes: &["http", "https"],
        build: |cfg| Ok(Arc::new(HttpProtocol::new(cfg)?)),
    }
}

/// Redirects followed before giving up (curl's and browsers' order of
/// magnitude).
const MAX_REDIRECTS: usize = 10;

/// Idle connections kept per host (scheme, host and port). The scheduler
/// opens at most `max_parallel * max_splits` at once (25 by default).
const MIN_IDLE_PER_HOST: usize = 32;

/// The most hyper buffers when reading from a connection: reads grow up to
/// this size when data keeps coming, which is what moves 1 GB/s on loopback
/// (hyper's default is about 400 KiB).
const READ_BUF_MAX: usize = 1 << 20;

/// Response bodies of at most this size (redirects, errors, the one byte
/// of a probe) are read to their end so their connection can be reused;
/// larger ones are dropped, which closes the connection.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// How long idle pooled connections are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keepalive on every connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Config headers that pymatris sets itself and a user may not override.
const RESERVED_HEADERS: [HeaderName; 3] = [RANGE, IF_RANGE, ACCEPT_ENCODING];

/// HTTP and HTTPS downloads: pooled HTTP/1.1 connections, TLS through
/// rustls (configured on the first https:// URL).
///
/// Build one per batch with [`HttpProtocol::new`]; it is cheap to share
/// behind an `Arc` and reuses connections across files and parts.
pub struct HttpProtocol {
    pool: Arc<Pool>,
    /// TCP connections, direct or through a proxy.
    connector: Connector,
    /// TLS over `connector`, built on the first https:// request, or the
    /// error that stopped it. Loading the system's CA certificates took
    /// about 3 ms of CPU here, as much as all the rest of a small plain
    /// http:// download.
    https: OnceLock<Result<HttpsConnector<Connector>, String>>,
    config: ProtocolConfig,
    headers: Vec<(HeaderName, HeaderValue)>,
    user_agent: Option<HeaderValue>,
    timeout: Duration,
    limiter: Option<HostLimiter>,
    proxy: Option<Arc<Matcher>>,
}

impl fmt::Debug for HttpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may hold tokens: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpProtocol")
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("max_per_host", &self.limiter.as_ref().map(|l| l.per_host))
            .field("proxy", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpProtocol {
    /// The protocol for one batch: its TLS trust, connection pool, headers
    /// and limits from `cfg`.
    ///
    /// Fails on a header that is not valid HTTP, an unreadable `--ca-cert`
    /// file or a proxy URL that cannot be used.
    pub fn new(cfg: &ProtocolConfig) -> Result<HttpProtocol, Error> {
        let headers = config_headers(&cfg.headers)?;
        let user_agent = if cfg.user_agent.is_empty() {
            None
        } else {
            Some(HeaderValue::from_str(&cfg.user_agent).map_err(|_| {
                Error::new(
                    ErrorKind::Protocol,
                    "the user agent is not a valid header value",
                )
                .retryable(false)
            })?)
        };
        let proxy = proxy_matcher(cfg)?;
        // The TLS configuration waits for the first https:// URL; a bad
        // --ca-cert file is an error now all the same.
        pymatris_tls::check_ca_certs(cfg)?;

        let mut http = HttpConnector::new();
        // https:// URLs pass through it on their way to TLS.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let connector = Connector::new(http, proxy.clone());

        let idle = MIN_IDLE_PER_HOST.max(cfg.max_per_host.unwrap_or(0));
        Ok(HttpProtocol {
            pool: Arc::new(Pool::new(idle, POOL_IDLE_TIMEOUT, READ_BUF_MAX)),
            connector,
            https: OnceLock::new(),
            config: cfg.clone(),
            headers,
            user_agent,
            timeout: cfg.timeout,
            limiter: cfg.max_per_host.map(HostLimiter::new),
            proxy,
        })
    }

    /// The connector of https:// URLs, built on first use.
    fn https(&self) -> Result<&HttpsConnector<Connector>, Error> {
        self.https
            .get_or_init(|| {
                let mut tls = pymatris_tls::client_config(&self.config).map_err(|e| e.chain())?;
                // HTTP/1.1 only: for parallel bulk downloads, one TCP
                // connection per part beats HTTP/2 multiplexing all parts
                // over one connection (one congestion window, one socket
                // buffer, head-of-line blocking).
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(HttpsConnector::from((self.connector.clone(), tls)))
            })
            .as_ref()
            .map_err(|chain| Error::new(ErrorKind::Tls, chain.clone()).retryable(false))
    }

    /// Sends `method` to `url`, following redirects, and returns the first
    /// response that is not a redirect, with the URL that gave it and the
    /// per-host permit its connection holds.
    async fn send(&self, method: &Method, url: &Url, extra: &HeaderMap) -> Result<Exchange, Error> {
        let mut current = url.clone();
        let mut hops = 0;
        loop {
            check_scheme(&current)?;
            let permit = match &self.limiter {
                Some(limiter) => limiter.acquire(&current).await,
                None => None,
            };
            let request = self.build_request(method, url, &current, extra)?;
            let shown = redact_url(&current);
            tracing::debug!(%method, url = %shown, "HTTP request");
            let context = || format!("{method} {shown}");
            let pending = self.roundtrip(&current, request, context);
            let (response, lease) = match tokio::time::timeout(self.timeout, pending).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("{}: no response within {:?}", context(), self.timeout),
                    )
                    .retryable(true));
                }
                Ok(result) => result?,
            };
            let status = response.status();
            tracing::debug!(url = %shown, status = status.as_u16(), "HTTP response");
            let exchange = Exchange {
                response,
                url: current.clone(),
                permit,
                lease,
            };
            if !is_redirect(status) {
                return Ok(exchange);
            }
            let next = redirect_target(&current, status, exchange.response.headers())?;
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "more than {MAX_REDIRECTS} redirects, the last to {}",
                        redact_url(&next)
                    ),
                )
                .retryable(false));
            }
            self.discard(exchange).await;
            tracing::debug!(from = %shown, to = %redact_url(&next), "following redirect");
            current = next;
        }
    }

    /// Sends `request` (absolute-form, for `url`) on an idle connection or
    /// a new one, and waits for the response head.
    async fn roundtrip(
        &self,
        url: &Url,
        mut request: Request<Empty<Bytes>>,
        context: impl Fn() -> String,
    ) -> Result<(Response<Incoming>, Lease), Error> {
        let key = Key::of(url);
        let target = request.uri().clone();
        let mut lease = match self.pool.checkout(&key) {
            Some(lease) => lease,
            None => self.connect(&target, key.clone(), &context).await?,
        };
        if !lease.proxied() {
            origin_form(&mut request);
        }
        loop {
            match lease.send(request).await {
                Ok(response) => return Ok((response, lease)),
                // A pooled connection the server closed as the request
                // was about to go: the request never left, so it is
                // safe to send again on a new connection.
                Err(SendError::NotSent(unsent, err)) if lease.reused() => {
                    tracing::debug!(
                        "{}: idle connection closed ({err}), reconnecting",
                        context()
                    );
                    request = *unsent;
                    lease = self.connect(&target, key.clone(), &context).await?;
                }
                Err(SendError::NotSent(_, err)) => {
                    return Err(error::transport_error(err, &context()));
                }
                Err(SendError::Failed(err)) => return Err(error::transport_error(err, &context())),
            }
        }
    }

    /// A new connection to `key`, the scheme, host and port of `target`
    /// (an absolute URI).
    async fn connect(
        &self,
        target: &Uri,
        key: Key,
        context: &impl Fn() -> String,
    ) -> Result<Lease, Error> {
        let failed = |err| error::transport_error(err, &context());
        let target = target.clone();
        let io = if key.is_https() {
            call(self.https()?.clone(), target).await.map_err(failed)?
        } else {
            MaybeHttpsStream::Http(call(self.connector.clone(), target).await.map_err(failed)?)
        };
        let proxied = io.connected().is_proxied();
        self.pool
            .handshake(key, io, proxied)
            .await
            .map_err(|e| failed(Box::new(e)))
    }

    /// The request for `current`, reached from `original` by redirects.
    fn build_request(
        &self,
        method: &Method,
        original: &Url,
        current: &Url,
        extra: &HeaderMap,
    ) -> Result<Request<Empty<Bytes>>, Error> {
        let uri = request_uri(current)?;
        let same_origin = may_send_credentials(original, current);
        // The user's headers and the URL's credentials were given for the
        // origin of the URL; another origin gets them only when the user
        // says it may (a redirect from https:// to http:// of the same host
        // would otherwise put an API key on the wire in clear text).
        let credentials_allowed = same_origin || self.config.location_trusted;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| {
                Error::new(ErrorKind::InvalidUrl, redact_url(current))
                    .retryable(false)
                    .with_source(e)
            })?;
        let headers = request.headers_mut();
        if let Some(ua) = &self.user_agent {
            headers.insert(USER_AGENT, ua.clone());
        }
        // The bytes as stored: a compressed body could not be cut in ranges.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let mut replaced = Vec::new();
        for (name, value) in &self.headers {
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

    /// Reads a small body to its end so the connection goes back to the
    /// pool; drops a large or unsized one, which closes the connection.
    async fn discard(&self, exchange: Exchange) {
        let small =
            (exchange.response.body().size_hint().upper()).is_some_and(|n| n <= DRAIN_LIMIT);
        if small {
            drain(exchange.into_stream(String::new()), self.timeout).await;
        }
    }

    /// `HEAD`: what the headers say of the file.
    async fn head(&self, url: &Url) -> Result<RemoteMeta, Error> {
        let exchange = self.send(&Method::HEAD, url, &HeaderMap::new()).await?;
        let status = exchange.response.status();
        let headers = exchange.response.headers();
        let result = if status.is_success() {
            let mut meta = meta_from(headers, url, &exchange.url);
            meta.size = headers::content_length(headers);
            meta.ranges = headers::accepts_byte_ranges(headers);
            Ok(meta)
        } else {
            Err(error::status_error(status, headers))
        };
        // No body follows a HEAD: this only returns the connection.
        self.discard(exchange).await;
        result
    }

    /// `GET` of the first byte: what `HEAD` would have said, for servers
    /// whose `HEAD` fails.
    async fn probe(&self, url: &Url) -> Result<RemoteMeta, Error> {
        let Fetched { meta, body, .. } = self.fetch(url, ByteRange::new(0, 1), None).await?;
        if meta.ranges {
            // One byte, or none: read it so the connection is reused.
            drain(body, self.timeout).await;
        }
        Ok(meta)
    }
}

#[async_trait::async_trait]
impl Protocol for HttpProtocol {
    async fn stat(&self, url: &Url) -> Result<RemoteMeta, Error> {
        match self.head(url).await {
            Ok(meta) => Ok(meta),
            Err(err) if head_failure_worth_a_get(&err) => {
                tracing::debug!(url = %redact_url(url), "HEAD failed ({err}); trying a GET");
                self.probe(url).await
            }
            Err(err) => Err(err),
        }
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> Result<Fetched, Error> {
        let mut extra = HeaderMap::new();
        // Always a range, even for the whole file: a 206 tells in the same
        // round trip that ranges work and how big the file is.
        extra.insert(RANGE, header_value(&range_header(range)));
        if let Some(value) = validator.and_then(headers::if_range_value) {
            // A changed file then yields 200 (whole new file), never a mix.
            if let Ok(value) = HeaderValue::from_str(value) {
                extra.insert(IF_RANGE, value);
            }
        }
        let exchange = self.send(&Method::GET, url, &extra).await?;
        let status = exchange.response.status();
        let headers = exchange.response.headers();
        let mut meta = meta_from(headers, url, &exchange.url);
        let changed = validator.is_some_and(|v| !v.matches(&meta.validator));
        let shown = redact_url(&exchange.url);

        match status {
            StatusCode::PARTIAL_CONTENT => {
                let raw = headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
                match raw.and_then(headers::parse_content_range) {
                    Some(ContentRange::Bytes {
                        first,
                        last,
                        complete,
                    }) if first == range.start && range.end.is_none_or(|end| last < end) => {
                        if changed {
                            return Err(changed_error(&shown));
                        }
                        meta.size = complete;
                        meta.ranges = true;
                        Ok(Fetched {
                            meta,
                            offset: range.start,
                            body: exchange.into_stream(shown),
                        })
                    }
                    _ => Err(Error::new(
                        ErrorKind::RangeUnsupported,
                        format!(
                            "HTTP 206 with Content-Range {} for a request of {}",
                            raw.map_or_else(|| "(none)".to_owned(), |r| format!("{:.80}", r)),
                            range_header(range)
                        ),
                    )
                    .retryable(false)),
                }
            }
            StatusCode::OK => {
                if changed && range.start > 0 {
                    return Err(changed_error(&shown));
                }
                meta.size = headers::content_length(headers);
                meta.ranges = false;
                Ok(Fetched {
                    meta,
                    offset: 0,
                    body: exchange.into_stream(shown),
                })
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let complete = headers
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(headers::parse_content_range);
                let err = error::status_error(status, headers);
                self.discard(exchange).await;
                match complete {
                    Some(ContentRange::Unsatisfied { complete }) if complete == range.start => {
                        // Nothing left to read: a zero-byte file, or one
                        // already complete.
                        meta.size = Some(complete);
                        meta.ranges = true;
                        Ok(Fetched {
                            meta,
                            offset: range.start,
                            body: Box::pin(futures_util::stream::empty()),
                        })
                    }
                    _ if changed => Err(changed_error(&shown)),
                    Some(ContentRange::Unsatisfied { complete }) => Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "{}: asked from byte {} of a file of {complete} bytes",
                            err.message(),
                            range.start
                        ),
                    )
                    .retryable(false)),
                    _ => Err(err.retryable(false)),
                }
            }
            _ => {
                let err = if status.is_success() {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("unexpected {} to a GET", error::status_line(status)),
                    )
                    .retryable(false)
                } else {
                    error::status_error(status, headers)
                };
                self.discard(exchange).await;
                Err(err)
            }
        }
    }
}

/// A response, the URL it came from, its connection and the per-host
/// permit it holds.
struct Exchange {
    response: Response<Incoming>,
    url: Url,
    permit: Option<OwnedSemaphorePermit>,
    lease: Lease,
}

impl Exchange {
    /// The body; the connection goes back to the pool when it has been
    /// read to its end.
    fn into_stream(self, shown: String) -> ByteStream {
        Box::pin(body::BodyStream::new(
            self.response.into_body(),
            self.lease,
            self.permit,
            shown,
        ))
    }
}

/// Bounds the requests in flight to one host (`--max-per-host`). A permit
/// lives as long as the response body it was taken for.
struct HostLimiter {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostLimiter {
    fn new(per_host: usize) -> Self {
        HostLimiter {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, url: &Url) -> Option<OwnedSemaphorePermit> {
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        let semaphore = {
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            hosts
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };
        // The semaphore is never closed, so this only fails in theory.
        semaphore.acquire_owned().await.ok()
    }
}

/// Reads a short body to its end (bounded in size and time).
async fn drain(mut body: ByteStream, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let mut total = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            total += chunk.len() as u64;
            if total > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// Whether a failed `HEAD` may still be answered by a `GET`: a status
/// other than the definite ones (405, 501, 5xx…), or a broken connection.
fn head_failure_worth_a_get(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Protocol | ErrorKind::Network)
}

fn changed_error(shown: &str) -> Error {
    Error::new(
        ErrorKind::Changed,
        format!("{shown} no longer matches the version being downloaded"),
    )
    .retryable(false)
}

/// What any response tells: validators, suggested name, final URL.
fn meta_from(headers: &HeaderMap, requested: &Url, final_url: &Url) -> RemoteMeta {
    RemoteMeta {
        size: None,
        ranges: false,
        validator: headers::validator(headers),
        filename: headers::filename(headers),
        final_url: (final_url != requested).then(|| final_url.clone()),
    }
}

/// `bytes=START-` or `bytes=START-LAST`.
fn range_header(range: ByteRange) -> String {
    match range.end {
        Some(end) if end > range.start => format!("bytes={}-{}", range.start, end - 1),
        _ => format!("bytes={}-", range.start),
    }
}

fn header_value(text: &str) -> HeaderValue {
    // Only called with ASCII digits and punctuation.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect points, resolved against the URL that sent it.
fn redirect_target(current: &Url, status: StatusCode, headers: &HeaderMap) -> Result<Url, Error> {
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
            .retryable(false)
        })?;
    let next = current.join(location).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("redirect to an invalid URL {}", redact_url_str(location)),
        )
        .retryable(false)
        .with_source(e)
    })?;
    Ok(next)
}

fn check_scheme(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(Error::new(
            ErrorKind::UnsupportedScheme,
            format!("{other}:// is not HTTP ({})", redact_url(url)),
        )
        .retryable(false)),
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
        .retryable(false)
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

/// Calls a connector once it is ready.
async fn call<S: Service<Uri>>(mut connector: S, target: Uri) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
    connector.call(target).await
}

/// Origin-form (`/path?query`), for a request that goes straight to the
/// server rather than to a proxy.
fn origin_form(request: &mut Request<Empty<Bytes>>) {
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
        .retryable(false)
        .with_source(e)
    })
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `Authorization: Basic` from the URL's user info (percent-decoded).
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    let mut raw: Vec<u8> = percent_decode_str(url.username()).collect();
    raw.push(b':');
    raw.extend(percent_decode_str(url.password().unwrap_or("")));
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

/// The config's extra headers, checked once. Values are marked sensitive
/// and never shown, not even in errors.
fn config_headers(raw: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let name = name.trim();
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::new(ErrorKind::Protocol, format!("invalid header name {name:?}"))
                .retryable(false)
        })?;
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
            Error::new(
                ErrorKind::Protocol,
                format!("invalid value for header {name}"),
            )
            .retryable(false)
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

/// The proxy rules: `--proxy` (still honouring `NO_PROXY`), else the
/// `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` variables.
fn proxy_matcher(cfg: &ProtocolConfig) -> Result<Option<Arc<Matcher>>, Error> {
    let Some(proxy) = cfg
        .proxy
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    else {
        return Ok(Some(Arc::new(Matcher::from_env())));
    };
    let full = if proxy.contains("://") {
        proxy.to_owned()
    } else {
        format!("http://{proxy}")
    };
    let parsed = Url::parse(&full).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUrl,
            format!("invalid proxy {}", redact_url_str(proxy)),
        )
        .retryable(false)
        .with_source(e)
    })?;
    if parsed.scheme() != "http" {
        return Err(Error::new(
            ErrorKind::UnsupportedScheme,
            format!(
                "proxy {}: only http:// proxies are supported",
                redact_url(&parsed)
            ),
        )
        .retryable(false));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("proxy {} has no host", redact_url(&parsed)),
        )
        .retryable(false));
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    Ok(Some(Arc::new(
        Matcher::builder().all(full).no(no_proxy).build(),
    )))
}

#[cfg(test)]
mod tests {
    use http::header::COOKIE;

    use super::*;

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

    fn protocol(cfg: ProtocolConfig) -> HttpProtocol {
        HttpProtocol::new(&cfg).unwrap()
    }

    fn request(p: &HttpProtocol, original: &str, current: &str) -> Request<Empty<Bytes>> {
        p.build_request(
            &Method::GET,
            &url(original),
            &url(current),
            &HeaderMap::new(),
        )
        .unwrap()
    }

    #[test]
    fn redirect_credential_stripping() {
        let mut cfg = ProtocolConfig::default();
        cfg.headers = vec![
            ("Authorization".into(), "Bearer t0ken".into()),
            ("Cookie".into(), "s=1".into()),
            ("X-Other".into(), "kept".into()),
        ];
        let p = protocol(cfg);
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

        let p = protocol(ProtocolConfig::default());
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
        let mut cfg = ProtocolConfig::default();
        cfg.headers = vec![
            ("X-Api-Key".into(), "k".into()),
            ("Host".into(), "a.example".into()),
        ];
        cfg.location_trusted = true;
        let p = protocol(cfg);
        let away = request(&p, "https://u:pw@a.example/x", "http://b.example/y");
        assert_eq!(away.headers()["x-api-key"], "k");
        assert_eq!(away.headers()[AUTHORIZATION], "Basic dTpwdw==");
        assert_eq!(away.headers()[HOST], "b.example");
        let home = request(&p, "https://u:pw@a.example/x", "https://a.example/y");
        assert_eq!(home.headers()[HOST], "a.example");
    }

    #[test]
    fn default_request_headers() {
        let mut cfg = ProtocolConfig::default();
        cfg.user_agent = "ua/1".into();
        cfg.headers = vec![
            ("Range".into(), "bytes=5-".into()),
            ("Accept".into(), "a/b".into()),
            ("Accept".into(), "c/d".into()),
            ("User-Agent".into(), "mine".into()),
        ];
        let p = protocol(cfg);
        let r = request(&p, "http://a.example/#frag", "http://a.example/#frag");
        assert_eq!(r.uri(), "http://a.example/");
        assert!(r.headers().get(RANGE).is_none());
        assert_eq!(r.headers()[ACCEPT_ENCODING], "identity");
        assert_eq!(r.headers()[USER_AGENT], "mine");
        let accepts: Vec<_> = r.headers().get_all("accept").iter().collect();
        assert_eq!(accepts, ["a/b", "c/d"]);
    }

    #[test]
    fn bad_config_is_refused_without_showing_values() {
        let mut cfg = ProtocolConfig::default();
        cfg.headers = vec![("X-Token".into(), "sec\nret".into())];
        let err = HttpProtocol::new(&cfg).unwrap_err();
        assert!(!err.to_string().contains("sec"), "{err}");
        let mut cfg = ProtocolConfig::default();
        cfg.proxy = Some("socks5://u:pw@proxy:1080".into());
        let err = HttpProtocol::new(&cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedScheme);
        assert!(!err.to_string().contains("pw"), "{err}");
        let mut cfg = ProtocolConfig::default();
        cfg.proxy = Some("proxy.example:3128".into());
        assert!(HttpProtocol::new(&cfg).is_ok());
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
