//! `/config_dump` and `/certs`: what this proxy enforces now and the certificate it holds, read
//! from its live state, its bound listeners and its credentials. Nothing here reads
//! configuration files or recompiles anything: the clusters are the routes the outbound
//! resolver builds from the same state, so the dump and the traffic cannot disagree.
//!
//! `/config_dump` keys: `version` (the proxy's own state version), `control_plane` (the
//! control-plane snapshot version in force and the last NACK, in control-plane mode), `workload`,
//! `identity`, `trust_domains`, `ports`, `listeners`, `clusters`, `workload_routes`,
//! `peer_authentication`, `authorization_policies`, `request_authentications`, `jwt_providers`,
//! `services`, `workloads`.
//!
//! The server side of mTLS: `peer_authentication.mode` is the workload-level effective mode,
//! which every inbound port without a port-level setting enforces; `ports[].mtls` is the mode
//! each declared port enforces, and `peer_authentication.ports` the port-level settings, all
//! read from the state the inbound listener consults per connection.
//!
//! The client side: every endpoint in `clusters` (service ports, as a connection to the
//! service's name or VIP is routed) and in `workload_routes` (each workload port, as a
//! connection captured to the pod's own address is routed) carries `tls_mode`, the TLS this
//! sidecar originates towards it (`DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`), and `tls`,
//! what a connection does with it (`REFUSED` for a mode the sidecar cannot originate). Both are
//! built per dump by the resolver the outbound listeners route with, from the same state.

use std::net::SocketAddr;
use std::sync::OnceLock;

use meshward_identity::{CertInfo, Credentials};
use serde_json::{Value, json};

use crate::control::client::ClientStatus;
use crate::outbound::resolve::{Destination, MeshRoute, Resolver, Route, Transport};
use crate::state::ProxyState;

/// The listeners this proxy bound, known once they are up (the admin server starts first).
#[derive(Debug, Clone, Default)]
pub(crate) struct BoundListeners {
    /// Inbound listener addresses.
    pub(crate) inbound: Vec<SocketAddr>,
    /// Whether inbound is one capture listener (Istio's 15006) rather than one per port.
    pub(crate) inbound_capture: bool,
    /// The explicit HTTP proxy.
    pub(crate) http_proxy: Option<SocketAddr>,
    /// The outbound capture listener (Istio's 15001).
    pub(crate) outbound_capture: Option<SocketAddr>,
}

/// Filled in once the listeners are bound.
pub(crate) type ListenersCell = std::sync::Arc<OnceLock<BoundListeners>>;

/// `/config_dump`.
pub(crate) fn config_dump(
    state: &ProxyState,
    listeners: Option<&BoundListeners>,
    control: Option<&ClientStatus>,
) -> Value {
    let workload = state.workload();
    let ports: Vec<Value> = workload
        .ports
        .iter()
        .map(|p| {
            json!({
                "port": p.port,
                "protocol": protocol_name(p.protocol),
                "mtls": state.inbound.mtls_mode(p.port).as_str(),
            })
        })
        .collect();
    json!({
        "version": state.version,
        "control_plane": control.map(control_status),
        "workload": workload.key(),
        "identity": state.identity.uri(),
        "trust_domains": state.trust_domains.all().map(|t| t.to_string()).collect::<Vec<_>>(),
        "ports": ports,
        "listeners": listeners_dump(state, listeners),
        "clusters": clusters_dump(state),
        "workload_routes": workload_routes_dump(state),
        "peer_authentication": peer_authentication_dump(state),
        "authorization_policies": authorization_dump(state),
        "request_authentications": request_authentications_dump(state),
        "jwt_providers": state.inbound.jwt().providers().len(),
        "services": state.mesh.inventory.services.len(),
        "workloads": state.mesh.inventory.workloads.len(),
    })
}

fn control_status(status: &ClientStatus) -> Value {
    json!({
        "connected": status.connected,
        "version": status.applied_version,
        "last_nack": status.last_nack.as_ref().map(|(version, error)| json!({
            "version": version,
            "error": error,
        })),
    })
}

/// `HTTP`, `HTTP2`, `GRPC`, `TCP`: the spelling of the policy tests and Istio's port names.
fn protocol_name(protocol: meshward_policy::inventory::Protocol) -> String {
    serde_json::to_value(protocol)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{protocol:?}").to_ascii_uppercase())
}

/// Inbound: each workload port with its protocol and effective PeerAuthentication mode, on the
/// listener that receives it. Outbound: the capture listener and the explicit HTTP proxy.
fn listeners_dump(state: &ProxyState, listeners: Option<&BoundListeners>) -> Value {
    let Some(bound) = listeners else {
        // The admin server answers before the listeners are bound.
        return json!({ "inbound": [], "outbound": [] });
    };
    let workload = state.workload();
    let port_entry = |port: u16| {
        json!({
            "port": port,
            "protocol": protocol_name(workload.protocol(port)),
            "mtls": state.inbound.mtls_mode(port).as_str(),
        })
    };
    let inbound: Vec<Value> = if bound.inbound_capture {
        bound
            .inbound
            .iter()
            .map(|addr| {
                json!({
                    "name": "virtualInbound",
                    "address": addr.to_string(),
                    "ports": workload.ports.iter().map(|p| port_entry(p.port)).collect::<Vec<_>>(),
                    // A port the workload does not declare takes the workload-wide mode, unless
                    // a port-level PeerAuthentication names it (see `peer_authentication`).
                    "default_mtls": state.inbound.mtls().mode.as_str(),
                })
            })
            .collect()
    } else {
        bound
            .inbound
            .iter()
            .map(|addr| {
                json!({
                    "name": format!("inbound|{}||", addr.port()),
                    "address": addr.to_string(),
                    "ports": [port_entry(addr.port())],
                })
            })
            .collect()
    };
    let mut outbound = Vec::new();
    if let Some(addr) = bound.outbound_capture {
        outbound.push(
            json!({"name": "virtualOutbound", "address": addr.to_string(), "mode": "capture"}),
        );
    }
    if let Some(addr) = bound.http_proxy {
        outbound
            .push(json!({"name": "httpProxy", "address": addr.to_string(), "mode": "http-proxy"}));
    }
    json!({ "inbound": inbound, "outbound": outbound })
}

/// Every service port of the mesh as the outbound resolver routes it: cluster, endpoints, and
/// per endpoint the TLS this sidecar originates (auto mTLS decides per endpoint).
fn clusters_dump(state: &ProxyState) -> Value {
    let resolver = Resolver::new();
    let mut clusters = Vec::new();
    for service in &state.mesh.inventory.services {
        let host = service.fqdn();
        for port in &service.ports {
            let destination = Destination::Host {
                host: &host,
                port: port.port,
            };
            let route = match resolver.resolve(state, destination) {
                Ok(Route::Mesh(route)) => route,
                Ok(Route::Passthrough(_)) => continue,
                Err(e) => {
                    clusters.push(json!({
                        "name": format!("outbound|{}||{host}", port.port),
                        "service": host,
                        "port": port.port,
                        "error": e.to_string(),
                    }));
                    continue;
                }
            };
            clusters.push(cluster_entry(&route, &host));
        }
    }
    Value::Array(clusters)
}

/// Every port of every workload as the outbound resolver routes a connection captured to the
/// pod's own address (a client calling a pod IP, or `to.workload` in a PolicyTest): the pod is a
/// mesh endpoint, reached through the service whose target port it is when there is one.
fn workload_routes_dump(state: &ProxyState) -> Value {
    let resolver = Resolver::new();
    let mut routes = Vec::new();
    for workload in &state.mesh.inventory.workloads {
        for port in &workload.ports {
            let address = SocketAddr::new(workload.address, port.port);
            let mut entry = match resolver.resolve(state, Destination::Address(address)) {
                Ok(Route::Mesh(route)) => cluster_entry(&route, &address.ip().to_string()),
                Ok(Route::Passthrough(_)) => {
                    json!({"name": crate::outbound::resolve::PASSTHROUGH_CLUSTER})
                }
                Err(e) => json!({"error": e.to_string()}),
            };
            if let Some(map) = entry.as_object_mut() {
                map.insert("workload".to_owned(), json!(workload.key()));
                map.insert("address".to_owned(), json!(address.to_string()));
                map.insert("target_port".to_owned(), json!(port.port));
            }
            routes.push(entry);
        }
    }
    Value::Array(routes)
}

/// One route: its cluster and each endpoint with the TLS this sidecar originates towards it.
fn cluster_entry(route: &MeshRoute, host: &str) -> Value {
    let endpoints: Vec<Value> = route
        .endpoints
        .iter()
        .map(|e| {
            let (tls, sni, expected, refused) = match &e.transport {
                Transport::Plaintext => ("DISABLE", None, Vec::new(), None),
                Transport::Mtls(target) => (
                    "ISTIO_MUTUAL",
                    Some(target.sni.to_string()),
                    target.expected.iter().map(|id| id.uri()).collect(),
                    None,
                ),
                Transport::Refused(why) => ("REFUSED", None, Vec::new(), Some(why.to_string())),
            };
            json!({
                "workload": e.workload,
                "address": e.address.to_string(),
                "tls": tls,
                "tls_mode": e.tls_mode.as_str(),
                "sni": sni,
                "expected_identities": expected,
                "tls_source": e.tls_source,
                "refused": refused,
            })
        })
        .collect();
    json!({
        "name": route.cluster.to_string(),
        "service": route.service.as_deref().unwrap_or(host),
        "port": route.service_port,
        "protocol": protocol_name(route.protocol),
        "endpoints": endpoints,
    })
}

fn peer_authentication_dump(state: &ProxyState) -> Value {
    let mtls = state.inbound.mtls();
    json!({
        "mode": mtls.mode.as_str(),
        "ports": mtls.ports.iter().map(|(port, mode)| (port.to_string(), json!(mode.as_str()))).collect::<serde_json::Map<_, _>>(),
        "applied": mtls.applied,
    })
}

fn authorization_dump(state: &ProxyState) -> Value {
    let policies: Vec<Value> = state
        .inbound
        .authz()
        .policies()
        .iter()
        .map(|p| {
            json!({
                "name": p.id.to_string(),
                "action": p.action.as_str(),
                "dry_run": p.dry_run,
                "provider": p.provider,
                "rules": p.source.spec.rules.as_ref().map_or(0, Vec::len),
                "http_rules": p.http.rules.len(),
                "tcp_rules": p.tcp.rules.len(),
            })
        })
        .collect();
    Value::Array(policies)
}

fn request_authentications_dump(state: &ProxyState) -> Value {
    let selected: Vec<String> = state
        .mesh
        .request_authn
        .select(state.workload().selector_view())
        .iter()
        .map(|r| format!("{}/{}", r.metadata.namespace(), r.metadata.name()))
        .collect();
    let providers: Vec<Value> = state
        .inbound
        .jwt()
        .providers()
        .iter()
        .map(|p| {
            json!({
                "issuer": p.issuer(),
                "has_keys": p.has_keys(),
                "awaiting_keys": p.awaiting_keys(),
                "jwks_error": p.jwks_error().map(ToString::to_string),
            })
        })
        .collect();
    let errors: Vec<Value> = state
        .inbound
        .jwt_errors()
        .iter()
        .map(|e| json!({"policy": e.policy, "issuer": e.issuer, "error": e.error.to_string()}))
        .collect();
    json!({ "policies": selected, "providers": providers, "errors": errors })
}

/// `/certs`: the workload certificate chain as the proxy presents it and the trust bundle, like
/// `istioctl proxy-config secret`.
pub(crate) fn certs_dump(credentials: &Credentials) -> Value {
    let cert = credentials.certificate().map(|c| {
        let chain: Vec<CertInfo> = c
            .cert
            .chain()
            .iter()
            .filter_map(|der| CertInfo::parse(der).ok())
            .collect();
        json!({
            "name": "default",
            "identity": c.cert.identity().uri(),
            "leaf": c.cert.leaf(),
            "chain_length": c.cert.chain().len(),
            "chain": chain,
        })
    });
    let roots: Vec<_> = credentials
        .roots()
        .bundle
        .roots()
        .iter()
        .filter_map(|r| CertInfo::parse(r).ok())
        .collect();
    json!({ "default": cert, "ROOTCA": roots })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec: {clusterIP: 10.96.0.20, selector: {app: backend}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: tls-backend, namespace: shop}
spec: {selector: {app: backend}, ports: [{name: http, port: 81, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tls-backend, namespace: shop}
spec: {host: tls-backend.shop.svc.cluster.local, trafficPolicy: {tls: {mode: SIMPLE}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: backend, namespace: shop}
spec: {selector: {matchLabels: {app: backend}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {8080: {mode: STRICT}}}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: shop, labels: {app: backend}}
spec: {serviceAccountName: backend, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-0, namespace: shop, labels: {app: frontend}}
spec: {containers: [{name: app, ports: [{containerPort: 9000}]}]}
status: {podIP: 10.244.0.12}
";

    fn dump(workload: &str) -> Value {
        let report = meshward_api::load_text(MESH, "mesh.yaml", None);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let mesh = meshward_policy::declared::mesh_from_report(&report).unwrap();
        let (ns, name) = workload.split_once('/').unwrap();
        config_dump(&ProxyState::build(mesh, ns, name, 1).unwrap(), None, None)
    }

    #[test]
    fn the_server_side_reports_the_workload_and_port_modes() {
        let dump = dump("shop/backend-0");
        assert_eq!(dump["peer_authentication"]["mode"], "PERMISSIVE");
        assert_eq!(dump["ports"][0]["port"], 8080);
        assert_eq!(dump["ports"][0]["mtls"], "STRICT");
    }

    #[test]
    fn every_route_carries_the_tls_mode_the_resolver_decided() {
        let dump = dump("shop/frontend-0");
        let cluster = |service: &str| {
            dump["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["service"] == service)
                .unwrap()
                .clone()
        };
        let auto = &cluster("backend.shop.svc.cluster.local")["endpoints"][0];
        assert_eq!(auto["tls_mode"], "ISTIO_MUTUAL");
        assert_eq!(auto["tls"], "ISTIO_MUTUAL");
        // SIMPLE is decided from the DestinationRule and refused when a connection is made.
        let simple = &cluster("tls-backend.shop.svc.cluster.local")["endpoints"][0];
        assert_eq!(simple["tls_mode"], "SIMPLE");
        assert_eq!(simple["tls"], "REFUSED");
        // A pod address is routed as the endpoint of the service whose target port it is.
        let routes = dump["workload_routes"].as_array().unwrap();
        let backend = routes
            .iter()
            .find(|r| r["workload"] == "shop/backend-0")
            .unwrap();
        assert_eq!(backend["address"], "10.244.0.11:8080");
        assert_eq!(backend["target_port"], 8080);
        assert_eq!(backend["endpoints"][0]["tls_mode"], "ISTIO_MUTUAL");
        assert_eq!(routes.len(), 2, "one per workload port: {routes:?}");
    }
}
