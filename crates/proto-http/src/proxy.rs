//! Which proxy a request goes through: the one the options name (still
//! honouring `NO_PROXY`), else curl's environment variables, through
//! hyper-util's matcher. An HTTP proxy or a SOCKS5 one (`socks5://`, or
//! `socks5h://` where the proxy resolves names).

use std::sync::Arc;

use hyper_util::client::proxy::matcher::Matcher;
use pymatris_core::{Error, ErrorKind, Url, redact_url, redact_url_str};

/// The proxy rules: `proxy` (still honouring `NO_PROXY`), else the
/// `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` variables.
pub(crate) fn matcher(proxy: Option<&str>) -> Result<Option<Arc<Matcher>>, Error> {
    let Some(proxy) = proxy.map(str::trim).filter(|p| !p.is_empty()) else {
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
        .with_source(e)
    })?;
    if !matches!(parsed.scheme(), "http" | "socks5" | "socks5h") {
        return Err(Error::new(
            ErrorKind::UnsupportedScheme,
            format!(
                "proxy {}: only http://, socks5:// and socks5h:// proxies are supported",
                redact_url(&parsed)
            ),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::new(
            ErrorKind::InvalidUrl,
            format!("proxy {} has no host", redact_url(&parsed)),
        ));
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    Ok(Some(Arc::new(
        Matcher::builder().all(full).no(no_proxy).build(),
    )))
}
