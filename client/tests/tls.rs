//! The binary protocol over TLS: the client with a [`TlsConfig`] (certificates made here
//! by rcgen) acquires and releases on a server run with `--tls-cert`, presents its client
//! certificate to a server that requires one, and is refused without one.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use turnstile::Config;
use turnstile_client::{Client, TlsConfig};

/// A CA, and certificates for localhost/127.0.0.1 it signs, as files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "turnstile-client-tls-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("key");
        let ca = params.self_signed(&ca_key).expect("CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca, ca_key }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("signed");
        let c = self.dir.join(format!("{name}.pem"));
        let k = self.dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn builder(server: &Server, tls: TlsConfig) -> turnstile_client::Builder {
    Client::builder()
        .addrs(server.addr.to_string())
        .connect_timeout(Duration::from_secs(5))
        .tls(tls)
}

#[tokio::test]
async fn the_binary_protocol_speaks_tls() {
    let pki = Pki::new("binary");
    let (cert, key) = pki.issue("server");
    let config = Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Config::default()
    };
    let server = Server::start_with(config).await;

    let tls = TlsConfig::from_ca_file(pki.ca_path()).expect("CA");
    let client = within("connect", builder(&server, tls.clone()).connect())
        .await
        .expect("connect over TLS");
    let guard = within(
        "acquire",
        client.lock("tls/k").ttl(Duration::from_secs(5)).acquire(),
    )
    .await
    .expect("acquire");
    assert!(guard.token() > 0);
    // Many requests in flight at once on the one connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let client = client.clone();
        tasks.spawn(async move {
            let g = client
                .lock(format!("tls/{i}"))
                .ttl(Duration::from_secs(5))
                .acquire()
                .await?;
            g.release().await
        });
    }
    while let Some(r) = within("20 more", tasks.join_next()).await {
        r.expect("task").expect("acquire and release");
    }
    within("release", guard.release()).await.expect("release");

    // A server name the certificate does not carry is refused.
    let wrong = builder(&server, tls.server_name("elsewhere.example"))
        .connect()
        .await;
    assert!(wrong.is_err(), "a certificate for another name is refused");
    server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_required() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.issue("server");
    let config = Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tls_client_ca: Some(pki.ca_path()),
        ..Config::default()
    };
    let server = Server::start_with(config).await;

    let without = TlsConfig::from_ca_file(pki.ca_path()).expect("CA");
    let refused = builder(&server, without.clone()).connect().await;
    assert!(refused.is_err(), "no client certificate: refused");

    let (c, k) = pki.issue("client");
    let with = without.client_cert_files(c, k).expect("client cert");
    let client = within("connect", builder(&server, with).connect())
        .await
        .expect("connect with a client certificate");
    let guard = within(
        "acquire",
        client.lock("mtls/k").ttl(Duration::from_secs(5)).acquire(),
    )
    .await
    .expect("acquire");
    within("release", guard.release()).await.expect("release");
    server.stop().await;
}
