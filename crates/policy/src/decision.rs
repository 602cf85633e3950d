//! Plain-words reasons for decisions.

use crate::authz::{AuthzDecision, AuthzReason};

/// One sentence saying why authorization decided as it did.
pub fn describe(decision: &AuthzDecision) -> String {
    match &decision.reason {
        AuthzReason::DeniedBy(r) => format!("denied by DENY policy {} rule {}", r.policy, r.rule),
        AuthzReason::CustomDenied { rule, provider } => format!(
            "denied: CUSTOM policy {} rule {} matched and its ext_authz provider `{provider}` is not available (fail closed)",
            rule.policy, rule.rule
        ),
        AuthzReason::AllowedBy(r) => {
            format!("allowed by ALLOW policy {} rule {}", r.policy, r.rule)
        }
        AuthzReason::NoAllowPolicies => {
            "allowed: no ALLOW policy applies to the workload".to_owned()
        }
        AuthzReason::NoAllowMatched => {
            "denied: ALLOW policies apply to the workload and none matched".to_owned()
        }
    }
}
