//! The settings of a download batch: those the scheduler uses
//! ([`Config`]) and those it hands to each protocol ([`ProtocolConfig`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Settings every protocol reads when it is built for a batch.
#[derive(Clone)]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Connect, handshake and idle timeout.
    pub timeout: Duration,
    /// Connections to one host at once, all files together (`None`: no cap
    /// beyond `max_parallel * max_splits`).
    pub max_per_host: Option<usize>,
    /// Extra HTTP headers, sent with every request to the origin (scheme,
    /// host and port) of the request's URL, and after a redirect to another
    /// origin only when `location_trusted`.
    pub headers: Vec<(String, String)>,
    /// Send the extra headers and the URL's credentials after a redirect to
    /// another origin too (curl's `--location-trusted`).
    pub location_trusted: bool,
    /// The HTTP `User-Agent`.
    pub user_agent: String,
    /// Extra CA certificates (PEM files) trusted besides the system roots.
    pub ca_certs: Vec<PathBuf>,
    /// Skip TLS certificate verification (and SFTP host key checks).
    pub insecure: bool,
    /// An explicit proxy URL for HTTP(S).
    pub proxy: Option<String>,
    /// Read credentials from `~/.netrc` (or this file).
    pub netrc: Option<PathBuf>,
    /// An SSH private key to try first.
    pub identity: Option<PathBuf>,
    /// The SSH `known_hosts` file to check host keys against.
    pub known_hosts: Option<PathBuf>,
    /// Add the keys of unknown SSH hosts to `known_hosts`.
    pub accept_new_host_keys: bool,
    /// Require explicit TLS (`AUTH TLS`) on `ftp://` URLs.
    pub ftp_tls: bool,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            timeout: Duration::from_secs(60),
            max_per_host: None,
            headers: Vec::new(),
            location_trusted: false,
            user_agent: concat!("pymatris/", env!("CARGO_PKG_VERSION")).to_owned(),
            ca_certs: Vec::new(),
            insecure: false,
            proxy: None,
            netrc: None,
            identity: None,
            known_hosts: None,
            accept_new_host_keys: false,
            ftp_tls: false,
        }
    }
}

impl fmt::Debug for ProtocolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may carry tokens (`Authorization`), so only their
        // names are shown.
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ProtocolConfig")
            .field("timeout", &self.timeout)
            .field("max_per_host", &self.max_per_host)
            .field("headers", &header_names)
            .field("location_trusted", &self.location_trusted)
            .field("user_agent", &self.user_agent)
            .field("ca_certs", &self.ca_certs)
            .field("insecure", &self.insecure)
            .field(
                "proxy",
                &self.proxy.as_deref().map(crate::redact::redact_url_str),
            )
            .field("netrc", &self.netrc)
            .field("identity", &self.identity)
            .field("known_hosts", &self.known_hosts)
            .field("accept_new_host_keys", &self.accept_new_host_keys)
            .field("ftp_tls", &self.ftp_tls)
            .finish()
    }
}

/// The settings of a [`Downloader`](crate::Downloader).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Files downloaded at once.
    pub max_parallel: usize,
    /// Parts of one file fetched at once.
    pub max_splits: usize,
    /// Attempts in a row that bring no progress, per part of a file (1: no
    /// retry at all). An attempt that brings new bytes uses up no try.
    pub max_tries: u32,
    /// Never cut a file into parts smaller than this.
    pub min_split_size: u64,
    /// Replace existing files (atomically, once the new one is complete).
    pub overwrite: bool,
    /// Resume partial files and skip complete ones.
    pub resume: bool,
    /// The overall bandwidth cap, in bytes per second.
    pub max_speed: Option<u64>,
    /// `fsync` each file before renaming it into place.
    pub fsync: bool,
    /// The first wait between attempts; it doubles each time, with jitter.
    pub backoff_base: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// A part that has received nothing for this long is taken over by an
    /// idle connection of the same file (when ranges work).
    pub takeover_after: Duration,
    /// What the protocols are built with.
    pub protocol: ProtocolConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_parallel: 5,
            max_splits: 5,
            max_tries: 5,
            min_split_size: 1 << 20,
            overwrite: false,
            resume: false,
            max_speed: None,
            fsync: false,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            takeover_after: Duration::from_secs(3),
            protocol: ProtocolConfig::default(),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty => $($path:ident).+) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$($path).+ = value;
            self
        }
    };
}

impl Config {
    setter!(/// Files downloaded at once (at least 1).
        max_parallel: usize => max_parallel);
    setter!(/// Parts of one file fetched at once (at least 1).
        max_splits: usize => max_splits);
    setter!(/// Attempts in a row without progress, per part (at least 1).
        max_tries: u32 => max_tries);
    setter!(/// The smallest part worth a connection of its own.
        min_split_size: u64 => min_split_size);
    setter!(/// Replace existing files.
        overwrite: bool => overwrite);
    setter!(/// Resume partial downloads, skip complete files.
        resume: bool => resume);
    setter!(/// The overall bandwidth cap, in bytes per second.
        max_speed: Option<u64> => max_speed);
    setter!(/// `fsync` before the final rename.
        fsync: bool => fsync);
    setter!(/// The first backoff between attempts.
        backoff_base: Duration => backoff_base);
    setter!(/// The longest backoff between attempts.
        backoff_max: Duration => backoff_max);
    setter!(/// How long a part may receive nothing before an idle connection
        /// takes over its rest.
        takeover_after: Duration => takeover_after);
    setter!(/// Connect, handshake and idle timeout.
        timeout: Duration => protocol.timeout);
    setter!(/// Connections to one host at once.
        max_per_host: Option<usize> => protocol.max_per_host);
    setter!(/// Extra HTTP headers.
        headers: Vec<(String, String)> => protocol.headers);
    setter!(/// Let extra headers and credentials follow redirects to other
        /// origins.
        location_trusted: bool => protocol.location_trusted);
    setter!(/// The HTTP `User-Agent`.
        user_agent: String => protocol.user_agent);
    setter!(/// Extra trusted CA certificates (PEM files).
        ca_certs: Vec<PathBuf> => protocol.ca_certs);
    setter!(/// Skip certificate and host key verification.
        insecure: bool => protocol.insecure);
    setter!(/// An HTTP(S) proxy.
        proxy: Option<String> => protocol.proxy);
    setter!(/// Use this netrc file for credentials.
        netrc: Option<PathBuf> => protocol.netrc);
    setter!(/// An SSH private key.
        identity: Option<PathBuf> => protocol.identity);
    setter!(/// The SSH `known_hosts` file.
        known_hosts: Option<PathBuf> => protocol.known_hosts);
    setter!(/// Add unknown SSH host keys to `known_hosts`.
        accept_new_host_keys: bool => protocol.accept_new_host_keys);
    setter!(/// Require `AUTH TLS` on `ftp://`.
        ftp_tls: bool => protocol.ftp_tls);
}
