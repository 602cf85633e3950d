//! MW0013 OnlyAllowNothing: a workload whose only ALLOW policies have no rules.
//!
//! authorization.md §2.1: "`spec: {}` (action defaults to ALLOW, no rules) | policy exists,
//! matches nothing ⇒ **deny all** unless another ALLOW matches", and §3.1: "There is no
//! override/precedence by scope … `allow-nothing` contributes none ⇒ effective = exactly what
//! `P` allows. Other workloads of the namespace stay deny‑all. This is why … tutorials mistake
//! it for an override." So a workload that no ALLOW rule selects refuses every request. That is
//! the point of deny-all for a workload nobody calls, and a surprise for one that serves, so the
//! finding is informational and names the workloads.

use meshward_api::FieldPath;
use meshward_api::resources::security::Action;

use super::{Context, Finding, Level, MW0013, names};

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let (compiled, targets) = cx.authz_targets(policy);
        if compiled.action != Action::Allow
            || compiled.dry_run
            || policy.spec.rules.iter().flatten().any(Option::is_some)
        {
            continue;
        }
        let denied: Vec<_> = targets
            .into_iter()
            .filter(|w| {
                cx.mesh
                    .authz
                    .select(w.selector_view())
                    .into_iter()
                    .filter(|p| p.action == Action::Allow && !p.dry_run)
                    .all(|p| p.source.spec.rules.iter().flatten().all(Option::is_none))
            })
            .collect();
        if denied.is_empty() {
            continue;
        }
        let who = names(&denied);
        let mut finding = cx.finding(
            MW0013,
            Level::Info,
            loaded,
            FieldPath::root().key("spec"),
            format!(
                "every request to {who} is denied: this allow-nothing policy (ALLOW, no rules) applies there and no ALLOW policy that applies has a rule; a policy of narrower scope would add rules, not override this one"
            ),
            format!(
                "To let clients reach {who}, add an ALLOW policy that selects it with a rule naming them (it adds to allow-nothing); if nothing should reach it, this is deny-all working as meant"
            ),
        );
        finding.workloads = denied.iter().map(|w| w.key()).collect();
        out.push(finding);
    }
}
