//! Who exists in the mesh: workloads (pods, deployments, workload entries) and services, with
//! the facts decisions need (identity, labels, address, sidecar, port protocols).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use meshward_api::policytest::PortProtocol;
use meshward_api::resources::Resource;
use meshward_api::resources::inventory::IntOrString;

use crate::authz::WorkloadSelectorView;

/// The protocol of an inbound port, which decides the filter chain (HTTP or TCP).
pub type Protocol = PortProtocol;

/// One inbound port of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPort {
    /// Container (target) port.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

/// A workload: a pod (or the pods of a Deployment, which share labels and identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name (pod or deployment).
    pub name: String,
    /// Service account, `default` unless set.
    pub service_account: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod IP.
    pub address: IpAddr,
    /// Has a sidecar (is in the mesh).
    pub sidecar: bool,
    /// Declared inbound ports.
    pub ports: Vec<WorkloadPort>,
}

impl Workload {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The SPIFFE ID its certificate carries.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }

    /// For policy selection.
    pub fn selector_view(&self) -> WorkloadSelectorView<'_> {
        WorkloadSelectorView {
            namespace: &self.namespace,
            labels: &self.labels,
        }
    }

    /// Istio ingress/egress gateways (`istio: ingressgateway`) and Gateway API gateways: their
    /// listeners are not governed by PeerAuthentication and they trust X-Forwarded-For hops.
    pub fn is_gateway(&self) -> bool {
        matches!(
            self.labels.get("istio").map(String::as_str),
            Some("ingressgateway" | "egressgateway")
        ) || self
            .labels
            .contains_key(crate::authz::select::GATEWAY_NAME_LABEL)
    }

    /// The protocol of a port; undeclared ports are sniffed, and the requests meshward sends
    /// are HTTP, so they take the HTTP chain.
    pub fn protocol(&self, port: u16) -> Protocol {
        self.ports
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.protocol)
            .unwrap_or(Protocol::Http)
    }
}

/// A Kubernetes Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortDef {
    /// Port name (its prefix gives the protocol in Istio).
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// Target (container) port; a named target port is resolved against the endpoints.
    pub target_port: TargetPort,
    /// `appProtocol`.
    pub app_protocol: Option<String>,
}

/// A Service `targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A container port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

impl ServicePortDef {
    /// Istio's protocol selection from `appProtocol` or the port name prefix
    /// (`http`, `http2`, `grpc`, `tcp`, …); `None` when it must be sniffed.
    pub fn declared_protocol(&self) -> Option<Protocol> {
        let name = self
            .app_protocol
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let prefix = name.split('-').next().unwrap_or_default();
        match prefix {
            "http" | "https" => Some(Protocol::Http),
            "http2" | "h2c" => Some(Protocol::Http2),
            "grpc" | "grpc-web" => Some(Protocol::Grpc),
            "tcp" | "tls" | "mongo" | "redis" | "mysql" => Some(Protocol::Tcp),
            _ => None,
        }
    }
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod selector; `None` for a selector-less service (no endpoints here).
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    pub ports: Vec<ServicePortDef>,
    /// The virtual IP (`spec.clusterIP`); connections captured to it are resolved to this
    /// service, as kube-proxy and Envoy's outbound listeners do. `None` for headless services
    /// and declarations without one.
    pub cluster_ip: Option<IpAddr>,
}

impl ServiceDef {
    /// `name.namespace.svc.cluster.local`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// Does this service select `w`?
    pub fn selects(&self, w: &Workload) -> bool {
        w.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
    }
}

/// A host name could not be resolved to one service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No service has that host name.
    #[error("no service `{0}`")]
    NoService(String),
    /// A short name matches services in several namespaces.
    #[error("`{host}` is ambiguous: services {candidates}")]
    Ambiguous {
        /// The name asked for.
        host: String,
        /// The candidates, comma-separated.
        candidates: String,
    },
}

/// Workloads, services and namespaces.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Workloads, in the order they were declared.
    pub workloads: Vec<Workload>,
    /// Services.
    pub services: Vec<ServiceDef>,
    /// Declared namespaces and their labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inventory {
    /// Adds the workloads, services and namespaces described by Kubernetes resources.
    /// Pods get a sidecar when their namespace is labelled `istio-injection=enabled` (or
    /// `istio.io/rev`), unless they opt out with `sidecar.istio.io/inject: "false"`; a pod in a
    /// namespace that is not declared at all is assumed injected, as PolicyTest workloads are.
    pub fn add_resources<'a>(&mut self, resources: impl IntoIterator<Item = &'a Resource>) {
        let resources: Vec<&Resource> = resources.into_iter().collect();
        for r in &resources {
            if let Resource::Namespace(ns) = r {
                self.namespaces
                    .insert(ns.metadata.name().to_owned(), ns.metadata.labels.clone());
            }
        }
        for r in &resources {
            match r {
                Resource::Service(s) => self.services.push(ServiceDef {
                    namespace: s.metadata.namespace().to_owned(),
                    name: s.metadata.name().to_owned(),
                    selector: s.spec.selector.clone(),
                    ports: s
                        .spec
                        .ports
                        .iter()
                        .map(|p| ServicePortDef {
                            name: p.name.clone(),
                            port: p.port,
                            target_port: match &p.target_port {
                                Some(IntOrString::Int(n)) => TargetPort::Number(*n),
                                Some(IntOrString::String(name)) => match name.parse() {
                                    Ok(n) => TargetPort::Number(n),
                                    Err(_) => TargetPort::Name(name.clone()),
                                },
                                None => TargetPort::Number(p.port),
                            },
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                    cluster_ip: s.spec.cluster_ip(),
                }),
                Resource::Deployment(d) => {
                    let t = &d.spec.template;
                    let namespace = d.metadata.namespace();
                    self.add_pod_like(
                        namespace,
                        d.metadata.name(),
                        &t.metadata.labels,
                        &t.metadata.annotations,
                        &t.spec,
                    );
                }
                Resource::Pod(p) => {
                    // `status.podIP` is where the runtime placed the pod (`meshward up` writes
                    // it); a declared pod without one gets a made-up address.
                    let address = p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse().ok());
                    self.add_pod_like(
                        p.metadata.namespace(),
                        p.metadata.name(),
                        &p.metadata.labels,
                        &p.metadata.annotations,
                        &p.spec,
                    );
                    if let (Some(address), Some(w)) = (address, self.workloads.last_mut()) {
                        w.address = address;
                    }
                }
                Resource::WorkloadEntry(we) => {
                    let address = we
                        .spec
                        .address
                        .as_deref()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| self.next_address());
                    self.workloads.push(Workload {
                        namespace: we.metadata.namespace().to_owned(),
                        name: we.metadata.name().to_owned(),
                        service_account: we
                            .spec
                            .service_account
                            .clone()
                            .unwrap_or_else(|| "default".to_owned()),
                        labels: we.spec.labels.clone(),
                        address,
                        // A WorkloadEntry stands for a VM running Istio's agent.
                        sidecar: true,
                        ports: we
                            .spec
                            .ports
                            .values()
                            .filter_map(|p| u16::try_from(*p).ok())
                            .map(|port| WorkloadPort {
                                port,
                                protocol: Protocol::Http,
                            })
                            .collect(),
                    });
                }
                _ => {}
            }
        }
        self.refine_port_protocols();
    }

    fn add_pod_like(
        &mut self,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        spec: &meshward_api::resources::inventory::PodSpec,
    ) {
        let opt =
            |m: &BTreeMap<String, String>| m.get("sidecar.istio.io/inject").map(|v| v == "true");
        let explicit = opt(labels).or_else(|| opt(annotations));
        let namespace_injected = match self.namespaces.get(namespace) {
            Some(ns_labels) => {
                ns_labels.get("istio-injection").map(String::as_str) == Some("enabled")
                    || ns_labels.contains_key("istio.io/rev")
            }
            None => true,
        };
        let sidecar = match explicit {
            Some(false) => false,
            Some(true) => true,
            None => namespace_injected,
        };
        let address = self.next_address();
        self.workloads.push(Workload {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            service_account: spec.service_account().to_owned(),
            labels: labels.clone(),
            address,
            sidecar,
            ports: spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .map(|p| WorkloadPort {
                    port: p.container_port,
                    protocol: if p.protocol.as_deref() == Some("UDP") {
                        Protocol::Tcp
                    } else {
                        Protocol::Http
                    },
                })
                .collect(),
        });
    }

    /// Container ports take the protocol that the Services targeting them declare.
    fn refine_port_protocols(&mut self) {
        for i in 0..self.workloads.len() {
            let Some(w) = self.workloads.get(i) else {
                continue;
            };
            let mut updates = Vec::new();
            for svc in self.services.iter().filter(|s| s.selects(w)) {
                for sp in &svc.ports {
                    if let (TargetPort::Number(target), Some(proto)) =
                        (&sp.target_port, sp.declared_protocol())
                    {
                        updates.push((*target, proto));
                    }
                }
            }
            if let Some(w) = self.workloads.get_mut(i) {
                for (port, proto) in updates {
                    match w.ports.iter_mut().find(|p| p.port == port) {
                        Some(p) => p.protocol = proto,
                        None => w.ports.push(WorkloadPort {
                            port,
                            protocol: proto,
                        }),
                    }
                }
            }
        }
    }

    /// The next free pod address in 10.244.0.0/16, the local mesh's pod range.
    pub fn next_address(&self) -> IpAddr {
        let n = u32::try_from(self.workloads.len()).unwrap_or(0) + 10;
        IpAddr::V4(Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250 + 2) as u8))
    }

    /// The workload `ns/name`.
    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// The service whose virtual IP is `ip`.
    pub fn service_by_cluster_ip(&self, ip: IpAddr) -> Option<&ServiceDef> {
        self.services.iter().find(|s| s.cluster_ip == Some(ip))
    }

    /// Services selecting `w`.
    pub fn services_of<'s>(&'s self, w: &'s Workload) -> impl Iterator<Item = &'s ServiceDef> + 's {
        self.services.iter().filter(move |s| s.selects(w))
    }

    /// Workloads selected by `svc`.
    pub fn endpoints<'s>(&'s self, svc: &'s ServiceDef) -> impl Iterator<Item = &'s Workload> + 's {
        self.workloads.iter().filter(move |w| svc.selects(w))
    }

    /// Resolves `backend`, `backend.ns`, `backend.ns.svc`, `backend.ns.svc.cluster.local`. A
    /// short name resolves in `from_namespace` first, as Kubernetes DNS does, else to the one
    /// service of that name.
    pub fn resolve_service(
        &self,
        host: &str,
        from_namespace: Option<&str>,
    ) -> Result<&ServiceDef, ResolveError> {
        let host = host.trim_end_matches('.');
        let parts: Vec<&str> = host.split('.').collect();
        let (name, namespace) = match parts.as_slice() {
            [name] => (*name, None),
            [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => {
                (*name, Some(*ns))
            }
            _ => return Err(ResolveError::NoService(host.to_owned())),
        };
        if let Some(ns) = namespace {
            return self
                .services
                .iter()
                .find(|s| s.name == name && s.namespace == ns)
                .ok_or_else(|| ResolveError::NoService(host.to_owned()));
        }
        if let Some(ns) = from_namespace
            && let Some(s) = self
                .services
                .iter()
                .find(|s| s.name == name && s.namespace == ns)
        {
            return Ok(s);
        }
        let candidates: Vec<&ServiceDef> =
            self.services.iter().filter(|s| s.name == name).collect();
        match candidates.as_slice() {
            [one] => Ok(one),
            [] => Err(ResolveError::NoService(host.to_owned())),
            many => Err(ResolveError::Ambiguous {
                host: host.to_owned(),
                candidates: many
                    .iter()
                    .map(|s| format!("{}/{}", s.namespace, s.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The container port a service port targets on `endpoint`.
    pub fn target_port(&self, port: &ServicePortDef, endpoint: &Workload) -> Option<u16> {
        match &port.target_port {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(_) => endpoint.ports.first().map(|p| p.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(yaml: &str) -> Inventory {
        let report = meshward_api::load_text(yaml, "test.yaml", None);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let mut inventory = Inventory::default();
        inventory.add_resources(report.resources.iter().map(|r| &r.resource));
        inventory
    }

    #[test]
    fn service_cluster_ip_and_pod_ip_come_from_manifests() {
        let inv = inventory(
            "apiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: shop}\n\
             spec: {clusterIP: 10.96.0.10, selector: {app: backend}, ports: [{port: 80, targetPort: 5678}]}\n\
             ---\napiVersion: v1\nkind: Service\nmetadata: {name: headless, namespace: shop}\n\
             spec: {clusterIP: None, ports: [{port: 80}]}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: backend-0, namespace: shop, labels: {app: backend}}\n\
             spec: {containers: [{name: app, ports: [{containerPort: 5678}]}]}\nstatus: {podIP: 10.244.1.7}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: shop}\nspec: {}\n",
        );
        let vip: IpAddr = "10.96.0.10".parse().unwrap();
        let svc = inv.service_by_cluster_ip(vip).unwrap();
        assert_eq!(svc.name, "backend");
        assert_eq!(inv.services[1].cluster_ip, None);
        let pod = inv.workload("shop", "backend-0").unwrap();
        assert_eq!(pod.address, "10.244.1.7".parse::<IpAddr>().unwrap());
        // Without status.podIP a pod still gets an address of its own.
        assert_ne!(inv.workload("shop", "other").unwrap().address, pod.address);
        assert!(
            inv.service_by_cluster_ip("10.96.0.11".parse().unwrap())
                .is_none()
        );
    }
}
