//! Finds the protocol of a URL's scheme among the plugins registered
//! explicitly ([`DownloaderBuilder::protocol`](crate::DownloaderBuilder::protocol))
//! and those linked into the program (`inventory`), and builds each at most
//! once per batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::ProtocolConfig;
use crate::error::{Error, ErrorKind, Hint, Result};
use crate::protocol::{Protocol, ProtocolPlugin};

/// The schemes that the linked protocol crates serve, sorted (protocols
/// registered explicitly with a downloader are not among them).
pub fn schemes() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = inventory::iter::<ProtocolPlugin>
        .into_iter()
        .flat_map(|p| p.schemes.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn plugin_for(scheme: &str) -> Option<&'static ProtocolPlugin> {
    inventory::iter::<ProtocolPlugin>
        .into_iter()
        .find(|p| p.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
}

/// The protocols of one batch, built on first use.
pub(crate) struct Protocols {
    config: ProtocolConfig,
    /// Keyed by the plugin's first scheme, which names it.
    built: Mutex<HashMap<&'static str, Arc<dyn Protocol>>>,
}

impl Protocols {
    pub(crate) fn new(config: ProtocolConfig) -> Self {
        Protocols {
            config,
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The plugin of `scheme`: one registered explicitly first, else a
    /// linked one.
    fn plugin_for(&self, scheme: &str) -> Option<&ProtocolPlugin> {
        (self.config.plugins.iter())
            .find(|p| p.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
            .or_else(|| plugin_for(scheme))
    }

    pub(crate) fn get(&self, scheme: &str) -> Result<Arc<dyn Protocol>> {
        if self.config.plugins.is_empty()
            && inventory::iter::<ProtocolPlugin>
                .into_iter()
                .next()
                .is_none()
        {
            // A program that names a protocol crate only in Cargo.toml
            // links none of it: say how to get one rather than list none.
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!(
                    "`{scheme}://`: no protocol is registered; add a protocol crate \
                     (pymatris-proto-http, pymatris-proto-ftp, pymatris-proto-sftp) and \
                     link it (`use pymatris_proto_http as _;`), or register one with \
                     `Downloader::builder(config).protocol(pymatris_proto_http::PLUGIN)`"
                ),
            ));
        }
        let Some(plugin) = self.plugin_for(scheme) else {
            let mut known = schemes();
            known.extend(
                self.config
                    .plugins
                    .iter()
                    .flat_map(|p| p.schemes.iter().copied()),
            );
            known.sort_unstable();
            known.dedup();
            let known = known.join(", ");
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!("no protocol is registered for `{scheme}://` (registered: {known})"),
            )
            .with_hint(Hint::EnableProtocol(scheme.to_owned())));
        };
        let mut built = self.built.lock().expect("protocol cache poisoned");
        let key = plugin.schemes.first().copied().unwrap_or_default();
        if let Some(p) = built.get(key) {
            return Ok(p.clone());
        }
        let p = (plugin.build)(&self.config)?;
        built.insert(key, p.clone());
        Ok(p)
    }

    /// Closes the idle connections of every protocol built (see
    /// [`Protocol::close`]).
    pub(crate) async fn close(&self) {
        let built: Vec<Arc<dyn Protocol>> = (self.built.lock())
            .expect("protocol cache poisoned")
            .values()
            .cloned()
            .collect();
        futures_util::future::join_all(built.iter().map(|p| p.close())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ByteRange, Fetched, RemoteMeta, Url, Validator};

    #[derive(Debug)]
    struct Nothing;

    #[async_trait::async_trait]
    impl Protocol for Nothing {
        async fn stat(&self, _: &Url) -> Result<RemoteMeta> {
            Ok(RemoteMeta::default())
        }
        async fn fetch(&self, _: &Url, _: ByteRange, _: Option<&Validator>) -> Result<Fetched> {
            Err(Error::new(ErrorKind::NotFound, "nothing here"))
        }
    }

    const MEM: ProtocolPlugin = ProtocolPlugin {
        schemes: &["mem"],
        build: |_| Ok(Arc::new(Nothing)),
    };

    /// core's own test binary links no protocol crate: without one
    /// registered, the error says what to add, not "supports: (nothing)".
    #[test]
    fn an_empty_registry_says_what_to_add() {
        let protocols = Protocols::new(ProtocolConfig::default());
        let err = protocols.get("https").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedScheme);
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("no protocol is registered"), "{text}");
        assert!(text.contains("pymatris-proto-http"), "{text}");
        assert!(text.contains(".protocol("), "{text}");
    }

    #[test]
    fn explicit_protocols_are_found_by_scheme() {
        let mut config = ProtocolConfig::default();
        config.plugins.push(MEM);
        let protocols = Protocols::new(config);
        let first = protocols.get("MEM").unwrap();
        // Built once per batch.
        assert!(Arc::ptr_eq(&first, &protocols.get("mem").unwrap()));
    }

    /// With a protocol registered, a scheme no protocol serves is reported
    /// with those that are.
    #[test]
    fn a_scheme_of_a_protocol_not_built_in_is_reported_clearly() {
        let mut config = ProtocolConfig::default();
        config.plugins.push(MEM);
        let protocols = Protocols::new(config);
        let err = protocols.get("ftp").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedScheme);
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .contains("no protocol is registered for `ftp://`"),
            "{err}"
        );
        assert!(err.to_string().contains("registered: mem"), "{err}");
        assert_eq!(err.hint(), Some(&Hint::EnableProtocol("ftp".into())));
    }
}
