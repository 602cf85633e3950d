//! Validation of AuthorizationPolicy: the CRD schema (authorization.md §8.1) and istiod's webhook
//! `ValidateAuthorizationPolicy` (§8.2 rules 1–10), with the path templates of §7.2 and the
//! `when` keys of §5.

use crate::diag::Issue;
use crate::path_template::PathTemplate;
use crate::resources::AuthorizationPolicy;
use crate::resources::meta::ObjectMeta;
use crate::resources::security::{Action, Operation, Rule, Source};
use crate::source::FieldPath;

use super::common::{
    self, DRY_RUN_ANNOTATION, annotation_path, check_ip_or_cidr, check_port, parse_go_bool,
};

mod when;

#[cfg(test)]
mod tests;

/// CRD `maxItems` of `rules` and of each rule's `from` (authorization.md §8.1).
const MAX_RULES: usize = 512;
const MAX_FROM: usize = 512;
/// `serviceAccounts`/`notServiceAccounts`: at most 16 values of at most 320 characters.
const MAX_SERVICE_ACCOUNTS: usize = 16;
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// How a source or operation field's values are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Non-empty strings.
    NonEmpty,
    /// IP addresses or CIDR ranges.
    Ip,
    /// `ns/sa` or `sa`.
    ServiceAccount,
    /// Trust domains: one `*` at the start or end, no `/`.
    TrustDomain,
    /// Decimal ports.
    Port,
    /// Paths, possibly templates.
    Path,
}

/// One list field of a source or operation.
struct Field<'a> {
    name: &'static str,
    values: Option<&'a Vec<String>>,
    check: Values,
    /// Works on TCP chains (counts for the rule-10 warning as istiod counts it).
    tcp: bool,
}

// === impl Field ===

impl<'a> Field<'a> {
    fn new(name: &'static str, values: &'a Option<Vec<String>>, check: Values, tcp: bool) -> Self {
        Field {
            name,
            values: values.as_ref(),
            check,
            tcp,
        }
    }

    fn is_populated(&self) -> bool {
        self.values.is_some_and(|v| !v.is_empty())
    }
}

pub(crate) fn validate_authorization_policy(policy: &AuthorizationPolicy) -> Vec<Issue> {
    let mut issues = Vec::new();
    let spec = &policy.spec;
    let spec_path = FieldPath::root().key("spec");
    let action = spec.action.unwrap_or_default();

    validate_dry_run(&policy.metadata, action, &mut issues);
    common::validate_istio_annotations(&policy.metadata, true, &mut issues);

    // authorization.md §8.2 rule 2: only one of selector/targetRef/targetRefs; selector rules.
    common::validate_one_of_selector(
        &spec_path,
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        spec.target_refs.is_some(),
        &mut issues,
    );
    common::validate_workload_selector(
        spec.selector.as_ref(),
        &spec_path.key("selector"),
        &mut issues,
    );
    // authorization.md §8.2 rule 3: targetRef(s).
    if let Some(target) = &spec.target_ref {
        common::validate_target_ref(target, &spec_path.key("targetRef"), &mut issues);
    }
    common::validate_target_refs(
        spec.target_refs.as_ref(),
        &spec_path.key("targetRefs"),
        &mut issues,
    );

    // istiod decodes `rules: []` as an omitted field (proto3 JSON), so both count as omitted.
    let rules_omitted = spec.rules.as_ref().is_none_or(Vec::is_empty);
    let omitted_at = if spec.rules.is_some() {
        spec_path.key("rules")
    } else {
        spec_path.key("action")
    };
    if action == Action::Custom {
        if rules_omitted {
            // authorization.md §8.2 rule 4: CUSTOM with `rules` omitted ⇒ error.
            issues.push(Issue::error(
                omitted_at.clone(),
                "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                 add an empty rule `{}` if you want it be triggered for every request",
            ));
        } else if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
            // authorization.md §8.2 rule 4: `provider.name` empty ⇒ error. Without `provider`
            // the CUSTOM action is what asks for it.
            let at = if spec.provider.is_some() {
                spec_path.key("provider").key("name")
            } else {
                spec_path.key("action")
            };
            issues.push(Issue::error(
                at,
                "`provider.name` must not be empty: a CUSTOM policy names a \
                 meshConfig.extensionProviders entry",
            ));
        }
    } else if spec.provider.is_some() {
        // authorization.md §8.2 rule 5: `provider` set with a non-CUSTOM action ⇒ error.
        issues.push(Issue::error(
            spec_path.key("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                action.as_str()
            ),
        ));
    }
    // authorization.md §8.2 rule 5: DENY with `rules` omitted ⇒ error.
    if action == Action::Deny && rules_omitted {
        issues.push(Issue::error(
            omitted_at,
            "DENY action without `rules` is meaningless as it will never be triggered, \
             add an empty rule `{}` if you want it be triggered for every request",
        ));
    }

    if let Some(rules) = &spec.rules {
        let rules_path = spec_path.key("rules");
        // authorization.md §8.1: `rules` ≤ 512.
        if rules.len() > MAX_RULES {
            issues.push(Issue::error(
                rules_path.clone(),
                format!(
                    "too many rules: {}, must have at most {MAX_RULES}",
                    rules.len()
                ),
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            validate_rule(rule.as_ref(), &rules_path.index(i), action, &mut issues);
        }
    }
    issues
}

/// authorization.md §8.2 rule 1: `istio.io/dry-run` only for ALLOW/DENY, and a Go boolean.
fn validate_dry_run(meta: &ObjectMeta, action: Action, issues: &mut Vec<Issue>) {
    let Some(value) = meta.annotations.get(DRY_RUN_ANNOTATION) else {
        return;
    };
    let at = annotation_path(DRY_RUN_ANNOTATION);
    match action {
        Action::Allow | Action::Deny => {
            if parse_go_bool(value).is_none() {
                issues.push(Issue::error(
                    at,
                    format!(
                        "annotation {DRY_RUN_ANNOTATION} with invalid value `{value}`: expected \
                         a boolean (true, false, True, False, TRUE, FALSE, t, f, T, F, 1, 0)"
                    ),
                ));
            }
        }
        Action::Audit | Action::Custom => issues.push(Issue::error(
            at,
            format!(
                "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, \
                 found action {}",
                action.as_str()
            ),
        )),
    }
}

/// authorization.md §8.2 rules 6–10 for one rule.
fn validate_rule(rule: Option<&Rule>, path: &FieldPath, action: Action, issues: &mut Vec<Issue>) {
    // authorization.md §8.2 rule 6: rule not null.
    let Some(rule) = rule else {
        issues.push(Issue::error(
            path.clone(),
            "`rule` must not be null: use `{}` for a rule that matches everything",
        ));
        return;
    };
    let mut from_exists = false;
    let mut tcp_in_from = false;
    if let Some(from) = &rule.from {
        let from_path = path.key("from");
        // authorization.md §8.2 rule 6: `from: []` explicitly empty ⇒ error.
        if from.is_empty() {
            issues.push(Issue::error(
                from_path.clone(),
                "`from` must not be empty: omit it to match any source",
            ));
        }
        // authorization.md §8.1: `from` ≤ 512.
        if from.len() > MAX_FROM {
            issues.push(Issue::error(
                from_path.clone(),
                format!(
                    "too many `from` entries: {}, must have at most {MAX_FROM}",
                    from.len()
                ),
            ));
        }
        for (j, item) in from.iter().enumerate() {
            let item_path = from_path.index(j);
            // authorization.md §8.2 rule 6: `from[i]` or its `source` null ⇒ error.
            let Some(item) = item else {
                issues.push(Issue::error(item_path, "`from` must not be null"));
                continue;
            };
            let Some(source) = &item.source else {
                issues.push(Issue::error(
                    item_path.key("source"),
                    "`from.source` must not be null",
                ));
                continue;
            };
            from_exists = true;
            tcp_in_from |= validate_source(source, &item_path.key("source"), action, issues);
        }
    }
    let mut to_exists = false;
    let mut tcp_in_to = false;
    if let Some(to) = &rule.to {
        let to_path = path.key("to");
        // authorization.md §8.2 rule 6: `to: []` explicitly empty ⇒ error.
        if to.is_empty() {
            issues.push(Issue::error(
                to_path.clone(),
                "`to` must not be empty: omit it to match any operation",
            ));
        }
        for (j, item) in to.iter().enumerate() {
            let item_path = to_path.index(j);
            // authorization.md §8.2 rule 6: `to[i]` or its `operation` null ⇒ error.
            let Some(item) = item else {
                issues.push(Issue::error(item_path, "`to` must not be null"));
                continue;
            };
            let Some(operation) = &item.operation else {
                issues.push(Issue::error(
                    item_path.key("operation"),
                    "`to.operation` must not be null",
                ));
                continue;
            };
            to_exists = true;
            tcp_in_to |= validate_operation(operation, &item_path.key("operation"), issues);
        }
    }
    when::validate_conditions(rule.when.as_ref(), &path.key("when"), action, issues);

    // authorization.md §8.2 rule 10 (warning): a DENY rule using only HTTP attributes denies all
    // TCP traffic (from without TCP fields and no to, or to without ports).
    if action == Action::Deny
        && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
    {
        issues.push(Issue::warning(
            path.clone(),
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope \
             due to the use of only HTTP attributes in a DENY rule; it is recommended to \
             explicitly specify the port",
        ));
    }
}

fn source_fields(s: &Source) -> [Field<'_>; 14] {
    let f = Field::new;
    use Values::{Ip, NonEmpty, ServiceAccount, TrustDomain};
    [
        f("principals", &s.principals, NonEmpty, true),
        f("notPrincipals", &s.not_principals, NonEmpty, true),
        f("requestPrincipals", &s.request_principals, NonEmpty, false),
        f(
            "notRequestPrincipals",
            &s.not_request_principals,
            NonEmpty,
            false,
        ),
        f("namespaces", &s.namespaces, NonEmpty, true),
        f("notNamespaces", &s.not_namespaces, NonEmpty, true),
        f("serviceAccounts", &s.service_accounts, ServiceAccount, true),
        f(
            "notServiceAccounts",
            &s.not_service_accounts,
            ServiceAccount,
            true,
        ),
        // istiod does not count trust domains as TCP fields for the rule-10 warning.
        f("trustDomains", &s.trust_domains, TrustDomain, false),
        f("notTrustDomains", &s.not_trust_domains, TrustDomain, false),
        f("ipBlocks", &s.ip_blocks, Ip, true),
        f("notIpBlocks", &s.not_ip_blocks, Ip, true),
        f("remoteIpBlocks", &s.remote_ip_blocks, Ip, true),
        f("notRemoteIpBlocks", &s.not_remote_ip_blocks, Ip, true),
    ]
}

fn operation_fields(o: &Operation) -> [Field<'_>; 8] {
    let f = Field::new;
    use Values::{NonEmpty, Path, Port};
    [
        f("hosts", &o.hosts, NonEmpty, false),
        f("notHosts", &o.not_hosts, NonEmpty, false),
        f("ports", &o.ports, Port, true),
        f("notPorts", &o.not_ports, Port, true),
        f("methods", &o.methods, NonEmpty, false),
        f("notMethods", &o.not_methods, NonEmpty, false),
        f("paths", &o.paths, Path, false),
        f("notPaths", &o.not_paths, Path, false),
    ]
}

/// Source fields CUSTOM policies cannot use (authorization.md §8.2 rule 4).
const CUSTOM_UNSUPPORTED_SOURCE: [&str; 10] = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];

/// Validates one source; returns whether it uses a field istiod counts as TCP.
fn validate_source(
    source: &Source,
    path: &FieldPath,
    action: Action,
    issues: &mut Vec<Issue>,
) -> bool {
    let fields = source_fields(source);
    // authorization.md §8.2 rule 6: a source with no populated field ⇒ error.
    if !fields.iter().any(Field::is_populated) {
        issues.push(Issue::error(
            path.clone(),
            "`from.source` must not be empty: set at least one field, or omit `from`",
        ));
    }
    // authorization.md §8.1/§8.2 rule 7: serviceAccounts not with principals/namespaces (+not) in
    // the same source (CRD CEL: a present field counts, even empty).
    let service_accounts = ["serviceAccounts", "notServiceAccounts"]
        .into_iter()
        .find(|name| fields.iter().any(|f| f.name == *name && f.values.is_some()));
    let identities: Vec<&str> = fields
        .iter()
        .filter(|f| {
            matches!(
                f.name,
                "principals" | "notPrincipals" | "namespaces" | "notNamespaces"
            ) && f.values.is_some()
        })
        .map(|f| f.name)
        .collect();
    if let (Some(sa), false) = (service_accounts, identities.is_empty()) {
        issues.push(Issue::error(
            path.key(sa),
            format!(
                "cannot set serviceAccounts with namespaces or principals: `{sa}` is used with `{}` \
                 in the same source",
                identities.join("`, `")
            ),
        ));
    }
    for field in &fields {
        // authorization.md §8.2 rule 4: CUSTOM sources must not use identity fields.
        if action == Action::Custom
            && field.is_populated()
            && CUSTOM_UNSUPPORTED_SOURCE.contains(&field.name)
        {
            issues.push(Issue::error(
                path.key(field.name),
                format!(
                    "`{}` is currently not supported with CUSTOM action",
                    field.name
                ),
            ));
        }
        check_field_values(field, path, issues);
    }
    fields.iter().any(|f| f.tcp && f.is_populated())
}

/// Validates one operation; returns whether it has ports (rule 10).
fn validate_operation(operation: &Operation, path: &FieldPath, issues: &mut Vec<Issue>) -> bool {
    let fields = operation_fields(operation);
    // authorization.md §8.2 rule 6: an operation with no populated field ⇒ error.
    if !fields.iter().any(Field::is_populated) {
        issues.push(Issue::error(
            path.clone(),
            "`to.operation` must not be empty: set at least one field, or omit `to`",
        ));
    }
    for field in &fields {
        check_field_values(field, path, issues);
    }
    fields.iter().any(|f| f.tcp && f.is_populated())
}

/// authorization.md §8.2 rules 7 and 8: per-value checks, reported at the offending item.
fn check_field_values(field: &Field<'_>, parent: &FieldPath, issues: &mut Vec<Issue>) {
    let Some(values) = field.values else {
        return;
    };
    let path = parent.key(field.name);
    // authorization.md §8.1/§8.2 rule 7: serviceAccounts ≤ 16 values.
    if field.check == Values::ServiceAccount && values.len() > MAX_SERVICE_ACCOUNTS {
        issues.push(Issue::error(
            path.clone(),
            format!(
                "may not have more than {MAX_SERVICE_ACCOUNTS} values, found {} in `{}`",
                values.len(),
                field.name
            ),
        ));
    }
    for (i, value) in values.iter().enumerate() {
        // authorization.md §8.2 rules 7, 8: no empty strings.
        let result = if value.is_empty() {
            Err(format!(
                "empty value not allowed, found in `{}`",
                field.name
            ))
        } else {
            match field.check {
                Values::NonEmpty => Ok(()),
                // authorization.md §8.2 rule 7: ipBlocks/remoteIpBlocks (+not) parse as IP or CIDR.
                Values::Ip => check_ip_or_cidr(value),
                Values::ServiceAccount => check_service_account(value),
                Values::TrustDomain => check_trust_domain(value),
                // authorization.md §8.2 rule 8: ports decimal 0–65535.
                Values::Port => check_port(value).map(|_| ()),
                // authorization.md §8.2 rule 8 / §7.2: path templates valid.
                Values::Path => match check_path(value) {
                    Ok(Some(warning)) => {
                        issues.push(Issue::warning(path.index(i), warning));
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
            }
            .map_err(|e| format!("{e} (in `{}`)", field.name))
        };
        if let Err(message) = result {
            issues.push(Issue::error(path.index(i), message));
        }
    }
}

/// authorization.md §8.2 rule 7: serviceAccounts: no `*`, 0 or 1 `/`, non-empty ns and sa,
/// ≤ 320 characters.
fn check_service_account(value: &str) -> Result<(), String> {
    const FORMAT: &str = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    if value.contains('*') {
        return Err(format!("wildcard not allowed in service account `{value}`"));
    }
    let slashes = value.matches('/').count();
    if slashes > 1 {
        return Err(format!("{FORMAT}, found `{value}`"));
    }
    if value.len() > MAX_SERVICE_ACCOUNT_LEN {
        return Err(format!(
            "value cannot exceed {MAX_SERVICE_ACCOUNT_LEN} characters, found {} in `{value}`",
            value.len()
        ));
    }
    match value.split_once('/') {
        Some(("", _)) => Err(format!("{FORMAT}, found empty namespace in `{value}`")),
        Some((_, "")) => Err(format!("{FORMAT}, found empty serviceAccount in `{value}`")),
        _ => Ok(()),
    }
}

/// Istio's `CheckWildcardValues`: at most one `*`, only at the start or the end.
fn check_wildcard(value: &str) -> Result<(), String> {
    let stars = value.matches('*').count();
    if stars > 1 {
        return Err(format!("at most one wildcard is allowed, found `{value}`"));
    }
    if stars == 1 && value != "*" && !value.starts_with('*') && !value.ends_with('*') {
        return Err(format!(
            "wildcard is only allowed at the start or end, found `{value}`"
        ));
    }
    Ok(())
}

/// authorization.md §8.2 rule 7: trustDomains: non-empty, ≤ 1 `*` only at start or end, no `/`.
fn check_trust_domain(value: &str) -> Result<(), String> {
    check_wildcard(value)?;
    if value.contains('/') {
        return Err(format!(
            "trust domain must not contain '/', found `{value}`"
        ));
    }
    Ok(())
}

/// authorization.md §7.2 / §8.2 rule 8: a path with `{*}`/`{**}` must be a valid URI template;
/// any other path must not contain `{` or `}`. `Ok(Some(_))` is a template Istio's webhook accepts
/// but Envoy refuses (a warning).
fn check_path(value: &str) -> Result<Option<String>, String> {
    if PathTemplate::is_template(value) {
        match PathTemplate::parse(value) {
            Ok(_) => Ok(None),
            Err(e) if e.is_webhook_error() => Err(e.to_string()),
            Err(e) => Ok(Some(format!(
                "{e}: istiod accepts the policy but the proxy refuses the configuration, so \
                 the policy is not enforced"
            ))),
        }
    } else if value.contains(['{', '}']) {
        Err(format!(
            "invalid or unsupported path `{value}`: contains '{{' or '}}' beyond a supported \
             path template ({{*}} or {{**}} as a whole segment)"
        ))
    } else {
        Ok(None)
    }
}
