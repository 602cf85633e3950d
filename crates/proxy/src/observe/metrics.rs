//! Istio's standard Prometheus metrics (authentication.md §6.2), plus meshward's own.
//!
//! Names and labels are Istio's, so dashboards and alerts written for Istio work unchanged:
//! `istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
//! `istio_response_bytes`, `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`. meshward adds `meshward_authz_decisions_total`,
//! `meshward_authz_edge_decisions_total` and `meshward_access_log_dropped_lines_total`.
//!
//! Istio's labels cannot tell an authorization denial from an application's own 403 (Envoy
//! sets no response flag for RBAC), nor a TCP connection closed by authorization from one the
//! application closed. `meshward_authz_edge_decisions_total` carries the decision with Istio's
//! connection labels, so a service graph can count allowed and denied traffic per pair of
//! workloads without guessing from response codes.
//!
//! Cost per request: the caller builds one [`ConnectionLabels`] per connection (peer and
//! workload labels do not change within a connection), shares it as [`SharedLabels`], and per
//! request builds a [`RequestLabels`] holding a clone of that plus the few per-request values.
//! A series that already exists is found by hashing the label set, where the connection's
//! twenty strings count as one number hashed when they were shared; nothing is allocated.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::observe::record::{AuthzOutcome, ResponseFlags};
use meshward_policy::authz::PolicyRef;

/// Istio's default buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's default buckets for `istio_request_bytes` and `istio_response_bytes`.
pub const SIZE_BUCKETS_BYTES: [f64; 8] = [
    1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0, 10000000.0,
];

/// The `reporter` label (authentication.md §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// `source`: the client's proxy (outbound).
    Source,
    /// `destination`: the server's proxy (inbound).
    Destination,
}

impl Reporter {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The `connection_security_policy` label. authentication.md §6.2: "reporter=destination ⇒
/// `mutual_tls` (peer cert present) or `none` (plaintext); reporter=source ⇒ `unknown`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    /// `mutual_tls`: reporter=destination and the peer presented a certificate.
    MutualTls,
    /// `none`: reporter=destination over plaintext.
    None,
    /// `unknown`: reporter=source.
    Unknown,
}

impl SecurityPolicy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::None => "none",
            SecurityPolicy::Unknown => "unknown",
        }
    }
}

/// The `request_protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    /// `http`.
    Http,
    /// `grpc`.
    Grpc,
    /// `tcp`.
    Tcp,
}

impl RequestProtocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
            RequestProtocol::Tcp => "tcp",
        }
    }
}

macro_rules! label_value_as_str {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value_as_str!(Reporter, SecurityPolicy, RequestProtocol, AuthzOutcome);

/// The `policy` label: the deciding AuthorizationPolicy as `<namespace>/<name>`, or `none`.
/// Holds the policy's shared names, so counting a decision allocates nothing; the text is
/// written only when the metrics are scraped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyLabel(pub Option<PolicyRef>);

impl EncodeLabelValue for PolicyLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        match &self.0 {
            Some(p) => write!(encoder, "{}/{}", p.namespace, p.name),
            None => encoder.write_str("none"),
        }
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        self.write_to(encoder)
    }
}

/// The value for an absent peer or workload label (authentication.md §6.2: principals are
/// "`unknown` if absent"; Istio writes `unknown` for every label it cannot fill).
pub const UNKNOWN: &str = "unknown";

/// The labels fixed for a whole connection: who reports, both workloads, and how the connection
/// is secured. Build it once per connection and share it as `Arc<ConnectionLabels>`.
///
/// Principals are full SPIFFE URIs (authentication.md §1.3: metrics `source_principal` /
/// `destination_principal` are the "full URI; `unknown` when no peer cert").
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `source` or `destination`.
    pub reporter: Reporter,
    /// Client workload name.
    pub source_workload: Arc<str>,
    /// Client canonical service (`service.istio.io/canonical-name`).
    pub source_canonical_service: Arc<str>,
    /// Client canonical revision.
    pub source_canonical_revision: Arc<str>,
    /// Client namespace.
    pub source_workload_namespace: Arc<str>,
    /// Client identity, `spiffe://…`.
    pub source_principal: Arc<str>,
    /// Client `app` label.
    pub source_app: Arc<str>,
    /// Client `version` label.
    pub source_version: Arc<str>,
    /// Client cluster.
    pub source_cluster: Arc<str>,
    /// Server workload name.
    pub destination_workload: Arc<str>,
    /// Server namespace.
    pub destination_workload_namespace: Arc<str>,
    /// Server identity, `spiffe://…`.
    pub destination_principal: Arc<str>,
    /// Server `app` label.
    pub destination_app: Arc<str>,
    /// Server `version` label.
    pub destination_version: Arc<str>,
    /// Destination service host, e.g. `httpbin.foo.svc.cluster.local`.
    pub destination_service: Arc<str>,
    /// Server canonical service.
    pub destination_canonical_service: Arc<str>,
    /// Server canonical revision.
    pub destination_canonical_revision: Arc<str>,
    /// Destination service short name.
    pub destination_service_name: Arc<str>,
    /// Destination service namespace.
    pub destination_service_namespace: Arc<str>,
    /// Server cluster.
    pub destination_cluster: Arc<str>,
    /// `mutual_tls`, `none` or `unknown`.
    pub connection_security_policy: SecurityPolicy,
}

impl ConnectionLabels {
    /// Every workload label `unknown`; `connection_security_policy` as authentication.md §6.2
    /// says for the reporter: `unknown` for `source`, `none` for `destination` (set
    /// [`SecurityPolicy::MutualTls`] when the peer presented a certificate).
    pub fn unknown(reporter: Reporter) -> Self {
        let u: Arc<str> = Arc::from(UNKNOWN);
        ConnectionLabels {
            reporter,
            source_workload: u.clone(),
            source_canonical_service: u.clone(),
            source_canonical_revision: u.clone(),
            source_workload_namespace: u.clone(),
            source_principal: u.clone(),
            source_app: u.clone(),
            source_version: u.clone(),
            source_cluster: u.clone(),
            destination_workload: u.clone(),
            destination_workload_namespace: u.clone(),
            destination_principal: u.clone(),
            destination_app: u.clone(),
            destination_version: u.clone(),
            destination_service: u.clone(),
            destination_canonical_service: u.clone(),
            destination_canonical_revision: u.clone(),
            destination_service_name: u.clone(),
            destination_service_namespace: u.clone(),
            destination_cluster: u,
            connection_security_policy: match reporter {
                Reporter::Source => SecurityPolicy::Unknown,
                Reporter::Destination => SecurityPolicy::None,
            },
        }
    }

    /// `value`, or `unknown` when it is `None` or empty: the spelling for every optional label.
    pub fn value_or_unknown(value: Option<&str>) -> Arc<str> {
        match value {
            Some(v) if !v.is_empty() => Arc::from(v),
            _ => Arc::from(UNKNOWN),
        }
    }
}

/// A connection's labels as its series hold them: shared, and hashed once.
///
/// Every request looks up its series in five families, and a family finds a series by hashing
/// the whole label set. Hashing the connection's twenty strings each time was most of that
/// cost; this hashes them when the labels are shared and the families hash the result.
#[derive(Debug, Clone)]
pub struct SharedLabels {
    labels: Arc<ConnectionLabels>,
    /// The labels' hash with fixed keys, so equal labels shared twice hash alike.
    hash: u64,
}

impl SharedLabels {
    /// Shares `labels`.
    pub fn new(labels: ConnectionLabels) -> Self {
        let mut hasher = DefaultHasher::new();
        labels.hash(&mut hasher);
        Self {
            labels: Arc::new(labels),
            hash: hasher.finish(),
        }
    }
}

impl Deref for SharedLabels {
    type Target = ConnectionLabels;

    fn deref(&self) -> &ConnectionLabels {
        &self.labels
    }
}

impl PartialEq for SharedLabels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.labels, &other.labels)
            || (self.hash == other.hash && self.labels == other.labels)
    }
}

impl Eq for SharedLabels {}

impl Hash for SharedLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl EncodeLabelSet for SharedLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.labels.encode(encoder)
    }
}

/// Labels of one HTTP/gRPC request: the connection's plus the per-request values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    /// The connection's labels (an `Arc` clone per request).
    pub connection: SharedLabels,
    /// `http` or `grpc`.
    pub request_protocol: RequestProtocol,
    /// The HTTP status; 0 when no response was sent.
    pub response_code: u16,
    /// The gRPC status for gRPC requests. Istio writes an empty value for other requests.
    pub grpc_response_status: Option<u32>,
    /// Envoy's response flags; `-` when none.
    pub response_flags: ResponseFlags,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.connection.encode(encoder)?;
        EncodeLabel::encode(
            &("request_protocol", self.request_protocol),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(
            &("response_code", self.response_code),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(
            &("grpc_response_status", self.grpc_response_status),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(
            &("response_flags", self.response_flags),
            encoder.encode_label(),
        )
    }
}

/// Labels of one TCP connection's metrics (`request_protocol="tcp"`, no response code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// The connection's labels.
    pub connection: SharedLabels,
    /// Envoy's response flags; `-` when none.
    pub response_flags: ResponseFlags,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.connection.encode(encoder)?;
        EncodeLabel::encode(
            &("request_protocol", RequestProtocol::Tcp),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(
            &("response_flags", self.response_flags),
            encoder.encode_label(),
        )
    }
}

/// Labels of `meshward_authz_decisions_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `allow`, `deny`, `audit`, `unauthenticated`, `reject`.
    pub decision: AuthzOutcome,
    /// The deciding policy.
    pub policy: PolicyLabel,
    /// `source` or `destination`.
    pub reporter: Reporter,
}

/// Labels of `meshward_authz_edge_decisions_total`: Istio's connection labels (who called whom,
/// both principals, `connection_security_policy`), the protocol, and the decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EdgeDecisionLabels {
    /// The connection's labels.
    pub connection: SharedLabels,
    /// `http`, `grpc` or `tcp`.
    pub request_protocol: RequestProtocol,
    /// `allow`, `deny`, `audit`, `unauthenticated`, `reject`.
    pub decision: AuthzOutcome,
    /// The deciding policy.
    pub policy: PolicyLabel,
}

impl EncodeLabelSet for EdgeDecisionLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        self.connection.encode(encoder)?;
        EncodeLabel::encode(
            &("request_protocol", self.request_protocol),
            encoder.encode_label(),
        )?;
        EncodeLabel::encode(&("decision", self.decision), encoder.encode_label())?;
        EncodeLabel::encode(&("policy", self.policy.clone()), encoder.encode_label())
    }
}

/// The side of an mTLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsSide {
    /// This proxy accepted the connection (inbound).
    Server,
    /// This proxy opened it (outbound).
    Client,
}

/// Labels of `meshward_tls_handshakes_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HandshakeLabels {
    side: TlsSide,
    resumed: bool,
}

impl EncodeLabelSet for HandshakeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> std::fmt::Result {
        let side = match self.side {
            TlsSide::Server => "server",
            TlsSide::Client => "client",
        };
        EncodeLabel::encode(&("side", side), encoder.encode_label())?;
        let resumed = if self.resumed { "true" } else { "false" };
        EncodeLabel::encode(&("resumed", resumed), encoder.encode_label())
    }
}

/// Completed mTLS handshakes, full or resumed (Envoy's `ssl.handshake` and
/// `ssl.session_reused`). Clones count into the same series; counting is one atomic add.
#[derive(Debug, Clone, Default)]
pub struct TlsHandshakes {
    server_full: Counter,
    server_resumed: Counter,
    client_full: Counter,
    client_resumed: Counter,
}

impl TlsHandshakes {
    /// Counts one completed handshake.
    pub fn record(&self, side: TlsSide, resumed: bool) {
        let counter = match (side, resumed) {
            (TlsSide::Server, false) => &self.server_full,
            (TlsSide::Server, true) => &self.server_resumed,
            (TlsSide::Client, false) => &self.client_full,
            (TlsSide::Client, true) => &self.client_resumed,
        };
        counter.inc();
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS_BYTES)
}

/// The proxy's metrics. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RequestLabels>,
    request_bytes: HistogramFamily<RequestLabels>,
    response_bytes: HistogramFamily<RequestLabels>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    authz: Family<AuthzLabels, Counter>,
    edge_decisions: Family<EdgeDecisionLabels, Counter>,
    access_log_dropped: Counter,
    tls_handshakes: TlsHandshakes,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(size_histogram);
        let response_bytes: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(size_histogram);
        let tcp_opened = Family::<TcpLabels, Counter>::default();
        let tcp_closed = Family::<TcpLabels, Counter>::default();
        let tcp_sent = Family::<TcpLabels, Counter>::default();
        let tcp_received = Family::<TcpLabels, Counter>::default();
        let authz = Family::<AuthzLabels, Counter>::default();
        let edge_decisions = Family::<EdgeDecisionLabels, Counter>::default();
        let access_log_dropped = Counter::default();
        // The family owns the series; the handle keeps a clone of each counter, so recording a
        // handshake needs no label lookup.
        let handshake_family = Family::<HandshakeLabels, Counter>::default();
        let series = |side, resumed| {
            handshake_family
                .get_or_create(&HandshakeLabels { side, resumed })
                .clone()
        };
        let tls_handshakes = TlsHandshakes {
            server_full: series(TlsSide::Server, false),
            server_resumed: series(TlsSide::Server, true),
            client_full: series(TlsSide::Client, false),
            client_resumed: series(TlsSide::Client, true),
        };

        // prometheus-client appends `_total` to counter names, so counters are registered
        // without it and come out with exactly Istio's names.
        registry.register(
            "istio_requests",
            "Requests handled, by source, destination and response",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            request_duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body size in bytes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body size in bytes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the downstream on TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the downstream on TCP connections",
            tcp_received.clone(),
        );
        registry.register(
            "meshward_authz_decisions",
            "Authorization decisions, by decision and deciding policy",
            authz.clone(),
        );
        registry.register(
            "meshward_authz_edge_decisions",
            "Authorization decisions, by source and destination workload, principals and decision",
            edge_decisions.clone(),
        );
        registry.register(
            "meshward_tls_handshakes",
            "Completed mTLS handshakes, by side and whether a session was resumed",
            handshake_family,
        );
        registry.register(
            "meshward_access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            authz,
            edge_decisions,
            access_log_dropped,
            tls_handshakes,
        }
    }

    /// The handshake counters, for the listeners and the connector.
    pub fn tls_handshakes(&self) -> TlsHandshakes {
        self.tls_handshakes.clone()
    }

    /// Counts one finished HTTP/gRPC request and observes its duration and body sizes.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.request_duration
            .get_or_create(labels)
            .observe(duration_ms);
        // Body sizes are far below 2^53, where f64 would start to round.
        self.request_bytes
            .get_or_create(labels)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(response_bytes as f64);
    }

    /// Counts a TCP connection opened.
    pub fn tcp_opened(&self, labels: &TcpLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Counts a TCP connection closed.
    pub fn tcp_closed(&self, labels: &TcpLabels) {
        self.tcp_closed.get_or_create(labels).inc();
    }

    /// Adds bytes moved on a TCP connection: `sent` to the downstream, `received` from it. Call
    /// it as data flows (Istio reports periodically, not only at close) or once at close.
    pub fn tcp_bytes(&self, labels: &TcpLabels, sent: u64, received: u64) {
        if sent > 0 {
            self.tcp_sent.get_or_create(labels).inc_by(sent);
        }
        if received > 0 {
            self.tcp_received.get_or_create(labels).inc_by(received);
        }
    }

    /// Counts one authorization decision. `policy` is `<namespace>/<name>`; `None` is written
    /// as `none` (Envoy's word for "no policy matched").
    pub fn authz_decision(
        &self,
        reporter: Reporter,
        decision: AuthzOutcome,
        policy: Option<&PolicyRef>,
    ) {
        let labels = AuthzLabels {
            decision,
            policy: PolicyLabel(policy.cloned()),
            reporter,
        };
        self.authz.get_or_create(&labels).inc();
    }

    /// Counts one authorization decision on the connection `connection` describes (one per
    /// HTTP request, one per TCP connection).
    pub fn edge_decision(
        &self,
        connection: &SharedLabels,
        request_protocol: RequestProtocol,
        decision: AuthzOutcome,
        policy: Option<&PolicyRef>,
    ) {
        let labels = EdgeDecisionLabels {
            connection: connection.clone(),
            request_protocol,
            decision,
            policy: PolicyLabel(policy.cloned()),
        };
        self.edge_decisions.get_or_create(&labels).inc();
    }

    /// The dropped-access-log-lines counter, for
    /// [`AccessLog::with_drop_counter`](crate::observe::access_log::AccessLog::with_drop_counter).
    pub fn access_log_dropped_counter(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Forgets the series of a connection's TCP labels (call when a connection closes if its
    /// label set will never be seen again, to bound memory; Istio keeps them, so by default
    /// meshward does too).
    pub fn forget_tcp(&self, labels: &TcpLabels) {
        self.tcp_opened.remove(labels);
        self.tcp_closed.remove(labels);
        self.tcp_sent.remove(labels);
        self.tcp_received.remove(labels);
    }

    /// Everything, in the OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Encoding into a String only fails if a label value's encoder fails, which ours
            // never do; say so rather than serve half a page silently.
            out.clear();
            let _ = writeln!(out, "# encoding failed: {e}\n# EOF");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition lines of metric `name`'s series.
    fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let prefix = format!("{name}{{");
        text.lines().filter(|l| l.starts_with(&prefix)).collect()
    }

    fn conn() -> SharedLabels {
        let mut c = ConnectionLabels::unknown(Reporter::Destination);
        c.source_workload = Arc::from("sleep");
        c.source_workload_namespace = Arc::from("foo");
        c.source_principal = Arc::from("spiffe://cluster.local/ns/foo/sa/sleep");
        c.destination_workload = Arc::from("httpbin");
        c.destination_principal = Arc::from("spiffe://cluster.local/ns/foo/sa/httpbin");
        c.destination_service = Arc::from("httpbin.foo.svc.cluster.local");
        c.connection_security_policy = SecurityPolicy::MutualTls;
        SharedLabels::new(c)
    }

    #[test]
    fn request_metrics_have_istio_names_and_labels() {
        let m = Metrics::new();
        let labels = RequestLabels {
            connection: conn(),
            request_protocol: RequestProtocol::Http,
            response_code: 403,
            grpc_response_status: None,
            response_flags: ResponseFlags::NONE,
        };
        m.record_request(&labels, 3.0, 0, 19);
        m.record_request(&labels, 7.0, 10, 19);
        let text = m.encode();
        let sample = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap();
        assert!(sample.ends_with("} 2"), "{sample}");
        for label in [
            "reporter=\"destination\"",
            "source_workload=\"sleep\"",
            "source_principal=\"spiffe://cluster.local/ns/foo/sa/sleep\"",
            "source_app=\"unknown\"",
            "destination_principal=\"spiffe://cluster.local/ns/foo/sa/httpbin\"",
            "destination_service=\"httpbin.foo.svc.cluster.local\"",
            "connection_security_policy=\"mutual_tls\"",
            "request_protocol=\"http\"",
            "response_code=\"403\"",
            "grpc_response_status=\"\"",
            "response_flags=\"-\"",
        ] {
            assert!(sample.contains(label), "{label} not in {sample}");
        }
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"));
        let bucket = |name: &str, le: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}_bucket{{le=\"{le}\",")))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        let duration = "istio_request_duration_milliseconds";
        assert_eq!(bucket(duration, "0.5").as_deref(), Some("0"));
        assert_eq!(bucket(duration, "5.0").as_deref(), Some("1"));
        assert_eq!(bucket(duration, "3600000.0").as_deref(), Some("2"));
        assert_eq!(bucket("istio_request_bytes", "1.0").as_deref(), Some("1"));
        assert_eq!(
            bucket("istio_response_bytes", "10000000.0").as_deref(),
            Some("2")
        );
        assert!(text.contains("istio_request_duration_milliseconds_sum{"));
        assert!(text.contains("istio_request_bytes_count{"));
        assert!(text.contains("istio_response_bytes_bucket{"));
        assert!(text.ends_with("# EOF\n"));
        // Exactly Istio's names: `_total` once, no unit or suffix doubled.
        assert!(!text.contains("_total_total"));
        assert!(!text.contains("istio_request_duration_milliseconds_milliseconds"));
    }

    #[test]
    fn equal_labels_shared_twice_count_in_one_series() {
        // Two connections between the same workloads build their labels separately: their
        // requests must still land in one series, and different labels in another.
        let m = Metrics::new();
        let request = |connection: SharedLabels| RequestLabels {
            connection,
            request_protocol: RequestProtocol::Http,
            response_code: 200,
            grpc_response_status: None,
            response_flags: ResponseFlags::NONE,
        };
        let (first, second) = (conn(), conn());
        assert!(!Arc::ptr_eq(&first.labels, &second.labels));
        assert_eq!(first, second);
        let mut other = (*conn()).clone();
        other.source_workload = Arc::from("curl");
        let other = SharedLabels::new(other);
        assert_ne!(first, other);
        m.record_request(&request(first), 1.0, 0, 0);
        m.record_request(&request(second), 1.0, 0, 0);
        m.record_request(&request(other), 1.0, 0, 0);
        let text = m.encode();
        let totals = series(&text, "istio_requests_total");
        assert_eq!(totals.len(), 2, "{totals:?}");
        assert!(
            totals
                .iter()
                .any(|l| l.contains("source_workload=\"sleep\"") && l.ends_with(" 2"))
        );
        assert!(
            totals
                .iter()
                .any(|l| l.contains("source_workload=\"curl\"") && l.ends_with(" 1"))
        );
    }

    #[test]
    fn tcp_metrics_have_istio_names() {
        let m = Metrics::new();
        let labels = TcpLabels {
            connection: conn(),
            response_flags: ResponseFlags::NONE,
        };
        m.tcp_opened(&labels);
        m.tcp_bytes(&labels, 120, 80);
        m.tcp_bytes(&labels, 5, 0);
        m.tcp_closed(&labels);
        let text = m.encode();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name}{{")))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            value("istio_tcp_connections_opened_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value("istio_tcp_connections_closed_total").as_deref(),
            Some("1")
        );
        assert_eq!(value("istio_tcp_sent_bytes_total").as_deref(), Some("125"));
        assert_eq!(
            value("istio_tcp_received_bytes_total").as_deref(),
            Some("80")
        );
        assert!(text.contains("request_protocol=\"tcp\""));
        assert!(!text.contains("response_code="));
        m.forget_tcp(&labels);
        assert!(value_absent(
            &m.encode(),
            "istio_tcp_connections_opened_total{"
        ));
    }

    fn value_absent(text: &str, prefix: &str) -> bool {
        !text.lines().any(|l| l.starts_with(prefix))
    }

    #[test]
    fn grpc_and_flags_labels() {
        let m = Metrics::new();
        let labels = RequestLabels {
            connection: SharedLabels::new(ConnectionLabels::unknown(Reporter::Source)),
            request_protocol: RequestProtocol::Grpc,
            response_code: 200,
            grpc_response_status: Some(7),
            response_flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE
                | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        };
        m.record_request(&labels, 1.0, 1, 1);
        let text = m.encode();
        assert!(text.contains("grpc_response_status=\"7\""));
        assert!(text.contains("response_flags=\"UF,URX\""));
        assert!(text.contains("reporter=\"source\""));
        assert!(text.contains("connection_security_policy=\"unknown\""));
        assert!(text.contains("source_principal=\"unknown\""));
    }

    fn deny_all() -> PolicyRef {
        PolicyRef {
            namespace: Arc::from("foo"),
            name: Arc::from("deny-all"),
        }
    }

    #[test]
    fn meshward_metrics() {
        let m = Metrics::new();
        m.authz_decision(Reporter::Destination, AuthzOutcome::Deny, Some(&deny_all()));
        m.authz_decision(Reporter::Destination, AuthzOutcome::Deny, None);
        m.access_log_dropped_counter().inc_by(4);
        let text = m.encode();
        assert!(text.contains(
            "meshward_authz_decisions_total{decision=\"deny\",policy=\"foo/deny-all\",reporter=\"destination\"} 1"
        ));
        assert!(text.contains(
            "meshward_authz_decisions_total{decision=\"deny\",policy=\"none\",reporter=\"destination\"} 1"
        ));
        assert!(text.contains("meshward_access_log_dropped_lines_total 4"));
    }

    #[test]
    fn handshakes_count_by_side_and_resumption() {
        let m = Metrics::new();
        let handshakes = m.tls_handshakes();
        handshakes.record(TlsSide::Server, false);
        handshakes.record(TlsSide::Server, true);
        handshakes.clone().record(TlsSide::Server, true);
        handshakes.record(TlsSide::Client, false);
        let text = m.encode();
        for line in [
            "meshward_tls_handshakes_total{side=\"server\",resumed=\"false\"} 1",
            "meshward_tls_handshakes_total{side=\"server\",resumed=\"true\"} 2",
            "meshward_tls_handshakes_total{side=\"client\",resumed=\"false\"} 1",
            "meshward_tls_handshakes_total{side=\"client\",resumed=\"true\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn edge_decisions_carry_istio_connection_labels() {
        let m = Metrics::new();
        m.edge_decision(
            &conn(),
            RequestProtocol::Http,
            AuthzOutcome::Deny,
            Some(&deny_all()),
        );
        m.edge_decision(&conn(), RequestProtocol::Tcp, AuthzOutcome::Allow, None);
        let text = m.encode();
        let lines = series(&text, "meshward_authz_edge_decisions_total");
        assert_eq!(lines.len(), 2, "{text}");
        let deny = lines
            .iter()
            .find(|l| l.contains("decision=\"deny\""))
            .unwrap();
        for label in [
            "reporter=\"destination\"",
            "source_workload=\"sleep\"",
            "source_principal=\"spiffe://cluster.local/ns/foo/sa/sleep\"",
            "destination_workload=\"httpbin\"",
            "connection_security_policy=\"mutual_tls\"",
            "request_protocol=\"http\"",
            "policy=\"foo/deny-all\"",
        ] {
            assert!(deny.contains(label), "{label} not in {deny}");
        }
        assert!(deny.ends_with("} 1"), "{deny}");
    }
}
