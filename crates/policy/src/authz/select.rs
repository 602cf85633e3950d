//! Which AuthorizationPolicies apply to a workload (authorization.md §2), with policies
//! indexed by namespace so the cost grows with the policies of the workload's namespace and the
//! root namespace, not with the whole mesh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use meshward_api::resources::security::AuthorizationPolicy;

use super::WorkloadAuthz;
use super::compile::{CompiledPolicy, compile_policy};
use super::identity::TrustDomainBundle;
use crate::mesh::MeshSettings;

/// The label that marks a Gateway API gateway's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// What selection needs to know about a workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSelectorView<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// All AuthorizationPolicies of the mesh, compiled and indexed by namespace.
#[derive(Debug, Clone, Default)]
pub struct AuthzIndex {
    root_namespace: String,
    by_namespace: HashMap<String, Vec<Arc<CompiledPolicy>>>,
    count: usize,
}

impl AuthzIndex {
    /// Compiles every policy.
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a AuthorizationPolicy>,
        mesh: &MeshSettings,
    ) -> Self {
        let bundle = TrustDomainBundle::new(&mesh.trust_domain, &mesh.trust_domain_aliases);
        let mut by_namespace: HashMap<String, Vec<Arc<CompiledPolicy>>> = HashMap::new();
        let mut count = 0;
        for policy in policies {
            let compiled = compile_policy(Arc::new(policy.clone()), &bundle);
            by_namespace
                .entry(policy.metadata.namespace().to_owned())
                .or_default()
                .push(Arc::new(compiled));
            count += 1;
        }
        AuthzIndex {
            root_namespace: mesh.root_namespace.clone(),
            by_namespace,
            count,
        }
    }

    /// Number of policies in the mesh.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the mesh has no AuthorizationPolicy.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The policies that apply to `workload`, ready to evaluate.
    pub fn for_workload(&self, workload: WorkloadSelectorView<'_>) -> WorkloadAuthz {
        WorkloadAuthz::new(self.select(workload))
    }

    /// authorization.md §2 step 1: "Candidate policies = all policies in `rootNamespace` ∪ all
    /// policies in the workload's namespace (deduplicated if equal)."
    pub fn select(&self, workload: WorkloadSelectorView<'_>) -> Vec<Arc<CompiledPolicy>> {
        let mut namespaces = vec![self.root_namespace.as_str()];
        if workload.namespace != self.root_namespace {
            namespaces.push(workload.namespace);
        }
        namespaces
            .into_iter()
            .filter_map(|ns| self.by_namespace.get(ns))
            .flatten()
            .filter(|p| applies(&p.source, workload))
            .cloned()
            .collect()
    }
}

fn applies(policy: &AuthorizationPolicy, workload: WorkloadSelectorView<'_>) -> bool {
    let spec = &policy.spec;
    let targets: Vec<_> = spec
        .target_ref
        .iter()
        .chain(spec.target_refs.iter().flatten())
        .collect();
    if let Some(gateway) = workload.labels.get(GATEWAY_NAME_LABEL) {
        // §2 step 3: a targetRefs policy applies to a Gateway API gateway when one ref names
        // that Gateway and the policy is in the gateway's namespace; selector policies still
        // apply (ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY defaults to true).
        if !targets.is_empty() {
            return policy.metadata.namespace() == workload.namespace
                && targets.iter().any(|t| {
                    t.kind.as_deref() == Some("Gateway")
                        && t.group.as_deref() == Some("gateway.networking.k8s.io")
                        && t.name.as_deref() == Some(gateway.as_str())
                });
        }
    } else if !targets.is_empty() {
        // §2 step 2: "policy has `targetRef` or non-empty `targetRefs` → never applies".
        return false;
    }
    // "`selector` absent → applies … else applies iff every `matchLabels` key/value is present
    // with equal value in the workload labels"; an empty selector matches everything.
    spec.selector
        .as_ref()
        .is_none_or(|s| s.matches(workload.labels))
}
