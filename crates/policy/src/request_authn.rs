//! RequestAuthentication: which JWT rules apply to a workload (authentication.md §5.2), turned
//! into the JWT module's authenticator.

use std::sync::Arc;

use meshward_api::resources::security::RequestAuthentication;

use crate::authz::WorkloadSelectorView;
use crate::jwt::{
    ClaimToHeader, HeaderLocation, JwksError, JwtAuthenticator, JwtProvider, JwtRuleConfig,
};

/// Every RequestAuthentication of the mesh.
#[derive(Debug, Clone, Default)]
pub struct RequestAuthnIndex {
    root_namespace: String,
    policies: Vec<Arc<RequestAuthentication>>,
}

/// A JWT rule that could not be compiled (its JWKS does not parse): tokens of that issuer are
/// rejected, fail closed.
#[derive(Debug, Clone)]
pub struct JwtRuleError {
    /// `ns/name` of the RequestAuthentication.
    pub policy: String,
    /// The rule's issuer.
    pub issuer: String,
    /// Why.
    pub error: JwksError,
}

impl RequestAuthnIndex {
    /// Indexes the policies.
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a RequestAuthentication>,
        root_namespace: &str,
    ) -> Self {
        RequestAuthnIndex {
            root_namespace: root_namespace.to_owned(),
            policies: policies.into_iter().map(|p| Arc::new(p.clone())).collect(),
        }
    }

    /// authentication.md §5.1: "a selector in the **root namespace matches workloads in all
    /// namespaces**; no selector in root ns = all workloads"; a policy with `targetRefs` is
    /// ignored by ordinary sidecars.
    pub fn select(&self, workload: WorkloadSelectorView<'_>) -> Vec<Arc<RequestAuthentication>> {
        self.policies
            .iter()
            .filter(|p| {
                let ns = p.metadata.namespace();
                (ns == self.root_namespace || ns == workload.namespace)
                    && p.spec.target_ref.is_none()
                    && p.spec.target_refs.as_ref().is_none_or(Vec::is_empty)
                    && p.spec
                        .selector
                        .as_ref()
                        .is_none_or(|s| s.matches(workload.labels))
            })
            .cloned()
            .collect()
    }

    /// The authenticator for a workload: every rule of every selected policy (§5.2 "All
    /// RequestAuthentications selecting the workload … contribute all their `jwtRules`").
    pub fn authenticator(
        &self,
        workload: WorkloadSelectorView<'_>,
    ) -> (JwtAuthenticator, Vec<JwtRuleError>) {
        let mut providers = Vec::new();
        let mut errors = Vec::new();
        for policy in self.select(workload) {
            for rule in policy.spec.jwt_rules.iter().flatten().flatten() {
                let config = JwtRuleConfig {
                    issuer: rule.issuer.clone().unwrap_or_default(),
                    audiences: rule.audiences.clone().unwrap_or_default(),
                    jwks: rule.jwks.clone(),
                    jwks_uri: rule.jwks_uri.clone(),
                    from_headers: rule
                        .from_headers
                        .iter()
                        .flatten()
                        .map(|h| HeaderLocation {
                            name: h.name.clone(),
                            prefix: h.prefix.clone(),
                        })
                        .collect(),
                    from_params: rule.from_params.clone().unwrap_or_default(),
                    from_cookies: rule.from_cookies.clone().unwrap_or_default(),
                    output_payload_to_header: rule.output_payload_to_header.clone(),
                    forward_original_token: rule.forward_original_token.unwrap_or(false),
                    output_claim_to_headers: rule
                        .output_claim_to_headers
                        .iter()
                        .flatten()
                        .map(|c| ClaimToHeader {
                            header: c.header.clone(),
                            claim: c.claim.clone(),
                        })
                        .collect(),
                    space_delimited_claims: rule.space_delimited_claims.clone().unwrap_or_default(),
                };
                match JwtProvider::compile(&config) {
                    Ok(p) => providers.push(p),
                    Err(error) => errors.push(JwtRuleError {
                        policy: format!(
                            "{}/{}",
                            policy.metadata.namespace(),
                            policy.metadata.name()
                        ),
                        issuer: config.issuer.clone(),
                        error,
                    }),
                }
            }
        }
        (JwtAuthenticator::new(providers), errors)
    }
}
