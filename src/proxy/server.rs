//! Entry points: listening sockets, HTTP/1.1 and h2c connections, graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::{GracefulConnection, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::edge::EdgePolicy;
use super::framing::{FramingWatch, Watched};
use super::timeouts::{ConnClock, RespondingLimits, Timed};
use crate::config::check::listen_address;
use crate::config::EntryPointConfig;
use crate::gateway::Gateway;
use crate::tls::{EntryPointTls, TlsInfo, HANDSHAKE_RECORD};

/// What every request of one client connection is served with.
pub struct ConnectionContext {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The entry point's name.
    pub entry_point: Arc<str>,
    /// The entry point's edge policy.
    pub edge: Arc<EdgePolicy>,
    /// What the framing watcher found on this connection.
    pub framing: Arc<FramingWatch>,
    /// The connection's read, write and idle deadlines.
    pub clock: Arc<ConnClock>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The local address it connected to.
    pub local: SocketAddr,
    /// What its TLS handshake negotiated; `None` for a plain connection.
    pub tls: Option<Arc<TlsInfo>>,
    /// The client's IP as `X-Forwarded-For` and `X-Real-Ip` carry it, written once per
    /// connection rather than per request.
    pub client_ip: bytes::Bytes,
}

const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Traefik's default `http2.maxConcurrentStreams`.
const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 250;
/// How often an HTTP/2 connection is pinged (Traefik has no setting: Go's server sends none).
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An entry point's address did not bind.
    #[error("entry point {entry_point:?}: cannot listen on {address}: {source}")]
    Bind {
        /// The entry point's name.
        entry_point: String,
        /// Its address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server: its bound addresses and the switch that stops it.
pub struct RunningServer {
    /// Each entry point's bound address (useful with port 0).
    pub addrs: BTreeMap<String, SocketAddr>,
    gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl RunningServer {
    /// Shuts down: `/ping` answers its terminating status from now on; each entry point keeps
    /// accepting for its `requestAcceptGraceTimeout`, then stops accepting and lets in-flight
    /// requests finish within its `graceTimeOut`; then returns.
    pub async fn shutdown(mut self) {
        self.gateway.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds every entry point and starts serving.
pub async fn start(gateway: Arc<Gateway>) -> Result<RunningServer, StartError> {
    let (stop, stop_rx) = watch::channel(false);
    let mut addrs = BTreeMap::new();
    let mut listeners = Vec::new();
    for (name, ep) in &gateway.loaded.config.entry_points {
        let listener = bind(&ep.address).await.map_err(|source| StartError::Bind {
            entry_point: name.clone(),
            address: ep.address.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            entry_point: name.clone(),
            address: ep.address.clone(),
            source,
        })?;
        tracing::info!(entry_point = %name, %addr, "listening");
        addrs.insert(name.clone(), addr);
        listeners.push((name.clone(), ep.clone(), listener));
    }
    let mut tasks = JoinSet::new();
    for (name, ep, listener) in listeners {
        tasks.spawn(serve_entry_point(
            gateway.clone(),
            name.into(),
            ep,
            listener,
            stop_rx.clone(),
        ));
    }
    Ok(RunningServer {
        addrs,
        gateway,
        stop,
        tasks,
    })
}

/// Binds Traefik's address forms (`:8080` is every interface; see [`listen_address`]).
async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let parsed = listen_address(address)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut last = None;
    for candidate in parsed.bind_candidates() {
        match TcpListener::bind(&candidate).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to bind")))
}

fn max_header_bytes(ep: &EntryPointConfig) -> usize {
    ep.http
        .max_header_bytes
        .unwrap_or(DEFAULT_MAX_HEADER_BYTES)
        .max(8192)
}

fn connection_builder(ep: &EntryPointConfig) -> auto::Builder<TokioExecutor> {
    let max_header = max_header_bytes(ep);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer would also run while a keep-alive connection is idle; `readTimeout`
        // (head and body) and `idleTimeout` are kept on the socket instead (see `Timed`).
        .header_read_timeout(None)
        .max_buf_size(max_header)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(max_header as u32)
        .max_concurrent_streams(
            ep.http2
                .max_concurrent_streams
                .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS),
        )
        // A client that vanished without closing is found and its streams freed.
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

async fn serve_entry_point(
    gateway: Arc<Gateway>,
    name: Arc<str>,
    ep: EntryPointConfig,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let serving = Arc::new(Serving {
        gateway: gateway.clone(),
        name: name.clone(),
        builder: connection_builder(&ep),
        edge: Arc::new(EdgePolicy::new(&ep)),
        max_header: max_header_bytes(&ep),
        limits: RespondingLimits::new(&ep),
    });
    // At the limit, no more are accepted: new clients wait in the listen backlog.
    let slots = ep
        .transport
        .max_connections
        .filter(|&n| n > 0)
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let graceful = GracefulShutdown::new();
    let accept_grace = ep
        .transport
        .life_cycle
        .request_accept_grace_timeout
        .unwrap_or(Duration::ZERO);
    // Set once shutdown began: accepting goes on until then (`requestAcceptGraceTimeout`).
    let mut accept_until: Option<tokio::time::Instant> = None;
    loop {
        // Resolves when accepting must stop.
        let (until, stop) = (accept_until, &mut stop);
        let stopping = async move {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => {
                    let _ = stop.changed().await;
                }
            }
        };
        tokio::pin!(stopping);
        let slot = match &slots {
            Some(slots) => tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => Some(slot),
                    Err(_) => break,
                },
                _ = &mut stopping => {
                    if accept_until.is_none() && !accept_grace.is_zero() {
                        accept_until = Some(tokio::time::Instant::now() + accept_grace);
                        continue;
                    }
                    break;
                }
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(entry_point = &*name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopping => {
                if accept_until.is_none() && !accept_grace.is_zero() {
                    accept_until = Some(tokio::time::Instant::now() + accept_grace);
                    continue;
                }
                break;
            }
        };
        let open = gateway.metrics.as_ref().map(|m| m.connection_opened(&name));
        let _ = stream.set_nodelay(true);
        // On a `[::]` listener IPv4 clients arrive as `::ffff:a.b.c.d`: log, route and
        // forward them as the IPv4 addresses they are.
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let peer = canonical(peer);
        let local = canonical(stream.local_addr().unwrap_or(peer));
        let guards = (slot, open);
        // TLS as the current snapshot has it for this entry point (certificates reload).
        let tls = gateway.snapshot().tls.get(&name).cloned();
        match tls {
            None => {
                let conn = serving.connection(stream, peer, local, None);
                tokio::spawn(finish(conn, graceful.watcher(), peer, guards));
            }
            Some(tls) => {
                let (serving, watcher) = (serving.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let Some(accepted) = serving.accept_tls(stream, tls, peer).await else {
                        return;
                    };
                    match accepted {
                        Accepted::Tls(stream, info) => {
                            let conn = serving.connection(stream, peer, local, Some(info));
                            finish(conn, watcher, peer, guards).await
                        }
                        Accepted::Plain(stream) => {
                            let conn = serving.connection(stream, peer, local, None);
                            finish(conn, watcher, peer, guards).await
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let grace = ep
        .transport
        .life_cycle
        .grace_time_out
        .unwrap_or(DEFAULT_GRACE);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            entry_point = &*name,
            "grace period over; closing remaining connections"
        );
    }
}

/// What every connection of one entry point is served with.
struct Serving {
    gateway: Arc<Gateway>,
    name: Arc<str>,
    builder: auto::Builder<TokioExecutor>,
    edge: Arc<EdgePolicy>,
    max_header: usize,
    limits: RespondingLimits,
}

/// A connection on an entry point that serves TLS: a TLS one, or a plain one that a router
/// without `tls` may still serve.
enum Accepted {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, TlsInfo),
    Plain(TcpStream),
}

/// rustls names TLS 1.3 suites `TLS13_...`; their IANA (and Go's, Traefik's) names are `TLS_...`.
fn iana_suite_name(rustls_name: &'static str) -> &'static str {
    match rustls_name {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        other => other,
    }
}

/// What hyper's connections fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Serving {
    /// Tells a TLS client from a plain one by its first byte, and completes the handshake of a
    /// TLS one within the read timeout; `None` when the client left or the handshake failed.
    async fn accept_tls(
        &self,
        stream: TcpStream,
        tls: Arc<EntryPointTls>,
        peer: SocketAddr,
    ) -> Option<Accepted> {
        let deadline = self.limits.handshake();
        let first = tokio::time::timeout(deadline, async {
            let mut byte = [0u8; 1];
            stream
                .peek(&mut byte)
                .await
                .map(|n| (n == 1).then_some(byte[0]))
        })
        .await;
        match first {
            Ok(Ok(Some(HANDSHAKE_RECORD))) => {}
            Ok(Ok(Some(_))) => return Some(Accepted::Plain(stream)),
            // Closed, failed or silent before sending anything.
            _ => return None,
        }
        // The ClientHello first: its SNI picks the TLS options (and the certificate, later).
        let handshake = async {
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await?;
            let config = tls.for_sni(start.client_hello().server_name());
            start.into_stream(config).await
        };
        match tokio::time::timeout(deadline, handshake).await {
            Ok(Ok(tls)) => {
                let (_, session) = tls.get_ref();
                let info = TlsInfo {
                    server_name: session.server_name().map(str::to_string),
                    alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    version: match session.protocol_version() {
                        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                        _ => "TLSv1.2",
                    },
                    peer_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                    cipher: session
                        .negotiated_cipher_suite()
                        .and_then(|s| s.suite().as_str())
                        .map(iana_suite_name)
                        .unwrap_or(""),
                };
                Some(Accepted::Tls(Box::new(tls), info))
            }
            Ok(Err(e)) => {
                tracing::debug!(entry_point = &*self.name, client = %peer, "TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!(entry_point = &*self.name, client = %peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on `stream` (a TCP or TLS stream) with the entry point's
    /// limits, framing watch and timeouts.
    fn connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        local: SocketAddr,
        tls: Option<TlsInfo>,
    ) -> impl GracefulConnection<Error = BoxError> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn_ctx = Arc::new(ConnectionContext {
            gateway: self.gateway.clone(),
            entry_point: self.name.clone(),
            edge: self.edge.clone(),
            framing: Arc::new(FramingWatch::default()),
            clock: ConnClock::new(self.limits),
            peer,
            local,
            tls: tls.map(Arc::new),
            client_ip: super::edge::client_ip(peer),
        });
        // The bytes pass a framing watcher on their way to hyper (request smuggling).
        let stream = Watched::new(stream, self.max_header, conn_ctx.framing.clone());
        let stream = Timed::new(stream, conn_ctx.clock.clone());
        let service =
            hyper::service::service_fn(move |req| super::handler::serve(conn_ctx.clone(), req));
        // With upgrades: a WebSocket's 101 hands the connection over (see `upgrade`).
        self.builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned()
    }
}

/// Runs a connection to its end under the graceful-shutdown watch, then frees its slot.
async fn finish<C, G>(conn: C, watcher: Watcher, peer: SocketAddr, guards: G)
where
    C: GracefulConnection<Error = BoxError> + Send + 'static,
{
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client = %peer, "connection ended: {e}");
    }
    drop(guards);
}
