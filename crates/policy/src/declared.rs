//! A mesh from declarations: the workloads and services of PolicyTests (or any file using the
//! same `workloads`/`services` shape), plus the Kubernetes and Istio resources loaded beside them.
//! `meshward check`, `meshward test` and the proxy's local mode build their mesh here.

use std::collections::BTreeMap;

use meshward_api::policytest::{PolicyTest, TestService};
use meshward_api::{LoadReport, LoadedResource, Resource};

use crate::flow::Mesh;
use crate::inventory::{Inventory, ServiceDef, ServicePortDef, TargetPort, Workload, WorkloadPort};
use crate::mesh::MeshSettings;

/// A declaration that cannot become part of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshBuildError {
    /// A workload's `address` is not an IP address.
    #[error("workload {workload}: address `{address}` is not an IP address")]
    Address {
        /// The workload name.
        workload: String,
        /// The value given.
        address: String,
    },
    /// A service's `clusterIP` is not an IP address.
    #[error("service {service}: clusterIP `{address}` is not an IP address")]
    ClusterIp {
        /// The service name.
        service: String,
        /// The value given.
        address: String,
    },
}

/// The mesh of everything in a load report: its resources, and the workloads, services,
/// embedded resources and first `meshConfig` of its PolicyTests.
pub fn mesh_from_report(report: &LoadReport) -> Result<Mesh, MeshBuildError> {
    let mut resources: Vec<LoadedResource> = report.resources.clone();
    let mut spec = PolicyTest {
        api_version: meshward_api::policytest::POLICY_TEST_API_VERSION.to_owned(),
        kind: "PolicyTest".to_owned(),
        metadata: Default::default(),
        spec: Default::default(),
    };
    for t in &report.tests {
        resources.extend(t.resources.iter().cloned());
        spec.spec
            .workloads
            .extend(t.test.spec.workloads.iter().cloned());
        spec.spec
            .services
            .extend(t.test.spec.services.iter().cloned());
        if spec.spec.mesh_config.is_none() {
            spec.spec.mesh_config = t.test.spec.mesh_config.clone();
        }
    }
    build_mesh(&spec, &resources)
}

/// Builds the mesh of a test. Errors name the workload whose address does not parse.
pub fn build_mesh(test: &PolicyTest, resources: &[LoadedResource]) -> Result<Mesh, MeshBuildError> {
    let spec = &test.spec;
    let settings = spec
        .mesh_config
        .as_ref()
        .map(MeshSettings::from_config)
        .unwrap_or_default();
    let mut inventory = Inventory::default();
    for w in &spec.workloads {
        let address = match &w.address {
            Some(a) => a.parse().map_err(|_| MeshBuildError::Address {
                workload: w.name.clone(),
                address: a.clone(),
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
    for s in &spec.services {
        inventory.services.push(service_def(s)?);
    }
    let all: Vec<&Resource> = resources.iter().map(|r| &r.resource).collect();
    inventory.add_resources(all.iter().copied());
    Ok(Mesh::new(settings, inventory, &all))
}

fn service_def(s: &TestService) -> Result<ServiceDef, MeshBuildError> {
    let cluster_ip = match s.cluster_ip.as_deref() {
        None | Some("" | "None") => None,
        Some(ip) => Some(ip.parse().map_err(|_| MeshBuildError::ClusterIp {
            service: s.name.clone(),
            address: ip.to_owned(),
        })?),
    };
    Ok(ServiceDef {
        cluster_ip,
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
    })
}
