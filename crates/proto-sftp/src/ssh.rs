//! How pymatris speaks SSH: the algorithms it offers (in the order that
//! moves files fastest on this CPU while offering what OpenSSH offers), the
//! channel window and packet sizes of a throughput client, and the handler
//! that checks the server's host key. Kept apart from the pool in
//! `conn.rs`, which decides how many connections to open and when.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use pymatris_core::Error;
use russh::keys::{Algorithm, PublicKeyOrCertificate};
use russh::{Preferred, cipher, kex, mac};

use crate::known_hosts::Policy;

/// The SSH channel window: one stream moves at most a window per round
/// trip, and the default 2 MiB holds it below a gigabit link's speed on a
/// path of a few tens of milliseconds; 16 MiB keeps such a link full.
const WINDOW: u32 = 16 << 20;

/// The largest SSH packet the server may send us. russh warns above 64 KiB.
const MAX_PACKET: u32 = 65535;

/// Whether this CPU has AES instructions, which make ring's AES-GCM faster
/// than its ChaCha20-Poly1305 (`docs/benchmarks.md`, "Figures behind the
/// code").
pub(crate) fn cpu_has_aes() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Ciphers, fastest first for this CPU.
pub(crate) fn cipher_order(aes_instructions: bool) -> Vec<cipher::Name> {
    let aead = if aes_instructions {
        [
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
        ]
    } else {
        [
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
        ]
    };
    aead.into_iter()
        .chain([
            cipher::AES_128_CTR,
            cipher::AES_192_CTR,
            cipher::AES_256_CTR,
        ])
        .collect()
}

/// Key exchanges: russh's defaults, with the ECDH ones on NIST curves
/// (which OpenSSH's client offers by default, and servers restricted to
/// FIPS algorithms allow alone) after curve25519, as OpenSSH orders them.
/// No SHA-1 exchange: OpenSSH's client offers none.
fn kex_order() -> Vec<kex::Name> {
    let ecdh = [
        kex::ECDH_SHA2_NISTP256,
        kex::ECDH_SHA2_NISTP384,
        kex::ECDH_SHA2_NISTP521,
    ];
    let defaults = Preferred::DEFAULT.kex.to_vec();
    let at = defaults
        .iter()
        .position(|k| *k == kex::DH_GEX_SHA256)
        .unwrap_or(defaults.len());
    let mut out = defaults[..at].to_vec();
    out.extend(ecdh.iter().filter(|k| !defaults.contains(k)).cloned());
    out.extend_from_slice(&defaults[at..]);
    out
}

/// MACs (for the ciphers that are not AEAD): russh's defaults, then
/// HMAC-SHA1, last, as OpenSSH's client offers it: servers restricted to
/// it exist, and it is not broken as a MAC.
fn mac_order() -> Vec<mac::Name> {
    let mut out = Preferred::DEFAULT.mac.to_vec();
    for m in [mac::HMAC_SHA1_ETM, mac::HMAC_SHA1] {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Host key algorithms: those `known_hosts` records for the host first
/// (as OpenSSH orders them), then russh's default order.
fn host_key_order(known: &[Algorithm]) -> Vec<Algorithm> {
    let defaults = Preferred::DEFAULT.key.to_vec();
    let mut out: Vec<Algorithm> = Vec::new();
    for alg in known {
        for candidate in &defaults {
            let same = match (alg, candidate) {
                (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
                (a, b) => a == b,
            };
            if same && !out.contains(candidate) {
                out.push(candidate.clone());
            }
        }
    }
    for candidate in defaults {
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

pub(crate) fn client_config(timeout: Duration, known_algs: &[Algorithm]) -> russh::client::Config {
    let preferred = Preferred {
        cipher: Cow::Owned(cipher_order(cpu_has_aes())),
        key: Cow::Owned(host_key_order(known_algs)),
        kex: Cow::Owned(kex_order()),
        mac: Cow::Owned(mac_order()),
        ..Preferred::DEFAULT
    };
    russh::client::Config {
        client_id: russh::SshId::Standard(Cow::Borrowed(concat!(
            "SSH-2.0-pymatris_",
            env!("CARGO_PKG_VERSION")
        ))),
        window_size: WINDOW,
        maximum_packet_size: MAX_PACKET,
        preferred,
        // A connection kept between files must notice a dead peer: three
        // unanswered keepalives a third of the timeout apart close it.
        keepalive_interval: Some((timeout / 3).max(Duration::from_secs(1))),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

/// The russh client handler: checks the host key against the policy.
pub(crate) struct Client {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) policy: Arc<Policy>,
}

/// What the handler can fail with: russh's errors, or our host-key verdict,
/// which must reach the user whole.
#[derive(Debug)]
pub(crate) enum ClientError {
    Ssh(russh::Error),
    HostKey(Error),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl russh::client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let key = server_public_key.public_key();
        self.policy
            .verify(&self.host, self.port, &key)
            .map(|()| true)
            .map_err(ClientError::HostKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::HashAlg;

    const RSA_VARIANTS: [Option<HashAlg>; 3] = [Some(HashAlg::Sha512), Some(HashAlg::Sha256), None];

    #[test]
    fn aes_gcm_first_with_aes_instructions_chacha_first_without() {
        let with = cipher_order(true);
        assert_eq!(with[0], cipher::AES_128_GCM);
        assert_eq!(with[1], cipher::AES_256_GCM);
        let without = cipher_order(false);
        assert_eq!(without[0], cipher::CHACHA20_POLY1305);
        // Both lists hold the same ciphers, and no CBC or `none`.
        let mut a: Vec<_> = with.iter().map(|n| n.as_ref().to_owned()).collect();
        let mut b: Vec<_> = without.iter().map(|n| n.as_ref().to_owned()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(a.iter().all(|n| !n.contains("cbc") && n != "none"));
    }

    #[test]
    fn known_key_types_come_first() {
        let order = host_key_order(&[Algorithm::Rsa { hash: None }]);
        let rsa: Vec<Algorithm> = RSA_VARIANTS
            .iter()
            .map(|&hash| Algorithm::Rsa { hash })
            .collect();
        assert_eq!(&order[..3], &rsa[..]);
        assert!(order.contains(&Algorithm::Ed25519));
        assert_eq!(host_key_order(&[])[0], Algorithm::Ed25519);
    }

    #[test]
    fn kex_and_macs_offer_what_openssh_offers() {
        let kex = kex_order();
        let at = |n: kex::Name| kex.iter().position(|k| *k == n).unwrap();
        assert_eq!(kex[0], Preferred::DEFAULT.kex[0]);
        assert!(at(kex::CURVE25519) < at(kex::ECDH_SHA2_NISTP256));
        assert!(at(kex::ECDH_SHA2_NISTP521) < at(kex::DH_GEX_SHA256));
        assert!(kex.contains(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT));
        assert!(!kex.iter().any(|k| k.as_ref().ends_with("sha1")));
        let macs = mac_order();
        assert_eq!(macs[0], mac::HMAC_SHA512_ETM);
        assert_eq!(
            &macs[macs.len() - 2..],
            &[mac::HMAC_SHA1_ETM, mac::HMAC_SHA1]
        );
    }

    #[test]
    fn config_is_tuned_for_throughput() {
        let c = client_config(Duration::from_secs(60), &[]);
        assert_eq!(c.window_size, WINDOW);
        assert_eq!(c.keepalive_interval, Some(Duration::from_secs(20)));
        assert!(c.nodelay);
    }
}
