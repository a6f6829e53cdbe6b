//! Timestamping (`-N`): which local file a request would replace, and the
//! success of a request whose local copy is already up to date, which
//! costs one round trip and no body.

use std::sync::Arc;

use camino::Utf8PathBuf;
use url::Url;

use super::Request;
use super::batch::Batch;
use crate::error::{Error, Result};
use crate::local::LocalCopy;
use crate::naming;
use crate::protocol::{ByteRange, Fetched, Protocol};
use crate::results::Succeeded;

impl Batch {
    /// With timestamping (or for a file of a tree): the regular file at the
    /// name the request gives, or else its URL's, when there is one, with
    /// the rule it is judged by. (A name only the server's answer tells is
    /// compared once that answer is in.)
    pub(super) fn local_copy(
        &self,
        request: &Request,
        url: &Url,
    ) -> Option<(Utf8PathBuf, LocalCopy)> {
        if !self.config.timestamping && !request.mirror {
            return None;
        }
        let name = (request.filename.as_deref())
            .and_then(naming::sanitize_user_filename)
            .or_else(|| naming::filename_from_url(url))?;
        let path = request.dir.join(name);
        let same_time = request.mirror && self.config.mirrors_same_time();
        LocalCopy::of(&path).map(|copy| (path, copy.with_same_time(same_time)))
    }

    /// `Protocol::fetch_if_changed`, bounded by the batch's cancellation.
    pub(super) async fn fetch_if_changed(
        &self,
        protocol: &Arc<dyn Protocol>,
        url: &Url,
        range: ByteRange,
        local: &LocalCopy,
    ) -> Result<Option<Fetched>> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            r = protocol.fetch_if_changed(url, range, local) => r,
        }
    }

    /// The success of a request whose file on disk is up to date.
    pub(super) fn up_to_date(&self, path: Utf8PathBuf, size: u64, shown: &str) -> Succeeded {
        // No later request of the batch gets this name.
        self.names.claim(&path);
        tracing::debug!(url = %shown, %path, "up to date");
        let name = path.file_name().unwrap_or(path.as_str());
        let id = self.reporter.on_start(shown, name, Some(size));
        self.reporter.on_finish(id, None);
        Succeeded {
            path,
            url: shown.to_owned(),
            size,
            up_to_date: true,
            served_by: Vec::new(),
        }
    }
}
