//! What the inbound listener reports about every connection and request it handles: one
//! [`InboundEvent`] per HTTP request (when its response ends) and per TCP connection (when it
//! closes, or when no filter chain matched). The access log and the Istio metrics are built from
//! these events by whoever owns the sink; this module knows nothing about log formats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::observe::OptDisplay;
use crate::observe::record::ResponseFlags;
use jiff::Timestamp;
use meshward_policy::authz::{AuthzDecision, RuleId};

/// Where events go. Called on the connection's task; keep it cheap (hand the event to a channel
/// if formatting is expensive).
pub type EventSink = Arc<dyn Fn(InboundEvent) + Send + Sync>;

/// The sink used when none is given: one `tracing` line per event.
pub fn tracing_sink() -> EventSink {
    Arc::new(|event: InboundEvent| {
        tracing::info!(
            target: "meshward::inbound",
            start_time = %event.start_time,
            protocol = event.protocol.unwrap_or("TCP"),
            method = event.method.as_deref().unwrap_or("-"),
            path = event.path.as_deref().unwrap_or("-"),
            authority = event.authority.as_deref().unwrap_or("-"),
            response_code = event.response_code,
            response_flags = %event.flags_text(),
            response_code_details = event.response_code_details.as_deref().unwrap_or("-"),
            connection_termination_details =
                event.connection_termination_details.as_deref().unwrap_or("-"),
            bytes_received = event.bytes_received,
            bytes_sent = event.bytes_sent,
            duration_ms = event.duration.map(|d| d.as_millis()).unwrap_or_default(),
            upstream_host = %OptDisplay(event.upstream_host.as_ref()),
            upstream_cluster = event.upstream_cluster.as_deref().unwrap_or("-"),
            downstream_local = %event.downstream_local_address,
            downstream_remote = %event.downstream_remote_address,
            sni = event.requested_server_name.as_deref().unwrap_or("-"),
            tls_version = event.downstream_tls_version.unwrap_or("-"),
            peer = event.downstream_peer_uri_san.as_deref().unwrap_or("-"),
            authz = event.verdict.map(AuthzVerdict::as_str).unwrap_or("-"),
            policy = event.deciding_policy().as_deref().unwrap_or("-"),
            reason = event.reason().as_deref().unwrap_or("-"),
            "inbound"
        );
    })
}

/// What authorization (and the authentication in front of it) decided, in one word: `authz=` in
/// access-log lines and the `decision` label of the decision counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthzVerdict {
    /// Allowed, no AUDIT rule matched.
    Allow,
    /// Denied by a DENY or CUSTOM rule, or ALLOW policies apply and none matched.
    Deny,
    /// Allowed and an AUDIT rule matched (authorization.md §9 `access_log_hint`).
    Audit,
    /// RequestAuthentication refused a present, invalid token before authorization ran.
    Unauthenticated,
    /// Refused below HTTP before authorization ran: no filter chain for the PeerAuthentication
    /// mode, or the mTLS handshake failed.
    Reject,
}

impl AuthzVerdict {
    /// `allow`, `deny`, `audit`, `unauthenticated`, `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzVerdict::Allow => "allow",
            AuthzVerdict::Deny => "deny",
            AuthzVerdict::Audit => "audit",
            AuthzVerdict::Unauthenticated => "unauthenticated",
            AuthzVerdict::Reject => "reject",
        }
    }
}

/// One HTTP request or one TCP connection, as an access-log line and Istio's standard metrics
/// need it. Plain owned data; values shared by every request of a connection are `Arc`s.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    /// `%START_TIME%`.
    pub start_time: Timestamp,
    /// `%DURATION%`: start to the last byte sent downstream (TCP: to the close).
    pub duration: Option<Duration>,
    /// `%PROTOCOL%`: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// `%REQ(:METHOD)%`.
    pub method: Option<String>,
    /// `%REQ(:PATH)%`: the path as received, before JWT or normalization changed it.
    pub path: Option<String>,
    /// `%REQ(:AUTHORITY)%`.
    pub authority: Option<String>,
    /// Request headers the default log format and metrics name (`user-agent`, `x-request-id`,
    /// `x-forwarded-for`), lower-case names.
    pub request_headers: Vec<(String, String)>,
    /// `%RESPONSE_CODE%`: 0 when there was no HTTP response (TCP, rejected connection, client
    /// gone before the answer).
    pub response_code: u16,
    /// `grpc-status` of the response (headers or trailers), for `grpc_response_status`.
    pub grpc_status: Option<u32>,
    /// `%RESPONSE_FLAGS%`: Envoy short names ([`flags`]); empty renders `-`.
    pub response_flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`: `via_upstream`, `rbac_access_denied_matched_policy[…]`,
    /// `jwt_authn_access_denied{…}`, `filter_chain_not_found`, …
    pub response_code_details: Option<String>,
    /// `%CONNECTION_TERMINATION_DETAILS%`: why the proxy closed a TCP connection (network RBAC
    /// denial, a failed handshake, a policy change).
    pub connection_termination_details: Option<String>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub upstream_transport_failure_reason: Option<String>,
    /// `%BYTES_RECEIVED%`: body bytes from downstream (TCP: every byte).
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: body bytes to downstream (TCP: every byte).
    pub bytes_sent: u64,
    /// `%UPSTREAM_HOST%`: the application's address, when the proxy tried it.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER%`: `inbound|<port>||`.
    pub upstream_cluster: Option<Arc<str>>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the original destination (pod IP and target port).
    pub downstream_local_address: SocketAddr,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's address.
    pub downstream_remote_address: SocketAddr,
    /// `%REQUESTED_SERVER_NAME%`: the TLS SNI.
    pub requested_server_name: Option<Arc<str>>,
    /// `%DOWNSTREAM_TLS_VERSION%`: `TLSv1.2`, `TLSv1.3`; `None` when the proxy did not
    /// terminate TLS.
    pub downstream_tls_version: Option<&'static str>,
    /// `%DOWNSTREAM_PEER_URI_SAN%`: the client certificate's SPIFFE ID.
    pub downstream_peer_uri_san: Option<Arc<str>>,
    /// `%DOWNSTREAM_PEER_SUBJECT%` (empty for Istio certificates).
    pub downstream_peer_subject: Option<Arc<str>>,
    /// `connection_security_policy` label: `mutual_tls` when the proxy terminated mTLS, else
    /// `none` (authentication.md §9 #16).
    pub connection_security_policy: &'static str,
    /// The authorization decision, with dry-run and AUDIT results; `None` when authorization
    /// did not run.
    pub authz: Option<AuthzDecision>,
    /// The decision in one word.
    pub verdict: Option<AuthzVerdict>,
    /// The deciding AuthorizationPolicy as `<namespace>/<name>`.
    pub authz_policy: Option<String>,
    /// Why, in one sentence.
    pub authz_reason: Option<String>,
    /// `request.auth.principal` (`<iss>/<sub>`) of a verified JWT.
    pub request_principal: Option<String>,
}

impl InboundEvent {
    /// An event for traffic between `remote` and `local` that started at `start_time`.
    pub fn new(start_time: Timestamp, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            start_time,
            duration: None,
            protocol: None,
            method: None,
            path: None,
            authority: None,
            request_headers: Vec::new(),
            response_code: 0,
            grpc_status: None,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_cluster: None,
            downstream_local_address: local,
            downstream_remote_address: remote,
            requested_server_name: None,
            downstream_tls_version: None,
            downstream_peer_uri_san: None,
            downstream_peer_subject: None,
            connection_security_policy: "none",
            authz: None,
            verdict: None,
            authz_policy: None,
            authz_reason: None,
            request_principal: None,
        }
    }

    /// `%RESPONSE_FLAGS%` text: `UF,DC`, or `-`.
    pub fn flags_text(&self) -> String {
        self.response_flags.to_string()
    }

    /// Adds a response flag once.
    pub(crate) fn flag(&mut self, flag: ResponseFlags) {
        self.response_flags.insert(flag);
    }

    /// Records an authorization decision: its verdict word, and the decision itself (deciding
    /// policy, reason, dry-run and AUDIT results are read from it when a line is written, not
    /// rendered on every request).
    pub(crate) fn set_authz(&mut self, decision: AuthzDecision) {
        let verdict = if !decision.allowed {
            AuthzVerdict::Deny
        } else if decision.audited.is_some() {
            AuthzVerdict::Audit
        } else {
            AuthzVerdict::Allow
        };
        self.verdict = Some(verdict);
        self.authz = Some(decision);
    }

    /// The deciding AuthorizationPolicy (`<namespace>/<name>`), if one decided.
    pub fn deciding_policy(&self) -> Option<String> {
        if self.authz_policy.is_some() {
            return self.authz_policy.clone();
        }
        self.deciding_rule().map(|r| r.policy.to_string())
    }

    /// The rule that decided: the AUDIT rule of an audited allow, the matching ALLOW or DENY
    /// rule; none when no ALLOW policy applies or none matched.
    pub fn deciding_rule(&self) -> Option<&RuleId> {
        self.authz.as_ref()?.deciding_rule()
    }

    /// Why, in one sentence: what set the verdict, or the decision's description.
    pub fn reason(&self) -> Option<String> {
        if self.authz_reason.is_some() {
            return self.authz_reason.clone();
        }
        self.authz.as_ref().map(meshward_policy::decision::describe)
    }

    /// Marks the traffic as refused below HTTP (no chain, failed handshake).
    pub(crate) fn set_reject(&mut self, reason: String) {
        self.verdict = Some(AuthzVerdict::Reject);
        self.authz_reason = Some(reason);
    }
}

/// Delivers an event exactly once: when the response body ends, or when whatever holds the
/// guard is dropped first (the client went away), in which case the event says so with `DC`.
pub(crate) struct EventGuard {
    event: Option<InboundEvent>,
    sink: EventSink,
    started: Instant,
    /// Request body bytes, counted by the request body as the upstream reads it.
    received: Arc<AtomicU64>,
    complete: bool,
}

impl EventGuard {
    pub(crate) fn new(event: InboundEvent, sink: EventSink, started: Instant) -> Self {
        Self {
            event: Some(event),
            sink,
            started,
            received: Arc::new(AtomicU64::new(0)),
            complete: false,
        }
    }

    /// The counter the request body adds to.
    pub(crate) fn received_counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// The event being filled; `None` only after it was delivered.
    pub(crate) fn event(&mut self) -> Option<&mut InboundEvent> {
        self.event.as_mut()
    }

    /// Adds body bytes sent downstream.
    pub(crate) fn add_sent(&mut self, n: u64) {
        if let Some(e) = self.event.as_mut() {
            e.bytes_sent = e.bytes_sent.saturating_add(n);
        }
    }

    /// The response was delivered completely: emit now.
    pub(crate) fn finish(&mut self) {
        self.complete = true;
        self.emit();
    }

    fn emit(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.duration = Some(self.started.elapsed());
            event.bytes_received = self.received.load(Ordering::Relaxed);
            if !self.complete {
                event.flag(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            }
            (self.sink)(event);
        }
    }
}

impl Drop for EventGuard {
    fn drop(&mut self) {
        self.emit();
    }
}

impl std::fmt::Debug for EventGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventGuard")
            .field("event", &self.event)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}
