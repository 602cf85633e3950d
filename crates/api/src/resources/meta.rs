//! Kubernetes object metadata and label selectors shared by every kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `metadata` of a resource. Fields Kubernetes adds on its own (uid, managedFields, …) are
/// accepted, so `kubectl get -o yaml` output loads, but not interpreted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `metadata.namespace`; `default` when absent, as `kubectl apply` without `-n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (RFC 3339); Istio breaks ties between policies by age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Server-populated fields, accepted and ignored.
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub self_link: Option<String>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub managed_fields: Option<Value>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub owner_references: Option<Value>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub finalizers: Option<Vec<String>>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing)]
    #[allow(missing_docs)]
    pub deletion_grace_period_seconds: Option<i64>,
}

impl ObjectMeta {
    /// The name, or `""` when absent (validation reports the absence).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The namespace, `default` when absent.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// Istio's `WorkloadSelector` (`selector` of the security resources).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels that must all be present with equal values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

impl WorkloadSelector {
    /// `matchLabels` absent or empty: Istio treats it like no selector.
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
    }

    /// True when every selector label is present in `labels` with the same value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `targetRef` / `targetRefs` entries (Gateway API attachment).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (`""` for core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Must be empty (same namespace as the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
