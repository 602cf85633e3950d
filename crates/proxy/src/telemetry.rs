//! Turns what the listeners report (one event per request or connection) into access-log lines
//! and Istio's standard metrics, with the authorization decision on both.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::inbound::{AuthzVerdict, InboundEvent};
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::{
    ConnectionLabels, Metrics, Reporter, RequestLabels, RequestProtocol, SecurityPolicy,
    SharedLabels, TcpLabels,
};
use crate::observe::record::{AuthzOutcome, RequestRecord, ResponseFlags};
use crate::outbound::OutboundEvent;
use crate::state::StateHandle;
use meshward_policy::inventory::Workload;

/// The proxy's log and metrics sinks.
#[derive(Clone)]
pub struct Telemetry {
    access_log: Arc<AccessLog>,
    metrics: Arc<Metrics>,
    state: Arc<StateHandle>,
    labels: Arc<LabelCache>,
}

/// What a connection's Istio labels depend on, besides the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LabelKey {
    /// The client's address and certificate identity, and whether it used mTLS.
    Inbound {
        remote: IpAddr,
        peer: Option<Arc<str>>,
        mtls: bool,
    },
    /// The upstream's address and identity, and the destination service.
    Outbound {
        upstream: Option<IpAddr>,
        peer: Option<Arc<str>>,
        service: Option<Arc<str>>,
    },
}

/// Connection labels already built: about twenty strings that stay the same for every request
/// between the same two workloads, so each request shares one set instead of building it.
/// Emptied when the configuration changes (workloads and their labels may have changed) and
/// when it holds [`LabelCache::MAX`] sets.
#[derive(Debug, Default)]
struct LabelCache {
    sets: Mutex<(u64, HashMap<LabelKey, SharedLabels>)>,
}

impl LabelCache {
    const MAX: usize = 4096;

    fn get_or_insert(
        &self,
        version: u64,
        key: LabelKey,
        build: impl FnOnce() -> ConnectionLabels,
    ) -> SharedLabels {
        let mut guard = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let (cached_version, sets) = &mut *guard;
        if *cached_version != version || sets.len() >= Self::MAX {
            *cached_version = version;
            sets.clear();
        }
        sets.entry(key)
            .or_insert_with(|| SharedLabels::new(build()))
            .clone()
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Logs to `access_log` and counts in `metrics`; workload labels come from `state`.
    pub fn new(access_log: Arc<AccessLog>, metrics: Arc<Metrics>, state: Arc<StateHandle>) -> Self {
        Self {
            access_log,
            metrics,
            state,
            labels: Arc::new(LabelCache::default()),
        }
    }

    /// Does anything read a request's method, path, authority and headers (an access log)?
    pub fn logs_requests(&self) -> bool {
        self.access_log.is_enabled()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The sink for inbound events (reporter=destination).
    pub fn inbound_sink(&self) -> crate::inbound::EventSink {
        let this = self.clone();
        Arc::new(move |event: InboundEvent| this.inbound(event))
    }

    /// The sink for outbound events (reporter=source).
    pub fn outbound_sink(&self) -> crate::outbound::EventSink {
        let this = self.clone();
        Arc::new(move |event: OutboundEvent| this.outbound(event))
    }

    fn inbound(&self, event: InboundEvent) {
        let state = self.state.load();
        let flags = event.response_flags;
        if self.access_log.is_enabled() {
            self.access_log.log(&inbound_record(&event));
        }

        // Metrics: the destination is this workload; the source is found by address when it is
        // a workload of the mesh (there is no metadata exchange yet).
        let mtls = event.connection_security_policy == "mutual_tls";
        let key = LabelKey::Inbound {
            remote: event.downstream_remote_address.ip(),
            peer: event.downstream_peer_uri_san.clone(),
            mtls,
        };
        let labels = self.labels.get_or_insert(state.version, key, || {
            let me = state.workload();
            let source = state.workload_at(event.downstream_remote_address.ip());
            let mut labels = ConnectionLabels::unknown(Reporter::Destination);
            fill_source(
                &mut labels,
                source,
                event.downstream_peer_uri_san.as_deref(),
            );
            fill_destination(&mut labels, Some(me), Some(&state.identity.uri()));
            labels.connection_security_policy = if mtls {
                SecurityPolicy::MutualTls
            } else {
                SecurityPolicy::None
            };
            labels
        });
        self.count(
            labels.clone(),
            &event.protocol,
            event.grpc_status,
            event.response_code,
            flags,
            event.duration,
            (event.bytes_received, event.bytes_sent),
        );
        if let Some(verdict) = event.verdict {
            self.metrics.authz_decision(
                Reporter::Destination,
                outcome(verdict),
                event.deciding_rule().map(|r| &r.policy),
            );
            // The same decision per pair of workloads: Istio's labels alone cannot tell an
            // authorization denial from the application's own 403.
            let protocol = match (event.protocol, event.grpc_status) {
                (None, _) => RequestProtocol::Tcp,
                (Some(_), Some(_)) => RequestProtocol::Grpc,
                (Some(_), None) => RequestProtocol::Http,
            };
            self.metrics.edge_decision(
                &labels,
                protocol,
                outcome(verdict),
                event.deciding_rule().map(|r| &r.policy),
            );
        }
    }

    fn outbound(&self, event: OutboundEvent) {
        let state = self.state.load();
        let flags = event.response_flags;
        if self.access_log.is_enabled() {
            self.access_log.log(&outbound_record(&event));
        }

        let key = LabelKey::Outbound {
            upstream: event.upstream_host.map(|a| a.ip()),
            peer: event.upstream_peer_identity.clone(),
            service: event.destination_service.clone(),
        };
        let labels = self.labels.get_or_insert(state.version, key, || {
            let me = state.workload();
            let destination = event
                .upstream_host
                .and_then(|addr| state.workload_at(addr.ip()));
            let mut labels = ConnectionLabels::unknown(Reporter::Source);
            fill_source(&mut labels, Some(me), Some(&state.identity.uri()));
            fill_destination(
                &mut labels,
                destination,
                event.upstream_peer_identity.as_deref(),
            );
            if let Some(service) = &event.destination_service {
                labels.destination_service = service.clone();
                let mut parts = service.split('.');
                labels.destination_service_name = ConnectionLabels::value_or_unknown(parts.next());
                labels.destination_service_namespace =
                    ConnectionLabels::value_or_unknown(parts.next());
            }
            labels
        });
        self.count(
            labels,
            &event.protocol,
            None,
            event.response_code,
            flags,
            Some(event.duration),
            (event.bytes_received, event.bytes_sent),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        connection: SharedLabels,
        protocol: &Option<&'static str>,
        grpc_status: Option<u32>,
        response_code: u16,
        response_flags: ResponseFlags,
        duration: Option<std::time::Duration>,
        (received, sent): (u64, u64),
    ) {
        if protocol.is_some() {
            let labels = RequestLabels {
                connection,
                request_protocol: if grpc_status.is_some() {
                    RequestProtocol::Grpc
                } else {
                    RequestProtocol::Http
                },
                response_code,
                grpc_response_status: grpc_status,
                response_flags,
            };
            let ms = duration.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            self.metrics.record_request(&labels, ms, received, sent);
        } else {
            // TCP: reported when the connection ends, with its byte counts.
            let labels = TcpLabels {
                connection,
                response_flags,
            };
            self.metrics.tcp_opened(&labels);
            self.metrics.tcp_bytes(&labels, sent, received);
            self.metrics.tcp_closed(&labels);
        }
    }
}

/// The access-log record of an inbound event.
fn inbound_record(event: &InboundEvent) -> RequestRecord {
    let mut record = RequestRecord::new(event.start_time);
    record.protocol = event.protocol;
    record.method = event.method.clone();
    record.path = event.path.clone();
    record.authority = event.authority.clone();
    record.request_headers = event.request_headers.clone();
    record.response_code = event.response_code;
    record.response_flags = event.response_flags;
    record.response_code_details = event.response_code_details.clone();
    record.connection_termination_details = event.connection_termination_details.clone();
    record.upstream_transport_failure_reason = event.upstream_transport_failure_reason.clone();
    record.bytes_received = event.bytes_received;
    record.bytes_sent = event.bytes_sent;
    record.duration = event.duration;
    record.upstream_host = event.upstream_host;
    record.upstream_cluster = event.upstream_cluster.clone();
    record.downstream_local_address = Some(event.downstream_local_address);
    record.downstream_remote_address = Some(event.downstream_remote_address);
    record.requested_server_name = event.requested_server_name.clone();
    record.downstream_tls_version = event.downstream_tls_version;
    if let Some(san) = &event.downstream_peer_uri_san {
        record.downstream_peer_uri_sans = Arc::from(vec![san.to_string()]);
    }
    record.downstream_peer_subject = event.downstream_peer_subject.clone();
    if let Some(decision) = &event.authz {
        record.apply_authz(decision, event.protocol.is_some());
    }
    record.authz = event.verdict.map(outcome);
    if event.authz_policy.is_some() {
        record.authz_policy.clone_from(&event.authz_policy);
    }
    if event.authz_reason.is_some() {
        record.authz_reason.clone_from(&event.authz_reason);
    }
    record
}

/// The access-log record of an outbound event.
fn outbound_record(event: &OutboundEvent) -> RequestRecord {
    let mut record = RequestRecord::new(event.start_time);
    record.protocol = event.protocol;
    record.method = event.method.clone();
    record.path = event.path.clone();
    record.authority = event.authority.clone();
    record.response_code = event.response_code;
    record.response_flags = event.response_flags;
    record.response_code_details = event.response_code_details.clone();
    record.upstream_transport_failure_reason = event.upstream_transport_failure_reason.clone();
    record.bytes_received = event.bytes_received;
    record.bytes_sent = event.bytes_sent;
    record.duration = Some(event.duration);
    record.upstream_host = event.upstream_host;
    record.upstream_local_address = event.upstream_local_address;
    record.upstream_cluster = event.upstream_cluster.clone();
    record.downstream_local_address = event.downstream_local_address;
    record.downstream_remote_address = event.downstream_remote_address;
    record.requested_server_name = event.requested_server_name.clone();
    record.request_headers = event.request_headers.clone();
    record
}

fn outcome(verdict: AuthzVerdict) -> AuthzOutcome {
    match verdict {
        AuthzVerdict::Allow => AuthzOutcome::Allow,
        AuthzVerdict::Deny => AuthzOutcome::Deny,
        AuthzVerdict::Audit => AuthzOutcome::Audit,
        AuthzVerdict::Unauthenticated => AuthzOutcome::Unauthenticated,
        AuthzVerdict::Reject => AuthzOutcome::Reject,
    }
}

fn fill_source(labels: &mut ConnectionLabels, w: Option<&Workload>, principal: Option<&str>) {
    labels.source_principal = ConnectionLabels::value_or_unknown(principal);
    if let Some(w) = w {
        labels.source_workload = Arc::from(w.name.as_str());
        labels.source_workload_namespace = Arc::from(w.namespace.as_str());
        labels.source_app =
            ConnectionLabels::value_or_unknown(w.labels.get("app").map(String::as_str));
        labels.source_version =
            ConnectionLabels::value_or_unknown(w.labels.get("version").map(String::as_str));
        labels.source_canonical_service = labels.source_app.clone();
    }
}

fn fill_destination(labels: &mut ConnectionLabels, w: Option<&Workload>, principal: Option<&str>) {
    labels.destination_principal = ConnectionLabels::value_or_unknown(principal);
    if let Some(w) = w {
        labels.destination_workload = Arc::from(w.name.as_str());
        labels.destination_workload_namespace = Arc::from(w.namespace.as_str());
        labels.destination_app =
            ConnectionLabels::value_or_unknown(w.labels.get("app").map(String::as_str));
        labels.destination_version =
            ConnectionLabels::value_or_unknown(w.labels.get("version").map(String::as_str));
        labels.destination_canonical_service = labels.destination_app.clone();
    }
}
