//! Rules that do less than they seem: MW0009 ShadowedByDeny, MW0010 RuleNeverMatches,
//! MW0011 SplitRule.
//!
//! MW0009, authorization.md §3: "if any policy in D matches -> DENY" comes before any ALLOW, and
//! §3.1: "Namespace DENY‑all (`action: DENY, rules: [{}]`) + any workload ALLOW ⇒ **everything
//! denied** — DENY is evaluated first and cannot be bypassed." Which policies apply to a
//! workload, and what each rule compiles to, is the engine's.
//!
//! MW0010, §4.1: "`X` and `notX` on the same field are ANDed": when every value of `X` is also
//! in `notX` (or `notX` holds `*`), the field, and so the rule, never matches.
//!
//! MW0011, §4.1: "policy matches ⇔ ∃ rule r ∈ rules : rule_matches(r)", "FROM(r) ⇔ … ∃ f ∈
//! r.from", "TO(r) ⇔ … ∃ t ∈ r.to". A `-` in front of `to:` starts a new rule: `from` and `to`
//! become alternatives instead of both being required; two `- operation:` items with one field
//! each (`methods`, then `paths`) are alternatives too.

use meshward_api::FieldPath;
use meshward_api::resources::security::{Action, Operation, Rule, Source};

use super::{Context, Finding, Level, MW0009, MW0010, MW0011, names, rules_of};

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    shadowed_by_deny(cx, out);
    never_matches(cx, out);
    split_rules(cx, out);
}

fn shadowed_by_deny(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let (compiled, targets) = cx.authz_targets(policy);
        if compiled.action != Action::Allow || compiled.dry_run || targets.is_empty() {
            continue;
        }
        let mut denier = None;
        let shadowed: Vec<_> = targets
            .iter()
            .copied()
            .filter(|w| {
                let found = cx
                    .mesh
                    .authz
                    .select(w.selector_view())
                    .into_iter()
                    .find_map(|p| {
                        if p.action != Action::Deny || p.dry_run {
                            return None;
                        }
                        p.http
                            .rules
                            .iter()
                            .find(|r| r.from.is_empty() && r.to.is_empty() && r.when.is_empty())
                            .map(|r| format!("{} rules[{}]", p.id, r.index))
                    });
                if let Some(d) = &found {
                    denier.get_or_insert_with(|| d.clone());
                }
                found.is_some()
            })
            .collect();
        let Some(denier) = denier else { continue };
        out.push(cx.finding(
            MW0009,
            Level::Warning,
            loaded,
            FieldPath::root().key("spec").key("rules"),
            format!(
                "DENY policy {denier} matches every request to {}, and DENY is evaluated before ALLOW: this ALLOW policy can never admit anything there",
                names(&shadowed)
            ),
            "A DENY that matches everything cannot be overridden. To allow only some traffic, replace it with an ALLOW policy without rules (`spec: {}`, allow-nothing) and keep the specific ALLOW policies",
        ));
    }
}

/// `(name, values, notValues)`.
type Pair<'a> = (
    &'static str,
    &'a Option<Vec<String>>,
    &'a Option<Vec<String>>,
);

/// The pairs of a source.
fn source_pairs(s: &Source) -> [Pair<'_>; 7] {
    [
        ("principals", &s.principals, &s.not_principals),
        ("namespaces", &s.namespaces, &s.not_namespaces),
        (
            "serviceAccounts",
            &s.service_accounts,
            &s.not_service_accounts,
        ),
        ("trustDomains", &s.trust_domains, &s.not_trust_domains),
        (
            "requestPrincipals",
            &s.request_principals,
            &s.not_request_principals,
        ),
        ("ipBlocks", &s.ip_blocks, &s.not_ip_blocks),
        (
            "remoteIpBlocks",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        ),
    ]
}

fn operation_pairs(o: &Operation) -> [Pair<'_>; 4] {
    [
        ("hosts", &o.hosts, &o.not_hosts),
        ("ports", &o.ports, &o.not_ports),
        ("methods", &o.methods, &o.not_methods),
        ("paths", &o.paths, &o.not_paths),
    ]
}

/// Every positive value is excluded again by the negative list.
fn contradicts(values: &Option<Vec<String>>, not_values: &Option<Vec<String>>) -> bool {
    let (Some(v), Some(n)) = (values, not_values) else {
        return false;
    };
    !v.is_empty() && (n.iter().any(|x| x == "*") || v.iter().all(|x| n.contains(x)))
}

fn never_matches(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let action = policy.spec.action.unwrap_or_default();
        for (i, rule, path) in rules_of(policy) {
            let mut hits: Vec<(FieldPath, String)> = Vec::new();
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(s) = from.as_ref().and_then(|f| f.source.as_ref()) else {
                    continue;
                };
                for (name, v, n) in source_pairs(s) {
                    if contradicts(v, n) {
                        hits.push((
                            path.key("from").index(j).key("source").key(name),
                            name.to_owned(),
                        ));
                    }
                }
            }
            for (j, to) in rule.to.iter().flatten().enumerate() {
                let Some(o) = to.as_ref().and_then(|t| t.operation.as_ref()) else {
                    continue;
                };
                for (name, v, n) in operation_pairs(o) {
                    if contradicts(v, n) {
                        hits.push((
                            path.key("to").index(j).key("operation").key(name),
                            name.to_owned(),
                        ));
                    }
                }
            }
            for (j, c) in rule.when.iter().flatten().enumerate() {
                let Some(c) = c else { continue };
                if contradicts(&c.values, &c.not_values) {
                    let key = c.key.clone().unwrap_or_default();
                    hits.push((
                        path.key("when").index(j).key("values"),
                        format!("when {key}"),
                    ));
                }
            }
            for (field, name) in hits {
                out.push(cx.finding(
                    MW0010,
                    Level::Warning,
                    loaded,
                    field,
                    format!(
                        "rules[{i}]: every value of `{name}` is excluded again by its `not…` list, so this part never matches and the {} rule never applies",
                        action.as_str()
                    ),
                    "Remove the values from one of the two lists; `X` and `notX` on one field must both hold",
                ));
            }
        }
    }
}

fn only_from(r: &Rule) -> bool {
    r.from.as_ref().is_some_and(|f| !f.is_empty()) && r.to.is_none() && r.when.is_none()
}

fn only_to(r: &Rule) -> bool {
    r.from.is_none()
        && (r.to.as_ref().is_some_and(|t| !t.is_empty())
            || r.when.as_ref().is_some_and(|w| !w.is_empty()))
}

/// The field names set in an operation.
fn operation_fields(o: &Operation) -> Vec<&'static str> {
    operation_pairs(o)
        .into_iter()
        .filter(|(_, v, n)| v.is_some() || n.is_some())
        .map(|(name, _, _)| name)
        .collect()
}

fn split_rules(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        if policy.spec.action.unwrap_or_default() != Action::Allow {
            // A split DENY rule denies more, which fails closed.
            continue;
        }
        let rules: Vec<_> = rules_of(policy).collect();
        for pair in rules.windows(2) {
            let [(i, a, _), (k, b, path_b)] = pair else {
                continue;
            };
            if (only_from(a) && only_to(b)) || (only_to(a) && only_from(b)) {
                let (src, op) = if only_from(a) { (i, k) } else { (k, i) };
                out.push(cx.finding(
                    MW0011,
                    Level::Warning,
                    loaded,
                    path_b.clone(),
                    format!(
                        "rules[{i}] and rules[{k}] are two rules, and a policy matches when any rule matches: rules[{src}] allows every operation to its sources, and rules[{op}] allows its operations to everyone"
                    ),
                    "If both were meant to be required, make them one rule: remove the `-` in front of the second key so that `from` and `to`/`when` are in the same list item",
                ));
            }
        }
        for (i, rule, path) in &rules {
            let ops: Vec<Vec<&str>> = rule
                .to
                .iter()
                .flatten()
                .map(|t| {
                    t.as_ref()
                        .and_then(|t| t.operation.as_ref())
                        .map(operation_fields)
                        .unwrap_or_default()
                })
                .collect();
            let singles: Vec<&str> = ops
                .iter()
                .filter(|f| f.len() == 1)
                .filter_map(|f| f.first().copied())
                .collect();
            let mut kinds = singles.clone();
            kinds.sort_unstable();
            kinds.dedup();
            if ops.len() >= 2 && singles.len() == ops.len() && kinds.len() == ops.len() {
                out.push(cx.finding(
                    MW0011,
                    Level::Warning,
                    loaded,
                    path.key("to").index(1),
                    format!(
                        "rules[{i}].to has {} operations with one field each (`{}`): they are alternatives, so a request needs to match only one of them",
                        ops.len(),
                        kinds.join("`, `")
                    ),
                    "If all were meant to be required, put the fields in one `operation` (remove the `- operation:` lines after the first)",
                ));
            }
        }
    }
}
