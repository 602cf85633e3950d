//! MW0008 PlaintextToStrictServer.
//!
//! authentication.md §3.1: "`DISABLE` … plaintext to every endpoint; also disables auto mTLS for
//! that cluster"; §3.5: "plaintext (DR `DISABLE`, or auto chose plaintext) | STRICT | HTTP
//! **503** from client sidecar"; §2.4: STRICT has "**No raw_buffer chain**". §7.2: "No analyzer
//! reports PeerAuthentication problems. IST0113 (MTLSPolicyConflict) is retired", hence a
//! meshward code. What a client originates is the engine's decision (`decide_client_tls`), and
//! the server's mode per port is `PeerAuthnIndex::resolve`.

use std::collections::{BTreeMap, BTreeSet};

use meshward_api::resources::networking::TlsMode;
use meshward_api::{FieldPath, Resource};

use super::{Context, Finding, Level, MW0008};
use crate::client_tls::{ClientTlsInput, DestinationRuleIndex, TlsSource, decide_client_tls};
use crate::inventory::Workload;
use crate::peer_authn::EffectiveMtls;

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let inv = &cx.mesh.inventory;
    for loaded in cx.resources() {
        let Resource::DestinationRule(dr) = &loaded.resource else {
            continue;
        };
        let Some(policy) = dr.spec.traffic_policy.as_ref() else {
            continue;
        };
        let explicit_disable = policy
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == TlsMode::Disable)
            || policy
                .port_level_settings
                .iter()
                .any(|p| p.tls.as_ref().is_some_and(|t| t.mode == TlsMode::Disable));
        if !explicit_disable {
            continue;
        }
        let index = DestinationRuleIndex::build([dr]);
        // A client in the rule's namespace (rules apply to clients by namespace, §3.2), plus
        // every sidecar workload, for rules with workloadSelector or exportTo limits.
        let probe = Workload {
            namespace: dr.metadata.namespace().to_owned(),
            name: "(client)".to_owned(),
            service_account: "default".to_owned(),
            labels: BTreeMap::new(),
            address: inv.next_address(),
            sidecar: true,
            ports: Vec::new(),
        };
        let clients: Vec<&Workload> = std::iter::once(&probe)
            .chain(inv.workloads.iter().filter(|w| w.sidecar))
            .collect();
        // (service fqdn:port) → servers that are STRICT there.
        let mut broken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for svc in &inv.services {
            let endpoints: Vec<&Workload> = inv.endpoints(svc).filter(|w| w.sidecar).collect();
            let identities: Vec<String> = endpoints
                .iter()
                .map(|e| e.spiffe_id(&cx.mesh.settings.trust_domain))
                .collect();
            for port in &svc.ports {
                for endpoint in &endpoints {
                    let Some(target) = inv.target_port(port, endpoint) else {
                        continue;
                    };
                    if cx
                        .mesh
                        .peer_authn
                        .resolve(endpoint.selector_view())
                        .for_port(target)
                        != EffectiveMtls::Strict
                    {
                        continue;
                    }
                    let plaintext = clients.iter().any(|client| {
                        let tls = decide_client_tls(
                            &ClientTlsInput {
                                client,
                                service: Some(svc),
                                service_port: port.port,
                                endpoint,
                                endpoint_port: target,
                                service_identities: identities.clone(),
                            },
                            &index,
                            &cx.mesh.peer_authn,
                            &cx.mesh.settings,
                        );
                        tls.mode == TlsMode::Disable
                            && matches!(tls.source, TlsSource::DestinationRule(_))
                    });
                    if plaintext {
                        broken
                            .entry(format!("{}:{}", svc.fqdn(), port.port))
                            .or_default()
                            .insert(format!("{} port {target}", endpoint.key()));
                    }
                }
            }
        }
        if broken.is_empty() {
            continue;
        }
        let list: Vec<String> = broken
            .iter()
            .map(|(svc, servers)| {
                format!(
                    "{svc} ({})",
                    servers.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        out.push(cx.finding(
            MW0008,
            Level::Warning,
            loaded,
            FieldPath::root().key("spec").key("trafficPolicy"),
            format!(
                "tls mode DISABLE makes client sidecars send plaintext to {}, whose PeerAuthentication is STRICT: the server closes every such connection and clients get 503",
                list.join(", ")
            ),
            "Remove the `tls` setting (auto mTLS then sends Istio mTLS to sidecar endpoints) or set `mode: ISTIO_MUTUAL`; or relax the server's PeerAuthentication if plaintext is intended",
        ));
    }
}
