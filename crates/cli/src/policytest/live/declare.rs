//! What the control plane is given for one document: the test's Istio and identity resources,
//! unchanged, and a PolicyTest-shaped declaration of the running pods (each workload at the
//! address its pod has, each service at its VIP) carrying the test's `meshConfig` — the form
//! the control plane stores and pushes to every proxy. The access log is switched to JSON on
//! the proxies' standard output: the runner reads the deciding policy and rule there.

use meshward_api::policytest::POLICY_TEST_API_VERSION;
use meshward_api::{LoadedTest, Resource};
use meshward_control::InputFile;
use meshward_policy::Mesh;
use serde_json::{Value, json};

use crate::mesh::config::resources_document;
use crate::mesh::plan::DeclaredPlan;

/// The access-log settings every live proxy runs with.
const ACCESS_LOG_FILE: &str = "/dev/stdout";
const ACCESS_LOG_ENCODING: &str = "JSON";

/// The files to apply for `loaded`, in the order the engine saw its resources.
pub(crate) fn inputs(
    loaded: &LoadedTest,
    mesh: &Mesh,
    declared: &DeclaredPlan,
) -> anyhow::Result<Vec<InputFile>> {
    let label = format!("{} ({})", loaded.origin.file, loaded.test.metadata.name());
    // The inventory kinds are replaced by the declaration below (a WorkloadEntry too: it is a
    // pod here).
    let resources: Vec<Resource> = loaded
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .filter(|r| !matches!(r, Resource::WorkloadEntry(_)))
        .collect();
    let mut files = vec![InputFile {
        name: format!("{label} resources"),
        text: serde_json::to_string(&resources_document(&resources))?,
    }];
    let mut mesh_config = match &loaded.test.spec.mesh_config {
        Some(c) => serde_json::to_value(c)?,
        None => json!({}),
    };
    if let Some(map) = mesh_config.as_object_mut() {
        map.insert("accessLogFile".to_owned(), json!(ACCESS_LOG_FILE));
        map.insert("accessLogEncoding".to_owned(), json!(ACCESS_LOG_ENCODING));
        map.remove("accessLogFormat");
    }
    let workloads: Vec<Value> = mesh
        .inventory
        .workloads
        .iter()
        .map(|w| {
            let ports: Vec<Value> = w
                .ports
                .iter()
                .map(|p| json!({"port": p.port, "protocol": p.protocol}))
                .collect();
            json!({
                "name": w.name,
                "namespace": w.namespace,
                "serviceAccount": w.service_account,
                "labels": w.labels,
                "address": w.address.to_string(),
                "sidecar": w.sidecar,
                "ports": ports,
            })
        })
        .collect();
    let mut services = Vec::new();
    for s in &declared.plan.services {
        let mut ports = Vec::new();
        for p in &s.ports {
            let target: u16 = p.target.parse().map_err(|_| {
                anyhow::anyhow!(
                    "service {}/{}: named targetPort `{}` cannot be declared to the control plane",
                    s.namespace,
                    s.name,
                    p.target
                )
            })?;
            let mut port = json!({"port": p.port, "targetPort": target});
            if let Some(name) = &p.name {
                port["name"] = json!(name);
            }
            if let Some(proto) = &p.app_protocol {
                port["appProtocol"] = json!(proto);
            }
            ports.push(port);
        }
        let mut service = json!({
            "name": s.name,
            "namespace": s.namespace,
            "ports": ports,
            "clusterIP": s.ip.to_string(),
        });
        if let Some(selector) = &s.selector {
            service["selector"] = json!(selector);
        }
        services.push(service);
    }
    let declaration = json!({
        "apiVersion": POLICY_TEST_API_VERSION,
        "kind": "PolicyTest",
        "metadata": {"name": "live-mesh"},
        "spec": {
            "meshConfig": mesh_config,
            "workloads": workloads,
            "services": services,
            "cases": [],
        },
    });
    files.push(InputFile {
        name: format!("{label} declaration"),
        text: serde_json::to_string(&declaration)?,
    });
    Ok(files)
}

/// The test's resources as written, for the control plane to admit or refuse
/// (`expectErrors`).
pub(crate) fn test_resources(loaded: &LoadedTest) -> anyhow::Result<InputFile> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": loaded.test.spec.resources});
    Ok(InputFile {
        name: format!("{} ({})", loaded.origin.file, loaded.test.metadata.name()),
        text: serde_json::to_string(&list)?,
    })
}
