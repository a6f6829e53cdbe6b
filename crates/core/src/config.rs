//! The settings of a download batch: those the scheduler uses
//! ([`Config`]) and those it hands to each protocol ([`ProtocolConfig`]).
//!
//! Core knows only the settings every protocol shares. A protocol crate
//! defines its own options type (HTTP headers, SSH keys, ...) and reads it
//! from the typed slot of [`ProtocolConfig`] ([`ProtocolConfig::get`]), so a
//! new protocol brings its own settings without a change here.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The options of one protocol, stored in a [`ProtocolConfig`] by their
/// type. Any `Debug + Send + Sync + 'static` type qualifies; its `Debug`
/// output shows in logs of the config, so it must hide secrets.
pub trait ProtocolOptions: Any + Send + Sync + fmt::Debug {}

impl<T: Any + Send + Sync + fmt::Debug> ProtocolOptions for T {}

/// Settings every protocol reads when it is built for a batch.
#[derive(Clone)]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Connect, handshake and idle timeout.
    pub timeout: Duration,
    /// Connections to one host (and port) at once, all files together
    /// (`None`: no cap beyond `max_parallel * max_splits`). The engine
    /// enforces it on transfers; a protocol that keeps connections open
    /// between transfers (an FTP session, an SSH connection) bounds the
    /// connections it holds to one host and port by the same number, and
    /// keeps no limit of its own on transfers.
    pub max_per_host: Option<usize>,
    /// Extra CA certificates (PEM files) trusted besides the system roots,
    /// by every protocol that speaks TLS.
    pub ca_certs: Vec<PathBuf>,
    /// Skip the verification of the server's identity (TLS certificates,
    /// SSH host keys).
    pub insecure: bool,
    /// Read credentials from this netrc file (the engine applies them to
    /// URLs without any).
    pub netrc: Option<PathBuf>,
    /// The SOCKS5 proxy every protocol connects through (`None`: the one
    /// `ALL_PROXY` names, if it names one; see [`ProtocolConfig::socks`]).
    pub socks_proxy: Option<crate::socks::SocksProxy>,
    /// Write no local file: the batch is a dry run. A protocol that keeps
    /// state of its own on disk (SFTP's known hosts) uses what is there
    /// and records nothing; a tree's walk makes no directory.
    pub read_only: bool,
    /// The options of each protocol, by type.
    options: HashMap<TypeId, Arc<dyn ProtocolOptions>>,
    /// Protocols registered explicitly, looked up before the linked ones:
    /// a batch's setting like the others, so every copy of the config
    /// downloads with the same protocols.
    pub(crate) plugins: Vec<crate::ProtocolPlugin>,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            timeout: Duration::from_secs(60),
            max_per_host: None,
            ca_certs: Vec::new(),
            insecure: false,
            netrc: None,
            socks_proxy: None,
            read_only: false,
            options: HashMap::new(),
            plugins: Vec::new(),
        }
    }
}

impl ProtocolConfig {
    /// The SOCKS5 proxy for this batch's connections: the one set, else
    /// the one of `ALL_PROXY` (or `all_proxy`) when that is a SOCKS5 URL.
    /// [`socks::dial`](crate::socks::dial) still honours `NO_PROXY`.
    pub fn socks(&self) -> Option<crate::socks::SocksProxy> {
        self.socks_proxy
            .clone()
            .or_else(crate::socks::SocksProxy::from_env)
    }

    /// Stores the options of a protocol, replacing any of the same type.
    pub fn set<T: ProtocolOptions>(&mut self, options: T) -> &mut Self {
        self.options.insert(TypeId::of::<T>(), Arc::new(options));
        self
    }

    /// The options of type `T`, if set. A protocol uses its documented
    /// defaults when they are not.
    pub fn get<T: ProtocolOptions>(&self) -> Option<&T> {
        let options: &dyn Any = self.options.get(&TypeId::of::<T>())?.as_ref();
        options.downcast_ref::<T>()
    }
}

impl fmt::Debug for ProtocolConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: Vec<&dyn ProtocolOptions> = self.options.values().map(Arc::as_ref).collect();
        let registered: Vec<&str> = (self.plugins.iter())
            .flat_map(|p| p.schemes.iter().copied())
            .collect();
        f.debug_struct("ProtocolConfig")
            .field("timeout", &self.timeout)
            .field("max_per_host", &self.max_per_host)
            .field("ca_certs", &self.ca_certs)
            .field("insecure", &self.insecure)
            .field("netrc", &self.netrc)
            .field("socks_proxy", &self.socks_proxy)
            .field("read_only", &self.read_only)
            .field("options", &options)
            .field("registered", &registered)
            .finish()
    }
}

/// The most transfers to a host an adaptive batch grows to when
/// `max_per_host` is not set: aria2's own limit of connections per server,
/// enough for a link that caps each connection at a sixteenth of what it
/// carries, and few enough that a server sees no flood from one client.
pub const DEFAULT_GROWTH_CEILING: usize = 16;

/// The settings of a [`Downloader`](crate::Downloader).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Files downloaded at once.
    pub max_parallel: usize,
    /// Parts of one file fetched at once.
    pub max_splits: usize,
    /// Let the batch run more files at once than `max_parallel` while the
    /// aggregate rate grows with them (see [`Config::adaptive`]).
    pub grow_parallel: bool,
    /// Let a file run more parts at once than `max_splits` while the
    /// aggregate rate grows with them (see [`Config::adaptive`]).
    pub grow_splits: bool,
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
    /// Give each file the remote modification time, when the server tells
    /// it (on by default).
    pub remote_time: bool,
    /// Skip a file whose local copy has the remote size and is not older
    /// than the remote file ([`LocalCopy::is_current`](crate::LocalCopy::is_current)),
    /// and replace one that is out of date.
    pub timestamping: bool,
    /// Verify the digests a server sends of the whole file (HTTP
    /// `Repr-Digest`, `Digest`, `x-amz-checksum-sha256`; on by default).
    pub verify_server_digests: bool,
    /// What the protocols are built with.
    pub protocol: ProtocolConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_parallel: 5,
            max_splits: 5,
            grow_parallel: false,
            grow_splits: false,
            max_tries: 5,
            min_split_size: 1 << 20,
            overwrite: false,
            resume: false,
            max_speed: None,
            fsync: false,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            takeover_after: Duration::from_secs(3),
            remote_time: true,
            timestamping: false,
            verify_server_digests: true,
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
    /// Whether a mirrored file (a tree's, or a request's under
    /// [`Request::mirror`](crate::Request::mirror)) is up to date only at
    /// the remote time itself ([`LocalCopy::same_time`](crate::LocalCopy)):
    /// when copies keep the remote time and timestamping does not rule.
    /// Copies that keep their download time are up to date when not older
    /// than the remote file, or every rerun would fetch them all again.
    pub(crate) fn mirrors_same_time(&self) -> bool {
        self.remote_time && !self.timestamping
    }

    setter!(/// Files downloaded at once (at least 1).
        max_parallel: usize => max_parallel);
    setter!(/// Parts of one file fetched at once (at least 1).
        max_splits: usize => max_splits);
    setter!(/// Let files at once grow past `max_parallel` while it pays.
        grow_parallel: bool => grow_parallel);
    setter!(/// Let parts of a file grow past `max_splits` while it pays.
        grow_splits: bool => grow_splits);

    /// Lets the batch grow the transfers it runs at once, files
    /// (`grow_parallel`) and parts of a file (`grow_splits`), from
    /// `max(max_parallel, max_splits)` while each step up raises the
    /// aggregate rate by at least a tenth, up to `max_per_host` (or
    /// [`DEFAULT_GROWTH_CEILING`] without one). Links that cap each
    /// connection, or whose round trips bound it, then get the connections
    /// they need; a link where the CPU is the bound stays where it is.
    pub fn adaptive(self, on: bool) -> Self {
        self.grow_parallel(on).grow_splits(on)
    }

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
    setter!(/// Give files the remote modification time.
        remote_time: bool => remote_time);
    setter!(/// Skip files whose local copy is up to date, replace older ones.
        timestamping: bool => timestamping);
    setter!(/// Verify the digests servers send.
        verify_server_digests: bool => verify_server_digests);
    setter!(/// Connect, handshake and idle timeout.
        timeout: Duration => protocol.timeout);
    setter!(/// Connections to one host at once.
        max_per_host: Option<usize> => protocol.max_per_host);
    setter!(/// Extra trusted CA certificates (PEM files).
        ca_certs: Vec<PathBuf> => protocol.ca_certs);
    setter!(/// Skip certificate and host key verification.
        insecure: bool => protocol.insecure);
    setter!(/// Use this netrc file for credentials.
        netrc: Option<PathBuf> => protocol.netrc);
    setter!(/// Connect through this SOCKS5 proxy (every protocol).
        socks_proxy: Option<crate::socks::SocksProxy> => protocol.socks_proxy);

    /// Hands `options` to the protocol that reads them (for example
    /// `pymatris_proto_http::HttpOptions`), replacing any of the same type.
    pub fn with<T: ProtocolOptions>(mut self, options: T) -> Self {
        self.protocol.set(options);
        self
    }

    /// The protocol options of type `T`, if set.
    pub fn options<T: ProtocolOptions>(&self) -> Option<&T> {
        self.protocol.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Mine {
        level: u8,
    }

    #[derive(Debug, Clone, PartialEq, Default)]
    struct Other(&'static str);

    #[test]
    fn protocol_options_are_found_by_type() {
        let config = Config::default().with(Mine { level: 3 });
        assert_eq!(config.options::<Mine>(), Some(&Mine { level: 3 }));
        assert_eq!(config.options::<Other>(), None);
        let config = config.with(Other("x")).with(Mine { level: 4 });
        assert_eq!(config.protocol.get::<Mine>(), Some(&Mine { level: 4 }));
        // Clones share nothing the other could change.
        let mut copy = config.clone();
        copy.protocol.set(Other("y"));
        assert_eq!(config.options::<Other>(), Some(&Other("x")));
        assert!(format!("{config:?}").contains("Other(\"x\")"));
    }
}
