//! `meshward describe pod|workload`: everything that decides traffic to one workload, in one
//! place. The layout follows `istioctl x describe pod` (authentication.md §7.1: the pod, its
//! Services and DestinationRules, the effective and applied PeerAuthentication) and answers
//! more: the TLS client sidecars originate per service port, which resource set each port's
//! mTLS mode, every AuthorizationPolicy in evaluation order with its rules in words, the
//! RequestAuthentications and whether a token is required, and the `meshward analyze` findings
//! that concern the workload.
//!
//! Pure: the caller loads the files ([`meshward_api::load_paths`]) or takes the control plane's
//! store, and hands over the [`LoadReport`]; the result is plain data ([`Description`]) that the
//! CLI prints as text, JSON or YAML. Every decision is asked of the engine (selection,
//! resolution, client TLS), so the description says what the proxy does; the modules here only
//! gather and explain.

mod authz;
mod findings;
mod input;
mod model;
mod peer_authn;
mod request_authn;
mod rules;
mod services;
mod workload;

#[cfg(test)]
mod tests;

use std::fmt;

use meshward_api::{Kind, LoadReport};
use serde::{Deserialize, Serialize};

pub use model::{
    AuthorizationView, ClientTlsView, Description, DestinationRuleView, FindingView, IgnoredPolicy,
    JwtRuleView, PeerAuthnStep, PeerAuthnView, PolicyView, PortMtlsView, PortTlsView, PortView,
    RequestAuthnPolicyView, RequestAuthnView, RuleView, ServicePortView, ServiceView, WorkloadView,
};

use findings::Related;
use input::Input;

/// What the name given to `describe` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// A pod: a Pod, a Deployment replica, or a Deployment (see [`workload`]).
    Pod,
    /// A workload of the policy inventory, by its exact name.
    Workload,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Pod => "pod",
            Subject::Workload => "workload",
        })
    }
}

/// What to describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Pod or workload.
    pub subject: Subject,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Nothing to describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescribeError {
    /// No workload of that name.
    #[error("no {subject} `{name}` in namespace `{namespace}`{}", known_text(.namespace, .known))]
    NotFound {
        /// Pod or workload.
        subject: Subject,
        /// The namespace searched.
        namespace: String,
        /// The name asked for.
        name: String,
        /// The workloads of that namespace.
        known: Vec<String>,
    },
}

fn known_text(namespace: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!(" (the namespace `{namespace}` has no workloads)")
    } else {
        format!("; workloads there: {}", known.join(", "))
    }
}

/// Describes the workload `query` names, in the mesh of `report`.
pub fn describe(report: &LoadReport, query: &Query) -> Result<Description, DescribeError> {
    let input = Input::new(report);
    let (w, resolved) = workload::resolve(&input, query)?;
    let workload = workload::view(&input, w, &query.name, resolved);
    let (services, destination_rules) = services::services(&input, w);
    let peer_authentication = peer_authn::peer_authentication(&input, w);
    let authorization = authz::authorization(&input, w);
    let request_authentication =
        request_authn::request_authentication(&input, w, &authorization.request_principal_rules);
    let related = related(
        &workload,
        &services,
        &destination_rules,
        &peer_authentication,
        &authorization,
        &request_authentication,
    );
    let findings = findings::findings(report, w, &related);
    Ok(Description {
        workload,
        services,
        destination_rules,
        peer_authentication,
        authorization,
        request_authentication,
        findings,
    })
}

/// Every resource the description shows as applying to the workload.
fn related(
    workload: &WorkloadView,
    services: &[ServiceView],
    rules: &[DestinationRuleView],
    pa: &PeerAuthnView,
    authz: &AuthorizationView,
    ra: &RequestAuthnView,
) -> Vec<Related> {
    let mut out = Vec::new();
    if let Some(kind) = Kind::from_kind(&workload.kind) {
        out.push(Related {
            kind,
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        });
    }
    let keyed = |kind: Kind, namespace: &str, name: &str| Related {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    out.extend(
        services
            .iter()
            .map(|s| keyed(Kind::Service, &s.namespace, &s.name)),
    );
    out.extend(
        rules
            .iter()
            .map(|r| keyed(Kind::DestinationRule, &r.namespace, &r.name)),
    );
    let pas = pa
        .steps
        .iter()
        .filter_map(|s| s.policy.as_deref())
        .chain(pa.ignored.iter().map(|i| i.policy.as_str()));
    out.extend(pas.filter_map(|k| Related::from_key(Kind::PeerAuthentication, k)));
    let aps = authz.policies.iter().chain(&authz.dry_run);
    out.extend(aps.filter_map(|p| Related::from_key(Kind::AuthorizationPolicy, &p.policy)));
    out.extend(
        ra.policies
            .iter()
            .filter_map(|p| Related::from_key(Kind::RequestAuthentication, &p.policy)),
    );
    out
}
