//! TLS on the client port and between cluster nodes, over real sockets, with certificates
//! made in the test by rcgen: text mode through a small rustls RESP client, a plain client
//! refused on a TLS port, client certificates required and checked, a stalled handshake
//! closed by `--auth-timeout-ms`, `turnstile cli --tls`, and a three-node cluster whose
//! raft traffic is TLS electing a leader that commits writes.
//!
//! Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use turnstile::Config;

use common::Server;

const WAIT: Duration = Duration::from_secs(5);

/// A CA and the files of certificates it signed, in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("turnstile-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("key");
        let ca = params.self_signed(&ca_key).expect("self-signed CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        Pki { dir, ca, ca_key }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `localhost` and 127.0.0.1, usable by servers and clients;
    /// returns its (cert, key) files.
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
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }

    /// A rustls client trusting this CA, presenting `identity` when given.
    fn client(&self, identity: Option<&(PathBuf, PathBuf)>) -> TlsConnector {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.ca_path()).expect("CA"))
            .expect("root");
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(cert).expect("cert")],
                    PrivateKeyDer::from_pem_file(key).expect("key"),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_config(server: &(PathBuf, PathBuf), client_ca: Option<&Path>) -> Config {
    Config {
        tls_cert: Some(server.0.clone()),
        tls_key: Some(server.1.clone()),
        tls_client_ca: client_ca.map(Path::to_path_buf),
        ..Config::default()
    }
}

/// Sends `request` and reads until `want` arrives (Ok) or the stream ends or fails
/// (Err with what came).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    want: &[u8],
) -> Result<Vec<u8>, Vec<u8>> {
    if s.write_all(request).await.is_err() || s.flush().await.is_err() {
        return Err(Vec::new());
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if got.windows(want.len()).any(|w| w == want) {
            return Ok(got);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("no reply and no close within {WAIT:?}: {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake within the wait")
}

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

#[tokio::test]
async fn text_mode_speaks_tls() {
    let pki = Pki::new("text");
    let server = Server::start_with(tls_config(&pki.issue("server"), None)).await;
    let mut s = tls_connect(&pki.client(None), server.addr)
        .await
        .expect("TLS handshake");
    exchange(&mut s, PING, b"+PONG\r\n").await.expect("PONG");
    let got = exchange(
        &mut s,
        b"*4\r\n$7\r\nACQUIRE\r\n$4\r\nk/tl\r\n$3\r\nTTL\r\n$4\r\n5000\r\n*1\r\n$4\r\nPING\r\n",
        b"+PONG\r\n",
    )
    .await
    .expect("ACQUIRE then PING, pipelined");
    assert!(got.starts_with(b":"), "a fencing token: {got:?}");
    exchange(&mut s, b"RELEASE k/tl\r\n", b":1\r\n")
        .await
        .expect("inline RELEASE");
    server.stop().await;
}

#[tokio::test]
async fn a_plain_client_gets_no_reply_on_a_tls_port_and_the_server_goes_on() {
    let pki = Pki::new("plain");
    let server = Server::start_with(tls_config(&pki.issue("server"), None)).await;
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    let got = exchange(&mut plain, PING, b"PONG")
        .await
        .expect_err("the connection is closed without a PONG");
    assert!(!got.windows(4).any(|w| w == b"PONG"), "{got:?}");
    // The server serves TLS clients as before.
    let mut s = tls_connect(&pki.client(None), server.addr)
        .await
        .expect("TLS handshake");
    exchange(&mut s, PING, b"+PONG\r\n").await.expect("PONG");
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_and_checked() {
    let pki = Pki::new("mtls");
    let other = Pki::new("mtls-other");
    let client = pki.issue("client");
    let stranger = other.issue("stranger");
    let server = Server::start_with(tls_config(&pki.issue("server"), Some(&pki.ca_path()))).await;

    // No certificate: under TLS 1.3 the client finishes its side first, then the server
    // refuses; either way no command is answered.
    if let Ok(mut s) = tls_connect(&pki.client(None), server.addr).await {
        exchange(&mut s, PING, b"+PONG")
            .await
            .expect_err("no PONG without a client certificate");
    }
    // A certificate from another CA: refused the same way.
    if let Ok(mut s) = tls_connect(&pki.client(Some(&stranger)), server.addr).await {
        exchange(&mut s, PING, b"+PONG")
            .await
            .expect_err("no PONG with a certificate of another CA");
    }
    // The CA's client certificate is served.
    let mut s = tls_connect(&pki.client(Some(&client)), server.addr)
        .await
        .expect("TLS handshake");
    exchange(&mut s, PING, b"+PONG\r\n").await.expect("PONG");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_auth_timeout() {
    let pki = Pki::new("stall");
    let mut config = tls_config(&pki.issue("server"), None);
    config.auth_timeout_ms = 300;
    let server = Server::start_with(config).await;
    let started = Instant::now();
    // Opens the connection and says nothing (no ClientHello).
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, plain.read(&mut buf))
        .await
        .expect("closed within the wait");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

#[tokio::test]
async fn turnstile_cli_speaks_tls() {
    let pki = Pki::new("cli");
    let client = pki.issue("client");
    let server = Server::start_with(tls_config(&pki.issue("server"), Some(&pki.ca_path()))).await;
    let port = server.addr.port().to_string();
    let ca = pki.ca_path();
    let run = move |extra: Vec<String>| {
        let mut args = vec![
            "cli".to_string(),
            "-p".into(),
            port.clone(),
            "-H".into(),
            "localhost".into(),
            "--tls".into(),
            "--cacert".into(),
            ca.display().to_string(),
        ];
        args.extend(extra);
        args.push("PING".into());
        std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(args)
            .output()
            .expect("turnstile cli runs")
    };
    let with_cert = vec![
        "--cert".to_string(),
        client.0.display().to_string(),
        "--key".into(),
        client.1.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(with_cert)
    })
    .await
    .expect("cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PONG\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the client certificate the server refuses it.
    let out = tokio::task::spawn_blocking(move || run(Vec::new()))
        .await
        .expect("cli");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PONG"));
    assert!(!out.status.success());
    server.stop().await;
}

/// A free port on 127.0.0.1 (bound, then released for the node to take).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_elects_a_leader_over_tls() {
    let pki = Pki::new("cluster");
    let dir = pki.dir.join("data");
    let mut ports = Vec::new();
    for _ in 0..3 {
        ports.push((free_port().await, free_port().await));
    }
    let members = ports
        .iter()
        .enumerate()
        .map(|(i, (raft, client))| format!("{}=127.0.0.1:{raft}/127.0.0.1:{client}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::new();
    for (i, (raft, client)) in ports.iter().enumerate() {
        let id = i as u64 + 1;
        let mut config = tls_config(&pki.issue(&format!("node{id}")), None);
        config.tls_ca = Some(pki.ca_path());
        config.node_id = Some(id);
        config.raft_addr = Some(format!("127.0.0.1:{raft}"));
        config.advertise_addr = Some(format!("127.0.0.1:{client}"));
        config.cluster = Some(turnstile::config::parse_members(&members).expect("members"));
        config.data_dir = dir.join(format!("n{id}"));
        config.fsync = turnstile::config::parse_fsync("never").expect("fsync");
        config.heartbeat_ms = 50;
        config.election_timeout_ms = 200;
        config.validate().expect("valid");
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse().expect("addr");
        servers.push(Server::start_at(config, addr).await);
    }
    // Some node takes the ACQUIRE: a leader was elected and the entry committed on a
    // majority, through TLS connections between the nodes.
    let connector = pki.client(None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = 'found: loop {
        assert!(Instant::now() < deadline, "no leader over TLS within 20 s");
        for (i, s) in servers.iter().enumerate() {
            let Ok(mut c) = tls_connect(&connector, s.addr).await else {
                continue;
            };
            let got = exchange(
                &mut c,
                b"*4\r\n$7\r\nACQUIRE\r\n$4\r\nk/cl\r\n$3\r\nTTL\r\n$4\r\n5000\r\n",
                b"\r\n",
            )
            .await
            .unwrap_or_default();
            if got.starts_with(b":") {
                break 'found i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The raft port speaks TLS: a handshake with a certificate of the cluster's CA
    // completes on it (the certificate it presents names 127.0.0.1).
    let probe = pki.client(Some(&pki.issue("probe")));
    let raft: SocketAddr = format!("127.0.0.1:{}", ports[0].0).parse().expect("addr");
    let tcp = TcpStream::connect(raft).await.expect("raft port");
    let ip = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio::time::timeout(WAIT, probe.connect(ip, tcp))
        .await
        .expect("handshake within the wait")
        .expect("the raft port does TLS");
    // A follower names the leader's client address.
    let follower = &servers[(leader + 1) % 3];
    let mut c = tls_connect(&connector, follower.addr)
        .await
        .expect("TLS handshake");
    let got = exchange(
        &mut c,
        b"*4\r\n$7\r\nACQUIRE\r\n$4\r\nk/c2\r\n$3\r\nTTL\r\n$4\r\n5000\r\n",
        b"\r\n",
    )
    .await
    .expect("a reply");
    let want = format!("-NOTLEADER {}", servers[leader].addr);
    assert!(
        String::from_utf8_lossy(&got).starts_with(&want),
        "{}",
        String::from_utf8_lossy(&got)
    );
    for s in servers {
        s.stop().await;
    }
}
