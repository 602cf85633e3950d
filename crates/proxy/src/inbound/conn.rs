//! One accepted connection, from the first byte to the chain that serves it: original
//! destination, transport detection, PeerAuthentication chain selection (authentication.md §2.4),
//! mTLS termination, then the HTTP or TCP chain.

use crate::observe::metrics::TlsSide;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ::http::HeaderValue;
use jiff::Timestamp;
use meshward_policy::InboundConnection;
use meshward_policy::peer_authn::EffectiveMtls;
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use super::Shared;
use super::chain::{self, Chain, Transport};
use super::detect::{self, ClientHello, Sniffed};
use super::drain::Drain;
use super::event::InboundEvent;
use super::replay::Recording;
use super::tls::{self, PeerInfo};
use super::{http, tcp, xfcc};
use crate::observe::record::ResponseFlags;

/// How the client's bytes reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// Plaintext chain.
    Plaintext,
    /// The proxy terminated mesh mTLS.
    Mtls,
    /// The application's TLS, passed through unread.
    Passthrough,
}

/// What every request and the TCP proxy of one connection share.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The client.
    pub(crate) remote: SocketAddr,
    /// The original destination: the workload's IP and target port.
    pub(crate) dst: SocketAddr,
    /// The TLS SNI.
    pub(crate) sni: Option<Arc<str>>,
    /// The client certificate, when mTLS was terminated.
    pub(crate) peer: Option<PeerInfo>,
    /// This hop's XFCC element (§1.9), when mTLS was terminated.
    pub(crate) xfcc: Option<HeaderValue>,
    /// How the bytes arrive.
    pub(crate) security: Security,
    /// The application's address.
    pub(crate) upstream: SocketAddr,
    /// `inbound|<port>||`.
    pub(crate) cluster: Arc<str>,
}

impl Conn {
    /// The connection as authorization sees it.
    pub(crate) fn inbound_connection(&self) -> InboundConnection<'_> {
        InboundConnection {
            source_ip: self.remote.ip(),
            destination_ip: self.dst.ip(),
            destination_port: self.dst.port(),
            peer: self.peer.as_ref().and_then(|p| p.uri.as_deref()),
            sni: self.sni.as_deref().unwrap_or(""),
        }
    }

    /// An event with this connection's fields filled in.
    pub(crate) fn event(&self, start_time: Timestamp) -> InboundEvent {
        let mut event = InboundEvent::new(start_time, self.dst, self.remote);
        event.upstream_cluster = Some(self.cluster.clone());
        event.requested_server_name = self.sni.clone();
        if let Some(peer) = &self.peer {
            event.downstream_tls_version = peer.version;
            event.downstream_peer_uri_san = peer.uri.clone();
            event.downstream_peer_subject = Some(peer.subject.clone());
            event.connection_security_policy = "mutual_tls";
        }
        event
    }

    /// Whether a connection that arrived like this one still finds a chain under `mode`.
    pub(crate) fn admitted_by(&self, mode: EffectiveMtls) -> bool {
        match self.security {
            Security::Plaintext => mode != EffectiveMtls::Strict,
            Security::Mtls => mode != EffectiveMtls::Disable,
            Security::Passthrough => mode == EffectiveMtls::Permissive,
        }
    }
}

/// When the connection started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Start {
    pub(crate) time: Timestamp,
    pub(crate) instant: Instant,
}

/// Serves one accepted connection. `listen` is the listener's address; `capture` says the
/// destination comes from `SO_ORIGINAL_DST`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    listen: SocketAddr,
    capture: bool,
    drain: Drain,
) {
    let start = Start {
        time: Timestamp::now(),
        instant: Instant::now(),
    };
    let local = stream.local_addr().unwrap_or(listen);
    let dst = if capture {
        let dst = original_dst(&stream).unwrap_or(local);
        if dst.port() == listen.port() && dst.ip() == local.ip() {
            // Not redirected (a client dialled the capture port itself): forwarding it to the
            // "application" on this port would connect the proxy to itself.
            tracing::debug!(%remote, %dst, "inbound connection to the capture port itself; closed");
            return;
        }
        dst
    } else {
        SocketAddr::new(local.ip(), listen.port())
    };
    let _ = stream.set_nodelay(true);
    let port = dst.port();
    let conn = Conn {
        remote,
        dst,
        sni: None,
        peer: None,
        xfcc: None,
        security: Security::Plaintext,
        upstream: shared.upstreams.addr(port),
        cluster: Arc::from(format!("inbound|{port}||")),
    };

    match detect::sniff(&stream, shared.timeouts.detect).await {
        Sniffed::Closed => {}
        Sniffed::Plaintext => match chain_for(&shared, port, Transport::Plaintext) {
            Chain::Plaintext { http: true } => {
                http::serve(stream, Arc::new(conn), shared, drain).await;
            }
            Chain::Plaintext { http: false } => {
                tcp::proxy(stream, Vec::new(), conn, shared, drain, start).await;
            }
            // authentication.md §2.4 "No chain matched (plaintext to STRICT …): Envoy closes the
            // connection immediately, before any HTTP is read or answered". Dropping the stream
            // with the client's bytes unread makes the kernel answer with a reset, which is what
            // a plain client sees from Envoy ("Connection reset by peer", curl exit 56).
            _ => no_chain(
                &shared,
                &conn,
                start,
                "plaintext connection to a port whose PeerAuthentication mode is STRICT",
            ),
        },
        Sniffed::Tls => serve_tls(shared, stream, conn, drain, start).await,
    }
}

/// The chain for `transport` on `port` under the state in force now (read after detection, which
/// may take a while, so a configuration change during it is honoured).
fn chain_for(shared: &Shared, port: u16, transport: Transport) -> Chain {
    let state = shared.state.load();
    chain::select(
        state.inbound.mtls_mode(port),
        state.inbound.is_http(port),
        transport,
    )
}

/// A connection that started with a TLS ClientHello.
///
/// The ClientHello and the paused handshake (about 1.4 KiB each) are only ever moved here, never
/// borrowed: a local that is borrowed lives in the connection's task for as long as the
/// connection, while one that is moved away does not, and this task exists once per connection.
async fn serve_tls(
    shared: Arc<Shared>,
    stream: TcpStream,
    mut conn: Conn,
    drain: Drain,
    start: Start,
) {
    let hello = match detect::read_client_hello(stream, shared.timeouts.detect).await {
        Ok(hello) => hello,
        Err(reason) => {
            tracing::info!(remote = %conn.remote, dst = %conn.dst, %reason, "inbound TLS connection closed before a filter chain was chosen");
            return;
        }
    };
    let (chain, paused) = choose_tls_chain(&shared, &mut conn, hello);
    match chain {
        Chain::Passthrough => {
            conn.security = Security::Passthrough;
            let (stream, client_hello) = paused.io.into_parts();
            tcp::proxy(stream, client_hello, conn, shared, drain, start).await;
        }
        Chain::Mtls { http } => {
            let Some(stream) = terminate_mtls(&shared, &mut conn, paused, start).await else {
                return;
            };
            if http {
                http::serve(stream, Arc::new(conn), shared, drain).await;
            } else {
                tcp::proxy(stream, Vec::new(), conn, shared, drain, start).await;
            }
        }
        // §2.4: "mTLS to DISABLE, non-Istio TLS to a PERMISSIVE HTTP port" find no chain; the
        // connection is closed with no TLS alert (the ClientHello is simply never answered).
        Chain::NoMatch | Chain::Plaintext { .. } => {
            let mode = shared.state.load().inbound.mtls_mode(conn.dst.port());
            let why = if mode == EffectiveMtls::Disable {
                "TLS connection to a port whose PeerAuthentication mode is DISABLE"
            } else {
                "TLS without an Istio ALPN to a PERMISSIVE HTTP port"
            };
            no_chain(&shared, &conn, start, why);
        }
    }
}

/// The filter chain for a ClientHello (by its ALPN, under the state in force now); records its
/// SNI on `conn` and gives back the paused handshake.
fn choose_tls_chain(
    shared: &Shared,
    conn: &mut Conn,
    hello: ClientHello,
) -> (Chain, StartHandshake<Recording<TcpStream>>) {
    let chain = chain_for(shared, conn.dst.port(), Transport::tls(&hello.alpn));
    conn.sni = hello.sni.map(Arc::from);
    (chain, hello.start)
}

/// Answers the paused handshake as the workload's mTLS server; on success records the peer on
/// `conn` and returns the stream, on failure logs and reports it (see [`handshake_failed`]).
async fn terminate_mtls(
    shared: &Shared,
    conn: &mut Conn,
    mut paused: StartHandshake<Recording<TcpStream>>,
    start: Start,
) -> Option<TlsStream<Recording<TcpStream>>> {
    paused.io.stop();
    let accept = paused.into_stream(shared.server_config.clone());
    match tls::handshake(accept, shared.timeouts.handshake).await {
        Err(reason) => {
            handshake_failed(shared, conn, start, &reason);
            None
        }
        Ok((stream, peer)) => {
            shared.handshakes.record(TlsSide::Server, peer.resumed);
            conn.security = Security::Mtls;
            conn.xfcc = xfcc::element(&shared.local_identity(), &peer);
            conn.peer = Some(peer);
            Some(stream)
        }
    }
}

/// Logs and reports a connection no filter chain matched (§2.4: "The server sidecar writes a
/// listener access-log line …: response code `0`, flag `NR`, details `filter_chain_not_found`").
fn no_chain(shared: &Shared, conn: &Conn, start: Start, why: &str) {
    tracing::info!(
        remote = %conn.remote,
        dst = %conn.dst,
        why,
        "NR filter_chain_not_found"
    );
    let mut event = conn.event(start.time);
    event.flag(ResponseFlags::NO_ROUTE_FOUND);
    event.response_code_details = Some("filter_chain_not_found".to_owned());
    event.upstream_cluster = None;
    event.set_reject(why.to_owned());
    event.duration = Some(start.instant.elapsed());
    (shared.events)(event);
}

/// Logs and reports a failed mTLS handshake (§1.8: the client certificate is required and must
/// chain to the mesh roots with a SPIFFE ID in an accepted trust domain).
fn handshake_failed(shared: &Shared, conn: &Conn, start: Start, reason: &str) {
    tracing::info!(
        remote = %conn.remote,
        dst = %conn.dst,
        sni = conn.sni.as_deref().unwrap_or("-"),
        %reason,
        "inbound mTLS handshake failed"
    );
    let mut event = conn.event(start.time);
    event.connection_termination_details = Some(format!("tls_handshake_error: {reason}"));
    event.set_reject(format!("mTLS handshake failed: {reason}"));
    event.duration = Some(start.instant.elapsed());
    (shared.events)(event);
}

/// The pre-redirect destination of an iptables-captured connection (`SO_ORIGINAL_DST`).
#[cfg(target_os = "linux")]
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let addr = if local.is_ipv4() {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    addr.ok()?.as_socket()
}

/// Without Linux's netfilter there is no original destination; the local address stands in.
#[cfg(not(target_os = "linux"))]
fn original_dst(_stream: &TcpStream) -> Option<SocketAddr> {
    None
}
