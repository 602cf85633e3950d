//! Opening upstream connections: plaintext TCP, or Istio mTLS presenting the workload
//! certificate and checking the server's identity (secure naming), with the ALPN and SNI an
//! Envoy sidecar sends.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use meshward_api::SpiffeId;
use meshward_identity::MeshTls;
use meshward_identity::tls::{
    ActiveRoots, alpn, describe_tls_error, peer_certificate, resumed_peer_is_current,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::resolve::{MtlsTarget, Transport};
use crate::observe::metrics::{TlsHandshakes, TlsSide};
use crate::wire::{self, PortShift, SourceBind};

/// More distinct (identities, ALPN) pairs than this means the mesh changed a lot; the cache
/// is dropped and rebuilt on demand rather than grown without bound.
const MAX_CACHED_CONFIGS: usize = 1024;

/// A client configuration is fixed by the identities it verifies and the ALPN it offers.
type ConfigKey = (Arc<[SpiffeId]>, AppProtocol);

/// What the connection will carry, which decides the ALPN offered (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1: `istio-http/1.1, istio, http/1.1`.
    Http1,
    /// HTTP/2: `istio-h2, istio, h2`.
    Http2,
    /// Opaque TCP: `istio-peer-exchange, istio`.
    Tcp,
}

impl AppProtocol {
    /// §4.2: what the client offers, in order.
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            AppProtocol::Http1 => alpn::client_http1(),
            AppProtocol::Http2 => alpn::client_h2(),
            AppProtocol::Tcp => alpn::client_tcp(),
        }
    }
}

/// Why an upstream connection could not be opened. The texts follow Envoy's
/// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` and local reply bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connection failed (refused, unreachable).
    #[error("remote connection failure: {0}")]
    Tcp(io::Error),
    /// TCP connect or the TLS handshake did not finish in time.
    #[error("connection timeout")]
    Timeout,
    /// The TLS handshake failed; the reason names what was presented and expected.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// This proxy cannot originate what the configuration asks for.
    #[error("{0}")]
    Unsupported(Arc<str>),
}

impl ConnectError {
    /// Envoy's reset reason for the local reply.
    pub fn reset_reason(&self) -> &'static str {
        match self {
            ConnectError::Tcp(_) => "remote connection failure",
            ConnectError::Timeout => "connection timeout",
            ConnectError::Tls(_) | ConnectError::Unsupported(_) => "connection failure",
        }
    }

    /// Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub fn transport_failure_reason(&self) -> Option<String> {
        match self {
            // Envoy reports refused connections as `delayed connect error: 111`.
            ConnectError::Tcp(e) => Some(match e.raw_os_error() {
                Some(code) => format!("delayed connect error: {code}"),
                None => e.to_string(),
            }),
            ConnectError::Timeout => None,
            ConnectError::Tls(reason) => Some(reason.clone()),
            ConnectError::Unsupported(reason) => Some(reason.to_string()),
        }
    }

    /// The body of Envoy's 503 local reply.
    pub fn local_reply_body(&self) -> String {
        let mut body = format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {}",
            self.reset_reason()
        );
        if let Some(reason) = self.transport_failure_reason() {
            body.push_str(", transport failure reason: ");
            body.push_str(&reason);
        }
        body
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `upstream_reset_before_response_started{…}` with
    /// spaces replaced by underscores, as Envoy writes it.
    pub fn response_code_details(&self) -> String {
        let mut inner = self.reset_reason().replace(' ', "_");
        if let Some(reason) = self.transport_failure_reason() {
            inner.push('|');
            inner.push_str(&reason.replace(char::is_whitespace, "_"));
        }
        format!("upstream_reset_before_response_started{{{inner}}}")
    }
}

/// An open upstream connection, plaintext or mTLS.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// Mesh mTLS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What is known about an open connection, for logs and pooling.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The upstream `ip:port`.
    pub peer: Option<SocketAddr>,
    /// The local address of the connection.
    pub local: Option<SocketAddr>,
    /// The SNI sent (mTLS).
    pub sni: Option<Arc<str>>,
    /// The server identity that passed secure naming (its first SPIFFE URI SAN).
    pub peer_identity: Option<Arc<str>>,
    /// The ALPN protocol the server selected.
    pub alpn: Option<Vec<u8>>,
    /// Mesh mTLS?
    pub mtls: bool,
}

/// The client configurations of one trust bundle.
#[derive(Debug)]
struct ClientConfigs {
    /// The roots they were made under.
    roots: Option<Arc<ActiveRoots>>,
    by_key: HashMap<ConfigKey, Arc<ClientConfig>>,
}

/// An open upstream connection.
#[derive(Debug)]
pub struct Upstream {
    /// The bytes.
    pub stream: UpstreamStream,
    /// What is known about it.
    pub info: Arc<ConnectionInfo>,
}

/// Opens upstream connections, keeping one rustls configuration per (expected identities,
/// ALPN) since building one runs the verifier setup and provider cloning every time. Each
/// configuration also holds the TLS sessions it may resume, so the cache belongs to one trust
/// bundle: when the roots change it is emptied, and nothing verified under the old roots is
/// resumed.
#[derive(Debug)]
pub struct Connector {
    tls: MeshTls,
    handshakes: TlsHandshakes,
    configs: Mutex<ClientConfigs>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
    /// Where mesh endpoints listen on the wire (see [`crate::wire`]).
    port_shift: PortShift,
    /// The local address connections leave from.
    source: SourceBind,
    /// Originate plaintext whatever the route says (the plain forwarder has no identity).
    plaintext_only: bool,
}

impl Connector {
    /// Connections presenting `tls`'s workload certificate. `connect_timeout` bounds the TCP
    /// connect (Istio's default `connectTimeout` is 10 s, §3.6), `handshake_timeout` the TLS
    /// handshake.
    pub fn new(
        tls: MeshTls,
        handshakes: TlsHandshakes,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Self {
        Connector {
            tls,
            handshakes,
            configs: Mutex::new(ClientConfigs {
                roots: None,
                by_key: HashMap::new(),
            }),
            connect_timeout,
            handshake_timeout,
            port_shift: PortShift::NONE,
            source: SourceBind::default(),
            plaintext_only: false,
        }
    }

    /// Dials mesh endpoints at their wire ports ([`Connector::mesh_endpoint`]) and binds
    /// connections to `source` where it can route (see [`crate::wire`]).
    pub fn with_wire(mut self, port_shift: PortShift, source: SourceBind) -> Self {
        self.port_shift = port_shift;
        self.source = source;
        self
    }

    /// Originates plaintext on every connection, whatever DestinationRules or auto mTLS would
    /// choose: for a client without an identity (the plain forwarder), which has nothing to
    /// originate mTLS with and which Istio's rules do not cover (they apply to sidecars).
    pub fn plaintext_only(mut self) -> Self {
        self.plaintext_only = true;
        self
    }

    /// The address to dial for a mesh endpoint the mesh names `logical` (pod IP and container
    /// port): the port shift applies to mesh endpoints only, never to destinations outside
    /// the mesh.
    pub fn mesh_endpoint(&self, logical: SocketAddr) -> SocketAddr {
        self.port_shift.wire_addr(logical)
    }

    /// Connects to `addr` and originates `transport`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        transport: &Transport,
        protocol: AppProtocol,
    ) -> Result<Upstream, ConnectError> {
        let transport = if self.plaintext_only {
            &Transport::Plaintext
        } else {
            transport
        };
        // Refuse before opening anything: a configuration this proxy cannot honour must not
        // leave a half-open connection behind.
        if let Transport::Refused(reason) = transport {
            return Err(ConnectError::Unsupported(reason.clone()));
        }
        let source = self.source.for_destination(addr.ip());
        let tcp = tokio::time::timeout(self.connect_timeout, wire::connect(addr, source))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Tcp)?;
        // Requests are small and latency-bound; Envoy sets TCP_NODELAY upstream too.
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().ok();
        match transport {
            Transport::Plaintext | Transport::Refused(_) => Ok(Upstream {
                stream: UpstreamStream::Plain(tcp),
                info: Arc::new(ConnectionInfo {
                    peer: Some(addr),
                    local,
                    ..ConnectionInfo::default()
                }),
            }),
            Transport::Mtls(target) => self.handshake(tcp, addr, local, target, protocol).await,
        }
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        local: Option<SocketAddr>,
        target: &MtlsTarget,
        protocol: AppProtocol,
    ) -> Result<Upstream, ConnectError> {
        let config = self.config(&target.expected, protocol)?;
        // §4.3: SNI `outbound_.<port>_.<subset>_.<fqdn>`. rustls sends SNI only for names that
        // are valid DNS names; a name ending in an IP address (a pod without a service) goes
        // without SNI, which the server does not use for routing (§4.3 "sidecar inbound
        // ignores it for routing").
        let server_name = match ServerName::try_from(target.sni.to_string()) {
            Ok(name @ ServerName::DnsName(_)) => name,
            _ => ServerName::IpAddress(addr.ip().into()),
        };
        let sent_sni = matches!(server_name, ServerName::DnsName(_)).then(|| target.sni.clone());
        let connector = TlsConnector::from(config);
        let tls = tokio::time::timeout(self.handshake_timeout, connector.connect(server_name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(|e| ConnectError::Tls(describe_tls_error(&e)))?;
        let (_, session) = tls.get_ref();
        let peer = peer_certificate(session.peer_certificates());
        let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        self.handshakes.record(TlsSide::Client, resumed);
        if resumed {
            let current = peer
                .as_ref()
                .ok_or_else(|| "the resumed session has no peer certificate".to_owned())
                .and_then(|p| resumed_peer_is_current(p, jiff::Timestamp::now()));
            if let Err(why) = current {
                return Err(ConnectError::Tls(why));
            }
        }
        let peer_identity = peer.and_then(|c| {
            c.uri_sans
                .into_iter()
                .find(|san| san.starts_with(meshward_api::spiffe::SCHEME))
                .map(Arc::from)
        });
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        Ok(Upstream {
            stream: UpstreamStream::Tls(Box::new(tls)),
            info: Arc::new(ConnectionInfo {
                peer: Some(addr),
                local,
                sni: sent_sni,
                peer_identity,
                alpn,
                mtls: true,
            }),
        })
    }

    fn config(
        &self,
        expected: &Arc<[SpiffeId]>,
        protocol: AppProtocol,
    ) -> Result<Arc<ClientConfig>, ConnectError> {
        let key = (expected.clone(), protocol);
        let roots = self.tls.credentials().roots();
        let mut cache = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.roots.as_ref().is_some_and(|r| Arc::ptr_eq(r, &roots)) {
            cache.roots = Some(roots);
            cache.by_key.clear();
        }
        let configs = &mut cache.by_key;
        if let Some(config) = configs.get(&key) {
            return Ok(config.clone());
        }
        // The identities are alias-expanded inside `client_config` (§1.2).
        let config = self
            .tls
            .client_config(expected, protocol.alpn())
            .map_err(|e| ConnectError::Unsupported(Arc::from(e.to_string())))?;
        if configs.len() >= MAX_CACHED_CONFIGS {
            configs.clear();
        }
        configs.insert(key, config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_texts_for_a_tls_failure() {
        let e = ConnectError::Tls("invalid peer certificate: bad".to_owned());
        assert_eq!(
            e.local_reply_body(),
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: invalid peer certificate: bad"
        );
        assert_eq!(
            e.response_code_details(),
            "upstream_reset_before_response_started{connection_failure|invalid_peer_certificate:_bad}"
        );
    }

    #[test]
    fn refused_connections_read_like_envoy() {
        let e = ConnectError::Tcp(io::Error::from_raw_os_error(111));
        assert_eq!(
            e.transport_failure_reason().as_deref(),
            Some("delayed connect error: 111")
        );
        assert_eq!(e.reset_reason(), "remote connection failure");
    }
}
