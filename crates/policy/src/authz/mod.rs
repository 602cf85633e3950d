//! AuthorizationPolicy: selection per workload (authorization.md §2), compilation per chain
//! (§6), and evaluation in Envoy's order CUSTOM → AUDIT → DENY → ALLOW (§3).

pub mod compile;
pub mod identity;
mod index;
pub mod matchers;
pub mod select;
mod trace;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use meshward_api::resources::security::Action;

pub use compile::{CompiledPolicy, CompiledRule, PolicyRef, compile_policy};
pub use select::{AuthzIndex, WorkloadSelectorView};
pub use trace::{ClauseTrace, PolicyTrace, RuleOutcome, RuleTrace};

use crate::attributes::Attributes;
use index::RuleIndex;

/// One rule of one policy: what a decision names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleId {
    /// The policy.
    pub policy: PolicyRef,
    /// The rule's index in `spec.rules`.
    pub rule: usize,
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rule {}", self.policy, self.rule)
    }
}

/// Why authorization allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzReason {
    /// A DENY rule matched.
    DeniedBy(RuleId),
    /// A CUSTOM rule matched; its ext_authz provider is not available to meshward, so the
    /// request is denied (fail closed, as istiod does for an unknown provider, §3).
    CustomDenied {
        /// The matching rule.
        rule: RuleId,
        /// `spec.provider.name`.
        provider: String,
    },
    /// An ALLOW rule matched.
    AllowedBy(RuleId),
    /// No enforced ALLOW policy applies: allowed by default.
    NoAllowPolicies,
    /// ALLOW policies apply and none matched.
    NoAllowMatched,
}

/// The result of one dry-run engine (Envoy shadow rules, §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowResult {
    /// `Allow` for the dry-run ALLOW engine, `Deny` for the dry-run DENY engine.
    pub action: Action,
    /// What the engine would have decided.
    pub allowed: bool,
    /// The matching rule (`shadow_effective_policy_id`).
    pub effective: Option<RuleId>,
}

/// An authorization decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Allowed?
    pub allowed: bool,
    /// Why.
    pub reason: AuthzReason,
    /// The AUDIT rule that matched, if any (`access_log_hint`).
    pub audited: Option<RuleId>,
    /// Results of dry-run policies; they never change `allowed`.
    pub shadow: Vec<ShadowResult>,
}

impl AuthzDecision {
    /// The rule a log line names: the AUDIT rule of an allowed, audited request; else the ALLOW
    /// or DENY (or CUSTOM) rule that decided; none when no ALLOW policy applies or none matched.
    pub fn deciding_rule(&self) -> Option<&RuleId> {
        match (&self.reason, &self.audited) {
            (_, Some(audit)) if self.allowed => Some(audit),
            (AuthzReason::AllowedBy(r) | AuthzReason::DeniedBy(r), _)
            | (AuthzReason::CustomDenied { rule: r, .. }, _) => Some(r),
            (AuthzReason::NoAllowPolicies | AuthzReason::NoAllowMatched, _) => None,
        }
    }

    /// Envoy's response code details: `rbac_access_denied_matched_policy[<id>]` (§9).
    pub fn response_code_details(&self) -> Option<String> {
        match &self.reason {
            AuthzReason::DeniedBy(r) | AuthzReason::CustomDenied { rule: r, .. } => Some(format!(
                "rbac_access_denied_matched_policy[{}]",
                r.policy.envoy_rule_id(r.rule)
            )),
            AuthzReason::NoAllowMatched => {
                Some("rbac_access_denied_matched_policy[none]".to_owned())
            }
            AuthzReason::AllowedBy(_) | AuthzReason::NoAllowPolicies => None,
        }
    }
}

/// A rule on a chain, by position, sorted by Envoy policy name.
#[derive(Debug, Clone)]
struct RuleRef {
    policy: Arc<CompiledPolicy>,
    /// Position in the chain's `rules`.
    position: usize,
}

impl RuleRef {
    fn rule(&self, is_http: bool) -> Option<&CompiledRule> {
        self.policy.chain(is_http).rules.get(self.position)
    }

    fn id(&self, is_http: bool) -> Option<RuleId> {
        self.rule(is_http).map(|r| RuleId {
            policy: self.policy.id.clone(),
            rule: r.index,
        })
    }
}

/// The rules of one action on one chain, in Envoy's order.
#[derive(Debug, Clone, Default)]
struct ActionRules {
    rules: Vec<RuleRef>,
    /// Policies of this action, whether or not they kept rules on this chain (§3: "an ALLOW
    /// policy whose every rule was dropped … still exists").
    policies: usize,
    /// Which rules can match a request, by position in `rules`.
    index: RuleIndex,
}

impl ActionRules {
    fn build(policies: &[Arc<CompiledPolicy>], is_http: bool) -> Self {
        let mut rules: Vec<(String, RuleRef)> = Vec::new();
        for p in policies {
            for (position, rule) in p.chain(is_http).rules.iter().enumerate() {
                rules.push((
                    p.id.envoy_rule_id(rule.index),
                    RuleRef {
                        policy: p.clone(),
                        position,
                    },
                ));
            }
        }
        // Envoy's RBAC engine keeps policies in a std::map by name and reports the first match.
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        let rules: Vec<RuleRef> = rules.into_iter().map(|(_, r)| r).collect();
        let index = RuleIndex::build(
            rules
                .iter()
                .map(|r| r.rule(is_http).map(|rule| (rule, &*r.policy.source))),
        );
        ActionRules {
            rules,
            policies: policies.len(),
            index,
        }
    }

    /// The first rule in Envoy order that matches. The index only narrows the rules looked at;
    /// each candidate is decided by `CompiledRule::matches`, as a scan of every rule would.
    fn first_match(&self, a: &Attributes<'_>, is_http: bool) -> Option<RuleId> {
        let position = self.index.first_match(a, |position| {
            self.rules
                .get(position)
                .and_then(|r| r.rule(is_http))
                .is_some_and(|rule| rule.matches(a))
        })?;
        self.rules.get(position).and_then(|r| r.id(is_http))
    }
}

/// The policies of one chain, split by action.
#[derive(Debug, Clone, Default)]
struct ChainPolicies {
    custom: ActionRules,
    audit: ActionRules,
    deny: ActionRules,
    allow: ActionRules,
    dry_deny: ActionRules,
    dry_allow: ActionRules,
}

/// Every AuthorizationPolicy that applies to one workload, ready to evaluate.
#[derive(Debug, Clone, Default)]
pub struct WorkloadAuthz {
    policies: Vec<Arc<CompiledPolicy>>,
    http: ChainPolicies,
    tcp: ChainPolicies,
}

impl WorkloadAuthz {
    /// Builds the evaluation lists from the selected policies.
    pub fn new(policies: Vec<Arc<CompiledPolicy>>) -> Self {
        let pick = |action: Action, dry: bool| -> Vec<Arc<CompiledPolicy>> {
            policies
                .iter()
                .filter(|p| p.action == action && p.dry_run == dry)
                .cloned()
                .collect()
        };
        let chain = |is_http: bool| ChainPolicies {
            custom: ActionRules::build(&pick(Action::Custom, false), is_http),
            audit: ActionRules::build(&pick(Action::Audit, false), is_http),
            deny: ActionRules::build(&pick(Action::Deny, false), is_http),
            allow: ActionRules::build(&pick(Action::Allow, false), is_http),
            dry_deny: ActionRules::build(&pick(Action::Deny, true), is_http),
            dry_allow: ActionRules::build(&pick(Action::Allow, true), is_http),
        };
        WorkloadAuthz {
            http: chain(true),
            tcp: chain(false),
            policies,
        }
    }

    /// The selected policies.
    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// authorization.md §3:
    /// ```text
    /// for each CUSTOM provider with a policy in C that matches: call ext_authz; if it denies -> DENY
    /// if any AUDIT policy in U matches: mark request "audit"
    /// if any policy in D matches                     -> DENY
    /// if A is empty                                   -> ALLOW
    /// if any policy in A matches                      -> ALLOW
    /// -> DENY
    /// ```
    pub fn evaluate(&self, a: &Attributes<'_>) -> AuthzDecision {
        let is_http = a.http.is_some();
        let chain = if is_http { &self.http } else { &self.tcp };
        let shadow = self.shadow(chain, a, is_http);
        let audited = chain.audit.first_match(a, is_http);
        let decision = |allowed, reason| AuthzDecision {
            allowed,
            reason,
            audited: audited.clone(),
            shadow: shadow.clone(),
        };
        if let Some(rule) = chain.custom.first_match(a, is_http) {
            let provider = self
                .policies
                .iter()
                .find(|p| p.id == rule.policy)
                .and_then(|p| p.provider.clone())
                .unwrap_or_default();
            return decision(false, AuthzReason::CustomDenied { rule, provider });
        }
        if let Some(rule) = chain.deny.first_match(a, is_http) {
            return decision(false, AuthzReason::DeniedBy(rule));
        }
        if chain.allow.policies == 0 {
            return decision(true, AuthzReason::NoAllowPolicies);
        }
        match chain.allow.first_match(a, is_http) {
            Some(rule) => decision(true, AuthzReason::AllowedBy(rule)),
            None => decision(false, AuthzReason::NoAllowMatched),
        }
    }

    /// Dry-run ALLOW and DENY are shadowed separately (§9). "If every ALLOW policy is dry-run,
    /// the workload has no enforced ALLOW ⇒ allow."
    fn shadow(
        &self,
        chain: &ChainPolicies,
        a: &Attributes<'_>,
        is_http: bool,
    ) -> Vec<ShadowResult> {
        let mut out = Vec::new();
        if chain.dry_deny.policies > 0 {
            let m = chain.dry_deny.first_match(a, is_http);
            out.push(ShadowResult {
                action: Action::Deny,
                allowed: m.is_none(),
                effective: m,
            });
        }
        if chain.dry_allow.policies > 0 {
            let m = chain.dry_allow.first_match(a, is_http);
            out.push(ShadowResult {
                action: Action::Allow,
                allowed: m.is_some(),
                effective: m,
            });
        }
        out
    }
}
