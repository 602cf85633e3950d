//! The parts of Istio's `MeshConfig` that security decisions depend on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `MeshConfig`, as written in istio's `mesh` ConfigMap or a PolicyTest's `spec.meshConfig`.
/// Defaults follow `mesh/v1alpha1/config.proto` (authentication.md §6.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct MeshConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain_aliases: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<PathNormalizationConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_providers: Option<Value>,
    #[serde(default, rename = "meshMTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_destination_rule_export_to: Option<Vec<String>>,
}

/// `meshConfig.pathNormalization`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PathNormalizationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<PathNormalizationMode>,
}

/// `meshConfig.pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum PathNormalizationMode {
    #[default]
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

/// `meshConfig.defaultConfig` (Istio's ProxyConfig); only `gatewayTopology` is interpreted,
/// the rest of ProxyConfig is accepted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ProxyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<GatewayTopology>,
}

/// `defaultConfig.gatewayTopology`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct GatewayTopology {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_trusted_proxies: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_client_cert_details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<Value>,
}
