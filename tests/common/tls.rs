//! The test TLS server configuration, shared by the tests' fake provider
//! and the benchmark's: the certificate for 127.0.0.1 in
//! `tests/fixtures/tls` (a test-only CA, trusted through `SSL_CERT_FILE`).

use std::sync::Arc;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// The CA file that makes the certificate trusted.
pub const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");

/// A TLS acceptor offering `alpn` (e.g. `["h2", "http/1.1"]`).
pub fn acceptor(alpn: &[&str]) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(format!("{DIR}/server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{DIR}/server.key")).unwrap();
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}
