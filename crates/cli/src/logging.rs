//! `--verbose`: logs of pymatris and of every library below it on stderr,
//! each line passed through [`pymatris_core::redact_text`] before it is
//! written, so that no password, token or cookie is shown whatever a
//! library chooses to log (suppaftp traces `PASS <password>`) and whatever
//! `RUST_LOG` asks for.

use std::io::Write;

use pymatris_core::Url;
use tracing_subscriber::fmt::MakeWriter;

/// What `--verbose` logs when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "pymatris=debug,pymatris_core=debug,pymatris_proto_http=debug,pymatris_proto_ftp=debug,pymatris_proto_sftp=debug,warn";

/// Starts logging to stderr through the redacting writer.
pub(crate) fn init() {
    tracing_subscriber::fmt()
        .with_writer(RedactedStderr)
        // Colour codes could split a field's name from its value and hide
        // it from the patterns of the redaction.
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_FILTER.into()),
        )
        .init();
}

/// Registers the secrets the command line holds (URL passwords, including
/// the proxy's, and the values of `-H` headers) so that the logs hide them
/// by value too.
pub(crate) fn register_secrets<'a>(
    urls: impl IntoIterator<Item = &'a str>,
    headers: &[(String, String)],
) {
    let proxies = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .filter_map(|name| std::env::var(name).ok());
    for url in urls.into_iter().map(str::to_owned).chain(proxies) {
        let with_scheme = if url.contains("://") {
            url
        } else {
            format!("http://{url}")
        };
        if let Ok(parsed) = Url::parse(&with_scheme) {
            pymatris_core::register_url_secrets(&parsed);
        }
    }
    for (_, value) in headers {
        pymatris_core::register_secret(value);
        // `Bearer TOKEN`, `Basic CREDENTIALS`: the credential alone, as a
        // library may show it.
        if let Some((_, credential)) = value.trim().rsplit_once(' ') {
            pymatris_core::register_secret(credential);
        }
    }
}

/// Makes one [`RedactedEvent`] per log event.
struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedEvent;

    fn make_writer(&'a self) -> RedactedEvent {
        RedactedEvent(Vec::new())
    }
}

/// One formatted event, written to stderr, redacted, when dropped: the
/// whole event at once, so that no secret is cut in two between writes.
struct RedactedEvent(Vec<u8>);

impl Write for RedactedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedEvent {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let shown = pymatris_core::redact_text(&text);
        // A closed stderr loses the log, never the run.
        let _ = std::io::stderr().lock().write_all(shown.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_redacted_as_a_whole() {
        register_secrets(
            ["ftp://bob:Cli-S3cret@h/x"],
            &[("X-Api-Key".into(), "Bearer tok-S3cret".into())],
        );
        for secret in ["Cli-S3cret", "tok-S3cret", "Bearer tok-S3cret"] {
            assert_eq!(
                pymatris_core::redact_text(&format!("> {secret} <")),
                "> *** <"
            );
        }
        let mut event = RedactedStderr.make_writer();
        event.write_all(b"CC OUT: PA").unwrap();
        event.write_all(b"SS hunter2\n").unwrap();
        assert_eq!(
            pymatris_core::redact_text(&String::from_utf8_lossy(&event.0)),
            "CC OUT: PASS ***\n"
        );
    }
}
