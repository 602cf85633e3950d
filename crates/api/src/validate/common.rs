//! Rules shared by several kinds: Istio's metadata annotations, workload selectors, policy target
//! references, and the value parsers (IP/CIDR, ports, durations, DNS labels, Kubernetes labels)
//! whose Go behaviour Istio's webhook inherits.

use std::net::{IpAddr, Ipv6Addr};

use crate::diag::Issue;
use crate::resources::meta::{ObjectMeta, PolicyTargetReference, WorkloadSelector};
use crate::source::FieldPath;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

/// The dry-run annotation (authorization.md §8.2 rule 1).
pub(super) const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Annotations istiod's webhook refuses on every kind (`validateMetadata`).
const FORBIDDEN_ANNOTATIONS: [(&str, &str); 3] = [
    (
        "internal.istio.io/webhook-always-reject",
        "annotation found, rejecting",
    ),
    (
        "internal.istio.io/parent-namespace",
        "annotation found, this may not be set by users",
    ),
    (
        "internal.istio.io/parents",
        "annotation found, this may not be set by users",
    ),
];

/// The kinds a `targetRef` may name, as (kind, canonical group) (`allowedTargetRefs`).
const ALLOWED_TARGET_KINDS: [(&str, &str); 4] = [
    ("Service", "core"),
    ("ServiceEntry", "networking.istio.io"),
    ("Gateway", "gateway.networking.k8s.io"),
    ("GatewayClass", "gateway.networking.k8s.io"),
];

/// The path of `metadata.annotations[key]`.
pub(super) fn annotation_path(key: &str) -> FieldPath {
    FieldPath::root()
        .key("metadata")
        .key("annotations")
        .key(key)
}

/// Annotation rules every Istio kind shares. `dry_run_allowed` is true for AuthorizationPolicy,
/// which checks the value itself.
pub(super) fn validate_istio_annotations(
    meta: &ObjectMeta,
    dry_run_allowed: bool,
    issues: &mut Vec<Issue>,
) {
    // authorization.md §8.2 rule 1: `istio.io/dry-run` only on AuthorizationPolicy.
    if !dry_run_allowed && meta.annotations.contains_key(DRY_RUN_ANNOTATION) {
        issues.push(Issue::error(
            annotation_path(DRY_RUN_ANNOTATION),
            format!(
                "unsupported annotation {DRY_RUN_ANNOTATION}, please remove the annotation: \
                 only AuthorizationPolicy supports dry-run"
            ),
        ));
    }
    // istiod's validateMetadata: internal annotations are refused on user resources.
    for (key, why) in FORBIDDEN_ANNOTATIONS {
        if meta.annotations.contains_key(key) {
            issues.push(Issue::error(annotation_path(key), format!("`{key}` {why}")));
        }
    }
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `selector` / `workloadSelector` rules of the CRD schema and the webhook.
pub(super) fn validate_workload_selector(
    selector: Option<&WorkloadSelector>,
    path: &FieldPath,
    issues: &mut Vec<Issue>,
) {
    let Some(selector) = selector else {
        return;
    };
    let labels_path = path.key("matchLabels");
    let labels = selector.match_labels.as_ref();
    // authorization.md §8.2 rule 2: a selector without labels is a *warning*.
    if labels.is_none_or(|l| l.is_empty()) {
        let at = if labels.is_some() {
            labels_path
        } else {
            path.clone()
        };
        issues.push(Issue::warning(
            at,
            "workload selector specified without labels: it selects every workload in its scope",
        ));
        return;
    }
    let Some(labels) = labels else {
        return;
    };
    // authorization.md §8.1: `matchLabels` maxProperties 4096.
    if labels.len() > 4096 {
        issues.push(Issue::error(
            labels_path.clone(),
            format!("too many labels: {}, must have at most 4096", labels.len()),
        ));
    }
    for (key, value) in labels {
        let at = labels_path.key(key);
        // authorization.md §8.1/§8.2 rule 2: selector keys non-empty, no `*` in keys or values,
        // values ≤ 63 characters.
        if key.is_empty() {
            issues.push(Issue::error(
                at.clone(),
                "empty key is not supported in selector: label keys must not be empty",
            ));
        }
        if key.contains('*') {
            issues.push(Issue::error(
                at.clone(),
                format!("wildcard not allowed in label key match: `{key}`"),
            ));
        }
        if value.contains('*') {
            issues.push(Issue::error(
                at.clone(),
                format!("wildcard not allowed in label value match: `{key}: {value}`"),
            ));
        }
        if value.len() > 63 {
            issues.push(Issue::error(
                at,
                format!(
                    "label value for `{key}` is {} characters long: must be no more than 63",
                    value.len()
                ),
            ));
        }
    }
}

/// Only one of `selector`, `targetRef`, `targetRefs` (CRD CEL counts a field as set when present,
/// even empty). The error is reported at the second field set.
pub(super) fn validate_one_of_selector(
    spec_path: &FieldPath,
    has_selector: bool,
    has_target_ref: bool,
    has_target_refs: bool,
    issues: &mut Vec<Issue>,
) {
    let set: Vec<&str> = [
        (has_selector, "selector"),
        (has_target_ref, "targetRef"),
        (has_target_refs, "targetRefs"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    // authorization.md §8.2 rule 2: only one of selector/targetRef/targetRefs.
    if let [first, second, ..] = set.as_slice() {
        issues.push(Issue::error(
            spec_path.key(second),
            format!(
                "only one of targetRefs or selector can be set: found `{first}` and `{second}`"
            ),
        ));
    }
}

/// `targetRefs`: at most 16 items, each a valid reference.
pub(super) fn validate_target_refs(
    refs: Option<&Vec<PolicyTargetReference>>,
    path: &FieldPath,
    issues: &mut Vec<Issue>,
) {
    let Some(refs) = refs else {
        return;
    };
    // authorization.md §8.1: `targetRefs` ≤ 16.
    if refs.len() > 16 {
        issues.push(Issue::error(
            path.clone(),
            format!("too many targetRefs: {}, must have at most 16", refs.len()),
        ));
    }
    for (i, r) in refs.iter().enumerate() {
        validate_target_ref(r, &path.index(i), issues);
    }
}

/// One `targetRef` (authorization.md §8.2 rule 3).
pub(super) fn validate_target_ref(
    target: &PolicyTargetReference,
    path: &FieldPath,
    issues: &mut Vec<Issue>,
) {
    let name = target.name.as_deref().unwrap_or_default();
    // authorization.md §8.2 rule 3: `name` required.
    if name.is_empty() {
        issues.push(Issue::error(path.key("name"), "targetRef name must be set"));
    } else if name.len() > 253 {
        issues.push(Issue::error(
            path.key("name"),
            format!(
                "targetRef name is {} characters long: must be no more than 253",
                name.len()
            ),
        ));
    }
    // authorization.md §8.2 rule 3: `namespace` must be empty.
    if target.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        issues.push(Issue::error(
            path.key("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        ));
    }
    // authorization.md §8.2 rule 3: kind ∈ {Service (core), ServiceEntry (networking.istio.io),
    // Gateway, GatewayClass (gateway.networking.k8s.io)}. An empty group means core.
    let kind = target.kind.as_deref().unwrap_or_default();
    let group = target.group.as_deref().unwrap_or_default();
    let canonical_group = if group.is_empty() { "core" } else { group };
    let allowed = ALLOWED_TARGET_KINDS
        .iter()
        .any(|(k, g)| *k == kind && *g == canonical_group);
    if !allowed {
        let kind_known = ALLOWED_TARGET_KINDS.iter().any(|(k, _)| *k == kind);
        let at = if kind_known {
            path.key("group")
        } else {
            path.key("kind")
        };
        let expected: Vec<String> = ALLOWED_TARGET_KINDS
            .iter()
            .map(|(k, g)| format!("{k} ({g})"))
            .collect();
        issues.push(Issue::error(
            at,
            format!(
                "targetRef must be to one of {} but was `{group}/{kind}`",
                expected.join(", ")
            ),
        ));
    }
}

/// Go's `netip.ParseAddr` (IPv6 zones allowed) or, with a `/`, `netip.ParsePrefix`. Istio's
/// `ValidateIPs` for `ipBlocks`, `source.ip` and friends.
pub(super) fn check_ip_or_cidr(value: &str) -> Result<(), String> {
    if let Some((addr, bits)) = value.rsplit_once('/') {
        let Ok(ip) = addr.parse::<IpAddr>() else {
            return Err(format!(
                "bad CIDR range `{value}`: `{addr}` is not an IP address"
            ));
        };
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        // Go accepts only a plain decimal prefix length: no sign, no leading zero.
        let plain = !bits.is_empty()
            && bits.bytes().all(|b| b.is_ascii_digit())
            && !(bits.len() > 1 && bits.starts_with('0'));
        match bits.parse::<u8>() {
            Ok(n) if plain && n <= max => Ok(()),
            _ => Err(format!(
                "bad CIDR range `{value}`: the prefix length must be a number from 0 to {max}"
            )),
        }
    } else if parse_go_addr(value) {
        Ok(())
    } else {
        Err(format!(
            "bad IP address `{value}`: expected an IP address or a CIDR range"
        ))
    }
}

fn parse_go_addr(value: &str) -> bool {
    match value.split_once('%') {
        // Go keeps a non-empty zone on IPv6 addresses (`fe80::1%eth0`).
        Some((addr, zone)) => !zone.is_empty() && addr.parse::<Ipv6Addr>().is_ok(),
        None => value.parse::<IpAddr>().is_ok(),
    }
}

/// A port written as a string (`ports`, `destination.port`): Go's `strconv.ParseUint(s, 10, 32)`
/// then ≤ 65535, so decimal digits only.
pub(super) fn check_port(value: &str) -> Result<u16, String> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u64>() {
        Ok(n) if digits => {
            u16::try_from(n).map_err(|_| format!("bad port `{value}`: must be at most 65535"))
        }
        _ => Err(format!(
            "bad port `{value}`: expected a decimal integer from 0 to 65535"
        )),
    }
}

/// A protobuf `Duration` in its JSON form (`5s`, `0.25s`), as istiod decodes it, in nanoseconds.
pub(super) fn parse_proto_duration(value: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "invalid duration `{value}`: expected seconds with an `s` suffix, such as `5s` or `0.5s`"
        )
    };
    let body = value.strip_suffix('s').ok_or_else(bad)?;
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    let (secs, frac) = body.split_once('.').unwrap_or((body, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty()
        || !all_digits(secs)
        || !all_digits(frac)
        || frac.len() > 9
        || (body.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let secs: i128 = secs.parse().map_err(|_| bad())?;
    // protobuf's Duration range: ±315,576,000,000 s.
    if secs > 315_576_000_000 {
        return Err(bad());
    }
    let mut nanos: i128 = 0;
    if !frac.is_empty() {
        let padded = format!("{frac:0<9}");
        nanos = padded.parse().map_err(|_| bad())?;
    }
    let total = secs * 1_000_000_000 + nanos;
    Ok(if negative { -total } else { total })
}

/// Istio's `ValidateDuration` for durations of at least a millisecond, to the millisecond.
pub(super) fn check_duration_ms(value: &str) -> Result<(), String> {
    let nanos = parse_proto_duration(value)?;
    if nanos < 1_000_000 {
        return Err(format!(
            "invalid duration `{value}`: duration must be greater than 1ms"
        ));
    }
    if nanos % 1_000_000 != 0 {
        return Err(format!(
            "invalid duration `{value}`: only durations to ms precision are supported"
        ));
    }
    Ok(())
}

/// RFC 1123 label as Istio checks it (`labels.IsDNS1123Label`; upper case accepted).
pub(super) fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    value.len() <= 63
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// `labels.IsWildcardDNS1123Label`: a label, `*`, or a label prefixed with `*` or `*-`.
fn is_wildcard_dns1123_label(value: &str) -> bool {
    if value.len() > 63 {
        return false;
    }
    if value == "*" {
        return true;
    }
    let rest = value
        .strip_prefix("*-")
        .or_else(|| value.strip_prefix('*'))
        .unwrap_or(value);
    is_dns1123_label(rest)
}

/// Istio's `ValidateWildcardDomain` (DestinationRule `host`).
pub(super) fn check_wildcard_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    if domain.len() > 255 {
        return Err(format!("domain name `{domain}` too long (max 255)"));
    }
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name `{domain}` invalid (label `{first}` invalid)"
        ));
    }
    let Some(rest) = rest else {
        return Ok(());
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let top = parts.last().copied().unwrap_or_default();
    // Go's strconv.Atoi: optional sign, decimal digits, fits in 64 bits.
    if top.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name `{domain}` invalid (top level domain `{top}` cannot be all-numeric)"
        ));
    }
    let count = parts.len();
    for (i, label) in parts.into_iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i + 1 == count && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name `{domain}` invalid (label `{label}` invalid)"
            ));
        }
    }
    Ok(())
}

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, the Kubernetes qualified name.
fn is_qualified_name(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Istio's `labels.Instance.Validate` for one key (subset labels).
pub(super) fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.split('.').all(is_dns1123_label));
    if !prefix_ok || !is_qualified_name(name) {
        return Err(format!("invalid tag key: `{key}`"));
    }
    if prefix.is_some_and(|p| p.len() > 253) {
        return Err(format!("invalid tag key: `{key}` (DNS prefix is too long)"));
    }
    if name.len() > 63 {
        return Err(format!("invalid tag key: `{key}` (name is too long)"));
    }
    Ok(())
}

/// Istio's `labels.Instance.Validate` for one value: empty or a qualified name.
pub(super) fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!("invalid tag value: `{value}`"))
    }
}

/// True when an optional string field holds something (Go's proto decoding makes `""` unset).
pub(super) fn is_set(field: &Option<String>) -> bool {
    field.as_deref().is_some_and(|s| !s.is_empty())
}
