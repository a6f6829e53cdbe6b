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
    /// case, and the port written or implied, are one host.
    pub(super) fn semaphore(&self, url: &Url) -> Arc<Semaphore> {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default().to_ascii_lowercase(),
            url.port_or_known_default().unwrap_or(0)
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
        let semaphore = hosts.semaphore(url);
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
        let at = |u: &str| slots.semaphore(&Url::parse(u).unwrap());
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
                .semaphore(&Url::parse("ftp://h/").unwrap())
                .available_permits(),
            1
        );
    }
}
