//! What the live runner hands the in-namespace client (`meshward live-client`, hidden) and what
//! it gets back: one JSON batch of probes on stdin, one JSON array of results on stdout.

use serde::{Deserialize, Serialize};

/// One connection (and on HTTP ports, one request) to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Probe {
    /// The case's index in its document.
    pub(crate) id: usize,
    /// `ip:port` to connect to.
    pub(crate) connect: String,
    /// Source address to bind (a `from.address`), if any.
    #[serde(default)]
    pub(crate) bind: Option<String>,
    /// Mesh mTLS as a sidecar would originate it, when set.
    #[serde(default)]
    pub(crate) tls: Option<TlsSpec>,
    /// How to talk once connected.
    pub(crate) protocol: WireProtocol,
    /// The HTTP request (HTTP protocols only).
    #[serde(default)]
    pub(crate) request: Option<HttpSpec>,
}

/// The bytes on the wire after the (optional) TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum WireProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (h2c in plaintext, ALPN `istio-h2` in mTLS).
    Http2,
    /// gRPC over HTTP/2 (`content-type: application/grpc`).
    Grpc,
    /// Opaque TCP: a line is sent and must come back.
    Tcp,
}

/// A client certificate and how to present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TlsSpec {
    /// PKCS#8 key, PEM.
    pub(crate) key_pem: String,
    /// Leaf first, PEM.
    pub(crate) chain_pem: String,
    /// The roots the server's certificate must chain to, PEM.
    pub(crate) roots_pem: String,
    /// The SNI to send.
    pub(crate) sni: String,
}

/// One HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HttpSpec {
    /// Method.
    pub(crate) method: String,
    /// Path and query, raw.
    pub(crate) path: String,
    /// `:authority` / `Host`.
    pub(crate) host: String,
    /// Header lines, in order (a repeated header is several lines).
    pub(crate) headers: Vec<(String, String)>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Observed {
    /// An HTTP response came back.
    Response {
        /// Status code.
        status: u16,
        /// Whether the echo app wrote it (its `x-meshward-pod` header).
        from_app: bool,
        /// `grpc-status`, from the headers or the trailers.
        grpc_status: Option<String>,
        /// The start of the body.
        body: String,
    },
    /// The TCP line came back.
    Echoed,
    /// The connection was closed or reset (or the handshake failed) with no response or data.
    Closed {
        /// What the client saw.
        detail: String,
    },
    /// No connection could be made.
    ConnectFailed {
        /// Why.
        detail: String,
    },
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProbeResult {
    /// The probe's id.
    pub(crate) id: usize,
    /// The client's `ip:port` (to find the connection in the proxies' access logs).
    pub(crate) local: Option<String>,
    /// What happened.
    pub(crate) observed: Observed,
}

/// The line TCP probes send (lower case, so the echo app does not take it for HTTP).
pub(crate) const TCP_LINE: &[u8] = b"meshward-live-probe\n";
