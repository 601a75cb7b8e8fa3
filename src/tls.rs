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

/// The subject common name (CN) of a DER certificate, if it has one as a string. A
/// small DER walk (Certificate -> TBSCertificate -> subject), enough for certificates
/// rustls has already verified; None for anything it does not understand.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    // One TLV: (tag, content, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let len = b[..n]
                .iter()
                .fold(0usize, |acc, &x| acc << 8 | usize::from(x));
            b = &b[n..];
            len
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    let (SEQUENCE, certificate, _) = tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = tlv(rest)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (tag, mut set, next) = tlv(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, pair, next) = tlv(set)?;
            set = next;
            let (oid_tag, oid, value) = tlv(pair)?;
            if oid_tag == 0x06 && oid == CN {
                // UTF8String, PrintableString, TeletexString, IA5String.
                let (tag, text, _) = tlv(value)?;
                return matches!(tag, 0x0c | 0x13 | 0x14 | 0x16)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
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
    fn the_common_name_is_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Turnstile tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()).as_deref(), Some("alice"));
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let mut params = params;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
        assert_eq!(subject_common_name(b"\x30\x03\x02\x01"), None);
        assert_eq!(subject_common_name(&[]), None);
    }

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
