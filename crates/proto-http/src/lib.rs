//! HTTP and HTTPS for pymatris, on hyper 1's HTTP/1.1 connections, a pool
//! of our own (`pool.rs`) and rustls (ring provider, system roots plus the
//! config's `ca_certs`).
//!
//! [`HttpProtocol`] implements [`pymatris_core::Protocol`] for `http` and
//! `https`; [`PLUGIN`] registers it with a downloader, and [`HttpOptions`]
//! holds the settings only HTTP reads. It follows redirects (never carrying
//! credentials to another origin), sends a `Range` header with every GET so
//! one round trip tells size and range support, and maps every failure to a
//! [`pymatris_core::Error`] the scheduler can act on (see `error.rs`).
//!
//! ```
//! # use std::io::{Read, Write};
//! # // A one-file server on loopback, so that the example runs offline.
//! # let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! # let addr = server.local_addr().unwrap();
//! # std::thread::spawn(move || {
//! #     for stream in server.incoming() {
//! #         let mut stream = stream.unwrap();
//! #         let mut head = [0u8; 4096];
//! #         let _ = stream.read(&mut head);
//! #         let _ = stream.write_all(
//! #             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
//! #         );
//! #     }
//! # });
//! use pymatris_core::{Config, Downloader};
//! use pymatris_proto_http::{HttpOptions, PLUGIN};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = Config::default().with(HttpOptions::default().user_agent("my-tool/1.0"));
//! let mut dl = Downloader::builder(config).protocol(PLUGIN).build();
//! dl.enqueue_file(&format!("http://{addr}/hello.txt"), dir.path().to_str().unwrap());
//! let results = dl.download_blocking();
//! assert!(results.errors.is_empty(), "{results}");
//! assert_eq!(std::fs::read(dir.path().join("hello.txt")).unwrap(), b"hello");
//! ```
//!
//! Choices worth knowing:
//!
//! - HTTP/1.1 only (ALPN `http/1.1`): parallel parts each get their own
//!   TCP connection, which beats multiplexing them over one HTTP/2
//!   connection for bulk transfers.
//! - TLS trusts the system store (`rustls-native-certs`, which honours
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus every certificate of every PEM
//!   file of `ca_certs`; `insecure` accepts any certificate but still
//!   checks handshake signatures. The ring provider is passed explicitly.
//! - Proxies: the config's SOCKS5 proxy (`socks_proxy`), else
//!   [`HttpOptions::proxy`] (`http://[user:pass@]host:port`, `socks5://`,
//!   `socks5h://`), else `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
//!   `NO_PROXY` (curl's rules, through hyper-util's matcher; `NO_PROXY`
//!   applies to an explicit proxy too). `http://` URLs go to an HTTP proxy
//!   in absolute form, `https://` ones through a `CONNECT` tunnel; through a
//!   SOCKS5 proxy both are a plain TCP stream to the server, dialled by
//!   `pymatris_core::socks`. TLS to the proxy itself is not supported.
//! - Credentials (URL user info) and every header of the options go only to
//!   the scheme, host and port of the URL they came with, also after
//!   redirects, unless [`HttpOptions::location_trusted`] lets them follow
//!   (`Host` never does). A file's own headers (`FileOptions::headers`,
//!   from `Request::header`) replace those of the same name and follow the
//!   same rule. Pass the URL the user gave to every `fetch`, not
//!   `meta.final_url`: credentials would follow it.
//! - How many requests go to one host at once is the engine's business
//!   (`max_per_host`); the protocol only keeps enough idle connections.

#![warn(missing_docs, missing_debug_implementations)]

mod body;
mod connector;
mod error;
mod h2;
mod headers;
mod listing;
mod meta;
mod options;
mod pool;
mod proxy;
mod request;
mod stat;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_RANGE, IF_RANGE, RANGE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use pymatris_core::{
    ByteRange, DirEntry, Error, ErrorKind, Fetched, FileOptions, LocalCopy, Protocol,
    ProtocolConfig, RemoteMeta, Url, Validator, redact_url,
};
use tower_service::Service;

use crate::body::{DRAIN_LIMIT, Exchange, drain};
use crate::connector::Connector;
use crate::headers::ContentRange;
use crate::meta::meta_from;
use crate::pool::{Key, Lease, Pool, SendError};
use crate::request::{
    check_scheme, header_value, is_redirect, origin_form, range_header, redirect_target,
};

pub use crate::options::HttpOptions;

/// HTTP and HTTPS, to register explicitly
/// (`Downloader::builder(config).protocol(PLUGIN)`). The crate also
/// registers it with `inventory`, which finds it whenever the crate is
/// linked.
pub const PLUGIN: pymatris_core::ProtocolPlugin = pymatris_core::ProtocolPlugin {
    schemes: &["http", "https"],
    build: |cfg| Ok(Arc::new(HttpProtocol::new(cfg)?)),
};

pymatris_core::inventory::submit! { PLUGIN }

/// Redirects followed before giving up (curl's and browsers' order of
/// magnitude).
const MAX_REDIRECTS: usize = 10;

/// Idle connections kept per host (scheme, host and port). The scheduler
/// opens at most `max_parallel * max_splits` at once (25 by default).
const MIN_IDLE_PER_HOST: usize = 32;

/// The most hyper buffers when reading from a connection: reads grow up to
/// this size when data keeps coming, so a fast link is read in few large
/// reads rather than many of hyper's default (about 400 KiB).
const READ_BUF_MAX: usize = 1 << 20;

/// How long idle pooled connections are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keepalive on every connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

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
    /// error that stopped it: loading the system's CA certificates costs as
    /// much CPU as all the rest of a small plain http:// download.
    https: OnceLock<Result<Https, String>>,
    /// Offer HTTP/2 to https:// servers (not with `http1_only`).
    h2: bool,
    config: ProtocolConfig,
    headers: Vec<(HeaderName, HeaderValue)>,
    location_trusted: bool,
    user_agent: Option<HeaderValue>,
    timeout: Duration,
    proxy: Option<Arc<Matcher>>,
}

impl fmt::Debug for HttpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may hold tokens: names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpProtocol")
            .field("headers", &names)
            .field("timeout", &self.timeout)
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
        let default = HttpOptions::default();
        let options = cfg.get::<HttpOptions>().unwrap_or(&default);
        let headers = options::parse_headers(&options.headers)?;
        let user_agent = options::parse_user_agent(&options.user_agent)?;
        let proxy = proxy::matcher(options.proxy.as_deref())?;
        // The TLS configuration waits for the first https:// URL; a bad
        // --ca-cert file is an error now all the same.
        pymatris_tls::check_ca_certs(cfg)?;

        let mut http = HttpConnector::new();
        // https:// URLs pass through it on their way to TLS.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let connector =
            Connector::new(http, proxy.clone()).with_socks(cfg.socks_proxy.clone(), cfg.timeout);

        let idle = MIN_IDLE_PER_HOST.max(cfg.max_per_host.unwrap_or(0));
        Ok(HttpProtocol {
            pool: Arc::new(Pool::new(idle, POOL_IDLE_TIMEOUT, READ_BUF_MAX)),
            connector,
            https: OnceLock::new(),
            h2: !options.http1_only,
            config: cfg.clone(),
            headers,
            location_trusted: options.location_trusted,
            user_agent,
            timeout: cfg.timeout,
            proxy,
        })
    }

    /// The connectors of https:// URLs, built on first use.
    fn https(&self) -> Result<&Https, Error> {
        self.https
            .get_or_init(|| {
                let mut tls = pymatris_tls::client_config(&self.config).map_err(|e| e.chain())?;
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                let h1 = HttpsConnector::from((self.connector.clone(), tls.clone()));
                tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let h2 = HttpsConnector::from((self.connector.clone(), tls));
                Ok(Https { h1, h2 })
            })
            .as_ref()
            .map_err(|chain| Error::new(ErrorKind::Tls, chain.clone()))
    }

    /// Sends `method` to `url`, following redirects, and returns the first
    /// response that is not a redirect, with the URL that gave it and its
    /// connection. How many run at once to one host is the engine's
    /// business (`max_per_host`).
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        extra: &HeaderMap,
        file: &[(HeaderName, HeaderValue)],
        bulk: bool,
    ) -> Result<Exchange, Error> {
        let mut current = url.clone();
        let mut hops = 0;
        loop {
            check_scheme(&current)?;
            let request = self.build_request(method, url, &current, extra, file)?;
            let shown = redact_url(&current);
            tracing::debug!(%method, url = %shown, "HTTP request");
            let context = || format!("{method} {shown}");
            let pending = self.roundtrip(&current, request, bulk, context);
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
                ));
            }
            self.discard(exchange).await;
            tracing::debug!(from = %shown, to = %redact_url(&next), "following redirect");
            current = next;
        }
    }

    /// Sends `request` (absolute-form, for `url`) on an idle connection or
    /// a new one, and waits for the response head. A `bulk` request (a
    /// part of a large file) keeps to a connection of its own, over
    /// HTTP/1.1 (see `h2.rs`).
    async fn roundtrip(
        &self,
        url: &Url,
        mut request: Request<Empty<Bytes>>,
        bulk: bool,
        context: impl Fn() -> String,
    ) -> Result<(Response<Incoming>, Lease), Error> {
        let key = Key::of(url);
        let target = request.uri().clone();
        let offer_h2 = self.h2 && key.is_https() && !bulk;
        let mut lease = match self.lease(&target, &key, offer_h2, &context).await? {
            Some(lease) => lease,
            None => self.connect(&target, key.clone(), false, &context).await?,
        };
        if !lease.proxied() && !lease.is_h2() {
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
                    lease = self.connect(&target, key.clone(), false, &context).await?;
                    if !lease.proxied() {
                        origin_form(&mut request);
                    }
                }
                Err(SendError::NotSent(_, err)) => {
                    return Err(error::transport_error(err, &context()));
                }
                Err(SendError::Failed(err)) => return Err(error::transport_error(err, &context())),
            }
        }
    }

    /// A connection for a request to `key`: an HTTP/2 stream when
    /// `offer_h2` and the host speaks it (opening the connection if none
    /// has room, one at a time), else an idle HTTP/1.1 connection; `None`
    /// when a new HTTP/1.1 connection is to be opened.
    async fn lease(
        &self,
        target: &Uri,
        key: &Key,
        offer_h2: bool,
        context: &impl Fn() -> String,
    ) -> Result<Option<Lease>, Error> {
        if offer_h2 && !self.pool.h2.refused(key) {
            if let Some(lease) = self.pool.checkout_h2(key) {
                return Ok(Some(lease));
            }
            let gate = self.pool.h2.gate(key);
            let _opening = gate.lock().await;
            if let Some(lease) = self.pool.checkout_h2(key) {
                return Ok(Some(lease));
            }
            if !self.pool.h2.refused(key) {
                let lease = self.connect(target, key.clone(), true, context).await?;
                self.pool.h2.negotiated(key, lease.is_h2());
                return Ok(Some(lease));
            }
        }
        Ok(self.pool.checkout(key))
    }

    /// A new connection to `key`, the scheme, host and port of `target`
    /// (an absolute URI), offering HTTP/2 when `offer_h2`.
    async fn connect(
        &self,
        target: &Uri,
        key: Key,
        offer_h2: bool,
        context: &impl Fn() -> String,
    ) -> Result<Lease, Error> {
        let failed = |err| error::transport_error(err, &context());
        let target = target.clone();
        let io = if key.is_https() {
            let https = self.https()?;
            let tls = if offer_h2 { &https.h2 } else { &https.h1 };
            call(tls.clone(), target).await.map_err(failed)?
        } else {
            MaybeHttpsStream::Http(call(self.connector.clone(), target).await.map_err(failed)?)
        };
        let proxied = io.connected().is_proxied();
        self.pool
            .handshake(key, io, proxied)
            .await
            .map_err(|e| failed(Box::new(e)))
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
}

#[async_trait::async_trait]
impl Protocol for HttpProtocol {
    async fn stat(&self, url: &Url) -> Result<RemoteMeta, Error> {
        self.describe(url, &[]).await
    }

    async fn list(&self, url: &Url) -> Result<Vec<DirEntry>, Error> {
        self.list_dir(url).await
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> Result<Fetched, Error> {
        self.get_all(url, range, validator, &[]).await
    }

    async fn stat_file(&self, url: &Url, file: &FileOptions) -> Result<RemoteMeta, Error> {
        (self.describe(url, &options::parse_headers(&file.headers)?)).await
    }

    async fn fetch_file(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        file: &FileOptions,
    ) -> Result<Fetched, Error> {
        let headers = options::parse_headers(&file.headers)?;
        self.get_all(url, range, validator, &headers).await
    }

    async fn fetch_if_changed(
        &self,
        url: &Url,
        range: ByteRange,
        local: &LocalCopy,
    ) -> Result<Option<Fetched>, Error> {
        self.get(url, range, None, Some(local), &[]).await
    }
}

impl HttpProtocol {
    /// An unconditional `GET` of `range`, with the file's own headers.
    async fn get_all(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<Fetched, Error> {
        let fetched = self.get(url, range, validator, None, file).await?;
        fetched.ok_or_else(|| Error::new(ErrorKind::Protocol, "HTTP 304 to a plain GET"))
    }

    /// A `GET` of `range`; with `local`, conditional on the file having
    /// changed since that copy (`None` for a `304`).
    async fn get(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
        local: Option<&LocalCopy>,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<Option<Fetched>, Error> {
        let mut extra = HeaderMap::new();
        if let Some(local) = local {
            meta::add_conditions(&mut extra, local);
        }
        // Always a range, even for the whole file: a 206 tells in the same
        // round trip that ranges work and how big the file is.
        extra.insert(RANGE, header_value(&range_header(range)));
        if let Some(value) = validator.and_then(headers::if_range_value) {
            // A changed file then yields 200 (whole new file), never a mix.
            if let Ok(value) = HeaderValue::from_str(value) {
                extra.insert(IF_RANGE, value);
            }
        }
        // A range from past the start is a part of a large file.
        let exchange = (self.send(&Method::GET, url, &extra, file, range.start > 0)).await?;
        let status = exchange.response.status();
        let headers = exchange.response.headers();
        let mut meta = meta_from(status, headers, url, &exchange.url);
        // Another version in a 206 or 200 is the engine's to refuse (it
        // compares `meta`); a 416 brings no bytes and no meta to compare.
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
                        meta.size = complete;
                        meta.ranges = true;
                        Ok(Some(Fetched::new(
                            meta,
                            range.start,
                            exchange.into_stream(shown),
                        )))
                    }
                    _ => Err(Error::new(
                        ErrorKind::RangeUnsupported,
                        format!(
                            "HTTP 206 with Content-Range {} for a request of {}",
                            raw.map_or_else(|| "(none)".to_owned(), |r| format!("{:.80}", r)),
                            range_header(range)
                        ),
                    )),
                }
            }
            StatusCode::OK => {
                meta.size = headers::content_length(headers);
                meta.ranges = false;
                Ok(Some(Fetched::new(meta, 0, exchange.into_stream(shown))))
            }
            StatusCode::NOT_MODIFIED if local.is_some() => {
                self.discard(exchange).await;
                Ok(None)
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
                        Ok(Some(Fetched::new(
                            meta,
                            range.start,
                            Box::pin(futures_util::stream::empty()),
                        )))
                    }
                    _ if changed => Err(changed_error(&shown)),
                    Some(ContentRange::Unsatisfied { complete }) => Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "{}: asked from byte {} of a file of {complete} bytes",
                            err.message(),
                            range.start
                        ),
                    )),
                    _ => Err(err.retryable(false)),
                }
            }
            _ => {
                let err = if status.is_success() {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("unexpected {} to a GET", error::status_line(status)),
                    )
                } else {
                    error::status_error(status, headers)
                };
                self.discard(exchange).await;
                Err(err)
            }
        }
    }
}

/// The TLS connectors: one that offers HTTP/1.1 alone, for the parts of
/// large files, and one that offers HTTP/2 first.
struct Https {
    h1: HttpsConnector<Connector>,
    h2: HttpsConnector<Connector>,
}

fn changed_error(shown: &str) -> Error {
    Error::new(
        ErrorKind::Changed,
        format!("{shown} no longer matches the version being downloaded"),
    )
}

/// Calls a connector once it is ready.
async fn call<S: Service<Uri>>(mut connector: S, target: Uri) -> Result<S::Response, S::Error> {
    std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
    connector.call(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_is_refused_without_showing_values() {
        let build = |options: HttpOptions| {
            let mut cfg = ProtocolConfig::default();
            cfg.set(options);
            HttpProtocol::new(&cfg)
        };
        let err = build(HttpOptions::default().header("X-Token", "sec\nret")).unwrap_err();
        assert!(!err.to_string().contains("sec"), "{err}");
        let err = build(HttpOptions::default().proxy(Some("socks4://u:pw@proxy:1080".into())))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedScheme);
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(build(HttpOptions::default().proxy(Some("proxy.example:3128".into()))).is_ok());
        assert!(build(HttpOptions::default().proxy(Some("socks5h://u:pw@p:1080".into()))).is_ok());
        // Without options of its own, HTTP runs on its defaults.
        assert!(HttpProtocol::new(&ProtocolConfig::default()).is_ok());
    }
}
