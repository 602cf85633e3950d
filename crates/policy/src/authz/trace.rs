//! Explaining a decision: for every applicable policy and rule, whether it matched and, if not,
//! which part failed. Slower than [`super::WorkloadAuthz::evaluate`]; used by `meshward check`.

use meshward_api::resources::security::Action;

use super::compile::{Clause, CompiledRule, FieldMatcher};
use super::{PolicyRef, WorkloadAuthz};
use crate::attributes::Attributes;

/// How one rule fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    /// Every part matched.
    Matched,
    /// The first part that did not match.
    NotMatched(String),
    /// The rule does not exist on this chain.
    Skipped(String),
}

/// One rule in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    /// Index in `spec.rules`.
    pub index: usize,
    /// Outcome.
    pub outcome: RuleOutcome,
}

/// One source/operation in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClauseTrace {
    /// `from[0]`, `to[1]`…
    pub label: String,
    /// The field that failed, if any.
    pub failed: Option<String>,
}

/// One applicable policy in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrace {
    /// `ns/name`.
    pub policy: PolicyRef,
    /// Its action.
    pub action: Action,
    /// Dry-run?
    pub dry_run: bool,
    /// Rules, in order.
    pub rules: Vec<RuleTrace>,
    /// Values dropped on this chain, which widen DENY rules (§6).
    pub notes: Vec<String>,
}

impl WorkloadAuthz {
    /// Every applicable policy, rule by rule, in evaluation order (CUSTOM, AUDIT, DENY, ALLOW).
    pub fn explain(&self, a: &Attributes<'_>) -> Vec<PolicyTrace> {
        let is_http = a.http.is_some();
        let order = [Action::Custom, Action::Audit, Action::Deny, Action::Allow];
        let mut out = Vec::new();
        for action in order {
            for p in self.policies.iter().filter(|p| p.action == action) {
                let chain = p.chain(is_http);
                let mut rules: Vec<RuleTrace> = chain
                    .rules
                    .iter()
                    .map(|r| RuleTrace {
                        index: r.index,
                        outcome: explain_rule(r, a),
                    })
                    .collect();
                rules.extend(chain.skipped.iter().map(|s| RuleTrace {
                    index: s.index,
                    outcome: RuleOutcome::Skipped(s.reason.clone()),
                }));
                rules.sort_by_key(|r| r.index);
                out.push(PolicyTrace {
                    policy: p.id.clone(),
                    action,
                    dry_run: p.dry_run,
                    rules,
                    notes: chain.narrowed.clone(),
                });
            }
        }
        out
    }
}

fn explain_rule(rule: &CompiledRule, a: &Attributes<'_>) -> RuleOutcome {
    if !rule.from.is_empty() && !rule.from.iter().any(|c| c.matches(a)) {
        return RuleOutcome::NotMatched(describe_clauses("from", &rule.from, a));
    }
    if !rule.to.is_empty() && !rule.to.iter().any(|c| c.matches(a)) {
        return RuleOutcome::NotMatched(describe_clauses("to", &rule.to, a));
    }
    if let Some(c) = rule.when.iter().find(|c| !c.matches(a)) {
        return RuleOutcome::NotMatched(describe_field(c, a));
    }
    RuleOutcome::Matched
}

fn describe_clauses(kind: &str, clauses: &[Clause], a: &Attributes<'_>) -> String {
    let parts: Vec<String> = clauses
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.fields
                .iter()
                .find(|f| !f.matches(a))
                .map(|f| format!("{kind}[{i}]: {}", describe_field(f, a)))
        })
        .collect();
    parts.join("; ")
}

fn describe_field(f: &FieldMatcher, a: &Attributes<'_>) -> String {
    let positive_ok = f.values.is_empty() || f.values.iter().any(|m| m.matches(a));
    if !positive_ok {
        let missing = match f.values.first() {
            Some(m) if matcher_needs_peer(m) && a.peer.is_none() => {
                " (no peer identity: the connection is plaintext)"
            }
            Some(m) if matcher_needs_jwt(m) && a.http.as_ref().is_none_or(|h| h.jwt.is_none()) => {
                " (no validated JWT on the request)"
            }
            _ => "",
        };
        format!("{} did not match{missing}", f.label)
    } else {
        format!("not{} matched", capitalize(&f.label))
    }
}

fn capitalize(label: &str) -> String {
    if label.starts_with("when[") {
        return format!(" {label} (notValues)");
    }
    let mut chars = label.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn matcher_needs_peer(m: &super::matchers::Matcher) -> bool {
    use super::matchers::Matcher as M;
    matches!(
        m,
        M::Principal(_) | M::Namespace(_) | M::ServiceAccount(_) | M::TrustDomain(_)
    )
}

fn matcher_needs_jwt(m: &super::matchers::Matcher) -> bool {
    use super::matchers::Matcher as M;
    matches!(
        m,
        M::RequestPrincipal(_) | M::Audience(_) | M::Presenter(_) | M::Claim(..)
    )
}
