//! The proxies' configuration, generated as ordinary manifests the proxy's local (file) mode
//! reads, in `~/.meshward/config/`:
//!
//! - `resources.json`: the Istio resources, Namespaces and ServiceAccounts given to `up`,
//!   unchanged (written once);
//! - `inventory.json`: one `Pod` per running pod, with `status.podIP` and the sidecar decision
//!   pinned in `sidecar.istio.io/inject`, and every `Service` with its `spec.clusterIP`
//!   (rewritten when `meshward run` adds or removes a pod).
//!
//! Deployments are not passed on: their replicas are the Pods. The mesh's control plane
//! watches this folder and serves each sidecar its part of it; `meshward apply` adds to it live.

use std::path::Path;

use meshward_api::Resource;
use serde_json::{Value, json};

use super::plan::{PodPlan, ServicePlan};
use super::state::{StateError, write_atomic};

/// The Istio and identity resources of the mesh, as a `List`.
pub(crate) fn resources_document(resources: &[Resource]) -> Value {
    let items: Vec<Value> = resources.iter().filter_map(resource_value).collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// A resource passed on to the proxies, `None` for the kinds `inventory.json` replaces.
fn resource_value(r: &Resource) -> Option<Value> {
    let value = match r {
        Resource::AuthorizationPolicy(x) => serde_json::to_value(x),
        Resource::PeerAuthentication(x) => serde_json::to_value(x),
        Resource::RequestAuthentication(x) => serde_json::to_value(x),
        Resource::DestinationRule(x) => serde_json::to_value(x),
        Resource::WorkloadEntry(x) => serde_json::to_value(x),
        Resource::Namespace(x) => serde_json::to_value(x),
        Resource::ServiceAccount(x) => serde_json::to_value(x),
        Resource::Service(_) | Resource::Deployment(_) | Resource::Pod(_) => return None,
    };
    // These types serialize infallibly (plain structs, string keys); a failure would be a bug
    // in the api crate, and dropping the resource is then better than a crash.
    value.ok()
}

/// Pods and Services, as a `List`.
pub(crate) fn inventory_document<'a>(
    pods: impl IntoIterator<Item = &'a PodPlan>,
    services: &[ServicePlan],
) -> Value {
    let mut items: Vec<Value> = Vec::new();
    for s in services {
        let ports: Vec<Value> = s
            .ports
            .iter()
            .map(|p| {
                let target = match p.target.parse::<u16>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(p.target),
                };
                let mut port = json!({"port": p.port, "targetPort": target});
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                if let Some(proto) = &p.app_protocol {
                    port["appProtocol"] = json!(proto);
                }
                port
            })
            .collect();
        let mut spec = json!({"clusterIP": s.ip.to_string(), "ports": ports});
        if let Some(selector) = &s.selector {
            spec["selector"] = json!(selector);
        }
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": s.name, "namespace": s.namespace},
            "spec": spec,
        }));
    }
    for p in pods {
        let mut annotations = p.annotations.clone();
        annotations.insert("sidecar.istio.io/inject".to_owned(), p.sidecar.to_string());
        let mut labels = p.labels.clone();
        // A label would take precedence over the annotation; the decision is already made.
        labels.remove("sidecar.istio.io/inject");
        let containers: Vec<Value> = p
            .containers
            .iter()
            .map(|c| {
                let ports: Vec<Value> = c
                    .ports
                    .iter()
                    .map(|port| {
                        let mut v = json!({"containerPort": port});
                        if let Some((name, _)) = c.port_names.iter().find(|(_, n)| *n == port) {
                            v["name"] = json!(name);
                        }
                        v
                    })
                    .collect();
                json!({"name": c.name, "ports": ports})
            })
            .collect();
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": p.name,
                "namespace": p.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {"serviceAccountName": p.service_account, "containers": containers},
            "status": {"podIP": p.ip.to_string()},
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Writes `resources.json`.
pub(crate) fn write_resources(dir: &Path, resources: &[Resource]) -> Result<(), StateError> {
    write_json(&dir.join("resources.json"), &resources_document(resources))
}

/// Writes `inventory.json`.
pub(crate) fn write_inventory<'a>(
    dir: &Path,
    pods: impl IntoIterator<Item = &'a PodPlan>,
    services: &[ServicePlan],
) -> Result<(), StateError> {
    write_json(
        &dir.join("inventory.json"),
        &inventory_document(pods, services),
    )
}

fn write_json(path: &Path, value: &Value) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::mesh::plan;

    const MESH: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
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
      containers: [{name: app, ports: [{containerPort: 5678, name: web}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: shop, labels: {sidecar.istio.io/inject: 'false'}}
spec: {containers: [{name: app, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: shop}
spec: {selector: {app: backend}, ports: [{name: http, port: 80, targetPort: web}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: backend, namespace: shop}
spec: {selector: {matchLabels: {app: backend}}, portLevelMtls: {5678: {mode: PERMISSIVE}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]
    to: [{operation: {methods: [GET], paths: ['/api/*']}}]
    when: [{key: 'request.headers[x-version]', values: [v1]}]
";

    /// What the control plane loads from the generated file is reported at the manifest's own
    /// file and line, unless the manifest no longer holds the same resource.
    #[test]
    fn generated_resources_are_located_in_the_manifests() {
        let original = meshward_api::load_text(MESH, "mesh.yaml", None);
        let resources: Vec<Resource> = original
            .resources
            .iter()
            .map(|r| r.resource.clone())
            .collect();
        let p = plan::plan(resources).unwrap();
        let text = serde_json::to_string(&resources_document(&p.resources)).unwrap();
        let mut back = meshward_api::load_text(&text, "resources.json", None);
        // The manifest changed since: the edited policy keeps the generated file's origin.
        let edited = MESH.replace("paths: ['/api/*']", "paths: ['/v2/*']");
        let changed = meshward_api::load_text(&edited, "mesh.yaml", None);
        let mut stale = back.clone();
        let moved = stale.restate_origins("resources.json", &changed);
        let kept: Vec<String> = stale
            .resources
            .iter()
            .filter(|r| &*r.origin.file == "resources.json")
            .map(|r| r.resource.id().to_string())
            .collect();
        assert_eq!(kept, ["AuthorizationPolicy shop/allow"]);

        let all = back.restate_origins("resources.json", &original);
        assert_eq!(
            all,
            back.resources.len(),
            "every generated resource is found"
        );
        assert_eq!(moved, all - 1);
        for r in &back.resources {
            let found = original
                .resources
                .iter()
                .find(|o| o.resource.id() == r.resource.id())
                .unwrap();
            assert_eq!(&*r.origin.file, "mesh.yaml");
            assert_eq!(r.origin.start(), found.origin.start());
        }
    }

    #[test]
    fn generated_configuration_loads_back_as_the_same_mesh() {
        let report = meshward_api::load_text(MESH, "mesh.yaml", None);
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let resources: Vec<Resource> = report.resources.into_iter().map(|r| r.resource).collect();
        let p = plan::plan(resources.clone()).unwrap();

        let text = serde_json::to_string(&resources_document(&p.resources)).unwrap();
        let back = meshward_api::load_text(&text, "resources.json", None);
        assert!(!back.has_errors(), "{:?}", back.diagnostics);
        let expected: Vec<&Resource> = resources
            .iter()
            .filter(|r| {
                !matches!(
                    r,
                    Resource::Deployment(_) | Resource::Pod(_) | Resource::Service(_)
                )
            })
            .collect();
        let got: Vec<&Resource> = back.resources.iter().map(|r| &r.resource).collect();
        assert_eq!(got, expected);

        let text = serde_json::to_string(&inventory_document(&p.pods, &p.services)).unwrap();
        let inv = meshward_api::load_text(&text, "inventory.json", None);
        assert!(!inv.has_errors(), "{:?}", inv.diagnostics);
        let mut all: Vec<meshward_api::LoadedResource> = back.resources.clone();
        all.extend(inv.resources);
        let report = meshward_api::LoadReport {
            resources: all,
            ..Default::default()
        };
        let mesh = meshward_policy::declared::mesh_from_report(&report).unwrap();
        let w = mesh.inventory.workload("shop", "backend-1").unwrap();
        assert_eq!(w.address, IpAddr::from(p.pods[1].ip));
        assert_eq!(w.service_account, "backend-sa");
        assert!(w.sidecar);
        assert!(!mesh.inventory.workload("shop", "legacy").unwrap().sidecar);
        let svc = mesh
            .inventory
            .service_by_cluster_ip(IpAddr::from(p.services[0].ip))
            .unwrap();
        assert_eq!(svc.name, "backend");
        assert_eq!(mesh.inventory.endpoints(svc).count(), 2);
    }
}
