//! TLS for the client port and for raft traffic between nodes (rustls, ring provider).
//!
//! - Client port (`--tls-cert`, `--tls-key`): the server presents its certificate; with
//!   `--tls-client-ca` it also requires a client certificate signed by that CA. Protocol
//!   detection (text or binary, protocol.md 1) happens on the decrypted stream.
//! - Raft port (cluster mode, the same certificate): every node presents its certificate
//!   both as server and as client, and verifies its peers' against `--tls-ca` (default
//!   `--tls-client-ca`): a dialer checks that the listener's certificate names the host of
//!   its raft address, a listener that the dialer's certificate chains to the CA.
//!
//! docs/tls.md tells how to make certificates and what is verified.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        invalid(format!(
            "reading a private key from {}: {e}",
            path.display()
        ))
    })
}

/// A root store of every certificate in a PEM file.
pub fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The server side of a TLS handshake, verifying client certificates against `client_ca`
/// when given.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
) -> io::Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("--tls-cert/--tls-key: {e}")))
}

/// The acceptor of the client port, when `--tls-cert` is set.
pub fn client_acceptor(config: &Config) -> io::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let client_ca = config
        .tls_client_ca
        .as_deref()
        .map(load_roots)
        .transpose()?;
    let cfg = server_config(load_certs(cert)?, load_key(key)?, client_ca)?;
    Ok(Some(TlsAcceptor::from(Arc::new(cfg))))
}

/// TLS between cluster nodes: how a node accepts its peers and how it dials them.
#[derive(Clone)]
pub struct PeerTls {
    /// Presents this node's certificate; requires one from the peer, signed by the CA.
    pub acceptor: TlsAcceptor,
    /// Presents this node's certificate; verifies the peer's against the CA and the
    /// host of the address dialed.
    pub connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// From the node's certificate, its key and the CA its peers' certificates chain to.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: RootCertStore,
    ) -> io::Result<PeerTls> {
        let server = server_config(certs.clone(), key.clone_key(), Some(ca.clone()))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_root_certificates(ca)
            .with_client_auth_cert(certs, key)
            .map_err(|e| invalid(format!("--tls-cert/--tls-key: {e}")))?;
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Cluster mode: from `--tls-cert`, `--tls-key` and `--tls-ca` (or
    /// `--tls-client-ca`); None without TLS.
    pub fn from_config(config: &Config) -> io::Result<Option<PeerTls>> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let ca = config
            .tls_ca
            .as_deref()
            .or(config.tls_client_ca.as_deref())
            .ok_or_else(|| invalid("cluster mode with TLS needs --tls-ca".into()))?;
        PeerTls::new(load_certs(cert)?, load_key(key)?, load_roots(ca)?).map(Some)
    }
}

/// The name a certificate must carry for `addr` (`host:port`, `[v6]:port`): its host,
/// as an IP address or a DNS name.
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| invalid(format!("{host} is not a valid TLS server name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_the_host_of_an_address() {
        assert_eq!(
            server_name("127.0.0.1:7401").expect("ip"),
            ServerName::try_from("127.0.0.1").expect("ip")
        );
        assert_eq!(
            server_name("[::1]:7401").expect("v6"),
            ServerName::try_from("::1").expect("v6")
        );
        assert_eq!(
            server_name("node-1.internal:17401").expect("dns"),
            ServerName::try_from("node-1.internal").expect("dns")
        );
        assert!(server_name("bad host:1").is_err());
    }
}
