//! The per-host connection limit (`max_per_host`): one semaphore per host
//! and port, shared by every file of the batch, so that the parts of many
//! files together never open more connections to a host than allowed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use super::batch::Batch;
use crate::error::{Error, ErrorKind, Result};

/// One semaphore per host (and port) for `--max-per-host`.
pub(super) struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSlots {
    pub(super) fn new(per_host: usize) -> Self {
        HostSlots {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of the URL's host and port: the host's name in any
    /// case, and the port written or implied, are one host. The protocol's
    /// `default_port` comes first: the `url` crate knows none for `sftp`
    /// or `ftps`.
    pub(super) fn semaphore(&self, url: &Url, default_port: Option<u16>) -> Arc<Semaphore> {
        let port = url.port().or(default_port).or(url.port_or_known_default());
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            port.unwrap_or(0)
        );
        let mut hosts = self.hosts.lock().expect("host slots poisoned");
        hosts
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }
}

impl Batch {
    /// A slot for one more transfer to the URL's host, under
    /// `--max-per-host` (`None` without a cap). With `wait`, waits for one;
    /// without, fails with [`ErrorKind::Busy`] when none is free.
    pub(super) async fn slot(&self, url: &Url, wait: bool) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(hosts) = &self.hosts else {
            return Ok(None);
        };
        let default_port = (self.protocols.get(url.scheme()).ok())
            .and_then(|protocol| protocol.default_port(url.scheme()));
        let semaphore = hosts.semaphore(url, default_port);
        if !wait {
            return semaphore
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| Error::new(ErrorKind::Busy, "no free connection slot for this host"));
        }
        tokio::select! {
            () = self.cancel.cancelled() => Err(Error::cancelled()),
            permit = semaphore.acquire_owned() => Ok(permit.ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_semaphore_per_host_and_port() {
        let slots = HostSlots::new(2);
        let at = |u: &str| slots.semaphore(&Url::parse(u).unwrap(), None);
        let a = at("http://Example.org/a");
        assert!(Arc::ptr_eq(&a, &at("http://example.org:80/b")));
        assert!(!Arc::ptr_eq(&a, &at("https://example.org/a")));
        assert!(!Arc::ptr_eq(&a, &at("http://example.org:8080/a")));
        assert!(!Arc::ptr_eq(&a, &at("http://example.net/a")));
        let held = (a.clone().try_acquire_owned(), a.clone().try_acquire_owned());
        assert!(held.0.is_ok() && held.1.is_ok());
        assert!(at("http://EXAMPLE.org/c").try_acquire_owned().is_err());
        // Zero means one.
        assert_eq!(
            HostSlots::new(0)
                .semaphore(&Url::parse("ftp://h/").unwrap(), None)
                .available_permits(),
            1
        );
    }

    #[test]
    fn the_protocols_default_port_is_the_port_of_a_url_without_one() {
        let slots = HostSlots::new(1);
        let at = |u: &str, default| slots.semaphore(&Url::parse(u).unwrap(), default);
        let sftp = at("sftp://h/a", Some(22));
        assert!(Arc::ptr_eq(&sftp, &at("sftp://h:22/b", Some(22))));
        assert!(!Arc::ptr_eq(&sftp, &at("sftp://h:2222/b", Some(22))));
        assert!(Arc::ptr_eq(
            &at("ftps://h/a", Some(990)),
            &at("ftps://h:990/b", None)
        ));
        // A protocol that says nothing leaves it to the `url` crate.
        assert!(Arc::ptr_eq(
            &at("https://h/a", None),
            &at("https://h:443/b", None)
        ));
    }
}
