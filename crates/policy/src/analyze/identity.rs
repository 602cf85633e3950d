//! Peer identity traps: MW0003 IdentityRuleAcceptsPlaintext and MW0006 PrincipalNeverMatches.
//!
//! MW0003, authorization.md §10: "PERMISSIVE mTLS accepts plaintext and mTLS on the same port;
//! plaintext requests have no `peer` ⇒ all identity fields fail, all identity `not…` fields
//! succeed (ISTIO‑SECURITY‑2021‑004). Only STRICT guarantees a peer identity." The effective mode
//! per port is the engine's (`PeerAuthnIndex::resolve`, authentication.md §2.3).
//!
//! MW0006, authorization.md §4.3: principals use the format "`<td>/ns/<ns>/sa/<sa>` **without**
//! `spiffe://`; a value written with `spiffe://` never matches", and §12: "a `*` in the middle
//! (`cluster.local/ns/*/sa/x`) is literal ⇒ never matches". §8.2 rule 7: the webhook does **not**
//! validate either.

use std::collections::BTreeMap;

use meshward_api::FieldPath;
use meshward_api::resources::security::{Action, Rule};

use super::{Context, Finding, Level, MW0003, MW0006, ports_text, rules_of};
use crate::peer_authn::EffectiveMtls;

/// Identity fields of a source, positive and negative.
const POSITIVE: &[&str] = &[
    "principals",
    "namespaces",
    "serviceAccounts",
    "trustDomains",
];
const IDENTITY_KEYS: &[&str] = &[
    "source.principal",
    "source.namespace",
    "source.serviceAccount",
    "source.trustDomain",
];

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    plaintext(cx, out);
    never_matching_principals(cx, out);
}

/// (positive fields used, negative fields used), with the path of the first use.
fn identity_use(rule: &Rule, path: &FieldPath) -> (Vec<String>, Vec<String>, Option<FieldPath>) {
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    let mut first = None;
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let Some(s) = from.as_ref().and_then(|f| f.source.as_ref()) else {
            continue;
        };
        let fields = [
            ("principals", s.principals.is_some()),
            ("namespaces", s.namespaces.is_some()),
            ("serviceAccounts", s.service_accounts.is_some()),
            ("trustDomains", s.trust_domains.is_some()),
            ("notPrincipals", s.not_principals.is_some()),
            ("notNamespaces", s.not_namespaces.is_some()),
            ("notServiceAccounts", s.not_service_accounts.is_some()),
            ("notTrustDomains", s.not_trust_domains.is_some()),
        ];
        for (name, present) in fields {
            if !present {
                continue;
            }
            first.get_or_insert_with(|| path.key("from").index(j).key("source").key(name));
            if POSITIVE.contains(&name) {
                pos.push(name.to_owned());
            } else {
                neg.push(name.to_owned());
            }
        }
    }
    for (j, c) in rule.when.iter().flatten().enumerate() {
        let Some(c) = c else { continue };
        let Some(key) = c.key.as_deref().filter(|k| IDENTITY_KEYS.contains(k)) else {
            continue;
        };
        first.get_or_insert_with(|| path.key("when").index(j).key("key"));
        if c.values.as_ref().is_some_and(|v| !v.is_empty()) {
            pos.push(format!("when {key} values"));
        }
        if c.not_values.as_ref().is_some_and(|v| !v.is_empty()) {
            neg.push(format!("when {key} notValues"));
        }
    }
    pos.dedup();
    neg.dedup();
    (pos, neg, first)
}

fn plaintext(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let (compiled, targets) = cx.authz_targets(policy);
        if compiled.dry_run {
            continue;
        }
        // Workload → ports (or the workload-wide mode when it declares none) open to plaintext.
        let mut open: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        let mut modes = Vec::new();
        for w in &targets {
            let mtls = cx.mesh.peer_authn.resolve(w.selector_view());
            let ports: Vec<u16> = if w.ports.is_empty() {
                if mtls.mode != EffectiveMtls::Strict {
                    modes.push(mtls.mode);
                    open.entry(w.key()).or_default();
                }
                continue;
            } else {
                w.ports
                    .iter()
                    .map(|p| p.port)
                    .filter(|p| mtls.for_port(*p) != EffectiveMtls::Strict)
                    .collect()
            };
            for p in &ports {
                modes.push(mtls.for_port(*p));
            }
            if !ports.is_empty() {
                open.insert(w.key(), ports);
            }
        }
        if open.is_empty() {
            continue;
        }
        let mode = if modes.contains(&EffectiveMtls::Permissive) {
            "PERMISSIVE"
        } else {
            "DISABLE"
        };
        let where_ = {
            let with_ports: BTreeMap<String, Vec<u16>> = open
                .iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bare: Vec<&String> = open
                .iter()
                .filter(|(_, p)| p.is_empty())
                .map(|(k, _)| k)
                .collect();
            let mut parts = Vec::new();
            if !with_ports.is_empty() {
                parts.push(ports_text(&with_ports));
            }
            if !bare.is_empty() {
                parts.push(
                    bare.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
            parts.join("; ")
        };
        for (i, rule, path) in rules_of(policy) {
            let (pos, neg, first) = identity_use(rule, &path);
            let Some(field) = first else { continue };
            let (level, effect) = match (compiled.action, pos.is_empty()) {
                (Action::Deny, false) => (
                    Level::Warning,
                    format!(
                        "plaintext requests carry no identity, so `{}` never matches them and this DENY rule does not stop a plaintext client",
                        pos.join("`, `")
                    ),
                ),
                (Action::Allow, _) if !neg.is_empty() => (
                    Level::Warning,
                    format!(
                        "plaintext requests carry no identity, so `{}` always matches them: this ALLOW rule admits plaintext clients",
                        neg.join("`, `")
                    ),
                ),
                (Action::Allow, false) => (
                    Level::Warning,
                    format!(
                        "the rule relies on the peer identity (`{}`), which only mTLS provides; plaintext clients are never matched by it (a client without a sidecar gets 403, not a refused connection)",
                        pos.join("`, `")
                    ),
                ),
                (Action::Deny, true) => (
                    Level::Warning,
                    format!(
                        "plaintext requests carry no identity, so `{}` always matches them: this DENY rule denies every plaintext client",
                        neg.join("`, `")
                    ),
                ),
                _ => continue,
            };
            out.push(cx.finding(
                MW0003,
                level,
                loaded,
                field,
                format!(
                    "rules[{i}] matches on peer identity, but {where_} still accept{} plaintext (PeerAuthentication {mode}): {effect}",
                    if open.len() == 1 { "s" } else { "" }
                ),
                "Make the workload's mTLS STRICT (a PeerAuthentication for its namespace or workload), or add a DENY policy with `from: [{source: {notPrincipals: [\"*\"]}}]` to refuse plaintext",
            ));
        }
    }
}

fn never_matching_principals(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        for (_, rule, path) in rules_of(policy) {
            let mut values: Vec<(FieldPath, &str)> = Vec::new();
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(s) = from.as_ref().and_then(|f| f.source.as_ref()) else {
                    continue;
                };
                for (name, list) in [
                    ("principals", &s.principals),
                    ("notPrincipals", &s.not_principals),
                ] {
                    for (k, v) in list.iter().flatten().enumerate() {
                        values.push((
                            path.key("from").index(j).key("source").key(name).index(k),
                            v,
                        ));
                    }
                }
            }
            for (j, c) in rule.when.iter().flatten().enumerate() {
                let Some(c) = c
                    .as_ref()
                    .filter(|c| c.key.as_deref() == Some("source.principal"))
                else {
                    continue;
                };
                for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
                    for (k, v) in list.iter().flatten().enumerate() {
                        values.push((path.key("when").index(j).key(name).index(k), v));
                    }
                }
            }
            for (field, value) in values {
                if let Some(rest) = value.strip_prefix("spiffe://") {
                    out.push(cx.finding(
                        MW0006,
                        Level::Warning,
                        loaded,
                        field,
                        format!(
                            "principal `{value}` never matches: Istio prepends `spiffe://` itself, so this looks for `spiffe://spiffe://…`"
                        ),
                        format!("Write the principal without the scheme: `{rest}`"),
                    ));
                } else if inner_star(value) {
                    out.push(cx.finding(
                        MW0006,
                        Level::Warning,
                        loaded,
                        field,
                        format!(
                            "principal `{value}` never matches: only a leading or trailing `*` is a wildcard; a `*` inside is a literal character"
                        ),
                        "Use a prefix or suffix form (`cluster.local/ns/foo/*`, `*/sa/bar`), or `namespaces`/`serviceAccounts`, which accept these patterns",
                    ));
                }
            }
        }
    }
}

/// A `*` that is neither the whole value, nor leading, nor trailing (§4.2 precedence: `*`
/// alone → presence; leading → suffix of the rest; trailing → prefix of the rest; any other
/// `*` is literal).
fn inner_star(value: &str) -> bool {
    if value == "*" {
        return false;
    }
    let rest = if let Some(r) = value.strip_prefix('*') {
        r
    } else if let Some(r) = value.strip_suffix('*') {
        r
    } else {
        value
    };
    rest.contains('*')
}
