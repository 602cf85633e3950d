//! `rules[].when[]` conditions: the keys of authorization.md §5 and the value checks of §8.2
//! rule 9 (Istio's `security.ValidateAttribute`).

use crate::diag::Issue;
use crate::resources::security::{Action, Condition};
use crate::source::FieldPath;

use super::super::common::{check_ip_or_cidr, check_port};
use super::{MAX_SERVICE_ACCOUNTS, check_service_account, check_wildcard};

/// The keys istiod knows, for the "unknown attribute" message.
const KNOWN_KEYS: &str = "request.headers[<name>], source.ip, remote.ip, source.namespace, \
     source.principal, source.serviceAccount, source.trustDomain, request.auth.principal, \
     request.auth.audiences, request.auth.presenter, request.auth.claims[<claim>], \
     destination.ip, destination.port, connection.sni, experimental.envoy.filters.<filter>[<key>]";

/// How the values of a key are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ValueCheck {
    /// Non-empty strings.
    Any,
    /// IP addresses or CIDR ranges.
    Ip,
    /// Decimal ports.
    Port,
    /// `ns/sa` or `sa`, at most 16.
    ServiceAccount,
    /// One `*` at the start or the end.
    Wildcard,
}

/// Validates `when` (authorization.md §8.2 rules 4 and 9).
pub(super) fn validate_conditions(
    conditions: Option<&Vec<Option<Condition>>>,
    path: &FieldPath,
    action: Action,
    issues: &mut Vec<Issue>,
) {
    for (i, condition) in conditions.into_iter().flatten().enumerate() {
        let at = path.index(i);
        // authorization.md §8.2 rule 4: `when` entries non-null (CRD: items are objects).
        let Some(condition) = condition else {
            issues.push(Issue::error(at, "`when` must not be null"));
            continue;
        };
        validate_condition(condition, &at, action, issues);
    }
}

fn validate_condition(
    condition: &Condition,
    path: &FieldPath,
    action: Action,
    issues: &mut Vec<Issue>,
) {
    let key_path = path.key("key");
    // authorization.md §8.1: `when[].key` required.
    let Some(key) = condition.key.as_deref() else {
        issues.push(Issue::error(
            key_path,
            "`key` is required: the attribute the condition tests",
        ));
        return;
    };
    // authorization.md §8.2 rule 9: key non-empty.
    if key.is_empty() {
        issues.push(Issue::error(key_path, "`key` must not be empty"));
        return;
    }
    // authorization.md §8.2 rule 4: CUSTOM forbids source.namespace, source.serviceAccount,
    // source.trustDomain, source.principal and request.auth.* keys.
    if action == Action::Custom
        && (matches!(
            key,
            "source.namespace"
                | "source.serviceAccount"
                | "source.trustDomain"
                | "source.principal"
        ) || key.starts_with("request.auth."))
    {
        issues.push(Issue::error(
            key_path.clone(),
            format!("`{key}` is currently not supported with CUSTOM action"),
        ));
    }
    let values = condition.values.as_ref();
    let not_values = condition.not_values.as_ref();
    // authorization.md §5 / §8.2 rule 9: `values` and `notValues` not both empty.
    if values.is_none_or(Vec::is_empty) && not_values.is_none_or(Vec::is_empty) {
        issues.push(Issue::error(
            path.key("values"),
            format!("at least one of `values` or `notValues` must be set for key `{key}`"),
        ));
    }
    // authorization.md §8.2 rule 9: removed v1alpha1 attributes and unknown keys ⇒ error.
    let check = match classify(key) {
        Ok(check) => check,
        Err(message) => {
            issues.push(Issue::error(key_path, message));
            ValueCheck::Any
        }
    };
    for (field, label, list) in [
        ("values", "value", values),
        ("notValues", "notValue", not_values),
    ] {
        let Some(list) = list else {
            continue;
        };
        let list_path = path.key(field);
        // authorization.md §8.2 rule 9: `source.serviceAccount` like serviceAccounts (≤ 16).
        if check == ValueCheck::ServiceAccount && list.len() > MAX_SERVICE_ACCOUNTS {
            issues.push(Issue::error(
                list_path.clone(),
                format!(
                    "invalid `{label}` for `key` {key}: may not have more than \
                     {MAX_SERVICE_ACCOUNTS} values, found {}",
                    list.len()
                ),
            ));
        }
        for (j, value) in list.iter().enumerate() {
            if let Err(e) = check_value(check, value, field) {
                issues.push(Issue::error(
                    list_path.index(j),
                    format!("invalid `{label}` for `key` {key}: {e}"),
                ));
            }
        }
    }
}

/// authorization.md §8.2 rule 9: per-key value checks (after the empty check every key has).
fn check_value(check: ValueCheck, value: &str, field: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("empty value not allowed, found in `{field}`"));
    }
    match check {
        ValueCheck::Any => Ok(()),
        ValueCheck::Ip => check_ip_or_cidr(value),
        ValueCheck::Port => check_port(value).map(|_| ()),
        ValueCheck::ServiceAccount => check_service_account(value),
        ValueCheck::Wildcard => check_wildcard(value),
    }
}

/// The key's value check, or why the key is refused (authorization.md §5 table, in the order of
/// istiod's `ValidateAttribute`).
fn classify(key: &str) -> Result<ValueCheck, String> {
    // `request.headers[<name>]`, `request.auth.claims[a][b]`, `experimental.envoy.filters.f[k]`:
    // istiod only checks the prefix and the `name[x]` shape.
    if key.starts_with("request.headers")
        || key.starts_with("request.auth.claims")
        || key.starts_with("experimental.envoy.filters.")
    {
        return check_map_key(key).map(|()| ValueCheck::Any);
    }
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Ok(ValueCheck::Ip),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(ValueCheck::Any),
        "source.serviceAccount" => Ok(ValueCheck::ServiceAccount),
        "source.trustDomain" => Ok(ValueCheck::Wildcard),
        "destination.port" => Ok(ValueCheck::Port),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace: place the policy in the \
             destination's namespace"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ if key.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector: use `spec.selector`"
        )),
        _ => Err(format!(
            "unknown attribute: {key}; expected one of {KNOWN_KEYS}"
        )),
    }
}

/// Istio's `validateMapKey`: ends with `]`, has a `[` after the first character, and at least
/// one character between the first `[` and the final `]`.
fn check_map_key(key: &str) -> Result<(), String> {
    let ok = match key.find('[') {
        Some(open) => key.ends_with(']') && open > 0 && open + 2 < key.len(),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad key `{key}`: should have format a[b]"))
    }
}
