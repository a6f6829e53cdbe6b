//! How the engine tells a front end about progress, without knowing how it
//! is shown. The CLI draws progress bars with it; a library user may log,
//! or ignore it ([`NoReporter`]).

use crate::error::Error;

/// Identifies one file's download in the callbacks of a [`Reporter`].
pub type ReportId = u64;

/// Callbacks about the files of a batch. All of them may be called from
/// several threads at once.
pub trait Reporter: Send + Sync {
    /// A file's transfer has begun: its URL (passwords redacted), the name
    /// it will have, and its size when known. Returns the id for the other
    /// callbacks.
    fn on_start(&self, url: &str, name: &str, size: Option<u64>) -> ReportId;
    /// `bytes` more bytes of the file were written.
    fn on_progress(&self, id: ReportId, bytes: u64) {
        let _ = (id, bytes);
    }
    /// An attempt failed and another will be made after a wait.
    fn on_retry(&self, id: ReportId, attempt: u32, error: &Error) {
        let _ = (id, attempt, error);
    }
    /// The file is done, well or badly.
    fn on_finish(&self, id: ReportId, error: Option<&Error>);
    /// Bytes already reported were thrown away and will be fetched again.
    fn on_rewind(&self, id: ReportId, bytes: u64) {
        let _ = (id, bytes);
    }
    /// One of the file's URLs, `url` (passwords redacted), is no longer
    /// used for it after `error` (another version, a failure); its other
    /// URLs go on with the file (see `Request::mirrors`).
    fn on_mirror_dropped(&self, id: ReportId, url: &str, error: &Error) {
        let _ = (id, url, error);
    }
}

/// A reporter that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoReporter;

impl Reporter for NoReporter {
    fn on_start(&self, _url: &str, _name: &str, _size: Option<u64>) -> ReportId {
        0
    }
    fn on_finish(&self, _id: ReportId, _error: Option<&Error>) {}
}
