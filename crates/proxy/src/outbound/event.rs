//! What the outbound side reports: one [`OutboundEvent`] per HTTP request or TCP connection,
//! handed to a sink when the request or connection ends.
//!
//! The event is plain owned data so the access log and metrics can be built on top of it
//! without the outbound code knowing their formats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::observe::OptDisplay;
use crate::observe::record::ResponseFlags;
use jiff::Timestamp;

/// Receives every finished request or connection.
pub type EventSink = Arc<dyn Fn(OutboundEvent) + Send + Sync>;

/// Which listener handled the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The explicit HTTP proxy port (absolute-form requests and CONNECT).
    HttpProxy,
    /// The capture port receiving iptables-redirected connections (Istio's 15001).
    Transparent,
}

/// One finished request (HTTP) or connection (TCP, CONNECT tunnel).
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    /// Which listener handled it.
    pub listener: Listener,
    /// When the request or connection started.
    pub start_time: Timestamp,
    /// Start to the last byte sent downstream (or to the close of a TCP connection).
    pub duration: Duration,
    /// `HTTP/1.1` or `HTTP/2` as spoken downstream; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// HTTP method.
    pub method: Option<String>,
    /// Path with query, as received.
    pub path: Option<String>,
    /// `:authority` / `Host`.
    pub authority: Option<String>,
    /// HTTP status sent downstream; 0 for TCP.
    pub response_code: u16,
    /// Envoy response flags, in Envoy's order ([`flags`]); empty renders as `-`.
    pub response_flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`, e.g. `via_upstream`.
    pub response_code_details: Option<String>,
    /// Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub upstream_transport_failure_reason: Option<String>,
    /// Body bytes received from downstream (TCP: all bytes).
    pub bytes_received: u64,
    /// Body bytes sent downstream (TCP: all bytes).
    pub bytes_sent: u64,
    /// The downstream peer.
    pub downstream_remote_address: Option<SocketAddr>,
    /// Where the downstream connected: the proxy port, or the original destination when
    /// captured.
    pub downstream_local_address: Option<SocketAddr>,
    /// The chosen upstream `ip:port`.
    pub upstream_host: Option<SocketAddr>,
    /// The local address of the upstream connection.
    pub upstream_local_address: Option<SocketAddr>,
    /// `outbound|<port>||<fqdn>` or `PassthroughCluster`.
    pub upstream_cluster: Option<Arc<str>>,
    /// The SNI sent upstream (mTLS only).
    pub requested_server_name: Option<Arc<str>>,
    /// Whether the upstream connection is mesh mTLS.
    pub upstream_mtls: bool,
    /// The server identity verified by secure naming (mTLS only).
    pub upstream_peer_identity: Option<Arc<str>>,
    /// The destination service FQDN, when the destination is a mesh service.
    pub destination_service: Option<Arc<str>>,
    /// The destination workload `ns/name`, when the destination is in the mesh.
    pub destination_workload: Option<String>,
    /// Request headers the default log format reads (`user-agent`, `x-request-id`,
    /// `x-forwarded-for`), as sent upstream.
    pub request_headers: Vec<(String, String)>,
}

impl OutboundEvent {
    fn new(listener: Listener) -> Self {
        OutboundEvent {
            listener,
            start_time: Timestamp::now(),
            duration: Duration::ZERO,
            protocol: None,
            method: None,
            path: None,
            authority: None,
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            downstream_remote_address: None,
            downstream_local_address: None,
            upstream_host: None,
            upstream_local_address: None,
            upstream_cluster: None,
            requested_server_name: None,
            upstream_mtls: false,
            upstream_peer_identity: None,
            destination_service: None,
            destination_workload: None,
            request_headers: Vec::new(),
        }
    }

    /// The flags as Envoy prints them: `UF,URX`, or `-`.
    pub fn flags_text(&self) -> String {
        self.response_flags.to_string()
    }
}

/// The default sink: one structured `tracing` line per event.
pub fn log_sink() -> EventSink {
    Arc::new(|e: OutboundEvent| {
        tracing::info!(
            target: "meshward_proxy::outbound",
            start_time = %e.start_time,
            duration_ms = e.duration.as_millis() as u64,
            protocol = e.protocol.unwrap_or("TCP"),
            method = e.method.as_deref().unwrap_or("-"),
            path = e.path.as_deref().unwrap_or("-"),
            authority = e.authority.as_deref().unwrap_or("-"),
            response_code = e.response_code,
            response_flags = %e.flags_text(),
            response_code_details = e.response_code_details.as_deref().unwrap_or("-"),
            transport_failure_reason = e.upstream_transport_failure_reason.as_deref().unwrap_or("-"),
            bytes_received = e.bytes_received,
            bytes_sent = e.bytes_sent,
            upstream_host = %OptDisplay(e.upstream_host.as_ref()),
            upstream_cluster = e.upstream_cluster.as_deref().unwrap_or("-"),
            sni = e.requested_server_name.as_deref().unwrap_or("-"),
            upstream_peer = e.upstream_peer_identity.as_deref().unwrap_or("-"),
            destination_service = e.destination_service.as_deref().unwrap_or("-"),
            "outbound"
        );
    })
}

/// Builds one event while the traffic flows and hands it to the sink exactly once: when
/// [`Recorder::finish`] is called or, if the request is abandoned half-way (the downstream
/// hung up, the task was cancelled), when the recorder is dropped.
pub(crate) struct Recorder {
    event: Option<OutboundEvent>,
    started: Instant,
    sink: EventSink,
    /// Body (TCP: stream) bytes from downstream, counted by whoever carries them.
    pub(crate) received: Arc<AtomicU64>,
    /// Body (TCP: stream) bytes to downstream.
    pub(crate) sent: Arc<AtomicU64>,
}

impl Recorder {
    pub(crate) fn new(sink: EventSink, listener: Listener) -> Self {
        Recorder {
            event: Some(OutboundEvent::new(listener)),
            started: Instant::now(),
            sink,
            received: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs `f` on the event being built.
    pub(crate) fn update(&mut self, f: impl FnOnce(&mut OutboundEvent)) {
        if let Some(e) = self.event.as_mut() {
            f(e);
        }
    }

    /// Adds a response flag once.
    pub(crate) fn flag(&mut self, flag: ResponseFlags) {
        self.update(|e| e.response_flags.insert(flag));
    }

    /// Emits the event now.
    pub(crate) fn finish(mut self) {
        self.emit();
    }

    fn emit(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.duration = self.started.elapsed();
            event.bytes_received = self.received.load(Ordering::Relaxed);
            event.bytes_sent = self.sent.load(Ordering::Relaxed);
            (self.sink)(event);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Dropped without `finish`: the task carrying the request was cancelled, which happens
        // when the downstream connection goes away before the response (Envoy's `DC`).
        if self.event.is_some() {
            self.flag(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        self.emit();
    }
}
