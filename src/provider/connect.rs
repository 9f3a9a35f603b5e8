//! Opening a connection to one provider: TCP with TCP_NODELAY, then on
//! https TLS offering the given protocols by ALPN. The HTTP/1.1 and HTTP/2
//! clients ([`super::http1`], [`super::http2`]) speak over what it opens.

use crate::domain::Provider;
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, ClientConfig, pki_types::ServerName},
};

/// A connection's byte stream, plain or TLS. Boxed where it is kept:
/// hyper stores the stream's type inline in what it spawns per call, and a
/// TLS stream there (~2 KiB of rustls state) would cost every call 2 KiB.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// ALPN protocol ids.
pub(crate) const H2: &[u8] = b"h2";
pub(crate) const HTTP1: &[u8] = b"http/1.1";

/// An open connection, and whether TLS agreed on HTTP/2.
pub(crate) struct Opened {
    pub(crate) io: Box<dyn Io>,
    /// `Some(true)` when ALPN chose h2, `Some(false)` when it chose
    /// anything else, `None` on plain TCP (nothing negotiated).
    pub(crate) h2: Option<bool>,
}

pub(crate) struct Connector {
    pub(crate) provider: Provider,
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl Connector {
    /// Checks the URL and, for https, builds the TLS configuration once
    /// (trust as reqwest's: the platform verifier, so `SSL_CERT_FILE` and
    /// the system store apply), offering `alpn`.
    pub(crate) fn new(
        provider: Provider,
        url: &reqwest::Url,
        connect_timeout: Duration,
        alpn: &[&[u8]],
    ) -> Result<Self, String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{url} has no port"))?;
        let tls = match url.scheme() {
            "https" => {
                let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
                Some((TlsConnector::from(tls_config(alpn)?), name))
            }
            _ => None,
        };
        Ok(Self {
            provider,
            host,
            port,
            tls,
            connect_timeout,
        })
    }

    /// Why an open failed is a connect error's text.
    pub(crate) async fn open(&self) -> Result<Opened, String> {
        let address = format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| format!("{address}: no connection within {:?}", self.connect_timeout))?
        .map_err(|e| format!("{address}: {e}"))?;
        // Small request frames must not wait for a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let Some((tls, name)) = &self.tls else {
            return Ok(Opened {
                io: Box::new(tcp),
                h2: None,
            });
        };
        let stream = tokio::time::timeout(self.connect_timeout, tls.connect(name.clone(), tcp))
            .await
            .map_err(|_| {
                format!(
                    "{address}: no TLS handshake within {:?}",
                    self.connect_timeout
                )
            })?
            .map_err(|e| format!("{address}: TLS: {e}"))?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        Ok(Opened {
            io: Box::new(stream),
            h2: Some(h2),
        })
    }
}

/// The TLS client configuration reqwest would build: the process's crypto
/// provider (aws-lc-rs unless one was installed) and the platform verifier.
fn tls_config(alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("TLS certificate verifier: {e}"))?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
