//! pymatris-tls: the rustls client configuration that HTTPS and FTPS share:
//! system roots plus `--ca-cert`, or no verification at all under
//! `--insecure`; always the ring provider, so nothing depends on a
//! process-wide default being installed. Each protocol adds what is its own
//! (ALPN for HTTP, a session cache per control connection for FTPS).

#![warn(missing_docs, missing_debug_implementations)]

use std::sync::Arc;

use pymatris_core::{Error, ErrorKind, ProtocolConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS configuration for `cfg`.
pub fn client_config(cfg: &ProtocolConfig) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Tls, "setting up TLS").with_source(e))?;
    let verifier: Arc<dyn ServerCertVerifier> = if cfg.insecure {
        tracing::debug!("TLS certificate verification is off (--insecure)");
        Arc::new(FixedVerdict {
            accept: true,
            algorithms: provider.signature_verification_algorithms,
        })
    } else {
        let roots = root_store(cfg)?;
        if roots.is_empty() {
            // No trust anchor at all (no system store, no --ca-cert): every
            // certificate fails, but plain http:// and ftp:// still work.
            tracing::warn!("no trusted CA certificates found; TLS downloads will fail");
            Arc::new(FixedVerdict {
                accept: false,
                algorithms: provider.signature_verification_algorithms,
            })
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| {
                    Error::new(ErrorKind::Tls, "setting up certificate verification").with_source(e)
                })?
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The system's roots plus every certificate of every `--ca-cert` file.
fn root_store(cfg: &ProtocolConfig) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!("loading system CA certificates: {err}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!("{added} system CA certificates loaded, {ignored} unparsable ones ignored");

    for path in &cfg.ca_certs {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|e| {
                Error::new(
                    ErrorKind::Tls,
                    format!("bad CA certificate in {}", path.display()),
                )
                .with_source(e)
            })?;
        }
    }
    Ok(roots)
}

/// Fails as [`client_config`] would on a `--ca-cert` file that is missing,
/// unreadable or holds no PEM certificate, without loading the system's
/// certificates: for a protocol that builds its configuration only when a
/// TLS connection is first needed, yet should report a bad option at once.
pub fn check_ca_certs(cfg: &ProtocolConfig) -> Result<(), Error> {
    if cfg.insecure {
        // `client_config` reads none then.
        return Ok(());
    }
    for path in &cfg.ca_certs {
        read_ca_file(path)?;
    }
    Ok(())
}

/// Every certificate of the PEM file `path` (at least one).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let shown = path.display();
    let io_err = |e: rustls::pki_types::pem::Error| {
        Error::new(
            ErrorKind::Tls,
            format!("reading CA certificates from {shown}"),
        )
        .with_source(e)
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::Tls,
            format!("no PEM certificate found in {shown}"),
        ));
    }
    tracing::debug!("{} CA certificates read from {shown}", certs.len());
    Ok(certs)
}

/// A verifier whose verdict on certificates is fixed: `--insecure` accepts
/// any certificate for any name (the handshake signatures are still
/// checked, so the peer must hold the key of the certificate it sent), and
/// with no trust anchor at all every certificate is of an unknown issuer.
#[derive(Debug)]
struct FixedVerdict {
    accept: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for FixedVerdict {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
