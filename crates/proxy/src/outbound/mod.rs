//! The outbound side of the sidecar (Istio's 15001 role): traffic the workload sends.
//!
//! A destination (a service host name, a service's pod IP, or anything else) is resolved
//! against the mesh ([`resolve`]); mesh destinations get the transport this workload's sidecar
//! originates per authentication.md §3 (DestinationRule TLS or auto mTLS, decided by the policy
//! crate) with secure naming, ALPN and SNI per §1.8/§4 ([`connect`]); anything else leaves
//! through the passthrough cluster unchanged.
//!
//! Two ways in:
//! * an explicit HTTP proxy port ([`http_proxy`]): absolute-form requests and `CONNECT`, for
//!   environments without traffic capture (`http_proxy=…`, `curl -x`);
//! * a capture port ([`transparent`]) receiving connections redirected by iptables, the original
//!   destination read from the socket.
//!
//! Every request (HTTP) or connection (TCP) produces one [`OutboundEvent`].

pub mod connect;
pub mod event;
pub mod resolve;

mod body;
mod forward;
mod headers;
mod http_proxy;
mod pool;
mod record;
mod reply;
mod server;
mod transparent;
mod tunnel;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use meshward_identity::MeshTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::observe::metrics::TlsHandshakes;
use crate::state::StateHandle;
use crate::wire::{PortShift, SourceBind};

pub use connect::{AppProtocol, ConnectError, Connector};
pub use event::{EventSink, Listener, OutboundEvent, log_sink};
pub use resolve::{Destination, Resolver, Route};

use pool::Pool;

/// At most this many idle connections are kept per (endpoint, transport, HTTP version).
const MAX_IDLE_PER_KEY: usize = 32;

/// Time limits of the outbound side.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect to an upstream; Istio's default `connectTimeout` is 10 s (§3.6).
    pub connect: Duration,
    /// The upstream TLS handshake.
    pub tls_handshake: Duration,
    /// Reading a downstream request's headers (HTTP/1.1), so idle or slow clients cannot hold
    /// connections open forever.
    pub header_read: Duration,
    /// How long an unused upstream HTTP connection is kept for reuse.
    pub pool_idle: Duration,
    /// On shutdown: how long in-flight requests and connections may continue before they are
    /// closed.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            pool_idle: Duration::from_secs(60),
            drain: Duration::from_secs(5),
        }
    }
}

/// How the outbound side is set up.
#[derive(Clone)]
pub struct OutboundConfig {
    /// The mesh and this workload's identity, swapped on configuration changes.
    pub state: Arc<StateHandle>,
    /// This workload's certificate and trust bundle, for mTLS origination.
    pub tls: MeshTls,
    /// Where the explicit HTTP proxy listens (none: no explicit proxy).
    pub http_proxy_addr: Option<SocketAddr>,
    /// Where redirected connections arrive (Istio: 15001; none: no capture).
    pub transparent_addr: Option<SocketAddr>,
    /// Receives one event per request or connection.
    pub event_sink: EventSink,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Counts completed mTLS handshakes.
    pub handshakes: TlsHandshakes,
    /// Where mesh endpoints listen on the wire (see [`crate::wire`]).
    pub port_shift: PortShift,
    /// The local address upstream connections leave from.
    pub source: SourceBind,
    /// The plain forwarder of a pod without a sidecar: plaintext only, and an upstream that
    /// closes or resets before answering resets the client's connection instead of getting
    /// Envoy's 503, as the client would see without any proxy in between.
    pub plain_forwarder: bool,
    /// Whether events carry each request's method, path, authority and logged headers. Only
    /// an access log reads them, so without one the proxy need not copy them per request
    /// (default: they are carried).
    pub request_details: bool,
}

impl OutboundConfig {
    /// No listener yet, events to `tracing`, default timeouts.
    pub fn new(state: Arc<StateHandle>, tls: MeshTls) -> Self {
        OutboundConfig {
            state,
            tls,
            http_proxy_addr: None,
            transparent_addr: None,
            event_sink: log_sink(),
            timeouts: Timeouts::default(),
            handshakes: TlsHandshakes::default(),
            port_shift: PortShift::NONE,
            source: SourceBind::default(),
            plain_forwarder: false,
            request_details: true,
        }
    }
}

impl std::fmt::Debug for OutboundConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundConfig")
            .field("http_proxy_addr", &self.http_proxy_addr)
            .field("transparent_addr", &self.transparent_addr)
            .field("timeouts", &self.timeouts)
            .field("port_shift", &self.port_shift)
            .field("source", &self.source)
            .field("plain_forwarder", &self.plain_forwarder)
            .finish_non_exhaustive()
    }
}

/// The outbound proxy.
#[derive(Debug)]
pub struct Outbound {
    shared: Arc<Shared>,
    http_proxy_addr: Option<SocketAddr>,
    transparent_addr: Option<SocketAddr>,
}

impl Outbound {
    /// An outbound proxy with `config`; nothing is bound yet.
    pub fn new(config: OutboundConfig) -> Self {
        let timeouts = config.timeouts;
        let mut connector = Connector::new(
            config.tls,
            config.handshakes,
            timeouts.connect,
            timeouts.tls_handshake,
        )
        .with_wire(config.port_shift, config.source);
        if config.plain_forwarder {
            connector = connector.plaintext_only();
        }
        Outbound {
            shared: Arc::new(Shared {
                state: config.state,
                resolver: Resolver::new(),
                connector,
                plain_forwarder: config.plain_forwarder,
                request_details: config.request_details,
                pool: Arc::new(Pool::new(timeouts.pool_idle, MAX_IDLE_PER_KEY)),
                sink: config.event_sink,
                timeouts,
                drain: Drain::new(),
                own_addrs: OnceLock::new(),
            }),
            http_proxy_addr: config.http_proxy_addr,
            transparent_addr: config.transparent_addr,
        }
    }

    /// Binds the configured listeners.
    pub async fn bind(self) -> io::Result<BoundOutbound> {
        let http_proxy = match self.http_proxy_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let transparent = match self.transparent_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let own: Vec<SocketAddr> = [&http_proxy, &transparent]
            .into_iter()
            .flatten()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let _ = self.shared.own_addrs.set(own);
        Ok(BoundOutbound {
            shared: self.shared,
            http_proxy,
            transparent,
        })
    }

    /// Binds, then serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        self.bind().await?.run(shutdown).await
    }

    /// The capture path after the original destination is known: serves one connection that
    /// was redirected away from `original_dst` (a service's pod IP and port, or anything
    /// else). The capture listener calls this with the destination read from the socket.
    pub async fn serve_redirected(&self, stream: TcpStream, original_dst: SocketAddr) {
        let _guard = self.shared.drain.track();
        transparent::serve(self.shared.clone(), stream, original_dst).await;
    }
}

/// The outbound proxy with its listeners bound.
#[derive(Debug)]
pub struct BoundOutbound {
    shared: Arc<Shared>,
    http_proxy: Option<TcpListener>,
    transparent: Option<TcpListener>,
}

impl BoundOutbound {
    /// The explicit proxy's address.
    pub fn http_proxy_addr(&self) -> Option<SocketAddr> {
        self.http_proxy.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The capture listener's address.
    pub fn transparent_addr(&self) -> Option<SocketAddr> {
        self.transparent.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes. Then no new connection is accepted, HTTP
    /// connections finish their current request and close, and whatever is still open when
    /// the drain time is over is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let shared = self.shared;
        let mut loops = Vec::new();
        if let Some(listener) = self.http_proxy {
            loops.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                Listener::HttpProxy,
            )));
        }
        if let Some(listener) = self.transparent {
            loops.push(tokio::spawn(accept_loop(
                shared.clone(),
                listener,
                Listener::Transparent,
            )));
        }
        let sweeper = tokio::spawn(sweep_pool(shared.clone()));
        shutdown.await;
        shared.drain.start();
        let _ = sweeper.await;
        for l in loops {
            let _ = l.await;
        }
        // Idle upstream connections serve no one any more.
        shared.pool.clear();
        if tokio::time::timeout(shared.timeouts.drain, shared.drain.idle())
            .await
            .is_err()
        {
            tracing::info!(
                open = shared.drain.active(),
                "outbound drain time over: closing the remaining connections"
            );
        }
        shared.drain.close();
        // Closing is immediate for every task; give them a moment to log their events.
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.drain.idle()).await;
        shared.pool.clear();
        Ok(())
    }
}

/// Closes idle upstream connections that outlived the idle timeout even when no request
/// visits their pool entry again.
async fn sweep_pool(shared: Arc<Shared>) {
    let period = (shared.timeouts.pool_idle / 2).max(Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shared.drain.draining() => return,
            _ = ticks.tick() => shared.pool.sweep(),
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, kind: Listener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.drain.draining() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let guard = shared.drain.track();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    match kind {
                        Listener::HttpProxy => http_proxy::serve(shared, stream, remote).await,
                        Listener::Transparent => match transparent::original_dst(&stream) {
                            Ok(dst) => transparent::serve(shared, stream, dst).await,
                            Err(e) => tracing::warn!(
                                peer = %remote,
                                error = %e,
                                "captured connection without an original destination: closed"
                            ),
                        },
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "outbound accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Everything connection tasks share.
struct Shared {
    state: Arc<StateHandle>,
    resolver: Resolver,
    connector: Connector,
    pool: Arc<Pool>,
    sink: EventSink,
    timeouts: Timeouts,
    drain: Arc<Drain>,
    /// The proxy's own listeners, so a request naming them is refused instead of looping.
    own_addrs: OnceLock<Vec<SocketAddr>>,
    /// See [`OutboundConfig::plain_forwarder`].
    plain_forwarder: bool,
    /// See [`OutboundConfig::request_details`].
    request_details: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("timeouts", &self.timeouts)
            .field("active", &self.drain.active())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn is_own_address(&self, addr: SocketAddr) -> bool {
        self.own_addrs.get().is_some_and(|own| {
            own.iter().any(|o| {
                o.port() == addr.port() && (o.ip() == addr.ip() || o.ip().is_unspecified())
            })
        })
    }
}

/// Shutdown phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Closed,
}

/// Tracks open connections and tells them when to stop.
#[derive(Debug)]
struct Drain {
    phase: watch::Sender<Phase>,
    active: watch::Sender<usize>,
}

impl Drain {
    fn new() -> Arc<Self> {
        Arc::new(Drain {
            phase: watch::Sender::new(Phase::Running),
            active: watch::Sender::new(0),
        })
    }

    /// Counts a connection until the guard is dropped.
    fn track(self: &Arc<Self>) -> DrainGuard {
        self.active.send_modify(|n| *n += 1);
        DrainGuard(self.clone())
    }

    fn active(&self) -> usize {
        *self.active.borrow()
    }

    fn start(&self) {
        self.phase.send_if_modified(|p| {
            let changed = *p < Phase::Draining;
            if changed {
                *p = Phase::Draining;
            }
            changed
        });
    }

    fn close(&self) {
        self.phase.send_replace(Phase::Closed);
    }

    /// Completes when shutdown starts.
    async fn draining(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= Phase::Draining).await;
    }

    /// Completes when the drain time is over: connections must close now.
    async fn closed(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= Phase::Closed).await;
    }

    /// Completes when no connection is open.
    async fn idle(&self) {
        let mut rx = self.active.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

#[derive(Debug)]
struct DrainGuard(Arc<Drain>);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}
