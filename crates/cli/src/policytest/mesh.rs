//! The mesh a PolicyTest describes: declared workloads and services, plus the Kubernetes and
//! Istio resources it embeds and includes.

use std::collections::BTreeMap;

use meshward_api::policytest::{PolicyTest, TestService};
use meshward_api::{LoadedResource, Resource};
use meshward_policy::inventory::{
    Inventory, ServiceDef, ServicePortDef, TargetPort, Workload, WorkloadPort,
};
use meshward_policy::{Mesh, MeshSettings};

/// Builds the mesh of a test. Errors name the workload whose address does not parse.
pub(crate) fn build_mesh(test: &PolicyTest, resources: &[LoadedResource]) -> anyhow::Result<Mesh> {
    let spec = &test.spec;
    let settings = spec
        .mesh_config
        .as_ref()
        .map(MeshSettings::from_config)
        .unwrap_or_default();
    let mut inventory = Inventory::default();
    for w in &spec.workloads {
        let address = match &w.address {
            Some(a) => a.parse().map_err(|_| {
                anyhow::anyhow!("workload {}: address `{a}` is not an IP address", w.name)
            })?,
            None => inventory.next_address(),
        };
        inventory.workloads.push(Workload {
            namespace: w.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            name: w.name.clone(),
            service_account: w
                .service_account
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            labels: w.labels.clone(),
            address,
            sidecar: w.sidecar.unwrap_or(true),
            ports: w
                .ports
                .iter()
                .map(|p| WorkloadPort {
                    port: p.port,
                    protocol: p.protocol.unwrap_or_default(),
                })
                .collect(),
        });
    }
    inventory
        .services
        .extend(spec.services.iter().map(service_def));
    let all: Vec<&Resource> = resources.iter().map(|r| &r.resource).collect();
    inventory.add_resources(all.iter().copied());
    Ok(Mesh::new(settings, inventory, &all))
}

fn service_def(s: &TestService) -> ServiceDef {
    ServiceDef {
        namespace: s.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: s.name.clone(),
        selector: Some(s.selector.clone()).filter(|m: &BTreeMap<_, _>| !m.is_empty()),
        ports: s
            .ports
            .iter()
            .map(|p| ServicePortDef {
                name: p.name.clone(),
                port: p.port,
                target_port: TargetPort::Number(p.target_port.unwrap_or(p.port)),
                app_protocol: p.app_protocol.clone(),
            })
            .collect(),
    }
}
