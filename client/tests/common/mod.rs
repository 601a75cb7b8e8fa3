//! Test harness of the client: the real server in this process on `127.0.0.1:0`, and a
//! TCP proxy between client and server that can cut every connection, refuse new ones,
//! or stall traffic, to force the failures the client must survive. Every wait is bounded.
//! `cluster`: a cluster of real node processes (this test binary run again as a node),
//! for the failover tests.

#![allow(dead_code)]

pub mod cluster;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use turnstile::Config;
use turnstile_client::Client;

/// Longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// Runs `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `cond` every 10 ms for at most 5 s.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A server running in this process; dropping it shuts the server down.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Server::serve(listener, config)
    }

    /// A server on `addr` again (a restart), bound with bounded retries.
    pub async fn start_at(config: Config, addr: SocketAddr) -> Server {
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(addr).await {
                return Server::serve(listener, config);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not bind {addr} again");
    }

    /// Stops the server and waits (bounded) until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self._task;
        within("server stop", task)
            .await
            .expect("server task")
            .expect("server::run returns Ok");
    }

    fn serve(listener: TcpListener, mut config: Config) -> Server {
        // Tests run in memory unless they name a data directory of their own.
        if config.data_dir == std::path::Path::new("turnstile-data") {
            config.in_memory = true;
        }
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(turnstile::server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            _task: task,
        }
    }

    /// A client connected straight to the server.
    pub async fn client(&self) -> Client {
        within("connect", Client::connect(self.addr))
            .await
            .expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP proxy to a server.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

struct ProxyState {
    target: SocketAddr,
    conns: Mutex<Vec<JoinHandle<()>>>,
    blocked: AtomicBool,
    paused: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ProxyState {
            target,
            conns: Mutex::new(Vec::new()),
            blocked: AtomicBool::new(false),
            paused: watch::Sender::new(false),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.blocked.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st2 = st.clone();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(st2.target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, st2.paused.subscribe());
                    let down = pump(sr, cw, st2.paused.subscribe());
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
                st.conns.lock().unwrap().push(task);
            }
        });
        Proxy {
            addr,
            state,
            accept,
        }
    }

    /// Drops every connection through the proxy, as a network failure would.
    pub fn cut(&self) {
        for t in self.state.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Refuses (closes at once) new connections while on.
    pub fn block(&self, on: bool) {
        self.state.blocked.store(on, Ordering::SeqCst);
    }

    /// Holds all traffic (without closing anything) while on.
    pub fn pause(&self, on: bool) {
        self.state.paused.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The sessions holding `key`, as another client sees them.
pub async fn holders(observer: &Client, key: &str) -> Vec<u64> {
    within("inspect", observer.inspect(key))
        .await
        .expect("inspect")
        .map(|s| s.holders.iter().map(|h| h.session).collect())
        .unwrap_or_default()
}

/// The sessions waiting for `key`, in queue order.
pub async fn waiters(observer: &Client, key: &str) -> Vec<u64> {
    within("inspect", observer.inspect(key))
        .await
        .expect("inspect")
        .map(|s| s.waiters.iter().map(|w| w.session).collect())
        .unwrap_or_default()
}
