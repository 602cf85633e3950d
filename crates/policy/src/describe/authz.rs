//! The AuthorizationPolicies that apply to the workload, in the order its sidecar evaluates
//! them, each rule in one line, and what happens to a request in words.
//!
//! Selection is the engine's ([`crate::authz::AuthzIndex::select`], authorization.md §2).
//! Order, authorization.md §3: "`[jwt_authn] → CUSTOM (RBAC shadow + ext_authz per provider) →
//! RBAC(LOG=AUDIT) → RBAC(DENY) → RBAC(ALLOW)`"; within one action Envoy keeps rules "in a
//! std::map by name" (`ns[<ns>]-policy[<name>]-rule[<i>]`), so policies are listed in that
//! order. §2 item 5: dry-run policies "go to the *shadow* set and do not count as existing",
//! so they are listed apart.

use std::sync::Arc;

use meshward_api::resources::security::{Action, AuthorizationPolicy, Rule};
use meshward_api::{FieldPath, Kind};

use super::input::Input;
use super::model::{AuthorizationView, PolicyView, RuleView};
use super::rules::summarize;
use crate::authz::CompiledPolicy;
use crate::authz::compile::ChainRules;
use crate::inventory::{Protocol, Workload};

/// Evaluation order of the actions (§3).
const ORDER: [Action; 4] = [Action::Custom, Action::Audit, Action::Deny, Action::Allow];

/// The authorization part of the description.
pub(crate) fn authorization(input: &Input<'_>, w: &Workload) -> AuthorizationView {
    let mut selected = input.mesh.authz.select(w.selector_view());
    selected.sort_by_key(|p| (rank(p.action), p.id.envoy_rule_id(0)));
    let (dry, enforced): (Vec<_>, Vec<_>) = selected.into_iter().partition(|p| p.dry_run);
    let ports = Ports::of(w);
    let policies: Vec<PolicyView> = enforced
        .iter()
        .map(|p| policy_view(input, p, &ports))
        .collect();
    let dry_run: Vec<PolicyView> = dry.iter().map(|p| policy_view(input, p, &ports)).collect();
    AuthorizationView {
        enforced: w.sidecar,
        verdict: verdict(w, &enforced, &dry, &ports),
        request_principal_rules: request_principal_rules(&enforced),
        policies,
        dry_run,
    }
}

fn rank(action: Action) -> usize {
    ORDER
        .iter()
        .position(|a| *a == action)
        .unwrap_or(ORDER.len())
}

/// Which filter chains the workload's ports get.
struct Ports {
    /// HTTP ports exist (or no port is declared: undeclared ports are sniffed as HTTP).
    http: bool,
    /// The TCP ports.
    tcp: Vec<u16>,
}

impl Ports {
    fn of(w: &Workload) -> Self {
        let tcp: Vec<u16> = w
            .ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.port)
            .collect();
        Ports {
            http: tcp.len() < w.ports.len() || w.ports.is_empty(),
            tcp,
        }
    }

    fn tcp_label(&self) -> String {
        let ports: Vec<String> = self.tcp.iter().map(u16::to_string).collect();
        format!("on TCP port(s) {}", ports.join(", "))
    }
}

fn policy_view(input: &Input<'_>, p: &Arc<CompiledPolicy>, ports: &Ports) -> PolicyView {
    let source: &AuthorizationPolicy = &p.source;
    let ns = source.metadata.namespace();
    let name = source.metadata.name();
    let rules_path = FieldPath::root().key("spec").key("rules");
    let rules = source
        .spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(index, rule)| RuleView {
            index,
            summary: match rule {
                Some(rule) => summarize(rule),
                None => "null: skipped".to_owned(),
            },
            origin: input.origin(
                Kind::AuthorizationPolicy,
                ns,
                name,
                &rules_path.index(index),
            ),
        })
        .collect();
    let mut notes = Vec::new();
    if ports.http {
        chain_notes(&p.http, "on HTTP ports", &mut notes);
    }
    if !ports.tcp.is_empty() {
        chain_notes(&p.tcp, &ports.tcp_label(), &mut notes);
    }
    if source.spec.rules.as_ref().is_none_or(Vec::is_empty) {
        notes.push(match p.action {
            Action::Allow => "no rules: matches nothing (allow-nothing); it contributes no rule, so with no other ALLOW rule every request is denied".to_owned(),
            _ => "no rules: matches nothing, has no effect".to_owned(),
        });
    }
    PolicyView {
        policy: p.id.to_string(),
        action: p.action.as_str().to_owned(),
        scope: scope(input, source),
        origin: input.origin(Kind::AuthorizationPolicy, ns, name, &FieldPath::root()),
        provider: p.provider.clone(),
        rules,
        notes,
    }
}

/// What istiod's translation did to the rules on one chain (authorization.md §6).
fn chain_notes(chain: &ChainRules, label: &str, notes: &mut Vec<String>) {
    for skipped in chain.skipped.iter().filter(|s| s.reason != "rule is null") {
        notes.push(format!(
            "{label}: rule {} is dropped: {}",
            skipped.index, skipped.reason
        ));
    }
    for narrowed in &chain.narrowed {
        notes.push(format!("{label}: {narrowed}"));
    }
}

/// §2: why the policy applies.
fn scope(input: &Input<'_>, p: &AuthorizationPolicy) -> String {
    let root = &input.mesh.settings.root_namespace;
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

/// What happens to a request, step by step in evaluation order (§3, §3.1, §9).
fn verdict(
    w: &Workload,
    enforced: &[Arc<CompiledPolicy>],
    dry: &[Arc<CompiledPolicy>],
    ports: &Ports,
) -> Vec<String> {
    if !w.sidecar {
        return vec![
            "no sidecar: AuthorizationPolicies are not enforced; every request reaches the application"
                .to_owned(),
        ];
    }
    let of = |action: Action| -> Vec<&Arc<CompiledPolicy>> {
        enforced.iter().filter(|p| p.action == action).collect()
    };
    let names = |ps: &[&Arc<CompiledPolicy>]| -> String {
        ps.iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    let custom = of(Action::Custom);
    if !custom.is_empty() {
        out.push(format!(
            "CUSTOM ({}): a request matching one of its rules goes to the ext_authz provider; meshward has none, so it is denied (fail closed)",
            names(&custom)
        ));
    }
    let audit = of(Action::Audit);
    if !audit.is_empty() {
        out.push(format!(
            "AUDIT ({}): matching requests are marked for the access log; the decision does not change",
            names(&audit)
        ));
    }
    let deny = of(Action::Deny);
    if !deny.is_empty() {
        out.push(format!(
            "DENY ({}): a request matching any DENY rule is refused (HTTP 403 `RBAC: access denied`, TCP connection closed), whatever ALLOW says",
            names(&deny)
        ));
    }
    let allow = of(Action::Allow);
    let rule_count =
        |is_http: bool| -> usize { allow.iter().map(|p| p.chain(is_http).rules.len()).sum() };
    if allow.is_empty() {
        out.push("no ALLOW policy applies: every request not refused above is allowed".to_owned());
    } else {
        let empty: Vec<&Arc<CompiledPolicy>> = allow
            .iter()
            .copied()
            .filter(|p| p.source.spec.rules.as_ref().is_none_or(Vec::is_empty))
            .collect();
        if ports.http {
            out.push(allow_line(
                rule_count(true),
                allow.len(),
                "",
                &empty,
                &names,
            ));
        }
        if !ports.tcp.is_empty() {
            let label = format!(" {}", ports.tcp_label());
            out.push(allow_line(
                rule_count(false),
                allow.len(),
                &label,
                &empty,
                &names,
            ));
        }
    }
    if !dry.is_empty() {
        let dry: Vec<&Arc<CompiledPolicy>> = dry.iter().collect();
        out.push(format!(
            "dry-run ({}): evaluated as shadow rules, logged, never change the decision",
            names(&dry)
        ));
    }
    out
}

fn allow_line(
    rules: usize,
    policies: usize,
    label: &str,
    empty: &[&Arc<CompiledPolicy>],
    names: &dyn Fn(&[&Arc<CompiledPolicy>]) -> String,
) -> String {
    if rules == 0 {
        let why = if empty.len() == policies {
            format!("only allow-nothing policies apply ({})", names(empty))
        } else {
            "ALLOW policies apply but none keeps a rule here".to_owned()
        };
        return format!("ALLOW{label}: {why}: every request is denied");
    }
    let mut line = format!(
        "ALLOW{label}: a request must match one of {rules} rule(s) of {policies} ALLOW policy(ies); anything else is denied (rbac_access_denied_matched_policy[none])"
    );
    if !empty.is_empty() {
        line.push_str(&format!(
            "; {} contribute(s) no rule and do(es) not override the others (authorization.md §3.1)",
            names(empty)
        ));
    }
    line
}

/// ALLOW/DENY rules that read the request principal: without a valid token they cannot match
/// (ALLOW) or they match on its absence (DENY with `notRequestPrincipals`).
fn request_principal_rules(enforced: &[Arc<CompiledPolicy>]) -> Vec<String> {
    let mut out = Vec::new();
    for p in enforced
        .iter()
        .filter(|p| matches!(p.action, Action::Allow | Action::Deny))
    {
        for (index, rule) in p.source.spec.rules.iter().flatten().enumerate() {
            let Some(rule) = rule else { continue };
            let reads = reads_request_principal(rule);
            if !reads.is_empty() {
                out.push(format!(
                    "{} {} rule {index}: {}",
                    p.action.as_str(),
                    p.id,
                    reads.join(", ")
                ));
            }
        }
    }
    out
}

fn reads_request_principal(rule: &Rule) -> Vec<String> {
    let mut reads = Vec::new();
    for source in rule
        .from
        .iter()
        .flatten()
        .flatten()
        .filter_map(|f| f.source.as_ref())
    {
        if let Some(v) = source.request_principals.as_ref().filter(|v| !v.is_empty()) {
            reads.push(format!("requestPrincipals [{}]", v.join(", ")));
        }
        if let Some(v) = source
            .not_request_principals
            .as_ref()
            .filter(|v| !v.is_empty())
        {
            reads.push(format!("notRequestPrincipals [{}]", v.join(", ")));
        }
    }
    for c in rule.when.iter().flatten().flatten() {
        if let Some(key) = c.key.as_deref().filter(|k| k.starts_with("request.auth.")) {
            reads.push(format!("when {key}"));
        }
    }
    reads
}
