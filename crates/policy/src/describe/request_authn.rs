//! The RequestAuthentications that apply to the workload: issuers, where keys come from, where
//! tokens are read, and whether a request without a token gets through.
//!
//! Selection is the engine's ([`crate::request_authn::RequestAuthnIndex::select`],
//! authentication.md §5.1). §5.2: "No token in any configured location ⇒ **allowed**, no
//! `request.auth.*` attributes"; only AuthorizationPolicy rules that read the request principal
//! make a token necessary. §5.1: "Default locations when no `fromHeaders/fromParams/fromCookies`:
//! header `Authorization` with prefix `Bearer ` **and** query parameter `access_token`."

use meshward_api::resources::security::{JwtRule, RequestAuthentication};
use meshward_api::{FieldPath, Kind};

use super::input::Input;
use super::model::{JwtRuleView, RequestAuthnPolicyView, RequestAuthnView};
use crate::inventory::Workload;

/// The RequestAuthentication part of the description. `principal_rules` are the ALLOW/DENY
/// rules that read the request principal.
pub(crate) fn request_authentication(
    input: &Input<'_>,
    w: &Workload,
    principal_rules: &[String],
) -> RequestAuthnView {
    let view = w.selector_view();
    let selected = input.mesh.request_authn.select(view);
    let (_, errors) = input.mesh.request_authn.authenticator(view);
    let root = &input.mesh.settings.root_namespace;
    let policies: Vec<RequestAuthnPolicyView> = selected
        .iter()
        .map(|p| {
            let key = format!("{}/{}", p.metadata.namespace(), p.metadata.name());
            RequestAuthnPolicyView {
                scope: scope(p, root),
                origin: input.origin(
                    Kind::RequestAuthentication,
                    p.metadata.namespace(),
                    p.metadata.name(),
                    &FieldPath::root(),
                ),
                rules: p
                    .spec
                    .jwt_rules
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|rule| {
                        let mut view = rule_view(rule);
                        view.error = errors
                            .iter()
                            .find(|e| e.policy == key && e.issuer == view.issuer)
                            .map(|e| format!("{}: tokens of this issuer are rejected", e.error));
                        view
                    })
                    .collect(),
                policy: key,
            }
        })
        .collect();
    let token_required = match (policies.is_empty(), principal_rules.is_empty()) {
        (true, true) => {
            "no RequestAuthentication applies and no rule reads a request principal: tokens are neither verified nor required".to_owned()
        }
        (true, false) => {
            "no RequestAuthentication applies, so no request has a request principal: ALLOW rules that need one never match, and DENY rules on notRequestPrincipals match every request".to_owned()
        }
        (false, true) => {
            "a token is optional: a request without one is allowed through (no request principal); a token that is present must verify, or the request is rejected with 401".to_owned()
        }
        (false, false) => {
            "a request without a token passes RequestAuthentication with no request principal; the AuthorizationPolicy rules that read it decide (listed under AuthorizationPolicies); a present token must verify, or 401".to_owned()
        }
    };
    RequestAuthnView {
        policies,
        token_required,
    }
}

/// §5.1: "a selector in the root namespace matches workloads in all namespaces".
fn scope(p: &RequestAuthentication, root: &str) -> String {
    let labels = p
        .spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
    let in_root = p.metadata.namespace() == root;
    match (labels, in_root) {
        (None, true) => format!("mesh-wide (root namespace {root}, no selector)"),
        (None, false) => format!("namespace-wide ({}, no selector)", p.metadata.namespace()),
        (Some(l), true) => format!("selector {l} (root namespace: every namespace)"),
        (Some(l), false) => format!("selector {l}"),
    }
}

fn rule_view(rule: &JwtRule) -> JwtRuleView {
    let keys = match (&rule.jwks_uri, &rule.jwks) {
        (Some(uri), _) => format!("jwksUri {uri}"),
        (None, Some(_)) => "inline jwks".to_owned(),
        (None, None) => "OIDC discovery from the issuer".to_owned(),
    };
    let mut locations: Vec<String> = rule
        .from_headers
        .iter()
        .flatten()
        .map(|h| match h.prefix.as_deref() {
            Some(prefix) => format!("header {}: {prefix}<token>", h.name),
            None => format!("header {}", h.name),
        })
        .collect();
    locations.extend(
        rule.from_params
            .iter()
            .flatten()
            .map(|p| format!("query parameter {p}")),
    );
    locations.extend(
        rule.from_cookies
            .iter()
            .flatten()
            .map(|c| format!("cookie {c}")),
    );
    if locations.is_empty() {
        locations = vec![
            "header Authorization: Bearer <token>".to_owned(),
            "query parameter access_token".to_owned(),
        ];
    }
    JwtRuleView {
        issuer: rule.issuer.clone().unwrap_or_default(),
        keys,
        audiences: rule.audiences.clone().unwrap_or_default(),
        token_locations: locations,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_payload_to_header: rule.output_payload_to_header.clone(),
        error: None,
    }
}
