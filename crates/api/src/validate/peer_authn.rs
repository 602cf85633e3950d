//! Validation of PeerAuthentication: the CRD schema and istiod's `ValidatePeerAuthentication`
//! (authentication.md §2.1).

use crate::diag::Issue;
use crate::resources::PeerAuthentication;
use crate::source::FieldPath;

use super::common;

#[cfg(test)]
mod tests;

pub(crate) fn validate_peer_authentication(policy: &PeerAuthentication) -> Vec<Issue> {
    let mut issues = Vec::new();
    let spec = &policy.spec;
    let spec_path = FieldPath::root().key("spec");
    common::validate_istio_annotations(&policy.metadata, false, &mut issues);
    // authentication.md §2.1: selector keys non-empty, no `*` in keys or values, value ≤ 63
    // characters, ≤ 4096 labels.
    common::validate_workload_selector(
        spec.selector.as_ref(),
        &spec_path.key("selector"),
        &mut issues,
    );

    let Some(ports) = &spec.port_level_mtls else {
        return issues;
    };
    let ports_path = spec_path.key("portLevelMtls");
    // authentication.md §2.1: `portLevelMtls` requires a non-empty `selector.matchLabels`
    // ("portLevelMtls requires selector" / "mesh/namespace peer authentication cannot have port
    // level mTLS"). The CRD rule counts a present map, even empty.
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        issues.push(Issue::error(
            ports_path.clone(),
            "mesh/namespace peer authentication cannot have port level mTLS: portLevelMtls \
             requires a selector with matchLabels",
        ));
    }
    // authentication.md §2.1: `portLevelMtls`, if present, needs ≥ 1 entry.
    if ports.is_empty() {
        issues.push(Issue::error(
            ports_path.clone(),
            "port level mTLS, if defined, must have at least one element",
        ));
    }
    for port in ports.keys() {
        // authentication.md §2.1: port key 1..65535. Keys are decimal (the proto map is keyed by
        // uint32, the CRD rule converts with `int(key)`).
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        let in_range = digits && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !in_range {
            issues.push(Issue::error(
                ports_path.key(port),
                format!("port must be in range 1..65535, found `{port}`"),
            ));
        }
    }
    issues
}
