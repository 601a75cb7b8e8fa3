//! TLS settings of a client: the CA the servers' certificates are checked against, an
//! optional client certificate (for servers run with `--tls-client-ca`), and the name
//! the servers' certificates must carry.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// How a [`crate::Client`] speaks TLS ([`crate::Builder::tls`]); used for every address
/// of the client, redirects to a cluster's leader included.
///
/// ```no_run
/// # fn demo() -> turnstile_client::Result<()> {
/// use turnstile_client::{Client, TlsConfig};
/// let tls = TlsConfig::from_ca_file("ca.pem")?
///     .client_cert_files("client.pem", "client.key")?; // when the server asks for one
/// let builder = Client::builder().addrs("db1.internal:7379").tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TlsConfig {
    roots: Arc<RootCertStore>,
    identity: Option<Arc<Identity>>,
    server_name: Option<String>,
}

#[derive(Debug)]
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn io_error(msg: String) -> Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg).into()
}

impl TlsConfig {
    /// Servers are verified against `roots`.
    pub fn new(roots: RootCertStore) -> TlsConfig {
        TlsConfig {
            roots: Arc::new(roots),
            identity: None,
            server_name: None,
        }
    }

    /// Servers are verified against the CA certificate(s) of a PEM file.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<TlsConfig> {
        let path = path.as_ref();
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| io_error(format!("CA certificate in {}: {e}", path.display())))?;
        }
        Ok(TlsConfig::new(roots))
    }

    /// Presents this certificate chain and key (for a server run with
    /// `--tls-client-ca`).
    pub fn client_cert(
        mut self,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> TlsConfig {
        self.identity = Some(Arc::new(Identity { certs, key }));
        self
    }

    /// [`TlsConfig::client_cert`] from PEM files (the key as PKCS#8, PKCS#1 or SEC1).
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig> {
        let certs = read_certs(cert.as_ref())?;
        let key_path = key.as_ref();
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            io_error(format!(
                "reading a private key from {}: {e}",
                key_path.display()
            ))
        })?;
        Ok(self.client_cert(certs, key))
    }

    /// The name every server's certificate must carry (default: the host of the address
    /// connected to, a DNS name or an IP address).
    pub fn server_name(mut self, name: impl Into<String>) -> TlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// The connector made of these settings.
    pub(crate) fn connector(&self) -> Result<Connector> {
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| io_error(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        let config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| io_error(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: self.server_name.clone(),
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| io_error(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(io_error(format!("no certificate in {}", path.display())));
    }
    Ok(certs)
}

/// What connections are opened with.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) connector: TlsConnector,
    server_name: Option<String>,
}

impl Connector {
    /// The name the certificate of the server at `addr` must carry.
    pub(crate) fn name_for(&self, addr: &str) -> Result<ServerName<'static>> {
        let host = match &self.server_name {
            Some(n) => n.as_str(),
            None => {
                let host = match addr.rsplit_once(':') {
                    Some((h, port)) if port.parse::<u16>().is_ok() => h,
                    _ => addr,
                };
                host.trim_start_matches('[').trim_end_matches(']')
            }
        };
        ServerName::try_from(host.to_string())
            .map_err(|e| io_error(format!("{host} is not a valid TLS server name: {e}")))
    }
}
