//! What a file is without its body (`HEAD`, or a one-byte `GET` where
//! `HEAD` fails), for a file that may already be complete on disk.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pymatris_core::{ByteRange, Error, ErrorKind, Fetched, RemoteMeta, Url, redact_url};

use crate::body::drain;
use crate::meta::meta_from;
use crate::{HttpProtocol, error, headers};

impl HttpProtocol {
    /// `HEAD`, or a `GET` of the first byte where `HEAD` fails.
    pub(crate) async fn describe(
        &self,
        url: &Url,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<RemoteMeta, Error> {
        match self.head(url, file).await {
            Ok(meta) => Ok(meta),
            Err(err) if head_failure_worth_a_get(&err) => {
                tracing::debug!(url = %redact_url(url), "HEAD failed ({err}); trying a GET");
                self.probe(url, file).await
            }
            Err(err) => Err(err),
        }
    }

    /// `HEAD`: what the headers say of the file.
    async fn head(
        &self,
        url: &Url,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<RemoteMeta, Error> {
        let exchange = self
            .send(&Method::HEAD, url, &HeaderMap::new(), file, false)
            .await?;
        let status = exchange.response.status();
        let headers = exchange.response.headers();
        let result = if status.is_success() {
            let mut meta = meta_from(status, headers, url, &exchange.url);
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
    async fn probe(
        &self,
        url: &Url,
        file: &[(HeaderName, HeaderValue)],
    ) -> Result<RemoteMeta, Error> {
        let range = ByteRange::new(0, 1);
        let Fetched { meta, body, .. } = self.get_all(url, range, None, file).await?;
        if meta.ranges {
            // One byte, or none: read it so the connection is reused.
            drain(body, self.timeout).await;
        }
        Ok(meta)
    }
}

/// Whether a failed `HEAD` may still be answered by a `GET`: a status
/// other than the definite ones (405, 501, 5xx…), or a broken connection.
fn head_failure_worth_a_get(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Protocol | ErrorKind::Network)
}
