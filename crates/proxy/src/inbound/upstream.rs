//! Connections to the application: where each destination port's application listens, and a
//! pooled HTTP client per port (Envoy's `inbound|<port>||` cluster).
//!
//! Each port's client dials that port's application address whatever the request's authority,
//! so requests keep their original `:authority`/`Host` on the way to the application, as Envoy
//! forwards them.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;
use crate::wire::PortShift;

/// Idle pooled connections kept per application port.
const MAX_IDLE_PER_PORT: usize = 64;

/// Where the application listens, per destination port: `127.0.0.1:<port>` unless overridden
/// (a sidecar forwards inbound traffic to the application on localhost), at the port's wire
/// port when ports are shifted (see [`crate::wire`]).
#[derive(Debug, Clone)]
pub struct AppTarget {
    host: IpAddr,
    overrides: HashMap<u16, SocketAddr>,
    port_shift: PortShift,
}

impl Default for AppTarget {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            overrides: HashMap::new(),
            port_shift: PortShift::NONE,
        }
    }
}

impl AppTarget {
    /// The application on `127.0.0.1`, same port as the destination.
    pub fn localhost() -> Self {
        Self::default()
    }

    /// The application on `host`, same port as the destination.
    pub fn on_host(host: IpAddr) -> Self {
        Self {
            host,
            ..Self::default()
        }
    }

    /// The application serves each port below 1024 at its shifted wire port (explicit
    /// [`AppTarget::with_port`] addresses are used as given).
    pub fn with_port_shift(mut self, shift: PortShift) -> Self {
        self.port_shift = shift;
        self
    }

    /// Traffic for destination port `port` goes to `addr`.
    pub fn with_port(mut self, port: u16, addr: SocketAddr) -> Self {
        self.overrides.insert(port, addr);
        self
    }

    /// The application address for destination port `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        self.overrides
            .get(&port)
            .copied()
            .unwrap_or(SocketAddr::new(self.host, self.port_shift.wire(port)))
    }
}

/// Connects to one fixed address, whatever URI it is asked for.
#[derive(Debug, Clone)]
pub(crate) struct FixedConnector {
    inner: HttpConnector,
    target: Uri,
}

impl tower::Service<Uri> for FixedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = <HttpConnector as tower::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}

/// A pooled client to one application port.
pub(crate) type AppClient = Client<FixedConnector, RequestBody>;

/// Upstream timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamTimeouts {
    /// TCP connect (authentication.md §3.6: `tcp.connectTimeout` default 10 s).
    pub(crate) connect: Duration,
    /// Idle pooled connection lifetime (§3.6: `http.idleTimeout` default 1 h).
    pub(crate) idle: Duration,
}

/// The per-port clients, created on first use.
#[derive(Debug)]
pub(crate) struct Upstreams {
    app: AppTarget,
    timeouts: UpstreamTimeouts,
    clients: Mutex<HashMap<(u16, bool), AppClient>>,
}

impl Upstreams {
    pub(crate) fn new(app: AppTarget, timeouts: UpstreamTimeouts) -> Self {
        Self {
            app,
            timeouts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The application address of destination port `port`.
    pub(crate) fn addr(&self, port: u16) -> SocketAddr {
        self.app.addr(port)
    }

    /// The client of `port`; `h2` selects HTTP/2 with prior knowledge (h2c), for ports whose
    /// protocol is HTTP2 or GRPC; others get HTTP/1.1.
    pub(crate) fn http(&self, port: u16, h2: bool) -> Option<AppClient> {
        let mut clients = self.clients.lock().ok()?;
        if let Some(client) = clients.get(&(port, h2)) {
            return Some(client.clone());
        }
        let addr = self.app.addr(port);
        let target: Uri = format!("http://{addr}").parse().ok()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.timeouts.connect));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.timeouts.idle)
            .pool_max_idle_per_host(MAX_IDLE_PER_PORT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(h2)
            .build(FixedConnector {
                inner: connector,
                target,
            });
        clients.insert((port, h2), client.clone());
        Some(client)
    }

    /// A TCP connection to the application of `port`.
    pub(crate) fn tcp(
        &self,
        port: u16,
    ) -> impl Future<Output = std::io::Result<TcpStream>> + Send + 'static {
        let addr = self.app.addr(port);
        let wait = self.timeouts.connect;
        async move {
            let stream = tokio::time::timeout(wait, TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
