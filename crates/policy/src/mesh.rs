//! Mesh-wide settings the decisions depend on, with Istio's defaults (authentication.md §6.1).

use meshward_api::resources::mesh::{MeshConfig, PathNormalizationMode};

use crate::path::PathNormalization;

/// The effective `MeshConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// `rootNamespace`, default `istio-system`.
    pub root_namespace: String,
    /// `trustDomain`, default `cluster.local`.
    pub trust_domain: String,
    /// `trustDomainAliases`.
    pub trust_domain_aliases: Vec<String>,
    /// `enableAutoMtls`, default true.
    pub enable_auto_mtls: bool,
    /// `pathNormalization.normalization`, default BASE.
    pub path_normalization: PathNormalization,
    /// `defaultConfig.gatewayTopology.numTrustedProxies`, default 0.
    pub num_trusted_proxies: u32,
    /// `accessLogFile`: `""` (off), `/dev/stdout`, or a file path (authentication.md §6.1).
    pub access_log_file: String,
    /// `accessLogEncoding`: `TEXT` (default) or `JSON`.
    pub access_log_encoding: String,
    /// `accessLogFormat`: `""` means Istio's default format.
    pub access_log_format: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            root_namespace: "istio-system".to_owned(),
            trust_domain: "cluster.local".to_owned(),
            trust_domain_aliases: Vec::new(),
            enable_auto_mtls: true,
            path_normalization: PathNormalization::Base,
            num_trusted_proxies: 0,
            access_log_file: String::new(),
            access_log_encoding: "TEXT".to_owned(),
            access_log_format: String::new(),
        }
    }
}

impl MeshSettings {
    /// Settings from a `MeshConfig`, defaults where unset.
    pub fn from_config(config: &MeshConfig) -> Self {
        let defaults = MeshSettings::default();
        MeshSettings {
            root_namespace: config
                .root_namespace
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults.root_namespace),
            // authentication.md §1.1: istiod replaces every `@` in the trust domain with `.`.
            trust_domain: config
                .trust_domain
                .clone()
                .filter(|s| !s.is_empty())
                .map(|td| td.replace('@', "."))
                .unwrap_or(defaults.trust_domain),
            trust_domain_aliases: config.trust_domain_aliases.clone().unwrap_or_default(),
            enable_auto_mtls: config.enable_auto_mtls.unwrap_or(true),
            path_normalization: match config
                .path_normalization
                .as_ref()
                .and_then(|p| p.normalization)
                .unwrap_or_default()
            {
                PathNormalizationMode::None => PathNormalization::None,
                PathNormalizationMode::Default | PathNormalizationMode::Base => {
                    PathNormalization::Base
                }
                PathNormalizationMode::MergeSlashes => PathNormalization::MergeSlashes,
                PathNormalizationMode::DecodeAndMergeSlashes => {
                    PathNormalization::DecodeAndMergeSlashes
                }
            },
            num_trusted_proxies: config
                .default_config
                .as_ref()
                .and_then(|d| d.gateway_topology.as_ref())
                .and_then(|g| g.num_trusted_proxies)
                .unwrap_or(0),
            access_log_file: config.access_log_file.clone().unwrap_or_default(),
            access_log_encoding: config
                .access_log_encoding
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults.access_log_encoding),
            access_log_format: config.access_log_format.clone().unwrap_or_default(),
        }
    }

    /// authentication.md §1.2: the trust domains accepted from clients, `[trustDomain] ∪
    /// trustDomainAliases`, deduplicated, empty strings dropped.
    pub fn accepted_trust_domains(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for td in std::iter::once(&self.trust_domain).chain(&self.trust_domain_aliases) {
            if !td.is_empty() && !out.contains(&td.as_str()) {
                out.push(td);
            }
        }
        out
    }
}
