//! MW0001 HttpFieldOnTcpPort and MW0002 HttpConditionOnTcpPort.
//!
//! authorization.md §6: "HTTP‑only set: `requestPrincipals`, `notRequestPrincipals`, `hosts`,
//! `notHosts`, `methods`, `notMethods`, `paths`, `notPaths`, and `when` keys `request.headers[*]`,
//! `request.auth.principal|audiences|presenter|claims[*]`." On a TCP chain, for ALLOW "the
//! **whole rule** is skipped … if every rule of every ALLOW policy is skipped the ALLOW filter has
//! zero policies ⇒ deny all TCP"; for DENY, AUDIT, CUSTOM "the offending value is dropped … rule
//! matches **more** (fail closed)". What a rule becomes on the TCP chain is asked of the engine
//! ([`crate::authz::compile_policy`]); this module only names the fields and the ports.

use std::collections::{BTreeMap, BTreeSet};

use meshward_api::FieldPath;
use meshward_api::resources::security::Action;

use super::{Context, Finding, Level, MW0001, MW0002, ports_text, rules_of};

/// `when` keys that need HTTP (§6).
pub(crate) fn http_condition_key(key: &str) -> bool {
    key.starts_with("request.headers[")
        || key.starts_with("request.auth.claims[")
        || matches!(
            key,
            "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter"
        )
}

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let (compiled, targets) = cx.authz_targets(policy);
        // Workload → its TCP ports.
        let tcp: BTreeMap<String, Vec<u16>> = targets
            .iter()
            .filter_map(|w| {
                let ports: Vec<u16> = w
                    .ports
                    .iter()
                    .filter(|p| !p.protocol.is_http())
                    .map(|p| p.port)
                    .collect();
                (!ports.is_empty()).then(|| (w.key(), ports))
            })
            .collect();
        if tcp.is_empty() {
            continue;
        }
        let action = compiled.action;
        // Rules the engine changed on the TCP chain.
        let mut affected: BTreeSet<usize> = compiled.tcp.skipped.iter().map(|s| s.index).collect();
        affected.extend(compiled.tcp.narrowed.iter().filter_map(|n| {
            n.strip_prefix("rule ")?
                .split(':')
                .next()?
                .parse::<usize>()
                .ok()
        }));
        for (i, rule, path) in rules_of(policy) {
            if !affected.contains(&i) {
                continue;
            }
            // Ports a rule is limited to: a DENY rule limited to other ports changes nothing here.
            let rule_ports: BTreeSet<u16> = rule
                .to
                .iter()
                .flatten()
                .flatten()
                .filter_map(|t| t.operation.as_ref())
                .flat_map(|o| o.ports.iter().flatten())
                .filter_map(|p| p.parse().ok())
                .collect();
            let here: BTreeMap<String, Vec<u16>> = tcp
                .iter()
                .filter_map(|(w, ports)| {
                    let ports: Vec<u16> = ports
                        .iter()
                        .copied()
                        .filter(|p| rule_ports.is_empty() || rule_ports.contains(p))
                        .collect();
                    (!ports.is_empty()).then(|| (w.clone(), ports))
                })
                .collect();
            if here.is_empty() {
                continue;
            }
            let where_ = ports_text(&here);
            let effect = match action {
                Action::Allow => "istiod drops the whole rule on TCP ports, so it never matches there; the ALLOW policy still exists, so TCP connections no other rule allows are denied".to_owned(),
                _ => format!(
                    "istiod drops the HTTP-only values on TCP ports and the {} rule matches more: it applies to every TCP connection its remaining fields match",
                    action.as_str()
                ),
            };
            // Fields.
            let mut fields: Vec<(&str, FieldPath)> = Vec::new();
            for (j, f) in rule.from.iter().flatten().enumerate() {
                let Some(s) = f.as_ref().and_then(|f| f.source.as_ref()) else {
                    continue;
                };
                let base = path.key("from").index(j).key("source");
                for (name, set) in [
                    ("requestPrincipals", s.request_principals.is_some()),
                    ("notRequestPrincipals", s.not_request_principals.is_some()),
                ] {
                    if set {
                        fields.push((name, base.key(name)));
                    }
                }
            }
            for (j, t) in rule.to.iter().flatten().enumerate() {
                let Some(o) = t.as_ref().and_then(|t| t.operation.as_ref()) else {
                    continue;
                };
                let base = path.key("to").index(j).key("operation");
                for (name, set) in [
                    ("hosts", o.hosts.is_some()),
                    ("notHosts", o.not_hosts.is_some()),
                    ("methods", o.methods.is_some()),
                    ("notMethods", o.not_methods.is_some()),
                    ("paths", o.paths.is_some()),
                    ("notPaths", o.not_paths.is_some()),
                ] {
                    if set {
                        fields.push((name, base.key(name)));
                    }
                }
            }
            if let Some((_, field)) = fields.first() {
                let list: Vec<String> = fields.iter().map(|(n, _)| format!("`{n}`")).collect();
                out.push(cx.finding(
                    MW0001,
                    Level::Warning,
                    loaded,
                    field.clone(),
                    format!(
                        "rules[{i}] uses HTTP-only {} but applies to TCP traffic ({where_}): {effect}",
                        list.join(", ")
                    ),
                    "Use only fields that work on TCP (principals, namespaces, ipBlocks, ports) in rules for TCP ports, or limit the rule with `ports` to the HTTP ports; if the port really is HTTP, name the Service port `http-…` (or set appProtocol)",
                ));
            }
            // Conditions.
            let conds: Vec<(String, FieldPath)> = rule
                .when
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, c)| {
                    let key = c.as_ref()?.key.as_deref()?;
                    http_condition_key(key)
                        .then(|| (key.to_owned(), path.key("when").index(j).key("key")))
                })
                .collect();
            if let Some((_, field)) = conds.first() {
                let list: Vec<String> = conds.iter().map(|(k, _)| format!("`{k}`")).collect();
                out.push(cx.finding(
                    MW0002,
                    Level::Warning,
                    loaded,
                    field.clone(),
                    format!(
                        "rules[{i}] has `when` key {} that needs HTTP but applies to TCP traffic ({where_}): {effect}",
                        list.join(", ")
                    ),
                    "Use `when` keys that work on TCP (source.ip, source.principal, source.namespace, destination.port, connection.sni) for TCP ports, or limit the rule with `ports` to the HTTP ports",
                ));
            }
        }
    }
}
