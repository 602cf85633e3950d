//! What a description reads: the resources of a load report and the mesh they build, with the
//! `file:line` of each resource and field.
//!
//! The mesh is the one `meshward analyze` sees, so a finding and a description never disagree:
//! the resources of the files (a resource given twice counts once, the later copy winning, as
//! repeated `kubectl apply` does), plus the workloads, services and first `meshConfig` that
//! PolicyTests declare (tutorials start clients with `kubectl run`, which PolicyTests declare).
//! The resources embedded in PolicyTests are left out: they restate the files stage by stage.

use std::collections::BTreeSet;

use meshward_api::policytest::{POLICY_TEST_API_VERSION, PolicyTest};
use meshward_api::{FieldPath, Kind, LoadReport, LoadedResource, Origin};

use crate::declared::build_mesh;
use crate::flow::Mesh;

/// The resources and the mesh of one description.
pub(crate) struct Input<'a> {
    /// The mesh the resources build.
    pub(crate) mesh: Mesh,
    /// The resources, each kind/namespace/name once.
    pub(crate) resources: Vec<&'a LoadedResource>,
    /// The workloads, services and `meshConfig` PolicyTests declare.
    pub(crate) declarations: PolicyTest,
}

impl<'a> Input<'a> {
    pub(crate) fn new(report: &'a LoadReport) -> Self {
        let resources = latest_copies(&report.resources);
        let owned: Vec<LoadedResource> = resources.iter().map(|r| (*r).clone()).collect();
        let declarations = declarations(report);
        let declared = declarations.spec.workloads.len();
        let mut mesh = match build_mesh(&declarations, &owned) {
            Ok(mesh) => mesh,
            Err(_) => {
                // A declared workload with a bad address: `meshward test` reports it; the
                // description goes on with the manifests alone.
                let mut manifests_only = declarations.clone();
                manifests_only.spec.workloads.clear();
                manifests_only.spec.services.clear();
                build_mesh(&manifests_only, &owned).unwrap_or_default()
            }
        };
        // Workloads and services from manifests win over PolicyTest declarations of the same
        // name (declarations come first in the inventory).
        let all = std::mem::take(&mut mesh.inventory.workloads);
        let (declared, manifests) = all.split_at(declared.min(all.len()));
        let mut keys = BTreeSet::new();
        for w in manifests.iter().chain(declared) {
            if keys.insert(w.key()) {
                mesh.inventory.workloads.push(w.clone());
            }
        }
        let declared = declarations.spec.services.len();
        let all = std::mem::take(&mut mesh.inventory.services);
        let (declared, manifests) = all.split_at(declared.min(all.len()));
        let mut keys = BTreeSet::new();
        for s in manifests.iter().chain(declared) {
            if keys.insert((s.namespace.clone(), s.name.clone())) {
                mesh.inventory.services.push(s.clone());
            }
        }
        Input {
            mesh,
            resources,
            declarations,
        }
    }

    /// The resource `kind ns/name`.
    pub(crate) fn find(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<&'a LoadedResource> {
        self.resources.iter().copied().find(|r| {
            let id = r.resource.id();
            id.kind == kind
                && id.name == name
                && (!kind.is_namespaced() || id.namespace == namespace)
        })
    }

    /// `file:line` of a field of the resource `kind ns/name` (the resource itself for the root
    /// path).
    pub(crate) fn origin(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        field: &FieldPath,
    ) -> Option<String> {
        self.find(kind, namespace, name)
            .map(|r| origin_text(&r.origin, field))
    }
}

/// `file:line` of `field`, falling back to the resource's start, then to the file alone.
pub(crate) fn origin_text(origin: &Origin, field: &FieldPath) -> String {
    match origin.locate(field).or_else(|| origin.start()) {
        Some(location) => format!("{}:{}", origin.file, location.line),
        None => origin.file.to_string(),
    }
}

/// Each resource once: the last copy wins, in the place of the first.
fn latest_copies(resources: &[LoadedResource]) -> Vec<&LoadedResource> {
    let mut out: Vec<&LoadedResource> = Vec::new();
    for r in resources {
        let id = r.resource.id();
        match out.iter_mut().find(|x| x.resource.id() == id) {
            Some(existing) => *existing = r,
            None => out.push(r),
        }
    }
    out
}

/// The workloads, services and first `meshConfig` of the report's PolicyTests, each workload
/// and service once (the first declaration wins: later stages restate it).
fn declarations(report: &LoadReport) -> PolicyTest {
    let mut test = PolicyTest {
        api_version: POLICY_TEST_API_VERSION.to_owned(),
        kind: "PolicyTest".to_owned(),
        metadata: Default::default(),
        spec: Default::default(),
    };
    let mut workloads = BTreeSet::new();
    let mut services = BTreeSet::new();
    for t in &report.tests {
        for w in &t.test.spec.workloads {
            if workloads.insert((w.namespace.clone().unwrap_or_default(), w.name.clone())) {
                test.spec.workloads.push(w.clone());
            }
        }
        for s in &t.test.spec.services {
            if services.insert((s.namespace.clone().unwrap_or_default(), s.name.clone())) {
                test.spec.services.push(s.clone());
            }
        }
        if test.spec.mesh_config.is_none() {
            test.spec.mesh_config = t.test.spec.mesh_config.clone();
        }
    }
    test
}
