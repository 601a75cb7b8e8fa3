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
    // `turnstile cluster --tls` reads the status from a node.
    let status = {
        let addr = format!("localhost:{}", servers[leader].addr.port());
        let ca = pki.ca_path();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
                .args(["cluster", "--addr", &addr, "--tls", "--cacert"])
                .arg(ca)
                .arg("status")
                .output()
                .expect("turnstile cluster runs")
        })
        .await
        .expect("run")
    };
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(printed.contains("role:leader"), "{printed}");
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

/// `ACQUIRE key TTL 5000` as a RESP array.
fn acquire_cmd(key: &str) -> Vec<u8> {
    format!(
        "*4\r\n$7\r\nACQUIRE\r\n${}\r\n{key}\r\n$3\r\nTTL\r\n$4\r\n5000\r\n",
        key.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_the_user_in_both_protocols() {
    let pki = Pki::new("certusers");
    let users = pki.dir.join("users.acl");
    std::fs::write(
        &users,
        "user default on nopass ~public/* +@all\n\
         user alice on >secret ~alice/* +@all\n\
         user carol off >x ~* +@all\n",
    )
    .expect("users file");
    let mut config = tls_config(&pki.issue("server"), Some(&pki.ca_path()));
    config.tls_cert_users = true;
    config.users_file = Some(users);
    let server = Server::start_with(config).await;
    let (alice, mallory, carol) = (pki.issue("alice"), pki.issue("mallory"), pki.issue("carol"));

    // Text mode. CN=alice: alice's permissions from the start, no AUTH.
    let mut s = tls_connect(&pki.client(Some(&alice)), server.addr)
        .await
        .expect("handshake");
    exchange(&mut s, &acquire_cmd("alice/1"), b":")
        .await
        .expect("alice may lock alice/*");
    exchange(&mut s, &acquire_cmd("public/1"), b"-NOPERM")
        .await
        .expect("alice may not lock public/*");
    // A CN that names no user, or a user that is off: the default user.
    for who in [&mallory, &carol] {
        let mut s = tls_connect(&pki.client(Some(who)), server.addr)
            .await
            .expect("handshake");
        exchange(&mut s, &acquire_cmd("alice/2"), b"-NOPERM")
            .await
            .expect("default may not lock alice/*");
        exchange(&mut s, &acquire_cmd("public/2"), b":")
            .await
            .expect("default may lock public/*");
    }
    // AUTH still switches users.
    let mut s = tls_connect(&pki.client(Some(&mallory)), server.addr)
        .await
        .expect("handshake");
    exchange(
        &mut s,
        b"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$6\r\nsecret\r\n",
        b"+OK",
    )
    .await
    .expect("AUTH alice");
    exchange(&mut s, &acquire_cmd("alice/3"), b":")
        .await
        .expect("now alice");

    // The binary protocol: a HELLO without credentials is the certificate's user.
    let connect = |who: &(PathBuf, PathBuf)| {
        let tls = turnstile_client::TlsConfig::from_ca_file(pki.ca_path())
            .expect("CA")
            .client_cert_files(&who.0, &who.1)
            .expect("client cert");
        turnstile_client::Client::builder()
            .addrs(server.addr.to_string())
            .connect_timeout(WAIT)
            .tls(tls)
            .connect()
    };
    let ttl = Duration::from_secs(5);
    let c = connect(&alice).await.expect("binary as alice");
    let g = c.lock("alice/b").ttl(ttl).acquire().await.expect("alice/b");
    assert!(g.token() > 0);
    let refused = c.lock("public/b").ttl(ttl).acquire().await.err();
    assert!(
        refused
            .as_ref()
            .is_some_and(|e| e.to_string().contains("NOPERM")),
        "{refused:?}"
    );
    let c = connect(&mallory).await.expect("binary as default");
    let _held = c
        .lock("public/b")
        .ttl(ttl)
        .acquire()
        .await
        .expect("default may lock public/*");
    let refused = c.lock("alice/b2").ttl(ttl).acquire().await.err();
    assert!(
        refused
            .as_ref()
            .is_some_and(|e| e.to_string().contains("NOPERM")),
        "{refused:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnstile_cluster_speaks_tls_and_logs_in() {
    let pki = Pki::new("clustercmd");
    let users = pki.dir.join("users.acl");
    std::fs::write(&users, "user default off\nuser ops on >o ~* +@all\n").expect("users");
    let mut config = tls_config(&pki.issue("server"), Some(&pki.ca_path()));
    config.users_file = Some(users);
    let server = Server::start_with(config).await;
    let ops = pki.issue("ops");
    let addr = format!("localhost:{}", server.addr.port());
    let ca = pki.ca_path().display().to_string();
    let cert = [
        "--cert".to_string(),
        ops.0.display().to_string(),
        "--key".into(),
        ops.1.display().to_string(),
    ];
    let run = move |extra: Vec<String>| {
        let mut args = vec!["cluster".to_string(), "--addr".into(), addr.clone()];
        args.extend(extra);
        args.push("status".into());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(args)
            .env_remove("TURNSTILE_PASS")
            .env_remove("TURNSTILE_PASSWORD")
            .output()
            .expect("turnstile cluster runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tls = |more: &[&str]| {
        let mut v = vec!["--tls".to_string(), "--cacert".into(), ca.clone()];
        v.extend(cert.iter().cloned());
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    // Over TLS, as ops: the command reaches CLUSTER, which says the server is standalone.
    let (ok, err) = {
        let (run, args) = (run.clone(), tls(&["--user", "ops", "--pass", "o"]));
        tokio::task::spawn_blocking(move || run(args))
            .await
            .expect("run")
    };
    assert!(!ok);
    assert!(err.contains("this server runs standalone"), "{err}");
    // A wrong password is refused at AUTH.
    let (ok, err) = {
        let (run, args) = (run.clone(), tls(&["--user", "ops", "--pass", "nope"]));
        tokio::task::spawn_blocking(move || run(args))
            .await
            .expect("run")
    };
    assert!(!ok);
    assert!(err.contains("AUTH failed"), "{err}");
    // No credentials: the default user is off.
    let (ok, err) = {
        let (run, args) = (run.clone(), tls(&[]));
        tokio::task::spawn_blocking(move || run(args))
            .await
            .expect("run")
    };
    assert!(!ok);
    assert!(err.contains("NOAUTH"), "{err}");
    // Plain text on the TLS port gets nowhere.
    let (ok, err) = tokio::task::spawn_blocking(move || run(Vec::new()))
        .await
        .expect("run");
    assert!(!ok);
    assert!(!err.contains("standalone"), "{err}");
    server.stop().await;
}
