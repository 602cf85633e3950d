//! JWT traps: MW0004 TokenNotRequired and MW0005 AnyRequestPrincipal.
//!
//! MW0004, authentication.md §5.2: "No token in any configured location ⇒ **allowed**, no
//! `request.auth.*` attributes"; authorization.md §8.2: "A RequestAuthentication is not required
//! by validation for `requestPrincipals`; without one the field simply never matches". So a
//! RequestAuthentication only rejects *invalid* tokens: requiring one is the job of an
//! AuthorizationPolicy (ALLOW with `requestPrincipals` or `request.auth.*` conditions, or DENY
//! with `notRequestPrincipals`). Which policies apply is asked of the engine.
//!
//! MW0005, authorization.md §4.4: "`v == "*"` -> iss ~ .+ , sub ~ .+" — any validated token
//! from any issuer the workload accepts; authentication.md §9 #13: a token without `sub` does
//! not match.

use meshward_api::Resource;
use meshward_api::resources::security::{Action, AuthorizationPolicy};

use super::{Context, Finding, Level, MW0004, MW0005, names, rules_of};
use crate::request_authn::RequestAuthnIndex;

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    token_not_required(cx, out);
    any_request_principal(cx, out);
}

/// Does this policy make a token necessary for some request?
fn requires_token(policy: &AuthorizationPolicy) -> bool {
    let action = policy.spec.action.unwrap_or_default();
    rules_of(policy).any(|(_, rule, _)| {
        let sources = rule
            .from
            .iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.source.as_ref());
        let conds = rule.when.iter().flatten().flatten();
        match action {
            Action::Allow => {
                sources
                    .clone()
                    .any(|s| s.request_principals.as_ref().is_some_and(|v| !v.is_empty()))
                    || conds.clone().any(|c| {
                        c.key
                            .as_deref()
                            .is_some_and(|k| k.starts_with("request.auth."))
                            && c.values.as_ref().is_some_and(|v| !v.is_empty())
                    })
            }
            Action::Deny | Action::Custom => {
                sources.clone().any(|s| {
                    s.not_request_principals
                        .as_ref()
                        .is_some_and(|v| !v.is_empty())
                }) || conds.clone().any(|c| {
                    c.key
                        .as_deref()
                        .is_some_and(|k| k.starts_with("request.auth."))
                        && c.not_values.as_ref().is_some_and(|v| !v.is_empty())
                })
            }
            Action::Audit => false,
        }
    })
}

fn token_not_required(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = cx.mesh.settings.root_namespace.as_str();
    for loaded in cx.resources() {
        let Resource::RequestAuthentication(ra) = &loaded.resource else {
            continue;
        };
        let index = RequestAuthnIndex::build([ra], root);
        let open: Vec<_> = cx
            .mesh
            .inventory
            .workloads
            .iter()
            .filter(|w| w.sidecar && !index.select(w.selector_view()).is_empty())
            .filter(|w| {
                !cx.mesh
                    .authz
                    .select(w.selector_view())
                    .iter()
                    .any(|p| !p.dry_run && requires_token(&p.source))
            })
            .collect();
        if open.is_empty() {
            continue;
        }
        let issuer = ra
            .spec
            .jwt_rules
            .iter()
            .flatten()
            .flatten()
            .find_map(|r| r.issuer.clone())
            .unwrap_or_else(|| "ISSUER".to_owned());
        out.push(cx.finding(
            MW0004,
            Level::Warning,
            loaded,
            meshward_api::FieldPath::root().key("spec").key("jwtRules"),
            format!(
                "nothing requires a token on {}: a RequestAuthentication only rejects invalid tokens, and requests without a token are let through",
                names(&open)
            ),
            format!(
                "Add an AuthorizationPolicy that requires one: ALLOW with `from: [{{source: {{requestPrincipals: [\"{issuer}/*\"]}}}}]`, or DENY with `from: [{{source: {{notRequestPrincipals: [\"*\"]}}}}]`"
            ),
        ));
    }
}

fn any_request_principal(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        for (_, rule, path) in rules_of(policy) {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(s) = from.as_ref().and_then(|f| f.source.as_ref()) else {
                    continue;
                };
                for (k, v) in s.request_principals.iter().flatten().enumerate() {
                    if v != "*" {
                        continue;
                    }
                    out.push(cx.finding(
                        MW0005,
                        Level::Info,
                        loaded,
                        path.key("from").index(j).key("source").key("requestPrincipals").index(k),
                        "`requestPrincipals: [\"*\"]` means \"any valid token\": any issuer a RequestAuthentication on the workload accepts, any subject (both `iss` and `sub` must be non-empty); it does not say who the caller is",
                        "To admit particular callers, list `ISSUER/SUBJECT` values (or `ISSUER/*` for every subject of one issuer), or add `request.auth.claims[…]` conditions",
                    ));
                }
            }
            for (j, c) in rule.when.iter().flatten().enumerate() {
                let Some(c) = c
                    .as_ref()
                    .filter(|c| c.key.as_deref() == Some("request.auth.principal"))
                else {
                    continue;
                };
                for (k, v) in c.values.iter().flatten().enumerate() {
                    if v == "*" {
                        out.push(cx.finding(
                            MW0005,
                            Level::Info,
                            loaded,
                            path.key("when").index(j).key("values").index(k),
                            "`request.auth.principal` `*` means \"any valid token\" from any accepted issuer; it does not say who the caller is",
                            "List `ISSUER/SUBJECT` values, or `ISSUER/*` for one issuer",
                        ));
                    }
                }
            }
        }
    }
}
