//! Destination → route: which service a host (or captured IP) names, its endpoints and target
//! ports, and, per endpoint, what this workload's sidecar originates towards it.
//!
//! The TLS decision itself (DestinationRule selection, port-level precedence, auto mTLS) is the
//! policy crate's [`decide_client_tls`]; this module only gathers its inputs from the mesh, so
//! the proxy and `meshward check` can never disagree.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use meshward_api::SpiffeId;
use meshward_api::resources::networking::TlsMode;
use meshward_policy::Mesh;
use meshward_policy::client_tls::{ClientTls, ClientTlsInput, TlsSource, decide_client_tls};
use meshward_policy::inventory::{Protocol, ResolveError, ServiceDef, ServicePortDef, Workload};

use crate::state::ProxyState;

/// Envoy's cluster for destinations outside the mesh.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";

/// Where the downstream wants to go.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A host name or IP literal and a port, as an HTTP proxy request names it. Service names
    /// are `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`, short names relative to
    /// the client's namespace.
    Host {
        /// Host (an IPv6 literal may keep its brackets).
        host: &'a str,
        /// Port.
        port: u16,
    },
    /// The original destination of a captured connection.
    Address(SocketAddr),
}

/// What this sidecar sends on an upstream connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Plaintext: DestinationRule `DISABLE`, or auto mTLS chose plaintext.
    Plaintext,
    /// Istio mTLS (§3.1 `ISTIO_MUTUAL`).
    Mtls(MtlsTarget),
    /// A TLS setting this proxy cannot originate; connections fail with this reason rather
    /// than silently downgrading.
    Refused(Arc<str>),
}

/// The parameters of one mTLS origination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsTarget {
    /// SNI (§4.3).
    pub sni: Arc<str>,
    /// Secure naming list before alias expansion (§1.8 client step 3); empty = chain only.
    pub expected: Arc<[SpiffeId]>,
}

/// Hashes the SNI only. The pool hashes its key on every request, twice; the SNI names the
/// service and port and so already tells targets apart, and equal targets have equal SNIs.
/// The identities are still compared in full.
impl std::hash::Hash for MtlsTarget {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sni.hash(state);
    }
}

/// One endpoint of a route.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The workload `ns/name`.
    pub workload: String,
    /// Pod IP and target (container) port.
    pub address: SocketAddr,
    /// What to originate towards it (auto mTLS decides per endpoint, §3.4).
    pub transport: Transport,
    /// The client TLS mode decided for it — DestinationRule `trafficPolicy.tls.mode`, or auto
    /// mTLS's choice — of which `transport` is the execution (`SIMPLE` and `MUTUAL` are decided
    /// but refused). What `/config_dump` reports as the sidecar's TLS towards the endpoint.
    pub tls_mode: TlsMode,
    /// Why: `DestinationRule ns/name`, `auto mTLS`, or why auto mTLS chose plaintext.
    pub tls_source: String,
}

/// A destination inside the mesh.
#[derive(Debug, Clone)]
pub struct MeshRoute {
    /// `outbound|<port>||<fqdn>`.
    pub cluster: Arc<str>,
    /// The service FQDN; `None` when a captured pod IP belongs to no service.
    pub service: Option<Arc<str>>,
    /// The service port (the container port when there is no service).
    pub service_port: u16,
    /// The port's protocol: the service port's name or `appProtocol`, else the endpoint's
    /// declared port protocol.
    pub protocol: Protocol,
    /// The endpoints, in inventory order.
    pub endpoints: Arc<[Endpoint]>,
}

/// A destination outside the mesh: connect to what the client asked for.
#[derive(Debug, Clone)]
pub struct PassthroughRoute {
    /// The host as requested (an IP for captured connections).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address when known without DNS (an IP literal or a captured destination).
    pub address: Option<SocketAddr>,
}

impl PassthroughRoute {
    /// The address to connect to: as captured, as an IP literal, or from DNS (bounded by
    /// `timeout`).
    pub async fn address(&self, timeout: Duration) -> Result<SocketAddr, String> {
        if let Some(addr) = self.address {
            return Ok(addr);
        }
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        match tokio::time::timeout(timeout, lookup).await {
            Ok(Ok(mut addrs)) => addrs
                .next()
                .ok_or_else(|| format!("{} has no address", self.host)),
            Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", self.host)),
            Err(_) => Err(format!("resolving {} timed out", self.host)),
        }
    }
}

/// Where traffic goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// A mesh service or workload.
    Mesh(MeshRoute),
    /// Outside the mesh (`PassthroughCluster`).
    Passthrough(PassthroughRoute),
}

impl Route {
    /// The cluster name for logs.
    pub fn cluster(&self) -> Arc<str> {
        match self {
            Route::Mesh(m) => m.cluster.clone(),
            Route::Passthrough(_) => Arc::from(PASSTHROUGH_CLUSTER),
        }
    }

    /// Whether requests on this route are HTTP (drives the capture path).
    pub fn is_http(&self) -> bool {
        match self {
            Route::Mesh(m) => m.protocol.is_http(),
            Route::Passthrough(_) => false,
        }
    }

    /// Whether the upstream speaks HTTP/2 (HTTP2 and GRPC ports).
    pub fn wants_h2(&self) -> bool {
        matches!(
            self,
            Route::Mesh(MeshRoute {
                protocol: Protocol::Http2 | Protocol::Grpc,
                ..
            })
        )
    }
}

/// A destination that names something, but nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A short name matches services in several namespaces, none the client's.
    #[error(transparent)]
    Ambiguous(ResolveError),
}

/// More cached routes than this (clients naming many hosts outside the mesh) empties the
/// cache rather than growing it without bound.
const MAX_CACHED_ROUTES: usize = 4096;

/// Routes of one mesh version: resolving scans the inventory and decides the TLS of every
/// endpoint, which need not happen again for every request to the same destination.
#[derive(Debug, Default)]
struct RouteCache {
    version: u64,
    hosts: HashMap<(String, u16), Route>,
    addresses: HashMap<SocketAddr, Route>,
}

impl RouteCache {
    fn for_version(&mut self, version: u64) -> &mut Self {
        if self.version != version || self.hosts.len() + self.addresses.len() >= MAX_CACHED_ROUTES {
            self.version = version;
            self.hosts.clear();
            self.addresses.clear();
        }
        self
    }
}

/// Resolves destinations and spreads requests over endpoints.
#[derive(Debug, Default)]
pub struct Resolver {
    /// Round-robin position per cluster. Bounded by the clusters of the mesh: passthrough
    /// destinations have a single address and take no counter; reset when the mesh changes.
    positions: Mutex<(u64, HashMap<Arc<str>, usize>)>,
    cache: Mutex<RouteCache>,
}

impl Resolver {
    /// A resolver with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves `destination` for the workload of `state`.
    pub fn resolve(
        &self,
        state: &ProxyState,
        destination: Destination<'_>,
    ) -> Result<Route, RouteError> {
        let addr = match destination {
            Destination::Address(addr) => addr,
            Destination::Host { host, port } => {
                let host = normalize_host(host);
                match host.parse::<IpAddr>() {
                    Ok(ip) => SocketAddr::new(ip, port),
                    Err(_) => {
                        let key = (host, port);
                        if let Some(route) = self.cached(state.version, |c| c.hosts.get(&key)) {
                            return Ok(route);
                        }
                        let route = resolve_host(state, &key.0, port)?;
                        self.lock_cache()
                            .for_version(state.version)
                            .hosts
                            .insert(key, route.clone());
                        return Ok(route);
                    }
                }
            }
        };
        if let Some(route) = self.cached(state.version, |c| c.addresses.get(&addr)) {
            return Ok(route);
        }
        let route = resolve_address(&state.mesh, state.workload(), addr);
        self.lock_cache()
            .for_version(state.version)
            .addresses
            .insert(addr, route.clone());
        Ok(route)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, RouteCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(
        &self,
        version: u64,
        get: impl FnOnce(&RouteCache) -> Option<&Route>,
    ) -> Option<Route> {
        let cache = self.lock_cache();
        (cache.version == version)
            .then(|| get(&cache).cloned())
            .flatten()
    }

    /// The next endpoint of `route`, round robin; `None` when it has none.
    pub fn pick<'r>(&self, state_version: u64, route: &'r MeshRoute) -> Option<&'r Endpoint> {
        let n = route.endpoints.len();
        if n <= 1 {
            return route.endpoints.first();
        }
        let mut guard = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (version, positions) = &mut *guard;
        if *version != state_version {
            *version = state_version;
            positions.clear();
        }
        let position = positions.entry(route.cluster.clone()).or_insert(0);
        let chosen = *position % n;
        *position = chosen.wrapping_add(1);
        route.endpoints.get(chosen)
    }
}

/// A host name (not an IP literal): a mesh service, else outside the mesh.
fn resolve_host(state: &ProxyState, host: &str, port: u16) -> Result<Route, RouteError> {
    let mesh = &state.mesh;
    let client = state.workload();
    match mesh
        .inventory
        .resolve_service(host, Some(&client.namespace))
    {
        Ok(service) => match service.ports.iter().find(|p| p.port == port) {
            Some(service_port) => Ok(Route::Mesh(service_route(
                mesh,
                client,
                service,
                service_port,
            ))),
            // Istio: a known host on a port the service does not declare has no outbound
            // cluster, and the traffic leaves through PassthroughCluster.
            None => Ok(passthrough(host.to_owned(), port, None)),
        },
        Err(ResolveError::NoService(_)) => Ok(passthrough(host.to_owned(), port, None)),
        Err(e) => Err(RouteError::Ambiguous(e)),
    }
}

/// Lower case, no trailing dot, no IPv6 brackets.
fn normalize_host(host: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

fn passthrough(host: String, port: u16, address: Option<SocketAddr>) -> Route {
    Route::Passthrough(PassthroughRoute {
        host,
        port,
        address,
    })
}

/// A service and one of its ports: every endpoint with its target port and transport.
fn service_route(
    mesh: &Mesh,
    client: &Workload,
    service: &ServiceDef,
    service_port: &ServicePortDef,
) -> MeshRoute {
    let fqdn = service.fqdn();
    let endpoints: Vec<&Workload> = mesh.inventory.endpoints(service).collect();
    let identities = identities(mesh, &endpoints);
    let resolved: Vec<Endpoint> = endpoints
        .iter()
        .map(|endpoint| {
            let target_port = mesh
                .inventory
                .target_port(service_port, endpoint)
                .unwrap_or(service_port.port);
            let tls = decide(
                mesh,
                client,
                Some(service),
                service_port.port,
                endpoint,
                target_port,
                identities.clone(),
            );
            endpoint_of(endpoint, target_port, &tls)
        })
        .collect();
    let protocol = service_port.declared_protocol().unwrap_or_else(|| {
        endpoints
            .first()
            .and_then(|e| {
                mesh.inventory
                    .target_port(service_port, e)
                    .map(|p| e.protocol(p))
            })
            .unwrap_or(Protocol::Http)
    });
    MeshRoute {
        // §4.3: "Cluster name is `outbound|9080|v1|reviews.default.svc.cluster.local`"; no
        // subset here.
        cluster: Arc::from(format!("outbound|{}||{fqdn}", service_port.port)),
        service: Some(Arc::from(fqdn)),
        service_port: service_port.port,
        protocol,
        endpoints: resolved.into(),
    }
}

/// A captured `ip:port` (or an IP literal in a proxy request). A service's virtual IP
/// (`clusterIP`) names that service, as Envoy's outbound listener for `VIP:port` does: the
/// route is the service port's cluster with all its endpoints; a VIP on a port the service does
/// not declare passes through, as for a host name. A service's pod IP is treated
/// as a mesh endpoint reached through the service whose target port it is: "a sidecar client
/// treats the workload as a mesh endpoint: auto mTLS and its DestinationRules apply as for a
/// service selecting it" (policy-tests.md, `to.workload`). An address no workload holds is
/// outside the mesh.
fn resolve_address(mesh: &Mesh, client: &Workload, addr: SocketAddr) -> Route {
    let ip = addr.ip();
    let port = addr.port();
    if let Some(service) = mesh.inventory.service_by_cluster_ip(ip) {
        return match service.ports.iter().find(|p| p.port == port) {
            Some(service_port) => service_route(mesh, client, service, service_port).into(),
            None => passthrough(ip.to_string(), port, Some(addr)),
        };
    }
    let candidates = || mesh.inventory.workloads.iter().filter(|w| w.address == ip);
    // Several workloads may share an address (tests on loopback); prefer one that declares
    // the port.
    let endpoint = candidates()
        .find(|w| w.ports.iter().any(|p| p.port == port))
        .or_else(|| candidates().next());
    let Some(endpoint) = endpoint else {
        return passthrough(ip.to_string(), port, Some(addr));
    };
    let via = mesh.inventory.services_of(endpoint).find_map(|s| {
        s.ports
            .iter()
            .find(|p| mesh.inventory.target_port(p, endpoint) == Some(port))
            .map(|p| (s, p))
    });
    let (service, service_port) = match via {
        Some((s, p)) => (Some(s), p.port),
        None => (None, port),
    };
    let identities = match service {
        Some(s) => identities(mesh, &mesh.inventory.endpoints(s).collect::<Vec<_>>()),
        None => vec![endpoint.spiffe_id(&mesh.settings.trust_domain)],
    };
    let tls = decide(
        mesh,
        client,
        service,
        service_port,
        endpoint,
        port,
        identities,
    );
    let host = service
        .map(ServiceDef::fqdn)
        .unwrap_or_else(|| ip.to_string());
    let protocol = via
        .and_then(|(_, p)| p.declared_protocol())
        .unwrap_or_else(|| endpoint.protocol(port));
    MeshRoute {
        cluster: Arc::from(format!("outbound|{service_port}||{host}")),
        service: service.map(|s| Arc::from(s.fqdn())),
        service_port,
        protocol,
        endpoints: vec![endpoint_of(endpoint, port, &tls)].into(),
    }
    .into()
}

impl From<MeshRoute> for Route {
    fn from(route: MeshRoute) -> Self {
        Route::Mesh(route)
    }
}

/// §1.8 client step 3: "the service's account list (SPIFFE IDs of all service accounts of
/// pods/WorkloadEntries backing the service)", sorted and deduplicated.
fn identities(mesh: &Mesh, endpoints: &[&Workload]) -> Vec<String> {
    let td = &mesh.settings.trust_domain;
    let mut ids: Vec<String> = endpoints.iter().map(|w| w.spiffe_id(td)).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn decide(
    mesh: &Mesh,
    client: &Workload,
    service: Option<&ServiceDef>,
    service_port: u16,
    endpoint: &Workload,
    endpoint_port: u16,
    service_identities: Vec<String>,
) -> ClientTls {
    decide_client_tls(
        &ClientTlsInput {
            client,
            service,
            service_port,
            endpoint,
            endpoint_port,
            service_identities,
        },
        &mesh.destination_rules,
        &mesh.peer_authn,
        &mesh.settings,
    )
}

fn endpoint_of(endpoint: &Workload, port: u16, tls: &ClientTls) -> Endpoint {
    Endpoint {
        workload: endpoint.key(),
        address: SocketAddr::new(endpoint.address, port),
        transport: transport(tls),
        tls_mode: tls.mode,
        tls_source: match &tls.source {
            TlsSource::DestinationRule(dr) => format!("DestinationRule {dr}"),
            TlsSource::AutoMtls => "auto mTLS".to_owned(),
            TlsSource::AutoPlaintext(why) => format!("auto mTLS chose plaintext: {why}"),
        },
    }
}

/// The policy decision as something a connection can carry out.
fn transport(tls: &ClientTls) -> Transport {
    match tls.mode {
        TlsMode::Disable => Transport::Plaintext,
        TlsMode::IstioMutual => {
            // §1.8 client step 3: "Empty list ⇒ no SAN check (chain check only)". With
            // `insecureSkipVerify` (§3.1 "skip CA+SAN") the SAN check is skipped; the chain is
            // still checked against the mesh roots, which only ever makes this stricter.
            let expected: Vec<SpiffeId> = if tls.skip_verify {
                Vec::new()
            } else {
                let parsed: Vec<SpiffeId> = tls
                    .expected_sans
                    .iter()
                    .filter_map(|san| SpiffeId::parse(san).ok())
                    .collect();
                if parsed.is_empty() && !tls.expected_sans.is_empty() {
                    // Mesh certificates carry only SPIFFE URI SANs; a list with none of them
                    // can never match, and dropping it would turn the check off.
                    return Transport::Refused(Arc::from(format!(
                        "subjectAltNames [{}] contain no SPIFFE ID a mesh certificate could carry",
                        tls.expected_sans.join(", ")
                    )));
                }
                parsed
            };
            let sni = tls.sni.clone().unwrap_or_default();
            Transport::Mtls(MtlsTarget {
                sni: Arc::from(sni),
                expected: expected.into(),
            })
        }
        mode @ (TlsMode::Simple | TlsMode::Mutual) => Transport::Refused(Arc::from(format!(
            "DestinationRule tls mode {} is not supported by the meshward sidecar (only ISTIO_MUTUAL and DISABLE are)",
            mode.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(yaml: &str, workload: &str) -> ProxyState {
        let report = meshward_api::load_text(yaml, "mesh.yaml", None);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let mesh = meshward_policy::declared::mesh_from_report(&report).unwrap();
        let (ns, name) = workload.split_once('/').unwrap();
        ProxyState::build(mesh, ns, name, 1).unwrap()
    }

    const VIP_MESH: &str = "\
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {clusterIP: 10.96.0.20, selector: {app: backend}, ports: [{name: http, port: 80, targetPort: 5678}]}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-0, namespace: default, labels: {app: backend}}
spec: {serviceAccountName: backend-sa, containers: [{name: app, ports: [{containerPort: 5678}]}]}
status: {podIP: 10.244.0.11}
---
apiVersion: v1
kind: Pod
metadata: {name: backend-1, namespace: default, labels: {app: backend}}
spec: {serviceAccountName: backend-sa, containers: [{name: app, ports: [{containerPort: 5678}]}]}
status: {podIP: 10.244.0.12}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-0, namespace: default, labels: {app: frontend}}
spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.244.0.13}
";

    #[test]
    fn captured_service_vip_resolves_to_the_service_and_all_endpoints() {
        let state = state(VIP_MESH, "default/frontend-0");
        let resolver = Resolver::new();
        let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
        let Route::Mesh(route) = resolver.resolve(&state, Destination::Address(vip)).unwrap()
        else {
            panic!("a service VIP must resolve inside the mesh");
        };
        assert_eq!(
            &*route.cluster,
            "outbound|80||backend.default.svc.cluster.local"
        );
        assert_eq!(route.service_port, 80);
        let addrs: Vec<String> = route
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addrs, ["10.244.0.11:5678", "10.244.0.12:5678"]);
        // Both endpoints have sidecars: auto mTLS with the service's identity.
        assert!(matches!(route.endpoints[0].transport, Transport::Mtls(_)));
    }

    #[test]
    fn service_vip_on_an_undeclared_port_passes_through() {
        let state = state(VIP_MESH, "default/frontend-0");
        let addr: SocketAddr = "10.96.0.20:81".parse().unwrap();
        let route = Resolver::new()
            .resolve(&state, Destination::Address(addr))
            .unwrap();
        let Route::Passthrough(p) = route else {
            panic!("an undeclared port of a VIP is outside the mesh");
        };
        assert_eq!(p.address, Some(addr));
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("HttpBin.Foo."), "httpbin.foo");
        assert_eq!(normalize_host("[::1]"), "::1");
    }
}
