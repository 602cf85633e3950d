//! MW0012 PeerAddressIsAProxy: client-address rules on a sidecar that only ever sees a proxy.
//!
//! authorization.md §4.6: "`ipBlocks` / `source.ip` → `src_ip` = direct peer address of the
//! connection", and §10: "Behind a gateway, the sidecar sees the **gateway's** identity …, not
//! the end user; end‑user checks need JWT (`requestPrincipals`) or `remoteIpBlocks` at the
//! gateway." A client with a public address reaches a mesh workload through an ingress gateway
//! or a load balancer, so the workload's sidecar sees that proxy's pod address: a public range
//! in `ipBlocks` or `source.ip` never matches there (and in `notIpBlocks` or `notValues` always
//! does). Private, shared (100.64/10), loopback and link-local ranges are where pods and nodes
//! live, so they are left alone; gateways (§2: they enforce policies too) see the real client
//! or its load balancer and are left alone as well.

use std::net::IpAddr;

use ipnet::IpNet;
use meshward_api::FieldPath;
use meshward_api::resources::security::Rule;

use super::{Context, Finding, Level, MW0012, names, rules_of};

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        let (compiled, targets) = cx.authz_targets(policy);
        if compiled.dry_run || targets.is_empty() || targets.iter().any(|w| w.is_gateway()) {
            continue;
        }
        let workloads = names(&targets);
        for (_, rule, path) in rules_of(policy) {
            for (field, label, values, negated) in address_fields(rule, &path) {
                let public: Vec<&str> = values
                    .iter()
                    .map(String::as_str)
                    .filter(|v| is_public(v))
                    .collect();
                if public.is_empty() {
                    continue;
                }
                let effect = if negated {
                    "so this negation holds for every client that comes through it"
                } else {
                    "so these values never match a client that comes through it"
                };
                out.push(cx.finding(
                    MW0012,
                    Level::Warning,
                    loaded,
                    field,
                    format!(
                        "{label} is matched against the direct peer's address; a client at a public address ({}) reaches {workloads} through an ingress gateway or load balancer, whose address is what the sidecar sees, {effect}",
                        public.join(", ")
                    ),
                    "Match client addresses at the ingress gateway with `remoteIpBlocks` (and meshConfig `numTrustedProxies` behind a load balancer), and here allow the gateway's identity (`principals`) instead",
                ));
            }
        }
    }
}

/// Every peer-address field of a rule: (path, how to name it, values, negated).
fn address_fields<'r>(rule: &'r Rule, path: &FieldPath) -> Vec<AddressField<'r>> {
    let mut fields = Vec::new();
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let Some(source) = from.as_ref().and_then(|f| f.source.as_ref()) else {
            continue;
        };
        let at = path.key("from").index(j).key("source");
        if let Some(v) = &source.ip_blocks {
            fields.push((at.key("ipBlocks"), "`ipBlocks`", v.as_slice(), false));
        }
        if let Some(v) = &source.not_ip_blocks {
            fields.push((at.key("notIpBlocks"), "`notIpBlocks`", v.as_slice(), true));
        }
    }
    for (j, condition) in rule.when.iter().flatten().enumerate() {
        let Some(c) = condition else { continue };
        if c.key.as_deref() != Some("source.ip") {
            continue;
        }
        let at = path.key("when").index(j);
        if let Some(v) = &c.values {
            fields.push((at.key("values"), "`source.ip`", v.as_slice(), false));
        }
        if let Some(v) = &c.not_values {
            fields.push((
                at.key("notValues"),
                "`source.ip` (notValues)",
                v.as_slice(),
                true,
            ));
        }
    }
    fields
}

type AddressField<'r> = (FieldPath, &'static str, &'r [String], bool);

/// True for an address or range that lies wholly outside the ranges pods and nodes use.
fn is_public(value: &str) -> bool {
    let Some(net) = value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
    else {
        return false;
    };
    const INTERNAL: &[&str] = &[
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ];
    !INTERNAL
        .iter()
        .filter_map(|r| r.parse::<IpNet>().ok())
        .any(|internal| internal.contains(&net) || net.contains(&internal))
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn public_ranges_are_those_outside_pod_and_node_networks() {
        assert!(is_public("203.0.113.0/24"));
        assert!(is_public("198.51.100.7"));
        assert!(is_public("2001:db8::/32"));
        assert!(!is_public("10.244.0.0/16"));
        assert!(!is_public("172.20.1.1"));
        assert!(!is_public("100.96.0.0/11"));
        // A range that contains the private ones covers pods too: not the trap.
        assert!(!is_public("0.0.0.0/0"));
        assert!(!is_public("fd00::/8"));
        assert!(!is_public("not an address"));
    }
}
