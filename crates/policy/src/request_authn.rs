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
                    Err(error) => {
                        // Fail closed, as istiod does for a JWKS it cannot use (§5.6): the issuer
                        // stays configured with no usable key, so its tokens are rejected rather
                        // than ignored.
                        let keyless = JwtRuleConfig {
                            jwks: None,
                            jwks_uri: Some(String::new()),
                            ..config.clone()
                        };
                        if let Ok(p) = JwtProvider::compile(&keyless) {
                            providers.push(p);
                        }
                        errors.push(JwtRuleError {
                            policy: format!(
                                "{}/{}",
                                policy.metadata.namespace(),
                                policy.metadata.name()
                            ),
                            issuer: config.issuer.clone(),
                            error,
                        });
                    }
                }
            }
        }
        (JwtAuthenticator::new(providers), errors)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use meshward_api::resources::security::{JwtRule, RequestAuthenticationSpec};

    use super::*;
    use crate::jwt::{JwtOutcome, JwtRequest};

    /// A token of the corpus, issuer `test-issuer-1@istio.io`, valid until 2100.
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiYXVkIjoiZm9vIn0.XlIK_UefGK-j-5TokytIA-89RkdRt7eV438GF2leal6cGzPiGW4bjPbHO3Iyj9moGgefmt_K3XkK3CvSkyub2oeYhLzI_3kp6zTQx8lJM8fd8JaXsMVOo_4s-BJ5o3S_ui9pUx-6YEhYDB_5LovGICzgcxPq0WLrjB7nMW_SP4WWk_sPcCXGIPq4bChNGX948kFuLgfWnAEzuFIf5CuuOomvsI-Ly7KiaYYykmduSCRpl7vNmM3LZxUxraDSTjAINbcvtCaLmbz-GK4FrrOOoA8E4GasP1d47lr20Km2G9lnxupGDjBp5_alMSAc2DV-rPnpthiknRprSKsKSx3dDQ";

    #[test]
    fn an_unusable_jwks_rejects_tokens_of_its_issuer() {
        let policy = RequestAuthentication {
            api_version: "security.istio.io/v1".into(),
            kind: "RequestAuthentication".into(),
            metadata: meshward_api::resources::ObjectMeta {
                name: Some("ra".into()),
                namespace: Some("foo".into()),
                ..Default::default()
            },
            spec: RequestAuthenticationSpec {
                jwt_rules: Some(vec![Some(JwtRule {
                    issuer: Some("test-issuer-1@istio.io".into()),
                    jwks: Some("not a key set".into()),
                    ..Default::default()
                })]),
                ..Default::default()
            },
            status: None,
        };
        let index = RequestAuthnIndex::build([&policy], "istio-system");
        let labels = BTreeMap::new();
        let (authn, errors) = index.authenticator(WorkloadSelectorView {
            namespace: "foo",
            labels: &labels,
        });
        assert_eq!(errors.len(), 1);
        assert!(!authn.is_empty(), "the issuer stays configured");
        let headers = vec![("authorization".to_owned(), format!("Bearer {TOKEN}"))];
        let outcome = authn.authenticate(
            &JwtRequest {
                method: "GET",
                path: "/",
                headers: &crate::attributes::borrow_headers(&headers),
            },
            1_800_000_000,
        );
        assert!(matches!(outcome, JwtOutcome::Rejected(_)), "{outcome:?}");
    }
}
