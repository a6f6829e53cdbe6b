//! The TCP layer under TLS: a direct connection, or one through an HTTP
//! proxy (absolute-form requests for `http://`, a `CONNECT` tunnel for
//! `https://`) or a SOCKS5 one (core's dialer, shared with FTP and SFTP).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use pymatris_core::socks::SocksProxy;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects to the destination, or to the proxy the matcher names for it.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
    /// The batch's SOCKS5 proxy, set in the library's config: before the
    /// matcher's, `NO_PROXY` aside.
    socks: Option<SocksProxy>,
    /// Bounds a connection through a SOCKS proxy, handshake included (the
    /// HTTP connector bounds its own).
    timeout: Duration,
}

impl Connector {
    pub(crate) fn new(http: HttpConnector, proxy: Option<Arc<Matcher>>) -> Self {
        Connector {
            http,
            proxy,
            socks: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Connects through `socks` (unless `NO_PROXY` exempts the host), each
    /// connection within `timeout`.
    pub(crate) fn with_socks(mut self, socks: Option<SocksProxy>, timeout: Duration) -> Self {
        self.socks = socks;
        self.timeout = timeout;
        self
    }
}

/// A TCP stream, and whether it goes to a proxy that expects absolute-form
/// requests (plain `http://` through a proxy).
#[derive(Debug)]
pub(crate) struct Conn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let timeout = self.timeout;
        if let Some(socks) = &self.socks
            && !pymatris_core::socks::no_proxy(dst.host().unwrap_or_default())
        {
            return Box::pin(socks_conn(socks.clone(), dst, timeout));
        }
        let intercept = self.proxy.as_ref().and_then(|m| m.intercept(&dst));
        let Some(intercept) = intercept else {
            let connecting = self.http.call(dst);
            return Box::pin(async move {
                let io = connecting.await?;
                Ok(Conn { io, proxied: false })
            });
        };
        let proxy = intercept.uri().clone();
        if let Some(remote_dns) = match proxy.scheme_str() {
            Some("socks5") => Some(false),
            Some("socks5h") => Some(true),
            _ => None,
        } {
            let socks = SocksProxy::new(
                proxy.host().unwrap_or_default(),
                proxy.port_u16(),
                remote_dns,
                intercept.raw_auth(),
            );
            return Box::pin(socks_conn(socks, dst, timeout));
        }
        if proxy.scheme_str() != Some("http") {
            // TLS to the proxy itself is not supported.
            let scheme = proxy.scheme_str().unwrap_or("").to_owned();
            return Box::pin(async move {
                Err(io::Error::other(format!("{scheme}:// proxies are not supported")).into())
            });
        }
        if dst.scheme_str() == Some("https") {
            let mut tunnel = Tunnel::new(proxy, self.http.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            Box::pin(async move {
                let io = tunnel.call(dst).await.map_err(|e| -> BoxError {
                    // hyper-util's TunnelError is not exported: its text is
                    // all there is to tell a 407 from other failures.
                    if e.to_string().ends_with("proxy authorization required") {
                        Box::new(ProxyAuthRequired)
                    } else {
                        Box::new(e)
                    }
                })?;
                Ok(Conn { io, proxied: false })
            })
        } else {
            let connecting = self.http.call(proxy);
            Box::pin(async move {
                let io = connecting.await?;
                Ok(Conn { io, proxied: true })
            })
        }
    }
}

/// A connection to `dst` through `socks`: a plain TCP stream to the
/// server, to hyper (and TLS) as a direct one.
async fn socks_conn(socks: SocksProxy, dst: Uri, timeout: Duration) -> Result<Conn, BoxError> {
    let host = dst.host().unwrap_or_default();
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let tcp = tokio::time::timeout(timeout, socks.connect(host, port))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting through {socks}"),
            )
        })??;
    // Requests are small and each waits for its answer, as on a direct
    // connection.
    let _ = tcp.set_nodelay(true);
    Ok(Conn {
        io: TokioIo::new(tcp),
        proxied: false,
    })
}

/// The proxy answered `407` to `CONNECT`.
#[derive(Debug)]
pub(crate) struct ProxyAuthRequired;

impl std::fmt::Display for ProxyAuthRequired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the proxy requires authentication (HTTP 407)")
    }
}

impl std::error::Error for ProxyAuthRequired {}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
