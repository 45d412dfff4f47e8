//! TLS with rustls and ring: the serving certificate, and client certificates verified against
//! the front-proxy CA.
//!
//! A client certificate is optional in the handshake (so that `/healthz` answers probes), but
//! one that is presented must chain to the front-proxy CA with the clientAuth usage, or the
//! handshake fails. Every path but the health checks then requires one (see [`crate::auth`]).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {source}")]
    Certificates { path: String, source: rustls_pki_types::pem::Error },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("cannot read the private key from {path}: {source}")]
    Key { path: String, source: rustls_pki_types::pem::Error },
    #[error("the front-proxy CA bundle holds no usable certificate: {0}")]
    ClientCa(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS configuration: its certificate chain and key, and the CAs whose client
/// certificates it accepts. HTTP/2 and HTTP/1.1 are offered.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_pem: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let path = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates { path: path(cert_file), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path(cert_file) });
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|source| TlsError::Key { path: path(key_file), source })?;

    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(client_ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let (added, _ignored) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(TlsError::ClientCa("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The subject common name of a DER certificate; empty when it has none, `None` when the
/// certificate does not parse (rustls parsed it already, so that does not happen).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default();
    Some(cn.to_string())
}
