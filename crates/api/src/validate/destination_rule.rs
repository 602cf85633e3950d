//! Validation of DestinationRule: the CRD schema and istiod's `ValidateDestinationRule`, with the
//! client TLS rules of `agent.ValidateTLS` (authentication.md §3.1).

use std::collections::BTreeSet;

use crate::diag::Issue;
use crate::resources::DestinationRule;
use crate::resources::networking::{ClientTlsSettings, Subset, TlsMode, TrafficPolicy};
use crate::source::FieldPath;

use super::common::{self, check_label_key, check_label_value, is_dns1123_label, is_set};

#[cfg(test)]
mod tests;

/// CRD `maxItems` of `portLevelSettings`.
const MAX_PORT_LEVEL_SETTINGS: usize = 4096;
/// The `credentialName` prefix naming a ConfigMap (`configmap://namespace/name`).
const CONFIGMAP_PREFIX: &str = "configmap://";

pub(crate) fn validate_destination_rule(rule: &DestinationRule) -> Vec<Issue> {
    let mut issues = Vec::new();
    let spec = &rule.spec;
    let spec_path = FieldPath::root().key("spec");
    let namespace = rule.metadata.namespace();
    common::validate_istio_annotations(&rule.metadata, false, &mut issues);

    // CRD: `host` required; webhook `ValidateWildcardDomain`.
    if spec.host.is_empty() {
        issues.push(Issue::error(
            spec_path.key("host"),
            "`host` is required: empty domain name not allowed",
        ));
    } else if let Err(e) = common::check_wildcard_domain(&spec.host) {
        issues.push(Issue::error(spec_path.key("host"), e));
    }
    if let Some(policy) = &spec.traffic_policy {
        validate_traffic_policy(
            policy,
            &spec_path.key("trafficPolicy"),
            namespace,
            &mut issues,
        );
    }
    validate_subsets(
        &spec.subsets,
        &spec_path.key("subsets"),
        namespace,
        &mut issues,
    );
    validate_export_to(
        &spec.export_to,
        &spec_path.key("exportTo"),
        namespace,
        spec.workload_selector.is_some(),
        &mut issues,
    );
    common::validate_workload_selector(
        spec.workload_selector.as_ref(),
        &spec_path.key("workloadSelector"),
        &mut issues,
    );
    issues
}

/// istiod's `validateTrafficPolicy`, restricted to the fields that have rules meshward checks.
fn validate_traffic_policy(
    policy: &TrafficPolicy,
    path: &FieldPath,
    namespace: &str,
    issues: &mut Vec<Issue>,
) {
    if policy.tls.is_none()
        && policy.port_level_settings.is_empty()
        && policy.load_balancer.is_none()
        && policy.connection_pool.is_none()
        && policy.outlier_detection.is_none()
        && policy.tunnel.is_none()
        && policy.proxy_protocol.is_none()
        && policy.retry_budget.is_none()
    {
        issues.push(Issue::error(
            path.clone(),
            "traffic policy must have at least one field",
        ));
        return;
    }
    if policy.tunnel.is_some() && policy.proxy_protocol.is_some() {
        issues.push(Issue::error(
            path.key("proxyProtocol"),
            "tunnel and proxyProtocol must not be set together",
        ));
    }
    if let Some(tls) = &policy.tls {
        validate_tls(tls, &path.key("tls"), namespace, issues);
    }
    let ports_path = path.key("portLevelSettings");
    if policy.port_level_settings.len() > MAX_PORT_LEVEL_SETTINGS {
        issues.push(Issue::error(
            ports_path.clone(),
            format!(
                "too many portLevelSettings: {}, must have at most {MAX_PORT_LEVEL_SETTINGS}",
                policy.port_level_settings.len()
            ),
        ));
    }
    for (i, port_policy) in policy.port_level_settings.iter().enumerate() {
        let at = ports_path.index(i);
        if port_policy.port.is_none() {
            issues.push(Issue::error(
                at.key("port"),
                "portTrafficPolicy must have valid port",
            ));
        }
        if port_policy.tls.is_none()
            && port_policy.load_balancer.is_none()
            && port_policy.connection_pool.is_none()
            && port_policy.outlier_detection.is_none()
        {
            issues.push(Issue::error(
                at,
                "port traffic policy must have at least one field",
            ));
        } else if let Some(tls) = &port_policy.tls {
            validate_tls(tls, &at.key("tls"), namespace, issues);
        }
    }
}

/// authentication.md §3.1 webhook rules (`agent/validation.go` `ValidateTLS`).
fn validate_tls(
    tls: &ClientTlsSettings,
    path: &FieldPath,
    namespace: &str,
    issues: &mut Vec<Issue>,
) {
    let mode = tls.mode;
    if let Some(credential) = tls.credential_name.as_deref()
        && let Some(rest) = credential.strip_prefix(CONFIGMAP_PREFIX)
    {
        // A ConfigMap reference names its namespace, which must be the DestinationRule's.
        let mut parts = rest.split('/');
        let problem = match (parts.next(), parts.next()) {
            (_, None) => Some(format!(
                "invalid resource name `{credential}`, expected namespace and name"
            )),
            (Some(""), Some(_)) => Some(format!(
                "invalid resource name `{credential}`, expected namespace"
            )),
            (_, Some("")) => Some(format!(
                "invalid resource name `{credential}`, expected name"
            )),
            (Some(ns), Some(_)) if ns != namespace => Some(format!(
                "namespace must match the configuration namespace `{namespace}`"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            issues.push(Issue::error(
                path.key("credentialName"),
                format!("invalid configmap:// credentialName: {problem}"),
            ));
        }
    }

    let has_sans = tls
        .subject_alt_names
        .as_ref()
        .is_some_and(|s| !s.is_empty());
    if tls.insecure_skip_verify == Some(true) {
        // authentication.md §3.1: "`insecureSkipVerify:true` forbids `caCertificates`/
        // `subjectAltNames` (and credentialName for SIMPLE)".
        let forbidden: &[(&str, bool)] = match mode {
            TlsMode::Simple => &[
                ("caCertificates", is_set(&tls.ca_certificates)),
                ("credentialName", is_set(&tls.credential_name)),
                ("subjectAltNames", has_sans),
            ],
            TlsMode::Mutual => &[
                ("caCertificates", is_set(&tls.ca_certificates)),
                ("subjectAltNames", has_sans),
            ],
            TlsMode::Disable | TlsMode::IstioMutual => &[],
        };
        for (field, set) in forbidden {
            if *set {
                issues.push(Issue::error(
                    path.key(field),
                    format!("cannot specify `{field}` when insecureSkipVerify is set true"),
                ));
            }
        }
    }

    if matches!(mode, TlsMode::Simple | TlsMode::Mutual) && is_set(&tls.credential_name) {
        // authentication.md §3.1: "with credentialName, file fields must be empty".
        for (field, value) in [
            ("clientCertificate", &tls.client_certificate),
            ("privateKey", &tls.private_key),
            ("caCertificates", &tls.ca_certificates),
            ("caCrl", &tls.ca_crl),
        ] {
            if is_set(value) {
                issues.push(Issue::error(
                    path.key(field),
                    format!(
                        "cannot specify client certificates or CA certificate or CA CRL if \
                         credentialName is set: remove `{field}`"
                    ),
                ));
            }
        }
        return;
    }
    if mode == TlsMode::Mutual {
        // authentication.md §3.1: "MUTUAL without credentialName needs `clientCertificate` and
        // `privateKey`".
        if !is_set(&tls.client_certificate) {
            issues.push(Issue::error(
                path.key("clientCertificate"),
                "client certificate required for mutual tls: set `clientCertificate` or \
                 `credentialName`",
            ));
        }
        if !is_set(&tls.private_key) {
            issues.push(Issue::error(
                path.key("privateKey"),
                "private key required for mutual tls: set `privateKey` or `credentialName`",
            ));
        }
    }
}

/// istiod's subset rules: a unique RFC 1123 label name, valid labels, a valid traffic policy.
fn validate_subsets(
    subsets: &[Subset],
    path: &FieldPath,
    namespace: &str,
    issues: &mut Vec<Issue>,
) {
    let mut names = BTreeSet::new();
    for (i, subset) in subsets.iter().enumerate() {
        let at = path.index(i);
        let name = subset.name.as_str();
        if !names.insert(name) {
            issues.push(Issue::error(
                at.key("name"),
                format!("duplicate subset names: `{name}`"),
            ));
        }
        if name.is_empty() {
            issues.push(Issue::error(at.key("name"), "subset name cannot be empty"));
        } else if !is_dns1123_label(name) {
            issues.push(Issue::error(
                at.key("name"),
                format!("subset name is invalid: `{name}` is not an RFC 1123 label"),
            ));
        }
        for (key, value) in &subset.labels {
            let label_at = at.key("labels").key(key);
            if let Err(e) = check_label_key(key) {
                issues.push(Issue::error(label_at.clone(), e));
            }
            if let Err(e) = check_label_value(value) {
                issues.push(Issue::error(label_at, e));
            }
        }
        if let Some(policy) = &subset.traffic_policy {
            validate_traffic_policy(policy, &at.key("trafficPolicy"), namespace, issues);
        }
    }
}

/// istiod's `validateExportTo` for a DestinationRule: `.`, `*` or a namespace name, no
/// duplicates, `*` alone, and only the own namespace with a `workloadSelector`.
fn validate_export_to(
    export_to: &[String],
    path: &FieldPath,
    namespace: &str,
    with_selector: bool,
    issues: &mut Vec<Issue>,
) {
    if export_to.is_empty() {
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let at = path.index(i);
        // `.` stands for the own namespace, so `.` and the namespace's name are duplicates.
        let key = if entry == "." {
            namespace
        } else {
            entry.as_str()
        };
        if seen.contains(key) {
            let message = if key != entry {
                format!("duplicate entries in exportTo: . and current namespace `{namespace}`")
            } else {
                format!("duplicate entries in exportTo for entry `{entry}`")
            };
            issues.push(Issue::error(at, message));
            continue;
        }
        let valid = match key {
            "*" => Ok(()),
            "~" => {
                Err("exportTo ~ (none) is not allowed for Istio configuration objects".to_owned())
            }
            _ if entry == "." || is_dns1123_label(key) => Ok(()),
            _ => Err(format!(
                "only .,*, or a valid DNS 1123 label is allowed as exportTo entry, found `{entry}`"
            )),
        };
        match valid {
            Ok(()) => {
                seen.insert(key);
            }
            Err(message) => issues.push(Issue::error(at, message)),
        }
    }
    if with_selector && !seen.is_empty() {
        if !seen.contains(namespace) {
            issues.push(Issue::error(
                path.clone(),
                "destination rule with workload selector cannot have exportTo beyond current \
                 namespace",
            ));
        } else if seen.len() > 1 {
            issues.push(Issue::error(
                path.clone(),
                "destination rule with workload selector cannot have multiple entries in exportTo",
            ));
        }
    }
    if seen.contains("*") && export_to.len() > 1 {
        issues.push(Issue::error(
            path.clone(),
            "cannot have both public (*) and non-public exportTo values for a resource",
        ));
    }
}
