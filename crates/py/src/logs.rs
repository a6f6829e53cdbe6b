//! The engine's `tracing` events, delivered to Python's `logging` logger
//! `"pymatris"` with passwords hidden.
//!
//! Events happen on the engine's threads, which do not hold the GIL; they
//! are queued here and handed to the logger by the thread that waits for
//! the download, ten times a second. Only the levels the logger would
//! emit are queued, so a quiet logger costs the engine nothing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, Once};

use pyo3::prelude::*;
use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// The most events kept between two deliveries; beyond it they are counted
/// and dropped, so a flood of logs cannot eat the memory.
const MAX_QUEUED: usize = 10_000;

/// The least severe level queued, as a Python `logging` level (10 DEBUG
/// ... 50 CRITICAL); nothing is queued before [`start`].
static MIN_LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);

struct Queue {
    events: VecDeque<(u8, String)>,
    dropped: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    events: VecDeque::new(),
    dropped: 0,
});

/// Passwords of the URLs and values of the secret headers seen so far,
/// hidden from every message.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers the secrets among `urls` (their passwords, as written and
/// decoded) and `headers` (values of the headers that carry credentials).
pub(crate) fn add_secrets<'a>(urls: impl Iterator<Item = &'a str>, headers: &[(String, String)]) {
    let mut found = Vec::new();
    for url in urls {
        if let Ok(url) = pymatris_core::Url::parse(url)
            && let Some(password) = url.password()
        {
            found.push(password.to_owned());
            let decoded: Vec<u8> = percent_decode(password);
            found.push(String::from_utf8_lossy(&decoded).into_owned());
        }
    }
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let secret = ["authorization", "cookie", "token", "key", "secret", "auth"]
            .iter()
            .any(|word| name.contains(word));
        if secret {
            found.push(value.clone());
            // `Bearer abc`: the credential alone may be logged too.
            if let Some((_, rest)) = value.split_once(' ') {
                found.push(rest.to_owned());
            }
        }
    }
    found.retain(|s| s.len() >= 3);
    if found.is_empty() {
        return;
    }
    let mut secrets = SECRETS.lock().expect("secrets poisoned");
    for s in found {
        if !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    // Longest first, so that a secret containing another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// `text` with every known secret replaced by `***`, and the password of
/// any URL in it too.
pub(crate) fn redact(text: &str) -> String {
    let mut out: String = text
        .split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                pymatris_core::redact_url_str(word)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    for secret in SECRETS.lock().expect("secrets poisoned").iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// Python's `logging` level for a `tracing` level.
fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The layer that queues the engine's events.
struct ToPython;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ToPython {
    fn register_callsite(
        &self,
        _meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // The logger's level may change between downloads: ask each time.
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        meta.target().starts_with("pymatris")
            && python_level(meta.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let level = python_level(event.metadata().level());
        let mut queue = QUEUE.lock().expect("log queue poisoned");
        if queue.events.len() >= MAX_QUEUED {
            queue.dropped += 1;
        } else {
            queue.events.push_back((level, text.0));
        }
    }
}

/// An event's message and fields, as `message key=value ...`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Installs the layer (once per process; another subscriber already set
/// globally keeps its place) and reads the level of the `"pymatris"`
/// logger. Returns the logger.
pub(crate) fn start(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(ToPython);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let logger = py
        .import("logging")?
        .call_method1("getLogger", ("pymatris",))?;
    let level: i64 = logger.call_method0("getEffectiveLevel")?.extract()?;
    MIN_LEVEL.store(level.clamp(1, 255) as u8, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    Ok(logger)
}

/// Hands the queued events to `logger`.
pub(crate) fn flush(py: Python<'_>, logger: &Bound<'_, PyAny>) {
    let (events, dropped) = {
        let mut queue = QUEUE.lock().expect("log queue poisoned");
        (
            std::mem::take(&mut queue.events),
            std::mem::take(&mut queue.dropped),
        )
    };
    let _ = py;
    for (level, text) in events {
        // A failing handler is logging's business (it prints its own
        // traceback); the download goes on.
        let _ = logger.call_method1("log", (level, redact(&text)));
    }
    if dropped > 0 {
        let _ = logger.call_method1(
            "log",
            (
                30,
                format!("{dropped} log messages dropped (too many at once)"),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_url_passwords_and_secret_headers() {
        add_secrets(
            ["sftp://belle:s3cr%40t@host/f", "https://h/x"].into_iter(),
            &[
                ("Authorization".to_owned(), "Bearer tok123".to_owned()),
                ("X-Plain".to_owned(), "visible".to_owned()),
            ],
        );
        let text =
            redact("connecting ftp://bob:pw99@h/x with s3cr@t, s3cr%40t, tok123 and visible");
        assert_eq!(
            text,
            "connecting ftp://bob:***@h/x with ***, ***, *** and visible"
        );
    }
}
