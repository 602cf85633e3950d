//! One AuthorizationPolicy rule in one line of readable text.
//!
//! authorization.md §4.1: a rule matches when "FROM(r) ∧ TO(r) ∧ ∀ c ∈ r.when : cond(c)"; the
//! items of `from` (and of `to`) are ORed, the fields of one item are ANDed, and a field with
//! `values` and `notValues` needs one of the values and none of the others. The line says the
//! same: `from A or B; to C; when D and E`, with `not in` for the `not…` fields.

use meshward_api::resources::security::{Condition, Operation, Rule, Source};

/// `from …; to …; when …`, or "every request" for an empty rule.
pub(crate) fn summarize(rule: &Rule) -> String {
    let mut parts = Vec::new();
    let sources: Vec<String> = rule
        .from
        .iter()
        .flatten()
        .flatten()
        .filter_map(|f| f.source.as_ref())
        .map(source_text)
        .collect();
    if !sources.is_empty() {
        parts.push(format!("from {}", join_alternatives(&sources)));
    }
    let operations: Vec<String> = rule
        .to
        .iter()
        .flatten()
        .flatten()
        .filter_map(|t| t.operation.as_ref())
        .map(operation_text)
        .collect();
    if !operations.is_empty() {
        parts.push(format!("to {}", join_alternatives(&operations)));
    }
    let conditions: Vec<String> = rule
        .when
        .iter()
        .flatten()
        .flatten()
        .map(condition_text)
        .collect();
    if !conditions.is_empty() {
        parts.push(format!("when {}", conditions.join(" and ")));
    }
    if parts.is_empty() {
        "every request (an empty rule matches everything)".to_owned()
    } else {
        parts.join("; ")
    }
}

/// Alternatives are ORed; a single alternative with several fields is bracketed only when
/// there are others.
fn join_alternatives(items: &[String]) -> String {
    if items.len() == 1 {
        return items.concat();
    }
    items
        .iter()
        .map(|i| {
            if i.contains(" and ") {
                format!("({i})")
            } else {
                i.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn source_text(s: &Source) -> String {
    let fields = [
        ("principal", &s.principals, &s.not_principals),
        (
            "requestPrincipal",
            &s.request_principals,
            &s.not_request_principals,
        ),
        ("namespace", &s.namespaces, &s.not_namespaces),
        (
            "serviceAccount",
            &s.service_accounts,
            &s.not_service_accounts,
        ),
        ("trustDomain", &s.trust_domains, &s.not_trust_domains),
        ("ipBlock", &s.ip_blocks, &s.not_ip_blocks),
        (
            "remoteIpBlock",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
        ),
    ];
    fields_text(&fields, "any source")
}

fn operation_text(o: &Operation) -> String {
    let fields = [
        ("host", &o.hosts, &o.not_hosts),
        ("port", &o.ports, &o.not_ports),
        ("method", &o.methods, &o.not_methods),
        ("path", &o.paths, &o.not_paths),
    ];
    fields_text(&fields, "any operation")
}

type Field<'a> = (&'a str, &'a Option<Vec<String>>, &'a Option<Vec<String>>);

fn fields_text(fields: &[Field<'_>], empty: &str) -> String {
    let mut out = Vec::new();
    for (name, values, not_values) in fields {
        if let Some(v) = values.as_ref().filter(|v| !v.is_empty()) {
            out.push(format!("{name} {}", one_of(v)));
        }
        if let Some(v) = not_values.as_ref().filter(|v| !v.is_empty()) {
            out.push(format!("{name} not {}", one_of(v)));
        }
    }
    if out.is_empty() {
        empty.to_owned()
    } else {
        out.join(" and ")
    }
}

fn condition_text(c: &Condition) -> String {
    let key = c.key.as_deref().unwrap_or("?");
    let mut out = Vec::new();
    if let Some(v) = c.values.as_ref().filter(|v| !v.is_empty()) {
        out.push(format!("{key} {}", one_of(v)));
    }
    if let Some(v) = c.not_values.as_ref().filter(|v| !v.is_empty()) {
        out.push(format!("{key} not {}", one_of(v)));
    }
    if out.is_empty() {
        format!("{key} (no values)")
    } else {
        out.join(" and ")
    }
}

/// `= x` for one value, `in [x, y]` for several.
fn one_of(values: &[String]) -> String {
    match values {
        [one] => format!("= {one}"),
        many => format!("in [{}]", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rules are written as JSON (which is YAML): the policy crate has no YAML parser.
    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_rule_matches_everything() {
        assert!(summarize(&rule("{}")).starts_with("every request"));
    }

    #[test]
    fn sources_are_ored_and_fields_anded() {
        let text = summarize(&rule(
            r#"{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/x"], "notNamespaces": ["b"]}},
                         {"source": {"namespaces": ["c", "d"]}}],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
                "when": [{"key": "request.auth.claims[group]", "values": ["admin"]}]}"#,
        ));
        assert_eq!(
            text,
            "from (principal = cluster.local/ns/a/sa/x and namespace not = b) or namespace in [c, d]; \
             to method = GET and path = /api/*; when request.auth.claims[group] = admin"
        );
    }
}
