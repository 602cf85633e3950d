//! Istio's validation rules: what the CRD schema and istiod's webhook refuse or warn about
//! (authorization.md §8, authentication.md §2.1, §3.1, §5.1). Each rule yields an [`Issue`]
//! naming the field, so the loader can point at its line.

mod authz;
mod common;
mod destination_rule;
mod meta;
mod peer_authn;
mod request_authn;

use crate::diag::Issue;
use crate::resources::Resource;

/// Every error and warning Istio would give for `resource`.
pub fn validate(resource: &Resource) -> Vec<Issue> {
    let mut issues = meta::validate_metadata(resource);
    match resource {
        Resource::AuthorizationPolicy(p) => issues.extend(authz::validate_authorization_policy(p)),
        Resource::PeerAuthentication(p) => {
            issues.extend(peer_authn::validate_peer_authentication(p))
        }
        Resource::RequestAuthentication(p) => {
            issues.extend(request_authn::validate_request_authentication(p))
        }
        Resource::DestinationRule(r) => {
            issues.extend(destination_rule::validate_destination_rule(r))
        }
        Resource::WorkloadEntry(_)
        | Resource::Namespace(_)
        | Resource::ServiceAccount(_)
        | Resource::Service(_)
        | Resource::Deployment(_)
        | Resource::Pod(_) => {}
    }
    issues
}
