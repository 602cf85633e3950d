//! What `meshward check` prints: the outcome of one connection as plain data (`-o json|yaml`)
//! and as text, with the `file:line` of every policy and rule in the trace.

use meshward_api::{FieldPath, Kind};
use meshward_policy::authz::{AuthzReason, PolicyTrace, RuleOutcome};
use meshward_policy::flow::Transport;
use meshward_policy::{Outcome, Verdict};
use serde::Serialize;

use super::sidecar::SidecarSync;
use crate::commands::config_source::Configuration;
use crate::output::paint;

#[derive(Serialize)]
pub(super) struct CheckView {
    verdict: &'static str,
    reason: String,
    destination: String,
    port: u16,
    protocol: &'static str,
    transport: String,
    client_tls: Option<String>,
    server_mtls: Option<&'static str>,
    jwt: Option<String>,
    deciding_policy: Option<String>,
    response: Option<String>,
    /// How `--from` / `--to` names were resolved to workloads, when not literally.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resolved: Vec<String>,
    policies: Vec<PolicyView>,
    /// Where the answer was computed, when against the running control plane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) live: Option<LiveView>,
}

#[derive(Serialize)]
struct PolicyView {
    policy: String,
    action: &'static str,
    dry_run: bool,
    /// `file:line` of the policy, `via meshward apply` after it when applied to the running mesh.
    origin: Option<String>,
    rules: Vec<RuleView>,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct RuleView {
    rule: usize,
    result: &'static str,
    detail: Option<String>,
    origin: Option<String>,
}

/// The running mesh the answer was computed on.
#[derive(Serialize)]
pub(super) struct LiveView {
    /// The control plane's store version.
    pub(super) version: u64,
    /// Whether the destination's sidecar enforces that version.
    pub(super) sidecar: SidecarSync,
}

pub(super) fn view(o: &Outcome, config: &Configuration, resolved: Vec<String>) -> CheckView {
    CheckView {
        verdict: o.verdict.as_str(),
        reason: o.reason.clone(),
        destination: o.destination.clone(),
        port: o.port,
        protocol: if o.is_http { "HTTP" } else { "TCP" },
        transport: match &o.transport {
            Transport::Mtls { peer } => format!("mTLS from {peer}"),
            Transport::OtherTls(m) => format!("{} TLS", m.as_str()),
            Transport::Plaintext => "plaintext".to_owned(),
        },
        client_tls: o
            .client_tls
            .as_ref()
            .map(|t| format!("{} ({})", t.mode.as_str(), t.source)),
        server_mtls: o.server_mtls.map(|m| m.as_str()),
        jwt: o.jwt.as_ref().map(|j| j.summary.clone()),
        deciding_policy: o.authz.as_ref().and_then(|a| match &a.reason {
            AuthzReason::DeniedBy(r) | AuthzReason::AllowedBy(r) => Some(r.to_string()),
            AuthzReason::CustomDenied { rule, .. } => Some(rule.to_string()),
            _ => None,
        }),
        response: response_line(o),
        resolved,
        policies: o.trace.iter().map(|p| policy_view(p, config)).collect(),
        live: None,
    }
}

fn response_line(o: &Outcome) -> Option<String> {
    Some(match o.verdict {
        Verdict::Allow => return None,
        Verdict::Deny if o.is_http => "HTTP 403 `RBAC: access denied`".to_owned(),
        Verdict::Deny => "TCP connection closed without data".to_owned(),
        Verdict::Reject if o.client_tls.is_some() => {
            "the client sidecar answers 503 (upstream connect error or disconnect/reset before headers)"
                .to_owned()
        }
        Verdict::Reject => "connection reset by peer (curl exit 56)".to_owned(),
        Verdict::Unauthenticated => format!(
            "HTTP {} `{}`",
            o.jwt.as_ref().and_then(|j| j.status).unwrap_or(401),
            o.jwt
                .as_ref()
                .map(|j| j.summary.as_str())
                .unwrap_or_default()
        ),
        Verdict::BadRequest => "HTTP 400".to_owned(),
    })
}

fn policy_view(p: &PolicyTrace, config: &Configuration) -> PolicyView {
    let origin = |field: &FieldPath| {
        config.origin(
            Kind::AuthorizationPolicy,
            &p.policy.namespace,
            &p.policy.name,
            field,
        )
    };
    PolicyView {
        policy: p.policy.to_string(),
        action: p.action.as_str(),
        dry_run: p.dry_run,
        origin: origin(&FieldPath::root()),
        rules: p
            .rules
            .iter()
            .map(|r| {
                let (result, detail) = match &r.outcome {
                    RuleOutcome::Matched => ("matched", None),
                    RuleOutcome::NotMatched(why) => ("no match", Some(why.clone())),
                    RuleOutcome::Skipped(why) => ("skipped", Some(why.clone())),
                };
                RuleView {
                    rule: r.index,
                    result,
                    detail,
                    origin: origin(&FieldPath::root().key("spec").key("rules").index(r.index)),
                }
            })
            .collect(),
        notes: p.notes.clone(),
    }
}

fn at(origin: Option<&String>) -> String {
    origin.map(|o| format!("  ({o})")).unwrap_or_default()
}

pub(super) fn print_table(v: &CheckView) {
    let verdict = match v.verdict {
        "ALLOW" => paint(v.verdict, "32"),
        _ => paint(v.verdict, "31"),
    };
    println!("{verdict}: {}", v.reason);
    println!(
        "  destination:  {} port {} ({})",
        v.destination, v.port, v.protocol
    );
    for r in &v.resolved {
        println!("  resolved:     {r}");
    }
    println!("  transport:    {}", v.transport);
    if let Some(t) = &v.client_tls {
        println!("  client TLS:   {t}");
    }
    if let Some(m) = v.server_mtls {
        println!("  server mTLS:  {m}");
    }
    if let Some(j) = &v.jwt {
        println!("  JWT:          {j}");
    }
    if let Some(r) = &v.response {
        println!("  response:     {r}");
    }
    if let Some(live) = &v.live {
        println!(
            "  live:         control plane version {}; {}",
            live.version,
            live.sidecar.summary()
        );
    }
    if v.policies.is_empty() {
        println!("  policies:     none evaluated");
    } else {
        println!("  policies (evaluation order):");
    }
    for p in &v.policies {
        let dry = if p.dry_run { " (dry-run)" } else { "" };
        println!(
            "    {} {}{dry}{}",
            p.action,
            p.policy,
            at(p.origin.as_ref())
        );
        if p.rules.is_empty() {
            println!("      (no rules: matches nothing)");
        }
        for r in &p.rules {
            match &r.detail {
                Some(d) => println!(
                    "      rule {}: {}: {d}{}",
                    r.rule,
                    r.result,
                    at(r.origin.as_ref())
                ),
                None => println!(
                    "      rule {}: {}{}",
                    r.rule,
                    r.result,
                    at(r.origin.as_ref())
                ),
            }
        }
        for n in &p.notes {
            println!("      note: {n}");
        }
    }
    if let Some(warning) = v.live.as_ref().and_then(|l| l.sidecar.warning.as_ref()) {
        println!("{}: {warning}", paint("WARNING", "33"));
    }
}
