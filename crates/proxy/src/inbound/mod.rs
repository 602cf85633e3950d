//! The inbound listener (Istio's 15006 role): every connection to the workload arrives here, is
//! matched to a filter chain by its port's PeerAuthentication mode and what the client speaks
//! (authentication.md §2.4), has its mTLS terminated with the SPIFFE checks of §1.8, is
//! authenticated and authorized by the workload's compiled [`InboundPolicy`], and is forwarded to
//! the application (or refused exactly as an Envoy sidecar refuses it). Every request and
//! connection produces an [`InboundEvent`].
//!
//! Layout: `chain` picks the filter chain, `detect` tells TLS from plaintext, `tls` terminates
//! mTLS, `conn` takes a connection from accept to its chain, `http` and `tcp` are the two
//! chains, `reply` writes local replies, `xfcc` the client-certificate header, `upstream` reaches
//! the application, [`event`] describes what happened, `drain` shuts down gracefully.
//!
//! [`InboundPolicy`]: meshward_policy::InboundPolicy

mod body;
mod chain;
mod conn;
mod detect;
mod drain;
pub mod event;
mod http;
mod replay;
mod reply;
mod tcp;
mod tls;
mod upstream;
mod xfcc;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshward_identity::MeshTls;
use rustls::ServerConfig;
use tokio::net::TcpListener;

use crate::observe::metrics::TlsHandshakes;
use crate::state::StateHandle;
use crate::wire::PortShift;
use drain::{Drain, DrainControl};
pub use event::{AuthzVerdict, EventSink, InboundEvent, tracing_sink};
pub use upstream::AppTarget;
use upstream::{UpstreamTimeouts, Upstreams};

/// How connections reach the listener.
#[derive(Debug, Clone)]
pub enum ListenerMode {
    /// One listener (Istio's 15006) receiving iptables-redirected traffic; the destination is
    /// the connection's original destination (`SO_ORIGINAL_DST`), or its local address when
    /// that is unavailable.
    Capture {
        /// Where to listen, e.g. `0.0.0.0:15006`.
        addr: SocketAddr,
    },
    /// One listener per workload port on `bind_ip:<port>`, for environments without traffic
    /// capture; the destination is the listener's address.
    PerPort {
        /// The address to bind (the workload's address).
        bind_ip: IpAddr,
        /// The ports.
        ports: Vec<u16>,
    },
}

/// Time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Waiting for the client's first bytes and its TLS ClientHello.
    pub detect: Duration,
    /// Completing the mTLS handshake.
    pub handshake: Duration,
    /// Receiving an HTTP/1 request's headers.
    pub header_read: Duration,
    /// Connecting to the application (authentication.md §3.6 `connectTimeout`, 10 s).
    pub upstream_connect: Duration,
    /// Keeping an idle pooled connection to the application (§3.6 `idleTimeout`, 1 h).
    pub upstream_idle: Duration,
    /// How long connections in flight may finish after shutdown begins.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            detect: Duration::from_secs(5),
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(10),
            upstream_idle: Duration::from_secs(3600),
            drain: Duration::from_secs(5),
        }
    }
}

/// Why the listener cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The mTLS server configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] meshward_identity::tls::ConfigError),
    /// An address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Two workload ports would share one port on the wire (see [`crate::wire::PortShift`]).
    #[error(
        "workload ports {port} and {twin} would both listen on port {twin} (ports below 1024 are shifted by {offset})"
    )]
    PortClash {
        /// The shifted port.
        port: u16,
        /// The declared port it collides with.
        twin: u16,
        /// The shift.
        offset: u16,
    },
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) state: Arc<StateHandle>,
    pub(crate) tls: MeshTls,
    pub(crate) server_config: Arc<ServerConfig>,
    pub(crate) upstreams: Upstreams,
    pub(crate) events: EventSink,
    /// See [`Inbound::with_request_details`].
    pub(crate) request_details: bool,
    pub(crate) timeouts: Timeouts,
    pub(crate) handshakes: TlsHandshakes,
}

impl Shared {
    /// This workload's SPIFFE ID as its certificate states it (XFCC `By=`), or as configured
    /// while no certificate is loaded.
    pub(crate) fn local_identity(&self) -> String {
        match self.tls.credentials().certificate() {
            Some(active) => active.cert.identity().to_string(),
            None => self.state.load().identity.to_string(),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("upstreams", &self.upstreams)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// The inbound listener, configured.
pub struct Inbound {
    state: Arc<StateHandle>,
    tls: MeshTls,
    app: AppTarget,
    mode: ListenerMode,
    events: EventSink,
    request_details: bool,
    timeouts: Timeouts,
    handshakes: TlsHandshakes,
    port_shift: PortShift,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("app", &self.app)
            .field("mode", &self.mode)
            .field("timeouts", &self.timeouts)
            .field("port_shift", &self.port_shift)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// A listener enforcing `state` with this workload's `tls` credentials, forwarding to
    /// `app`. Events go to [`tracing_sink`] unless [`Inbound::with_events`] says otherwise.
    pub fn new(state: Arc<StateHandle>, tls: MeshTls, app: AppTarget, mode: ListenerMode) -> Self {
        Self {
            state,
            tls,
            app,
            mode,
            events: tracing_sink(),
            request_details: true,
            timeouts: Timeouts::default(),
            handshakes: TlsHandshakes::default(),
            port_shift: PortShift::NONE,
        }
    }

    /// Serves and dials the workload's ports on the wire as `shift` says: per-port listeners
    /// bind the shifted ports and the application is reached on them, while policies, routes
    /// and events keep the declared (logical) port (see [`crate::wire`]). The capture
    /// listener is not affected: redirected connections carry their real destination.
    pub fn with_port_shift(mut self, shift: PortShift) -> Self {
        self.port_shift = shift;
        self
    }

    /// Delivers events to `sink`.
    pub fn with_events(mut self, sink: EventSink) -> Self {
        self.events = sink;
        self
    }

    /// Whether events carry each request's method, path, authority and logged headers. Only
    /// an access log reads them, so without one the proxy need not copy them per request
    /// (default: they are carried).
    pub fn with_request_details(mut self, carried: bool) -> Self {
        self.request_details = carried;
        self
    }

    /// Counts completed mTLS handshakes into `handshakes`.
    pub fn with_handshake_counts(mut self, handshakes: TlsHandshakes) -> Self {
        self.handshakes = handshakes;
        self
    }

    /// Replaces the time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Binds the listeners (so their addresses are known before serving).
    pub async fn bind(self) -> Result<Listening, InboundError> {
        let server_config = tls::server_config(&self.tls)?;
        let shift = self.port_shift;
        // (logical address, wire address): they differ only for shifted per-port listeners.
        let (addrs, capture): (Vec<(SocketAddr, SocketAddr)>, bool) = match &self.mode {
            ListenerMode::Capture { addr } => (vec![(*addr, *addr)], true),
            ListenerMode::PerPort { bind_ip, ports } => {
                if let (Some((port, twin)), Some(offset)) = (shift.clash(ports), shift.offset()) {
                    return Err(InboundError::PortClash { port, twin, offset });
                }
                let addrs = ports
                    .iter()
                    .map(|p| {
                        let logical = SocketAddr::new(*bind_ip, *p);
                        (logical, shift.wire_addr(logical))
                    })
                    .collect();
                (addrs, false)
            }
        };
        let mut listeners = Vec::with_capacity(addrs.len());
        for (logical, addr) in addrs {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| InboundError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| InboundError::Bind { addr, source })?;
            // A connection's destination port is the listener's logical port (the kernel's
            // choice when the port was 0).
            let listen = if logical == addr { local } else { logical };
            listeners.push(Listener {
                listener,
                listen,
                local,
            });
        }
        let shared = Arc::new(Shared {
            state: self.state,
            tls: self.tls,
            server_config,
            upstreams: Upstreams::new(
                if shift == PortShift::NONE {
                    self.app
                } else {
                    self.app.with_port_shift(shift)
                },
                UpstreamTimeouts {
                    connect: self.timeouts.upstream_connect,
                    idle: self.timeouts.upstream_idle,
                },
            ),
            events: self.events,
            request_details: self.request_details,
            timeouts: self.timeouts,
            handshakes: self.handshakes,
        });
        Ok(Listening {
            listeners,
            capture,
            shared,
        })
    }

    /// Binds and serves until `shutdown` resolves, then drains (see [`Listening::run`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), InboundError> {
        self.bind().await?.run(shutdown).await;
        Ok(())
    }
}

/// One bound listener.
#[derive(Debug)]
struct Listener {
    listener: TcpListener,
    /// What its connections are addressed to, as policies see it.
    listen: SocketAddr,
    /// What it is bound to on the wire.
    local: SocketAddr,
}

/// Bound listeners, ready to serve.
#[derive(Debug)]
pub struct Listening {
    listeners: Vec<Listener>,
    capture: bool,
    shared: Arc<Shared>,
}

impl Listening {
    /// The addresses listened on (on the wire).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// Serves until `shutdown` resolves. Then stops accepting, lets connections in flight
    /// finish for up to the drain time (HTTP connections finish their current requests and
    /// close), closes what is left, and returns once every connection task has ended.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let control = DrainControl::new();
        for Listener {
            listener, listen, ..
        } in self.listeners
        {
            let Some(drain) = control.handle() else {
                continue;
            };
            tokio::spawn(accept_loop(
                listener,
                listen,
                self.capture,
                self.shared.clone(),
                drain,
            ));
        }
        shutdown.await;
        tracing::info!("inbound listener draining");
        control.shutdown(self.shared.timeouts.drain).await;
    }
}

/// Accepts until shutdown begins; each connection runs on its own task.
async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    capture: bool,
    shared: Arc<Shared>,
    mut drain: Drain,
) {
    loop {
        tokio::select! {
            () = drain.draining() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    tokio::spawn(conn::handle(
                        shared.clone(),
                        stream,
                        remote,
                        addr,
                        capture,
                        drain.clone(),
                    ));
                }
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(%addr, error = %e, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
