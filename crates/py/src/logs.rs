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
use tracing::level_filters::LevelFilter;
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

/// Registers with the core's redaction the secrets among `urls` (their
/// passwords) and `headers` (their values), as the CLI does, so that
/// [`redact`] hides them from every log line.
pub(crate) fn add_secrets<'a>(urls: impl Iterator<Item = &'a str>, headers: &[(String, String)]) {
    for url in urls {
        if let Ok(url) = pymatris_core::Url::parse(url) {
            pymatris_core::register_url_secrets(&url);
        }
    }
    for (_, value) in headers {
        pymatris_core::register_secret(value);
        // `Bearer abc`: the credential may be logged on its own.
        if let Some((_, credential)) = value.split_once(' ') {
            pymatris_core::register_secret(credential.trim());
        }
    }
}

/// `text` with every known secret, URL password and credential hidden.
pub(crate) fn redact(text: &str) -> String {
    pymatris_core::redact_text(text).into_owned()
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

/// Whether the logger would emit an event of the engine's at `meta`.
fn wanted(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("pymatris")
        && python_level(meta.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// The most verbose `tracing` level that a logger at Python level `min`
/// emits.
fn level_filter(min: u8) -> LevelFilter {
    [
        Level::TRACE,
        Level::DEBUG,
        Level::INFO,
        Level::WARN,
        Level::ERROR,
    ]
    .into_iter()
    .find(|l| python_level(l) >= min)
    .map_or(LevelFilter::OFF, LevelFilter::from_level)
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ToPython {
    // Decided once per call site, and for the levels at once, so that an
    // event the logger drops (every event of the libraries below, the
    // engine's debug events at Python's default level) costs what it
    // costs without a subscriber, as in the CLI. [`start`] has tracing
    // decide again when the logger's level may have changed.
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(level_filter(MIN_LEVEL.load(Ordering::Relaxed)))
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        wanted(meta)
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

/// The `"pymatris"` logger, looked up when there is something to log:
/// a script that never imported `logging` does not pay for its import.
pub(crate) struct Logger<'py>(Option<Bound<'py, PyAny>>);

impl<'py> Logger<'py> {
    /// A logger looked up when first needed, for a caller that `start`ed
    /// the logs already.
    pub(crate) fn lazy() -> Self {
        Logger(None)
    }

    fn get(&mut self, py: Python<'py>) -> PyResult<&Bound<'py, PyAny>> {
        if self.0.is_none() {
            let logger = py
                .import("logging")?
                .call_method1("getLogger", ("pymatris",))?;
            self.0 = Some(logger);
        }
        Ok(self.0.as_ref().expect("just set"))
    }
}

/// The level below which `logging` drops the records of a logger nobody
/// configured: WARNING, the root logger's default.
const UNCONFIGURED_LEVEL: u8 = 30;

/// Installs the layer (once per process; another subscriber already set
/// globally keeps its place) and reads the level of the `"pymatris"`
/// logger. When `logging` has not been imported, nothing can have
/// configured it: the level is its default, and `logging` is left
/// unimported until an event at that level comes.
pub(crate) fn start(py: Python<'_>) -> PyResult<Logger<'_>> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(ToPython);
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let imported = py.import("sys")?.getattr("modules")?.contains("logging")?;
    let mut logger = Logger(None);
    let level = if imported {
        let level: i64 = logger
            .get(py)?
            .call_method0("getEffectiveLevel")?
            .extract()?;
        level.clamp(1, 255) as u8
    } else {
        UNCONFIGURED_LEVEL
    };
    MIN_LEVEL.store(level, Ordering::Relaxed);
    tracing::callsite::rebuild_interest_cache();
    Ok(logger)
}

/// Hands the queued events to `logger`.
pub(crate) fn flush<'py>(py: Python<'py>, logger: &mut Logger<'py>) {
    let (events, dropped) = {
        let mut queue = QUEUE.lock().expect("log queue poisoned");
        (
            std::mem::take(&mut queue.events),
            std::mem::take(&mut queue.dropped),
        )
    };
    if events.is_empty() && dropped == 0 {
        return;
    }
    // Without `logging` the records cannot go anywhere: they are dropped,
    // as a logger without a handler would.
    let Ok(logger) = logger.get(py) else {
        return;
    };
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
    fn the_level_filter_follows_the_python_level() {
        assert_eq!(level_filter(1), LevelFilter::TRACE);
        assert_eq!(level_filter(10), LevelFilter::DEBUG);
        assert_eq!(level_filter(15), LevelFilter::INFO);
        assert_eq!(level_filter(30), LevelFilter::WARN);
        assert_eq!(level_filter(40), LevelFilter::ERROR);
        assert_eq!(level_filter(50), LevelFilter::OFF);
        assert_eq!(level_filter(u8::MAX), LevelFilter::OFF);
    }

    #[test]
    fn hides_url_passwords_and_header_values() {
        add_secrets(
            ["sftp://belle:s3cr%40t@host/f", "https://h/x"].into_iter(),
            &[("X-Api".to_owned(), "Bearer tok123".to_owned())],
        );
        let text = redact("connecting ftp://bob:pw99@h/x with s3cr@t, s3cr%40t and tok123");
        assert_eq!(text, "connecting ftp://bob:***@h/x with ***, *** and ***");
    }
}
