//! The Services selecting the workload, and what client sidecars originate towards each port:
//! a DestinationRule's `tls`, or auto mTLS (authentication.md §3).
//!
//! Which DestinationRule a client uses depends on the client's namespace (§3.2: "client proxy's
//! own namespace … the service's namespace … the root namespace"), so the answer is computed for
//! a sidecar client in each namespace that has sidecars (and the service's own), and namespaces
//! that get the same answer are grouped. A DestinationRule with a `workloadSelector` applies
//! only to the clients it selects (§3.2 item 4); the answer here is for clients it does not
//! select.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshward_api::resources::networking::DestinationRule;
use meshward_api::{FieldPath, Kind};

use super::input::Input;
use super::model::{ClientTlsView, DestinationRuleView, PortTlsView, ServicePortView, ServiceView};
use super::workload::{pod_spec, protocol_name};
use crate::client_tls::{ClientTlsInput, TlsSource, decide_client_tls};
use crate::inventory::{ServiceDef, ServicePortDef, TargetPort, Workload};

/// The services selecting `w`, and the DestinationRules clients use towards them.
pub(crate) fn services(
    input: &Input<'_>,
    w: &Workload,
) -> (Vec<ServiceView>, Vec<DestinationRuleView>) {
    let mesh = &input.mesh;
    let client_namespaces = client_namespaces(input);
    let mut rules: BTreeMap<(String, String), Arc<DestinationRule>> = BTreeMap::new();
    let mut views = Vec::new();
    for svc in mesh.inventory.services_of(w) {
        let mut namespaces = client_namespaces.clone();
        namespaces.insert(svc.namespace.clone());
        let identities = service_identities(input, svc);
        let ports = svc
            .ports
            .iter()
            .map(|sp| {
                let target = target_port(input, sp, w);
                let mut groups: Vec<ClientTlsView> = Vec::new();
                for ns in &namespaces {
                    let client = any_sidecar_client(ns);
                    if let Some(rule) = mesh.destination_rules.lookup(
                        &client,
                        &svc.fqdn(),
                        &svc.namespace,
                        &mesh.settings,
                    ) {
                        rules.insert(
                            (
                                rule.metadata.namespace().to_owned(),
                                rule.metadata.name().to_owned(),
                            ),
                            rule,
                        );
                    }
                    let tls = decide_client_tls(
                        &ClientTlsInput {
                            client: &client,
                            service: Some(svc),
                            service_port: sp.port,
                            endpoint: w,
                            endpoint_port: target.unwrap_or(sp.port),
                            service_identities: identities.clone(),
                        },
                        &mesh.destination_rules,
                        &mesh.peer_authn,
                        &mesh.settings,
                    );
                    let source = match &tls.source {
                        TlsSource::DestinationRule(name) => format!("DestinationRule {name}"),
                        TlsSource::AutoMtls => {
                            "auto mTLS: the endpoint has a sidecar that accepts mTLS".to_owned()
                        }
                        TlsSource::AutoPlaintext(why) => {
                            format!("auto mTLS chose plaintext: {why}")
                        }
                    };
                    let mode = tls.mode.as_str().to_owned();
                    match groups
                        .iter_mut()
                        .find(|g| g.mode == mode && g.source == source)
                    {
                        Some(g) => g.client_namespaces.push(ns.clone()),
                        None => groups.push(ClientTlsView {
                            mode,
                            source,
                            client_namespaces: vec![ns.clone()],
                            expected_identities: tls.expected_sans.clone(),
                        }),
                    }
                }
                ServicePortView {
                    name: sp.name.clone(),
                    port: sp.port,
                    target_port: target,
                    protocol: sp
                        .declared_protocol()
                        .map_or("auto-detect", protocol_name)
                        .to_owned(),
                    client_tls: groups,
                }
            })
            .collect();
        views.push(ServiceView {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            host: svc.fqdn(),
            origin: input.origin(Kind::Service, &svc.namespace, &svc.name, &FieldPath::root()),
            ports,
        });
    }
    let rules = rules
        .values()
        .map(|rule| rule_view(input, rule, w))
        .collect();
    (views, rules)
}

/// A sidecar client in `namespace` that no workload-selector DestinationRule selects.
fn any_sidecar_client(namespace: &str) -> Workload {
    Workload {
        namespace: namespace.to_owned(),
        name: "(any sidecar client)".to_owned(),
        service_account: "default".to_owned(),
        labels: BTreeMap::new(),
        address: crate::flow::DEFAULT_CLIENT_ADDRESS,
        sidecar: true,
        ports: Vec::new(),
    }
}

/// Namespaces with at least one sidecar: where clients that originate TLS live.
fn client_namespaces(input: &Input<'_>) -> BTreeSet<String> {
    input
        .mesh
        .inventory
        .workloads
        .iter()
        .filter(|w| w.sidecar)
        .map(|w| w.namespace.clone())
        .collect()
}

/// SPIFFE IDs of every endpoint of the service: what secure naming accepts (§1.8).
fn service_identities(input: &Input<'_>, svc: &ServiceDef) -> Vec<String> {
    let td = &input.mesh.settings.trust_domain;
    let mut ids: Vec<String> = input
        .mesh
        .inventory
        .endpoints(svc)
        .map(|w| w.spiffe_id(td))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The container port a service port reaches; a named `targetPort` is looked up among the
/// container ports' names.
fn target_port(input: &Input<'_>, sp: &ServicePortDef, w: &Workload) -> Option<u16> {
    match &sp.target_port {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => pod_spec(input, w)
            .and_then(|spec| {
                spec.containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
            })
            .or_else(|| input.mesh.inventory.target_port(sp, w)),
    }
}

/// A DestinationRule: its TLS settings and which subsets the workload belongs to (as
/// `istioctl x describe` prints "Matching subsets").
fn rule_view(input: &Input<'_>, rule: &DestinationRule, w: &Workload) -> DestinationRuleView {
    let policy = rule.spec.traffic_policy.as_ref();
    let (matching, other): (Vec<_>, Vec<_>) = rule
        .spec
        .subsets
        .iter()
        .partition(|s| s.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)));
    DestinationRuleView {
        name: rule.metadata.name().to_owned(),
        namespace: rule.metadata.namespace().to_owned(),
        host: rule.spec.host.clone(),
        origin: input.origin(
            Kind::DestinationRule,
            rule.metadata.namespace(),
            rule.metadata.name(),
            &FieldPath::root(),
        ),
        tls_mode: policy
            .and_then(|p| p.tls.as_ref())
            .map(|t| t.mode.as_str().to_owned()),
        port_tls: policy
            .map(|p| {
                p.port_level_settings
                    .iter()
                    .filter_map(|s| {
                        let port = u16::try_from(s.port.as_ref()?.number).ok()?;
                        Some(PortTlsView {
                            port,
                            mode: s.tls.as_ref()?.mode.as_str().to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        matching_subsets: matching.iter().map(|s| s.name.clone()).collect(),
        other_subsets: other.iter().map(|s| s.name.clone()).collect(),
    }
}
