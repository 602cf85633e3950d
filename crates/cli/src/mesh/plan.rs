//! Manifests → the pods and services of a local mesh, with their addresses.
//!
//! What becomes a pod: every `Pod`, and every `Deployment` replica, named `<deployment>-<n>`
//! (`n` from 0; stable, unlike Kubernetes' random suffixes, so tests and people can name them).
//! A pod gets a sidecar when its namespace is labelled `istio-injection=enabled` (or
//! `istio.io/rev`), or when its namespace is not declared at all — the convention of
//! `meshward check` and PolicyTests, so that what `check` says is what the mesh does — unless it
//! opts out with `sidecar.istio.io/inject: "false"` (label or annotation).
//!
//! Addresses: pods take 10.244.0.2 onwards in 10.244.0.0/16 (the bridge holds 10.244.0.1) —
//! in loopback mode 127.100.0.1 onwards in 127.100.0.0/16 (see `loopback`) — and services take
//! 10.96.0.10 onwards in 10.96.0.0/16 unless their manifest sets a `clusterIP` inside that range.
//! Nothing in these ranges is routed off the machine.
//!
//! Without manifests, `up` runs the embedded default: seed 000's apps (a frontend and a
//! backend with sidecars, see [`DEFAULT_MANIFEST`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use meshward_api::resources::inventory::{IntOrString, PodSpec};
use meshward_api::{LoadedResource, Resource};
use serde::{Deserialize, Serialize};

use super::mode::Mode;

/// The annotation that replaces a container's image with a local shell command.
pub(crate) const RUN_ANNOTATION: &str = "meshward.dev/run";

/// What `up` runs without `-f`: seed 000's apps, so `meshward up` alone starts a mesh on a
/// fresh machine (the tutorial's policies are then applied with `meshward apply`).
pub(crate) const DEFAULT_MANIFEST: &str =
    include_str!("../../../../examples/seeds/000-frontend-backend-mtls-authz/00-apps.yaml");

/// The name [`DEFAULT_MANIFEST`] is reported under.
pub(crate) const DEFAULT_MANIFEST_NAME: &str =
    "examples/seeds/000-frontend-backend-mtls-authz/00-apps.yaml (embedded)";

/// The pod network.
pub(crate) const POD_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 16);
/// The bridge's address, the pods' only gateway (to the service range).
pub(crate) const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// The service (VIP) network.
pub(crate) const SERVICE_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 16);

/// Manifests that cannot become a mesh.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    /// A file or folder could not be read.
    #[error(transparent)]
    Load(#[from] meshward_api::LoadError),
    /// Manifests with validation errors.
    #[error("the manifests have errors:\n{0}")]
    Invalid(String),
    /// `clusterIP` outside the service range.
    #[error(
        "Service {service}: clusterIP {ip} is outside the local mesh's service range 10.96.0.0/16"
    )]
    ClusterIpRange {
        /// `ns/name`.
        service: String,
        /// The address.
        ip: String,
    },
    /// Two services with one `clusterIP`.
    #[error("Services {first} and {second} both ask for clusterIP {ip}")]
    ClusterIpTaken {
        /// `ns/name`.
        first: String,
        /// `ns/name`.
        second: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A range ran out of addresses.
    #[error("no free address left in {0}")]
    Exhausted(&'static str),
    /// Nothing to run.
    #[error("the manifests declare no Pod or Deployment: nothing to run")]
    NoPods,
    /// Loopback mode: a pod declares a port and its shifted twin.
    #[error(
        "pod {pod}: container ports {port} and {twin} would share port {twin} in loopback mode, where ports below 1024 are served at port + {offset}; change one of them or use netns mode"
    )]
    ShiftedPortTaken {
        /// `ns/name`.
        pod: String,
        /// The port below 1024.
        port: u16,
        /// The declared port it becomes.
        twin: u16,
        /// The shift.
        offset: u16,
    },
    /// Loopback mode: a pod declares a port its proxy uses on the pod's address.
    #[error(
        "pod {pod}: container port {port} is {used_by} on the pod's address in loopback mode; change the port or use netns mode"
    )]
    ProxyPortTaken {
        /// `ns/name`.
        pod: String,
        /// The declared port.
        port: u16,
        /// What uses it.
        used_by: &'static str,
    },
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContainerPlan {
    /// Container name.
    pub(crate) name: String,
    /// Container ports (TCP).
    pub(crate) ports: Vec<u16>,
    /// Named container ports, for Services with a named `targetPort`.
    #[serde(default)]
    pub(crate) port_names: BTreeMap<String, u16>,
}

/// One pod: a network namespace with an app and maybe a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodPlan {
    /// Namespace.
    pub(crate) namespace: String,
    /// Pod name.
    pub(crate) name: String,
    /// The Deployment it is a replica of.
    pub(crate) deployment: Option<String>,
    /// Service account (identity).
    pub(crate) service_account: String,
    /// Labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Annotations (the pod template's).
    pub(crate) annotations: BTreeMap<String, String>,
    /// Has a sidecar.
    pub(crate) sidecar: bool,
    /// Containers.
    pub(crate) containers: Vec<ContainerPlan>,
    /// The command from `meshward.dev/run`; `None` runs the built-in echo app.
    pub(crate) run: Option<String>,
    /// Pod IP.
    pub(crate) ip: Ipv4Addr,
}

impl PodPlan {
    /// `ns/name`.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Every container port.
    pub(crate) fn ports(&self) -> Vec<u16> {
        let ports: BTreeSet<u16> = self
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().copied())
            .collect();
        ports.into_iter().collect()
    }

    /// The container port a named `targetPort` means.
    pub(crate) fn named_port(&self, name: &str) -> Option<u16> {
        self.containers
            .iter()
            .find_map(|c| c.port_names.get(name).copied())
    }
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServicePortPlan {
    /// Port name.
    pub(crate) name: Option<String>,
    /// Service port.
    pub(crate) port: u16,
    /// Target port: a number or a container port name.
    pub(crate) target: String,
    /// `appProtocol`.
    pub(crate) app_protocol: Option<String>,
}

impl ServicePortPlan {
    /// The container port on `pod`.
    pub(crate) fn target_on(&self, pod: &PodPlan) -> Option<u16> {
        match self.target.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => pod.named_port(&self.target),
        }
    }
}

/// A Service with its virtual IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServicePlan {
    /// Namespace.
    pub(crate) namespace: String,
    /// Name.
    pub(crate) name: String,
    /// Selector; `None` selects nothing.
    pub(crate) selector: Option<BTreeMap<String, String>>,
    /// Ports.
    pub(crate) ports: Vec<ServicePortPlan>,
    /// Virtual IP.
    pub(crate) ip: Ipv4Addr,
}

impl ServicePlan {
    /// Does it select `pod`?
    pub(crate) fn selects(&self, pod: &PodPlan) -> bool {
        pod.namespace == self.namespace
            && self.selector.as_ref().is_some_and(|s| {
                !s.is_empty() && s.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            })
    }
}

/// What `meshward up` runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct MeshPlan {
    /// Pods.
    pub(crate) pods: Vec<PodPlan>,
    /// Services.
    pub(crate) services: Vec<ServicePlan>,
    /// Every resource, in input order (the proxies' configuration is generated from them).
    pub(crate) resources: Vec<Resource>,
}

/// The files of `paths`: a folder means the YAML/JSON files directly inside it, sorted — as
/// `kubectl apply -f DIR` without `-R`, so the seeds' `steps/` and `fixed/` variants and
/// PolicyTests' includes are not applied on top of the final manifests.
pub(crate) fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, meshward_api::LoadError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(path).map_err(|source| meshward_api::LoadError::Io {
                    path: path.clone(),
                    source,
                })?;
            let mut inside: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && is_manifest(p))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Loads manifests (PolicyTest documents are ignored: they describe tests, not workloads).
/// Later documents replace earlier ones with the same kind, namespace and name, as repeated
/// `kubectl apply` does.
pub(crate) fn load(paths: &[PathBuf]) -> Result<Vec<Resource>, PlanError> {
    let mut loaded: Vec<LoadedResource> = Vec::new();
    let mut errors = Vec::new();
    for file in manifest_files(paths)? {
        let report = meshward_api::load_file(&file)?;
        errors.extend(report.errors().map(ToString::to_string));
        loaded.extend(report.resources);
    }
    if !errors.is_empty() {
        return Err(PlanError::Invalid(errors.join("\n")));
    }
    let mut out: Vec<Resource> = Vec::new();
    for r in loaded {
        let id = r.resource.id();
        match out.iter_mut().find(|x| x.id() == id) {
            Some(existing) => *existing = r.resource,
            None => out.push(r.resource),
        }
    }
    Ok(out)
}

/// Hands out addresses, skipping ones already taken.
#[derive(Debug, Clone)]
pub(crate) struct Allocator {
    base: u32,
    next: u32,
    end: u32,
    taken: BTreeSet<Ipv4Addr>,
    range: &'static str,
}

impl Allocator {
    /// Pod addresses.
    pub(crate) fn pods() -> Self {
        Self::new(POD_NET, 2, "the pod range 10.244.0.0/16")
    }

    /// Pod addresses of `mode`.
    pub(crate) fn pods_for(mode: Mode) -> Self {
        match mode {
            Mode::Netns => Self::pods(),
            Mode::Loopback => Self::loopback_pods(),
        }
    }

    /// Pod addresses in loopback mode (see `loopback`).
    pub(crate) fn loopback_pods() -> Self {
        Self::new(
            super::loopback::POD_NET,
            1,
            "the loopback pod range 127.100.0.0/16",
        )
    }

    /// Service addresses.
    pub(crate) fn services() -> Self {
        Self::new(SERVICE_NET, 10, "the service range 10.96.0.0/16")
    }

    fn new((net, prefix): (Ipv4Addr, u8), first: u32, range: &'static str) -> Self {
        let base = u32::from(net);
        let size = 1u32 << (32 - u32::from(prefix));
        Self {
            base,
            next: base + first,
            end: base + size - 1,
            taken: BTreeSet::new(),
            range,
        }
    }

    /// Marks `ip` used.
    pub(crate) fn reserve(&mut self, ip: Ipv4Addr) {
        self.taken.insert(ip);
    }

    /// Whether `ip` is in this allocator's range.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.end
    }

    /// The next free address (host parts ending in .0 or .255 are skipped, to keep addresses
    /// unsurprising to people).
    pub(crate) fn allocate(&mut self) -> Result<Ipv4Addr, PlanError> {
        while self.next < self.end {
            let ip = Ipv4Addr::from(self.next);
            self.next += 1;
            let last = ip.octets()[3];
            if last == 0 || last == 255 || self.taken.contains(&ip) {
                continue;
            }
            self.taken.insert(ip);
            return Ok(ip);
        }
        Err(PlanError::Exhausted(self.range))
    }
}

/// Loads [`DEFAULT_MANIFEST`].
pub(crate) fn load_default() -> Result<Vec<Resource>, PlanError> {
    let report = meshward_api::load_text(DEFAULT_MANIFEST, DEFAULT_MANIFEST_NAME, None);
    let errors: Vec<String> = report.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        return Err(PlanError::Invalid(errors.join("\n")));
    }
    Ok(report.resources.into_iter().map(|r| r.resource).collect())
}

/// Builds the plan of `resources` (netns mode's addresses).
#[cfg(test)]
pub(crate) fn plan(resources: Vec<Resource>) -> Result<MeshPlan, PlanError> {
    plan_with(resources, Allocator::pods())
}

/// Builds the plan of `resources` for `mode`: its pod addresses, and in loopback mode only
/// pods whose ports it can serve (see `loopback`).
pub(crate) fn plan_for(resources: Vec<Resource>, mode: Mode) -> Result<MeshPlan, PlanError> {
    let plan = plan_with(resources, Allocator::pods_for(mode))?;
    if mode == Mode::Loopback {
        super::loopback::check_ports(&plan.pods)?;
    }
    Ok(plan)
}

/// Builds the plan of `resources` with pod addresses from `pod_ips`.
pub(crate) fn plan_with(
    resources: Vec<Resource>,
    mut pod_ips: Allocator,
) -> Result<MeshPlan, PlanError> {
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in &resources {
        if let Resource::Namespace(ns) = r {
            namespaces.insert(ns.metadata.name().to_owned(), ns.metadata.labels.clone());
        }
    }
    let mut pods = Vec::new();
    for r in &resources {
        match r {
            Resource::Deployment(d) => {
                let t = &d.spec.template;
                let replicas = d.spec.replicas.unwrap_or(1);
                for n in 0..replicas {
                    pods.push(pod_plan(
                        &namespaces,
                        d.metadata.namespace(),
                        format!("{}-{n}", d.metadata.name()),
                        Some(d.metadata.name().to_owned()),
                        &t.metadata.labels,
                        &t.metadata.annotations,
                        &t.spec,
                        pod_ips.allocate()?,
                    ));
                }
            }
            Resource::Pod(p) => pods.push(pod_plan(
                &namespaces,
                p.metadata.namespace(),
                p.metadata.name().to_owned(),
                None,
                &p.metadata.labels,
                &p.metadata.annotations,
                &p.spec,
                pod_ips.allocate()?,
            )),
            _ => {}
        }
    }
    if pods.is_empty() {
        return Err(PlanError::NoPods);
    }
    let services = plan_services(&resources)?;
    Ok(MeshPlan {
        pods,
        services,
        resources,
    })
}

fn plan_services(resources: &[Resource]) -> Result<Vec<ServicePlan>, PlanError> {
    let mut vips = Allocator::services();
    let mut fixed: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    // Services that ask for an address get it first, so allocation never hands it out.
    for r in resources {
        if let Resource::Service(s) = r
            && let Some(ip) = s.spec.cluster_ip()
        {
            let key = format!("{}/{}", s.metadata.namespace(), s.metadata.name());
            let ip = match ip {
                IpAddr::V4(ip) if vips.contains(ip) => ip,
                _ => {
                    return Err(PlanError::ClusterIpRange {
                        service: key,
                        ip: ip.to_string(),
                    });
                }
            };
            if let Some(first) = fixed.insert(ip, key.clone()) {
                return Err(PlanError::ClusterIpTaken {
                    first,
                    second: key,
                    ip,
                });
            }
            vips.reserve(ip);
        }
    }
    let mut services = Vec::new();
    for r in resources {
        let Resource::Service(s) = r else { continue };
        let ip = match s.spec.cluster_ip() {
            Some(IpAddr::V4(ip)) => ip,
            _ => vips.allocate()?,
        };
        services.push(ServicePlan {
            namespace: s.metadata.namespace().to_owned(),
            name: s.metadata.name().to_owned(),
            selector: s.spec.selector.clone(),
            ports: s
                .spec
                .ports
                .iter()
                .map(|p| ServicePortPlan {
                    name: p.name.clone(),
                    port: p.port,
                    target: match &p.target_port {
                        Some(IntOrString::Int(n)) => n.to_string(),
                        Some(IntOrString::String(s)) => s.clone(),
                        None => p.port.to_string(),
                    },
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
            ip,
        });
    }
    Ok(services)
}

/// Istio's injection decision for a pod (see the module docs).
pub(crate) fn injected(
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    let opt = |m: &BTreeMap<String, String>| m.get("sidecar.istio.io/inject").map(|v| v == "true");
    if let Some(explicit) = opt(labels).or_else(|| opt(annotations)) {
        return explicit;
    }
    match namespaces.get(namespace) {
        Some(ns) => {
            ns.get("istio-injection").map(String::as_str) == Some("enabled")
                || ns.contains_key("istio.io/rev")
        }
        None => true,
    }
}

#[allow(clippy::too_many_arguments)]
fn pod_plan(
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    namespace: &str,
    name: String,
    deployment: Option<String>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
    ip: Ipv4Addr,
) -> PodPlan {
    PodPlan {
        namespace: namespace.to_owned(),
        name,
        deployment,
        service_account: spec.service_account().to_owned(),
        labels: labels.clone(),
        annotations: annotations.clone(),
        sidecar: injected(namespaces, namespace, labels, annotations),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerPlan {
                name: c.name.clone(),
                ports: c
                    .ports
                    .iter()
                    .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                    .map(|p| p.container_port)
                    .collect(),
                port_names: c
                    .ports
                    .iter()
                    .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
                    .collect(),
            })
            .collect(),
        run: annotations
            .get(RUN_ANNOTATION)
            .or_else(|| labels.get(RUN_ANNOTATION))
            .cloned(),
        ip,
    }
}

/// The plan of the mesh a PolicyTest declares (`meshward test --live`), with the addresses
/// that do not fit the pod range.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeclaredPlan {
    /// Pods (one per workload, in inventory order) and services; no resources: the live runner
    /// hands the declaration itself to the control plane.
    pub(crate) plan: MeshPlan,
    /// Pod key → the workload's declared address when it lies outside 10.244.0.0/16. The pod then
    /// holds it besides its own pod-range address (which only the control plane sees), so that
    /// peers and policies see the address the test declares.
    pub(crate) extra_addresses: BTreeMap<String, Ipv4Addr>,
}

/// Builds the plan of a PolicyTest's mesh (as `meshward_policy::declared::build_mesh` made it):
/// every workload, declared or from included manifests, becomes a pod with the echo app on its
/// ports, keeping the address the engine gave it, so that what the proxies see is what the
/// engine saw. Services keep a declared `clusterIP` inside the service range and get a fresh VIP
/// otherwise.
pub(crate) fn plan_declared(mesh: &meshward_policy::Mesh) -> Result<DeclaredPlan, PlanError> {
    let inventory = &mesh.inventory;
    let mut pod_ips = Allocator::pods();
    let mut primary: Vec<Option<Ipv4Addr>> = Vec::new();
    for w in &inventory.workloads {
        match w.address {
            IpAddr::V4(ip) if pod_ips.contains(ip) && ip != BRIDGE_IP => {
                pod_ips.reserve(ip);
                primary.push(Some(ip));
            }
            IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() => {
                return Err(PlanError::Invalid(format!(
                    "workload {}: address {ip} cannot be a pod address",
                    w.key()
                )));
            }
            IpAddr::V4(_) => primary.push(None),
            IpAddr::V6(ip) => {
                return Err(PlanError::Invalid(format!(
                    "workload {}: IPv6 address {ip}: the local mesh is IPv4 only",
                    w.key()
                )));
            }
        }
    }
    let mut out = DeclaredPlan::default();
    for (w, ip) in inventory.workloads.iter().zip(primary) {
        let ip = match ip {
            Some(ip) => ip,
            None => {
                let ip = pod_ips.allocate()?;
                if let IpAddr::V4(declared) = w.address {
                    out.extra_addresses.insert(w.key(), declared);
                }
                ip
            }
        };
        out.plan.pods.push(PodPlan {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            deployment: None,
            service_account: w.service_account.clone(),
            labels: w.labels.clone(),
            annotations: BTreeMap::new(),
            sidecar: w.sidecar,
            containers: vec![ContainerPlan {
                name: "app".to_owned(),
                ports: w.ports.iter().map(|p| p.port).collect(),
                port_names: BTreeMap::new(),
            }],
            run: None,
            ip,
        });
    }
    let mut vips = Allocator::services();
    for s in &inventory.services {
        if let Some(IpAddr::V4(ip)) = s.cluster_ip
            && vips.contains(ip)
        {
            vips.reserve(ip);
        }
    }
    for s in &inventory.services {
        let ip = match s.cluster_ip {
            Some(IpAddr::V4(ip)) if vips.contains(ip) => ip,
            _ => vips.allocate()?,
        };
        out.plan.services.push(ServicePlan {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            selector: s.selector.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| ServicePortPlan {
                    name: p.name.clone(),
                    port: p.port,
                    target: match &p.target_port {
                        meshward_policy::inventory::TargetPort::Number(n) => n.to_string(),
                        meshward_policy::inventory::TargetPort::Name(n) => n.clone(),
                    },
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
            ip,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(yaml: &str) -> MeshPlan {
        let report = meshward_api::load_text(yaml, "t.yaml", None);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        plan(report.resources.into_iter().map(|r| r.resource).collect()).unwrap()
    }

    const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: backend}}
    spec:
      serviceAccountName: backend-sa
      containers: [{name: app, image: httpd, ports: [{containerPort: 5678, name: web}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: legacy, annotations: {meshward.dev/run: sleep 3600}}
spec: {containers: [{name: sleep}]}
---
apiVersion: v1
kind: Pod
metadata: {name: opt-out, namespace: shop, annotations: {sidecar.istio.io/inject: 'false'}}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec: {selector: {app: backend}, ports: [{port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: fixed, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
";

    #[test]
    fn deployments_become_numbered_replicas_with_their_own_addresses() {
        let p = plan_of(APPS);
        let names: Vec<String> = p.pods.iter().map(PodPlan::key).collect();
        assert_eq!(
            names,
            [
                "shop/backend-0",
                "shop/backend-1",
                "legacy/sleep",
                "shop/opt-out"
            ]
        );
        let ips: Vec<String> = p.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(
            ips,
            ["10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5"]
        );
        assert_eq!(p.pods[0].service_account, "backend-sa");
        assert_eq!(p.pods[0].deployment.as_deref(), Some("backend"));
        assert_eq!(p.pods[2].service_account, "default");
    }

    #[test]
    fn injection_follows_namespace_labels_and_opt_outs() {
        let p = plan_of(APPS);
        let sidecars: Vec<bool> = p.pods.iter().map(|p| p.sidecar).collect();
        assert_eq!(sidecars, [true, true, false, false]);
        assert_eq!(p.pods[2].run.as_deref(), Some("sleep 3600"));
        assert_eq!(p.pods[0].run, None);
    }

    #[test]
    fn services_get_vips_and_named_target_ports_resolve() {
        let p = plan_of(APPS);
        // The fixed address is reserved before allocation starts.
        assert_eq!(p.services[0].ip, Ipv4Addr::new(10, 96, 0, 11));
        assert_eq!(p.services[1].ip, Ipv4Addr::new(10, 96, 0, 10));
        assert!(p.services[0].selects(&p.pods[0]));
        assert_eq!(p.services[0].ports[0].target_on(&p.pods[0]), Some(5678));
    }

    #[test]
    fn cluster_ip_outside_the_service_range_is_refused() {
        let report = meshward_api::load_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 192.168.1.1, ports: [{port: 80}]}\n",
            "t.yaml",
            None,
        );
        let err = plan(report.resources.into_iter().map(|r| r.resource).collect()).unwrap_err();
        assert!(err.to_string().contains("default/s"), "{err}");
    }

    #[test]
    fn declared_workloads_keep_their_addresses_and_foreign_ones_get_a_pod_address() {
        let report = meshward_api::load_text(
            "apiVersion: meshward.dev/v1alpha1\nkind: PolicyTest\nmetadata: {name: t}\nspec:\n  \
             workloads:\n  - {name: a, ports: [{port: 80, protocol: TCP}]}\n  \
             - {name: b, address: 10.1.2.3, sidecar: false}\n  \
             services:\n  - {name: a, selector: {app: a}, ports: [{port: 8080, targetPort: 80}]}\n  \
             cases: []\n",
            "t.yaml",
            None,
        );
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let test = &report.tests[0];
        let mesh = meshward_policy::declared::build_mesh(&test.test, &test.resources).unwrap();
        let d = plan_declared(&mesh).unwrap();
        assert_eq!(
            IpAddr::from(d.plan.pods[0].ip),
            mesh.inventory.workloads[0].address
        );
        assert_eq!(d.plan.pods[0].ports(), [80]);
        assert!(!d.plan.pods[1].sidecar);
        assert_eq!(
            d.extra_addresses.get("default/b"),
            Some(&Ipv4Addr::new(10, 1, 2, 3))
        );
        assert_ne!(d.plan.pods[1].ip, d.plan.pods[0].ip);
        assert_eq!(d.plan.services[0].ip, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(d.plan.services[0].ports[0].target, "80");
    }

    #[test]
    fn loopback_pods_take_127_100_addresses_and_unservable_ports_are_refused() {
        let report = meshward_api::load_text(APPS, "t.yaml", None);
        let resources: Vec<Resource> = report.resources.into_iter().map(|r| r.resource).collect();
        let p = plan_for(resources, Mode::Loopback).unwrap();
        let ips: Vec<String> = p.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(
            ips,
            ["127.100.0.1", "127.100.0.2", "127.100.0.3", "127.100.0.4"]
        );
        let twins = meshward_api::load_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n\
             spec: {containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 10080}]}]}\n",
            "t.yaml",
            None,
        );
        let twins: Vec<Resource> = twins.resources.into_iter().map(|r| r.resource).collect();
        assert!(plan_for(twins.clone(), Mode::Netns).is_ok());
        let err = plan_for(twins, Mode::Loopback).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::ShiftedPortTaken {
                    port: 80,
                    twin: 10080,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_embedded_default_is_seed_000s_apps() {
        let p = plan_for(load_default().unwrap(), Mode::Loopback).unwrap();
        let names: Vec<String> = p.pods.iter().map(PodPlan::key).collect();
        assert_eq!(names, ["default/frontend-0", "default/backend-0"]);
        assert!(p.pods.iter().all(|p| p.sidecar));
        assert_eq!(p.services.len(), 2);
    }

    #[test]
    fn allocator_skips_taken_and_edge_addresses() {
        let mut a = Allocator::pods();
        a.reserve(Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(a.allocate().unwrap(), Ipv4Addr::new(10, 244, 0, 3));
        assert!(a.contains(Ipv4Addr::new(10, 244, 200, 1)));
        assert!(!a.contains(Ipv4Addr::new(10, 245, 0, 1)));
        assert!(!Allocator::services().contains(Ipv4Addr::new(10, 244, 0, 1)));
    }
}
