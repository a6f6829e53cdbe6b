//! HttpProtocol against tiny in-process hyper servers: ranges, fallbacks,
//! redirects, errors, TLS trust and proxies.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pymatris_core::{
    ByteRange, ByteStream, ErrorKind, Fetched, Protocol, ProtocolConfig, Url, Validator,
};
use pymatris_proto_http::{HttpOptions, HttpProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ETAG: &str = "\"v1\"";

fn content() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

struct TestServer {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Connections the client has closed.
    closed: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestServer {
    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn start(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closed_counter = closed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let handler = handler.clone();
            let log = server_log.clone();
            let tls = tls.clone();
            let closed = closed_counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = Seen {
                        method: req.method().clone(),
                        uri: req.uri().clone(),
                        headers: req.headers().clone(),
                    };
                    log.lock().unwrap().push(seen.clone());
                    let response = handler(&seen);
                    async move { Ok::<_, Infallible>(response) }
                });
                match tls {
                    Some(cfg) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    TestServer {
        addr,
        log,
        connections,
        closed,
    }
}

fn response(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// A file server that honours single ranges and `If-Range`.
fn serve_file(seen: &Seen, data: &[u8], etag: &str) -> Response<Full<Bytes>> {
    let len = data.len() as u64;
    let base = [
        ("etag", etag),
        ("accept-ranges", "bytes"),
        ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (
            "content-disposition",
            "attachment; filename*=UTF-8''na%C3%AFve.txt; filename=\"naive.txt\"",
        ),
    ];
    let range = seen
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'));
    let if_range_ok = seen.headers.get("if-range").is_none_or(|v| v == etag);
    let (Some((start, end)), true) = (range, if_range_ok) else {
        // Explicit, so that HEAD of an empty file says 0 as real servers do.
        let length = len.to_string();
        let mut headers = base.to_vec();
        headers.push(("content-length", length.as_str()));
        return response(200, &headers, data.to_vec());
    };
    let start: u64 = start.parse().unwrap();
    if start >= len {
        let cr = format!("bytes */{len}");
        return response(416, &[("content-range", cr.as_str())], "");
    }
    let last: u64 = if end.is_empty() {
        len - 1
    } else {
        end.parse::<u64>().unwrap().min(len - 1)
    };
    let cr = format!("bytes {start}-{last}/{len}");
    let mut headers = base.to_vec();
    headers.push(("content-range", cr.as_str()));
    response(206, &headers, data[start as usize..=last as usize].to_vec())
}

fn routes() -> Handler {
    Arc::new(|seen: &Seen| {
        let data = content();
        match seen.uri.path() {
            "/file" => serve_file(seen, &data, ETAG),
            "/no-if-range" => {
                let mut seen = seen.clone();
                seen.headers.remove("if-range");
                serve_file(&seen, &data, ETAG)
            }
            "/empty" => serve_file(seen, b"", ETAG),
            "/norange" => response(200, &[("etag", ETAG)], data),
            "/busy" => response(503, &[("retry-after", "7")], "come back later"),
            "/missing" => response(404, &[], "no such file"),
            "/nohead" if seen.method == Method::HEAD => response(405, &[], ""),
            "/nohead" => serve_file(seen, &data, ETAG),
            "/redirect" => {
                let to = seen.uri.query().unwrap_or("/file").to_owned();
                response(302, &[("location", to.as_str())], "moved")
            }
            "/loop" => response(301, &[("location", "/loop")], ""),
            "/echo" => response(200, &[], "ok"),
            _ => response(404, &[], ""),
        }
    })
}

async fn collect(mut body: ByteStream) -> Result<Vec<u8>, pymatris_core::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn http() -> HttpProtocol {
    HttpProtocol::new(&ProtocolConfig::default()).unwrap()
}

#[tokio::test]
async fn ranged_get_answers_206() {
    let server = start(routes(), None).await;
    let p = http();
    let Fetched {
        meta, offset, body, ..
    } = p
        .fetch(&server.url("/file"), ByteRange::new(100, 200), None)
        .await
        .unwrap();
    assert_eq!(offset, 100);
    assert_eq!(meta.size, Some(1000));
    assert!(meta.ranges);
    assert_eq!(meta.validator.etag.as_deref(), Some(ETAG));
    assert_eq!(meta.filename.as_deref(), Some("naïve.txt"));
    assert_eq!(meta.final_url, None);
    assert_eq!(collect(body).await.unwrap(), content()[100..200]);

    let seen = server.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers["range"], "bytes=100-199");
    assert_eq!(last.headers["accept-encoding"], "identity");
    assert!(
        last.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("pymatris/")
    );
}

#[tokio::test]
async fn first_request_sends_an_open_range() {
    let server = start(routes(), None).await;
    let p = http();
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::from(0), None)
        .await
        .unwrap();
    assert_eq!(fetched.offset, 0);
    assert_eq!(fetched.meta.size, Some(1000));
    assert!(fetched.meta.ranges);
    assert_eq!(collect(fetched.body).await.unwrap(), content());
    assert_eq!(server.seen()[0].headers["range"], "bytes=0-");
}

#[tokio::test]
async fn connections_are_reused() {
    let server = start(routes(), None).await;
    let p = http();
    // Read to its end, or only to its length and dropped, as the
    // scheduler does once it has the bytes it asked for.
    for to_the_end in [true, false, false] {
        let fetched = p
            .fetch(&server.url("/file"), ByteRange::from(0), None)
            .await
            .unwrap();
        let bytes = if to_the_end {
            collect(fetched.body).await.unwrap()
        } else {
            take_exactly(fetched.body, 1000).await
        };
        assert_eq!(bytes, content());
    }
    // Redirects, error statuses and stat's probe drain small bodies.
    let url = server.url("/redirect?/file");
    let fetched = p.fetch(&url, ByteRange::new(0, 10), None).await.unwrap();
    collect(fetched.body).await.unwrap();
    let _ = p
        .fetch(&server.url("/missing"), ByteRange::from(0), None)
        .await;
    p.stat(&server.url("/nohead")).await.unwrap();
    p.stat(&server.url("/file")).await.unwrap();
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::from(0), None)
        .await
        .unwrap();
    collect(fetched.body).await.unwrap();
    assert_eq!(server.connections(), 1);
}

/// Reads exactly `len` bytes of `body` and drops it without asking for
/// more.
async fn take_exactly(mut body: ByteStream, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        out.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn idle_connections_close_with_their_protocol() {
    let server = start(routes(), None).await;
    let p = http();
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::from(0), None)
        .await
        .unwrap();
    assert_eq!(take_exactly(fetched.body, 1000).await, content());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.closed(), 0, "the connection was not kept");
    drop(p);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.closed() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle connection outlived its protocol"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_body_dropped_unread_closes_its_connection() {
    let server = start(routes(), None).await;
    let p = http();
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::from(0), None)
        .await
        .unwrap();
    drop(fetched.body);
    // The unread bytes must not be taken for the next response.
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::new(10, 20), None)
        .await
        .unwrap();
    assert_eq!(fetched.offset, 10);
    assert_eq!(collect(fetched.body).await.unwrap(), &content()[10..20]);
    assert_eq!(server.connections(), 2);
}

/// A server that answers one request per connection, as if keeping it
/// alive, and then closes it: what servers do to connections idle past
/// their keep-alive timeout. Counts the connections.
async fn start_closing_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Closed once the client has put the connection back.
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_used() {
    let (addr, connections) = start_closing_server().await;
    let url = Url::parse(&format!("http://{addr}/f")).unwrap();
    let p = http();
    for _ in 0..3 {
        let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
        assert_eq!(take_exactly(fetched.body, 2).await, b"ok");
        // Time for the close to arrive.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn range_ignored_falls_back_to_offset_zero() {
    let server = start(routes(), None).await;
    let p = http();
    let fetched = p
        .fetch(&server.url("/norange"), ByteRange::from(500), None)
        .await
        .unwrap();
    assert_eq!(fetched.offset, 0);
    assert!(!fetched.meta.ranges);
    assert_eq!(fetched.meta.size, Some(1000));
    assert_eq!(collect(fetched.body).await.unwrap(), content());
}

#[tokio::test]
async fn zero_byte_file_and_already_complete() {
    let server = start(routes(), None).await;
    let p = http();
    let fetched = p
        .fetch(&server.url("/empty"), ByteRange::from(0), None)
        .await
        .unwrap();
    assert_eq!(fetched.meta.size, Some(0));
    assert!(fetched.meta.ranges);
    assert_eq!(fetched.offset, 0);
    assert!(collect(fetched.body).await.unwrap().is_empty());

    let done = p
        .fetch(&server.url("/file"), ByteRange::from(1000), None)
        .await
        .unwrap();
    assert_eq!(done.meta.size, Some(1000));
    assert_eq!(done.offset, 1000);
    assert!(collect(done.body).await.unwrap().is_empty());

    let err = p
        .fetch(&server.url("/file"), ByteRange::from(2000), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("HTTP 416"), "{err}");
}

#[tokio::test]
async fn status_errors_are_classified() {
    let server = start(routes(), None).await;
    let p = http();
    let err = p
        .fetch(&server.url("/busy"), ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        err.to_string().contains("HTTP 503 Service Unavailable"),
        "{err}"
    );

    let err = p
        .fetch(&server.url("/missing"), ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(!err.is_retryable());

    let err = p
        .fetch(&server.url("/loop"), ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(!err.is_retryable());
}

/// A stale validator: the request is conditional (`If-Range`), and the
/// answer reports the version found, whether the server honours `If-Range`
/// (200, the whole file) or not (206). Refusing it is the engine's part
/// (`the_engine_refuses_a_part_of_another_version`).
#[tokio::test]
async fn a_stale_validator_gets_the_current_version_reported() {
    let server = start(routes(), None).await;
    let p = http();
    let old = Validator {
        etag: Some("\"v0\"".into()),
        modified: None,
    };
    let whole = p
        .fetch(&server.url("/file"), ByteRange::from(100), Some(&old))
        .await
        .unwrap();
    assert_eq!(server.seen()[0].headers["if-range"], "\"v0\"");
    assert_eq!(whole.offset, 0);
    assert_eq!(whole.meta.validator.etag.as_deref(), Some(ETAG));
    assert_eq!(collect(whole.body).await.unwrap(), content());

    let part = p
        .fetch(
            &server.url("/no-if-range"),
            ByteRange::from(100),
            Some(&old),
        )
        .await
        .unwrap();
    assert_eq!(part.offset, 100);
    assert_eq!(part.meta.validator.etag.as_deref(), Some(ETAG));

    let same = Validator {
        etag: Some(ETAG.into()),
        modified: None,
    };
    let fetched = p
        .fetch(&server.url("/file"), ByteRange::from(100), Some(&same))
        .await
        .unwrap();
    assert_eq!(fetched.offset, 100);
    assert_eq!(collect(fetched.body).await.unwrap(), content()[100..]);
}

/// `HEAD` describes version 1 and every `GET` serves version 2 (the same
/// bytes): with `resume`, the engine asks for the body with the validator
/// of the `HEAD`, and refuses the answer, from a server that honours
/// `If-Range` (200) or not (206), leaving nothing on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_a_part_of_another_version() {
    let moving: Handler = Arc::new(|seen: &Seen| {
        let mut seen = seen.clone();
        if seen.uri.path() == "/ignores-if-range" {
            seen.headers.remove("if-range");
        }
        let etag = if seen.method == Method::HEAD {
            "\"v1\""
        } else {
            "\"v2\""
        };
        serve_file(&seen, &content(), etag)
    });
    let server = start(moving, None).await;
    for path in ["/honours-if-range", "/ignores-if-range"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = pymatris_core::camino::Utf8Path::from_path(tmp.path()).unwrap();
        let config = pymatris_core::Config::default().resume(true).max_tries(1);
        let mut dl = pymatris_core::Downloader::builder(config)
            .protocol(pymatris_proto_http::PLUGIN)
            .build();
        dl.enqueue_file(server.url(path).as_str(), dir);
        let results = dl.download().await;
        assert!(results.success.is_empty(), "{path}: {results}");
        let failed = &results.errors[0];
        assert_eq!(
            failed.error.kind(),
            ErrorKind::Changed,
            "{path}: {}",
            failed.error
        );
        assert!(!failed.error.is_retryable());
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "{path}");
    }
    let gets = server
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET);
    assert!(gets.clone().count() >= 2);
    assert!(gets.into_iter().all(|s| s.headers["if-range"] == "\"v1\""));
}

#[tokio::test]
async fn stat_uses_head_and_falls_back_to_get() {
    let server = start(routes(), None).await;
    let p = http();
    let meta = p.stat(&server.url("/file")).await.unwrap();
    assert_eq!(meta.size, Some(1000));
    assert!(meta.ranges);
    assert_eq!(meta.validator.etag.as_deref(), Some(ETAG));
    assert_eq!(meta.filename.as_deref(), Some("naïve.txt"));

    let meta = p.stat(&server.url("/nohead")).await.unwrap();
    assert_eq!(meta.size, Some(1000));
    assert!(meta.ranges);
    let seen = server.seen();
    let tail: Vec<_> = seen.iter().rev().take(2).rev().collect();
    assert_eq!(tail[0].method, Method::HEAD);
    assert_eq!(tail[1].method, Method::GET);
    assert_eq!(tail[1].headers["range"], "bytes=0-0");

    let before = server.seen().len();
    let err = p.stat(&server.url("/missing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        server.seen().len(),
        before + 1,
        "no GET after a 404 to HEAD"
    );

    let meta = p.stat(&server.url("/empty")).await.unwrap();
    assert_eq!(meta.size, Some(0));
}

#[tokio::test]
async fn redirects_keep_credentials_on_their_origin() {
    let a = start(routes(), None).await;
    let b = start(routes(), None).await;
    let mut cfg = ProtocolConfig::default();
    cfg.set(
        HttpOptions::default()
            .header("Cookie", "session=s3cret")
            .header("X-Api-Key", "k3y"),
    );
    let p = HttpProtocol::new(&cfg).unwrap();

    // Same origin: credentials follow.
    let url = Url::parse(&format!("http://user:pw@{}/redirect?/echo", a.addr)).unwrap();
    let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    assert_eq!(collect(fetched.body).await.unwrap(), b"ok");
    let seen = a.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].headers.contains_key("authorization"));
    assert!(seen[1].headers.contains_key("cookie"));
    assert!(seen[1].headers.contains_key("x-api-key"));

    // Another port: they do not, nor any other header of the user's,
    // which may hold a token as well.
    let target = format!("http://{}/echo", b.addr);
    let url = Url::parse(&format!("http://user:pw@{}/redirect?{target}", a.addr)).unwrap();
    let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    assert_eq!(
        fetched.meta.final_url.as_ref().map(Url::as_str),
        Some(target.as_str())
    );
    assert_eq!(collect(fetched.body).await.unwrap(), b"ok");
    let first = a.seen().last().unwrap().clone();
    assert!(first.headers.contains_key("authorization"));
    let seen = b.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("authorization"));
    assert!(!seen[0].headers.contains_key("cookie"));
    assert!(!seen[0].headers.contains_key("x-api-key"));
}

#[tokio::test]
async fn connection_failures_are_retryable_network_errors() {
    // A port that was just free.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let p = http();
    let url = Url::parse(&format!("http://u:hunter2@{addr}/x")).unwrap();
    let err = p.fetch(&url, ByteRange::from(0), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert!(err.is_retryable());
    assert!(std::error::Error::source(&err).is_some());
    assert!(!err.chain().contains("hunter2"), "{}", err.chain());
}

#[tokio::test]
async fn a_short_body_is_truncated_and_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-999/1000\r\nContent-Length: 1000\r\n\r\n")
            .await
            .unwrap();
        stream.write_all(&[7u8; 500]).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let p = http();
    let url = Url::parse(&format!("http://{addr}/f")).unwrap();
    let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    let mut body = fetched.body;
    let mut got = 0;
    let err = loop {
        match body.next().await {
            Some(Ok(chunk)) => got += chunk.len(),
            Some(Err(err)) => break err,
            None => panic!("the body ended without an error after {got} bytes"),
        }
    };
    assert_eq!(got, 500);
    assert_eq!(err.kind(), ErrorKind::Truncated);
    assert!(err.is_retryable());
}

/// The engine bounds the transfers to a host (`max_per_host`), keyed by
/// host and port, for every protocol alike; a second bound here, keyed
/// otherwise, could disagree with it. The protocol only sizes its pool of
/// idle connections from the setting.
#[tokio::test]
async fn max_per_host_is_left_to_the_engine() {
    let server = start(routes(), None).await;
    let mut cfg = ProtocolConfig::default();
    cfg.max_per_host = Some(1);
    let p = Arc::new(HttpProtocol::new(&cfg).unwrap());
    let first = p
        .fetch(&server.url("/file"), ByteRange::from(0), None)
        .await
        .unwrap();
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        p.fetch(&server.url("/file"), ByteRange::from(0), None),
    )
    .await
    .expect("the second request waited for the first body")
    .unwrap();
    assert_eq!(second.offset, 0);
    drop(first);
}

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pymatris test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
    .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

#[tokio::test]
async fn https_trusts_ca_certs_and_nothing_else() {
    let pki = pki();
    let server = start(routes(), Some(pki.server.clone())).await;
    let url = Url::parse(&format!("https://localhost:{}/file", server.addr.port())).unwrap();

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(pki.ca_pem.as_bytes()).unwrap();
    let mut cfg = ProtocolConfig::default();
    cfg.ca_certs = vec![ca_file.path().to_owned()];
    let trusted = HttpProtocol::new(&cfg).unwrap();
    let fetched = trusted
        .fetch(&url, ByteRange::new(10, 20), None)
        .await
        .unwrap();
    assert_eq!(fetched.offset, 10);
    assert_eq!(collect(fetched.body).await.unwrap(), content()[10..20]);

    let err = http()
        .fetch(&url, ByteRange::from(0), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{}", err.chain());
    assert!(!err.is_retryable());

    let mut cfg = ProtocolConfig::default();
    cfg.insecure = true;
    let insecure = HttpProtocol::new(&cfg).unwrap();
    let fetched = insecure
        .fetch(&url, ByteRange::from(0), None)
        .await
        .unwrap();
    assert_eq!(collect(fetched.body).await.unwrap(), content());
}

/// The https:// client is built on the first https:// request; a redirect
/// from http:// must reach it, and the plain one must go on working.
#[tokio::test]
async fn a_redirect_from_http_to_https_is_followed() {
    let pki = pki();
    let secure = start(routes(), Some(pki.server.clone())).await;
    let plain = start(routes(), None).await;
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(pki.ca_pem.as_bytes()).unwrap();
    let mut cfg = ProtocolConfig::default();
    cfg.ca_certs = vec![ca_file.path().to_owned()];
    let p = HttpProtocol::new(&cfg).unwrap();

    let target = format!("https://localhost:{}/file", secure.addr.port());
    let url = Url::parse(&format!("http://{}/redirect?{target}", plain.addr)).unwrap();
    let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    assert_eq!(collect(fetched.body).await.unwrap(), content());
    assert_eq!(secure.seen().len(), 1);

    let url = Url::parse(&format!("http://{}/file", plain.addr)).unwrap();
    let fetched = p.fetch(&url, ByteRange::new(0, 10), None).await.unwrap();
    assert_eq!(collect(fetched.body).await.unwrap(), content()[..10]);
}

#[tokio::test]
async fn a_missing_ca_file_is_an_error() {
    let mut cfg = ProtocolConfig::default();
    cfg.ca_certs = vec!["/nonexistent/pymatris-ca.pem".into()];
    let err = HttpProtocol::new(&cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
}

/// A forward proxy: absolute-form requests are answered directly with what
/// was asked; `CONNECT` opens a tunnel to the named host.
async fn start_proxy() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = server_log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    log.lock().unwrap().push(Seen {
                        method: req.method().clone(),
                        uri: req.uri().clone(),
                        headers: req.headers().clone(),
                    });
                    async move {
                        if req.method() == Method::CONNECT {
                            let target = req.uri().authority().unwrap().to_string();
                            tokio::spawn(async move {
                                let upgraded = hyper::upgrade::on(req).await.unwrap();
                                let mut upstream = TcpStream::connect(target).await.unwrap();
                                let _ = tokio::io::copy_bidirectional(
                                    &mut TokioIo::new(upgraded),
                                    &mut upstream,
                                )
                                .await;
                            });
                            Ok::<_, Infallible>(response(200, &[], ""))
                        } else {
                            Ok(response(200, &[], format!("proxied {}", req.uri())))
                        }
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, log)
}

#[tokio::test]
async fn proxies_http_in_absolute_form_and_https_through_connect() {
    let (proxy, log) = start_proxy().await;
    let mut cfg = ProtocolConfig::default();
    cfg.set(HttpOptions::default().proxy(Some(format!("http://pu:pp@{proxy}"))));
    let p = HttpProtocol::new(&cfg).unwrap();

    let url = Url::parse("http://pymatris.invalid/some/file").unwrap();
    let fetched = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    assert_eq!(
        collect(fetched.body).await.unwrap(),
        b"proxied http://pymatris.invalid/some/file"
    );
    let seen = log.lock().unwrap().last().unwrap().clone();
    // "pu:pp"
    assert_eq!(seen.headers["proxy-authorization"], "Basic cHU6cHA=");

    let pki = pki();
    let server = start(routes(), Some(pki.server.clone())).await;
    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(pki.ca_pem.as_bytes()).unwrap();
    cfg.ca_certs = vec![ca_file.path().to_owned()];
    let p = HttpProtocol::new(&cfg).unwrap();
    let url = Url::parse(&format!("https://localhost:{}/file", server.addr.port())).unwrap();
    let fetched = p.fetch(&url, ByteRange::new(0, 10), None).await.unwrap();
    assert_eq!(collect(fetched.body).await.unwrap(), content()[..10]);
    let seen = log.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.method, Method::CONNECT);
    assert_eq!(seen.headers["proxy-authorization"], "Basic cHU6cHA=");
    // The origin never saw the proxy's credentials.
    assert!(!server.seen()[0].headers.contains_key("proxy-authorization"));
}

#[tokio::test]
async fn dns_failures_are_retryable_network_errors() {
    let p = http();
    let url = Url::parse("http://pymatris-test.invalid/x").unwrap();
    let err = p.fetch(&url, ByteRange::from(0), None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{}", err.chain());
    assert!(err.is_retryable());
}
