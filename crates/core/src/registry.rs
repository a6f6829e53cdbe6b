//! Finds the protocol of a URL's scheme among the plugins linked into this
//! build, and builds each at most once per batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::ProtocolConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Protocol, ProtocolPlugin};

/// The schemes that the linked protocol crates serve, sorted.
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

    pub(crate) fn get(&self, scheme: &str) -> Result<Arc<dyn Protocol>> {
        let Some(plugin) = plugin_for(scheme) else {
            let known = schemes().join(", ");
            return Err(Error::new(
                ErrorKind::UnsupportedScheme,
                format!(
                    "`{scheme}://` is not supported by this build of pymatris (it supports: {known})"
                ),
            )
            .retryable(false));
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

    /// core's own test binary links no protocol crate: every scheme is one
    /// this "build" lacks, and the error must say so plainly.
    #[test]
    fn a_scheme_of_a_protocol_not_built_in_is_reported_clearly() {
        let protocols = Protocols::new(ProtocolConfig::default());
        let err = protocols.get("ftp").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedScheme);
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .contains("`ftp://` is not supported by this build of pymatris"),
            "{err}"
        );
    }
}
