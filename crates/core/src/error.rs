//! One error type for every protocol, so the scheduler can decide what to
//! retry without knowing which client library produced the failure.
//!
//! Each protocol crate maps its client's errors into an [`Error`] in one
//! place; the kind says what went wrong, the retryable flag says whether
//! trying again could help, and the source chain keeps the details. What a
//! user could change to make it work is a [`Hint`], not words: only the
//! front end (the CLI, the Python package) knows its own flags and
//! arguments.

use std::fmt;
use std::time::Duration;

/// What went wrong, coarsely enough for a user or a script to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL does not parse, or lacks a part the protocol needs.
    InvalidUrl,
    /// No protocol of this build handles the URL's scheme.
    UnsupportedScheme,
    /// The server says the file does not exist.
    NotFound,
    /// The server refuses access to the file.
    PermissionDenied,
    /// Login or authentication failed.
    Auth,
    /// The server is not the one trusted for its address: its key is
    /// unknown, changed or revoked (an SSH host key), or the record of
    /// trusted keys cannot be read. Failures of TLS, certificates included,
    /// are [`ErrorKind::Tls`].
    PeerIdentity,
    /// The TLS handshake or certificate check failed.
    Tls,
    /// The server answered a range request in a way that cannot be trusted.
    RangeUnsupported,
    /// Connecting, or the connection itself, failed.
    Network,
    /// No byte arrived within the idle timeout.
    Timeout,
    /// The server broke the protocol or answered with an error status.
    Protocol,
    /// The body ended before (or went past) the announced size.
    Truncated,
    /// The remote file changed while it was being downloaded.
    Changed,
    /// Reading or writing the local file failed.
    Io,
    /// The downloaded bytes do not match the expected checksum.
    Checksum,
    /// The download was cancelled (Ctrl-C).
    Cancelled,
    /// The server refused one more connection (FTP 421, a refused connect
    /// while others are open). A part that meets it leaves its range to the
    /// connections the file already has.
    Busy,
}

impl ErrorKind {
    /// Whether an error of this kind is worth retrying when the protocol did
    /// not say otherwise.
    pub fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Network | ErrorKind::Timeout | ErrorKind::Truncated | ErrorKind::Busy
        )
    }

    /// The kind's name for scripts and other front ends (the CLI's
    /// `--json`, the Python package's exceptions): its variant's name,
    /// stable across releases, but `HostKey` for
    /// [`PeerIdentity`](ErrorKind::PeerIdentity), named for the only
    /// identity it covers so far.
    pub fn public_name(self) -> String {
        match self {
            ErrorKind::PeerIdentity => "HostKey".to_owned(),
            other => format!("{other:?}"),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidUrl => "invalid URL",
            ErrorKind::UnsupportedScheme => "unsupported scheme",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Auth => "authentication failed",
            ErrorKind::PeerIdentity => "server identity not verified",
            ErrorKind::Tls => "TLS error",
            ErrorKind::RangeUnsupported => "bad range response",
            ErrorKind::Network => "network error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Protocol => "protocol error",
            ErrorKind::Truncated => "transfer incomplete",
            ErrorKind::Changed => "remote file changed",
            ErrorKind::Io => "local I/O error",
            ErrorKind::Checksum => "checksum mismatch",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Busy => "server busy",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What the user could change for a failed download to work, for a front
/// end to say in its own words (its flag, its argument).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Hint {
    /// The server's TLS certificate is not signed by a trusted CA: trust
    /// the CA that signed it, or turn certificate checks off.
    TrustCa,
    /// The server's SSH host key is not known: once its fingerprint (in the
    /// message) is checked, accept new host keys to record it.
    AcceptNewHostKey,
    /// Host keys cannot be recorded where they usually are (no home
    /// directory): name a known-hosts file.
    KnownHostsFile,
    /// There is nothing to log in with: give a password, a private key, or
    /// load a key into an SSH agent.
    Credentials,
    /// No protocol is registered for this scheme: add the protocol that
    /// handles it.
    EnableProtocol(String),
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of one download, or of one attempt at it.
///
/// Displays as `<kind>: <message>`; the source chain is reachable through
/// [`std::error::Error::source`] and printed whole by `--show-errors`.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: String,
    retry_after: Option<Duration>,
    hint: Option<Hint>,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with a message for the user; retryable when the
    /// kind usually is.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            retryable: kind.default_retryable(),
            message: message.into(),
            retry_after: None,
            hint: None,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides whether trying again could help.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Asks the scheduler to wait at least this long before the next attempt
    /// (an HTTP `Retry-After`).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// Says what the user could change for the download to work.
    pub fn with_hint(mut self, hint: Hint) -> Self {
        self.hint = Some(hint);
        self
    }

    /// What the user could change for the download to work, if the
    /// protocol knows.
    pub fn hint(&self) -> Option<&Hint> {
        self.hint.as_ref()
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether another attempt could succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error and every source under it, joined by `: `.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(err) = cur {
            let text = err.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cur = err.source();
        }
        out
    }

    /// Whether the process (or the system) ran out of file handles
    /// (`EMFILE`, `ENFILE`) somewhere in the chain: a socket, a file, a
    /// pipe that a protocol opened. Not a fault of the server nor of the
    /// file: the scheduler waits for handles to free rather than spend an
    /// attempt on it. Protocol libraries that keep only the text of an
    /// `io::Error` are recognised by it.
    pub fn is_out_of_handles(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        let mut depth = 0;
        while let Some(err) = cur
            && depth < 32
        {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && io.raw_os_error().is_some_and(is_out_of_handles_code)
            {
                return true;
            }
            let text = err.to_string();
            if OUT_OF_HANDLES
                .iter()
                .any(|&code| text.contains(&format!("(os error {code})")))
            {
                return true;
            }
            cur = err.source();
            depth += 1;
        }
        false
    }

    /// The error (or its whole [`chain`](Error::chain)), then what `words`
    /// make of its hint, if any: for a front end that says hints in its
    /// own words (`<error>; <words>`).
    pub fn text_with_hint(
        &self,
        whole_chain: bool,
        words: impl FnOnce(&Hint) -> Option<String>,
    ) -> String {
        let text = if whole_chain {
            self.chain()
        } else {
            self.to_string()
        };
        match self.hint().and_then(words) {
            Some(hint) => format!("{text}; {hint}"),
            None => text,
        }
    }

    /// Adds to the message, keeping the kind and the source.
    pub(crate) fn context(mut self, more: impl fmt::Display) -> Self {
        self.message = if self.message.is_empty() {
            more.to_string()
        } else {
            format!("{}; {more}", self.message)
        };
        self
    }

    pub(crate) fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, format!("{context}: {err}"))
    }

    pub(crate) fn cancelled() -> Self {
        Error::new(ErrorKind::Cancelled, "interrupted by the user")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("message", &self.message)
            .field("retry_after", &self.retry_after)
            .field("hint", &self.hint)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The OS error codes of running out of file handles: `EMFILE` (this
/// process) and `ENFILE` (the system).
#[cfg(unix)]
const OUT_OF_HANDLES: [i32; 2] = [
    rustix::io::Errno::MFILE.raw_os_error(),
    rustix::io::Errno::NFILE.raw_os_error(),
];
/// `ERROR_TOO_MANY_OPEN_FILES`, and `WSAEMFILE` for sockets.
#[cfg(windows)]
const OUT_OF_HANDLES: [i32; 2] = [4, 10024];
#[cfg(not(any(unix, windows)))]
const OUT_OF_HANDLES: [i32; 0] = [];

fn is_out_of_handles_code(code: i32) -> bool {
    OUT_OF_HANDLES.contains(&code)
}

/// The result type of pymatris.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_default_to_the_right_retry_policy() {
        assert!(Error::new(ErrorKind::Network, "reset").is_retryable());
        assert!(Error::new(ErrorKind::Timeout, "idle").is_retryable());
        assert!(!Error::new(ErrorKind::NotFound, "404").is_retryable());
        assert!(!Error::new(ErrorKind::Checksum, "x").is_retryable());
        assert!(
            Error::new(ErrorKind::Protocol, "503")
                .retryable(true)
                .is_retryable()
        );
    }

    #[cfg(unix)]
    #[test]
    fn running_out_of_handles_is_recognised_anywhere_in_the_chain() {
        let emfile = || std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let enfile = std::io::Error::from_raw_os_error(rustix::io::Errno::NFILE.raw_os_error());
        assert!(
            Error::new(ErrorKind::Network, "connect")
                .with_source(emfile())
                .is_out_of_handles()
        );
        assert!(
            Error::new(ErrorKind::Network, "connect")
                .with_source(enfile)
                .is_out_of_handles()
        );
        // Wrapped in another io::Error, or kept only as text.
        let wrapped = std::io::Error::other(emfile());
        assert!(
            Error::new(ErrorKind::Network, "x")
                .with_source(wrapped)
                .is_out_of_handles()
        );
        assert!(Error::io("cannot create a.part", emfile()).is_out_of_handles());
        assert!(!Error::new(ErrorKind::Network, "reset").is_out_of_handles());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(
            !Error::new(ErrorKind::Network, "x")
                .with_source(refused)
                .is_out_of_handles()
        );
    }

    #[test]
    fn a_hint_is_said_in_the_callers_words() {
        let err = Error::new(ErrorKind::Tls, "bad cert").with_hint(Hint::TrustCa);
        let words = |h: &Hint| (*h == Hint::TrustCa).then(|| "trust it".to_owned());
        assert_eq!(
            err.text_with_hint(false, words),
            "TLS error: bad cert; trust it"
        );
        assert_eq!(err.text_with_hint(true, |_| None), "TLS error: bad cert");
        let plain = Error::new(ErrorKind::NotFound, "404");
        assert_eq!(plain.text_with_hint(false, words), "not found: 404");
    }

    #[test]
    fn chain_includes_sources_once() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::new(ErrorKind::Io, "writing a.bin").with_source(io);
        assert_eq!(err.chain(), "local I/O error: writing a.bin: disk on fire");
    }
}
