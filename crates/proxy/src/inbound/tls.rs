//! Terminating mesh mTLS on the inbound side: the server configuration, the bounded handshake,
//! and what the rest of the chain needs to know about the peer afterwards.

use std::sync::Arc;
use std::time::Duration;

use meshward_identity::MeshTls;
use meshward_identity::tls::{alpn, describe_tls_error, peer_certificate, resumed_peer_is_current};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::replay::Recording;

/// The stream of a terminated mTLS connection.
pub(crate) type MtlsStream = TlsStream<Recording<TcpStream>>;

/// ALPN values the server accepts, in preference order.
///
/// authentication.md §2.4: "server ALPN list `h2,http/1.1` for HTTP chains,
/// `istio-peer-exchange,h2,http/1.1` for TCP chains". rustls, unlike BoringSSL, aborts a handshake
/// whose client offered ALPN none of which the server lists, so the Istio values are accepted
/// too, after the plain protocols. `istio` comes before `istio-peer-exchange`: a TCP client
/// offering both (`istio-peer-exchange, istio`, §4.2) negotiates `istio`, which (like istiod's
/// `PILOT_DISABLE_MX_ALPN` row of §4.2) means no metadata-exchange frame precedes the data.
pub(crate) fn server_alpn() -> Vec<Vec<u8>> {
    vec![
        alpn::H2.to_vec(),
        alpn::HTTP11.to_vec(),
        alpn::ISTIO.to_vec(),
        alpn::ISTIO_H2.to_vec(),
        alpn::ISTIO_HTTP11.to_vec(),
        b"istio-http/1.0".to_vec(),
        alpn::ISTIO_PEER_EXCHANGE.to_vec(),
    ]
}

/// The inbound server configuration: client certificate required and verified per §1.8.
pub(crate) fn server_config(
    tls: &MeshTls,
) -> Result<Arc<ServerConfig>, meshward_identity::tls::ConfigError> {
    tls.server_config(server_alpn())
}

/// What the handshake established about the client.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    /// The first SPIFFE URI SAN (`source.principal`, `%DOWNSTREAM_PEER_URI_SAN%`).
    pub(crate) uri: Option<Arc<str>>,
    /// Every URI SAN (XFCC `URI=`).
    pub(crate) uri_sans: Vec<String>,
    /// DNS SANs (XFCC `DNS=`; none on Istio certificates).
    pub(crate) dns_sans: Vec<String>,
    /// Subject DN (empty on Istio certificates).
    pub(crate) subject: Arc<str>,
    /// SHA-256 of the leaf's DER, lowercase hex (XFCC `Hash=`).
    pub(crate) leaf_sha256: String,
    /// `TLSv1.2` or `TLSv1.3`.
    pub(crate) version: Option<&'static str>,
    /// The negotiated ALPN value.
    pub(crate) alpn: Option<Vec<u8>>,
    /// The handshake resumed an earlier session (no certificates were exchanged).
    pub(crate) resumed: bool,
}

/// Completes the handshake within `wait`. The error is the reason in words.
pub(crate) async fn handshake(
    accept: tokio_rustls::Accept<Recording<TcpStream>>,
    wait: Duration,
) -> Result<(MtlsStream, PeerInfo), String> {
    let stream = match tokio::time::timeout(wait, accept).await {
        Err(_) => return Err("TLS handshake timed out".to_owned()),
        Ok(Err(e)) => return Err(describe_tls_error(&e)),
        Ok(Ok(stream)) => stream,
    };
    let session = stream.get_ref().1;
    // The verifier required a certificate (§1.8 "Client cert **required**"); a session without
    // one cannot get here, but refuse it rather than treat it as anonymous.
    let Some(cert) = peer_certificate(session.peer_certificates()) else {
        return Err("the peer presented no certificate".to_owned());
    };
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    if resumed {
        resumed_peer_is_current(&cert, jiff::Timestamp::now())?;
    }
    let uri = cert
        .uri_sans
        .iter()
        .find(|u| u.starts_with("spiffe://"))
        .or_else(|| cert.uri_sans.first())
        .map(|u| Arc::<str>::from(u.as_str()));
    let version = session.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    });
    let info = PeerInfo {
        uri,
        uri_sans: cert.uri_sans,
        dns_sans: cert.dns_sans,
        subject: Arc::from(cert.subject.as_str()),
        leaf_sha256: cert.sha256,
        version,
        alpn: session.alpn_protocol().map(<[u8]>::to_vec),
        resumed,
    };
    Ok((stream, info))
}
