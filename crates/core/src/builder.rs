//! An explicit way to say which protocols a [`Downloader`] uses, beside the
//! protocol crates linked into the program: naming a protocol crate in
//! `Cargo.toml` alone links none of it, and its `inventory` registration
//! silently goes missing. Registering it here names it, so it is linked.

use std::fmt;
use std::sync::Arc;

use crate::{Config, Downloader, ProtocolPlugin, Reporter};

impl Downloader {
    /// A builder for a downloader with these settings, to which protocols
    /// and a reporter can be added:
    ///
    /// ```
    /// # use pymatris_core::{Config, Downloader, ProtocolPlugin};
    /// # const PLUGIN: ProtocolPlugin = ProtocolPlugin { schemes: &["x"], build: |_| unimplemented!() };
    /// let dl = Downloader::builder(Config::default())
    ///     .protocol(PLUGIN) // e.g. pymatris_proto_http::PLUGIN
    ///     .build();
    /// ```
    pub fn builder(config: Config) -> DownloaderBuilder {
        DownloaderBuilder {
            config,
            reporter: None,
        }
    }
}

/// Builds a [`Downloader`]; see [`Downloader::builder`].
#[must_use]
pub struct DownloaderBuilder {
    config: Config,
    reporter: Option<Arc<dyn Reporter>>,
}

impl fmt::Debug for DownloaderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloaderBuilder")
            .field("config", &self.config)
            .field("reporter", &self.reporter.is_some())
            .finish()
    }
}

impl DownloaderBuilder {
    /// Serves the plugin's schemes with it, before any linked protocol of
    /// the same scheme.
    pub fn protocol(mut self, plugin: ProtocolPlugin) -> Self {
        self.config.protocol.plugins.push(plugin);
        self
    }

    /// Reports progress to `reporter`.
    pub fn reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// The downloader.
    pub fn build(self) -> Downloader {
        let dl = Downloader::new(self.config);
        match self.reporter {
            Some(reporter) => dl.with_reporter(reporter),
            None => dl,
        }
    }
}
