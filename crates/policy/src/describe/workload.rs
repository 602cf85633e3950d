//! Which workload a name means, and the facts about it: identity, labels, address, sidecar,
//! container ports with their protocols.
//!
//! `describe pod NAME` accepts, in this order: a workload of that name (a Pod, a Deployment, a
//! WorkloadEntry or a PolicyTest workload); a replica of a Deployment, `<deployment>-<suffix>`
//! (`backend-0` as `meshward up` names it, or a Kubernetes-style `backend-5c5944c58c-k8x2c`);
//! and a Deployment name whose pods run as `<deployment>-<n>` (the running mesh knows the pods,
//! not the Deployment), describing its first pod. `describe workload NAME` takes the name as the
//! policy inventory knows it, exactly.

use meshward_api::resources::inventory::PodSpec;
use meshward_api::{FieldPath, Kind, Resource};

use super::input::Input;
use super::model::{PortView, WorkloadView};
use super::{DescribeError, Query, Subject};
use crate::inventory::{TargetPort, Workload};

/// The kind shown for a workload that only a PolicyTest declares (`spec.workloads`).
const DECLARED: &str = "PolicyTest workload";

/// The workload a query names, and how the name was resolved when it is not the workload's own.
pub(crate) fn resolve<'m>(
    input: &'m Input<'_>,
    query: &Query,
) -> Result<(&'m Workload, Option<String>), DescribeError> {
    let inventory = &input.mesh.inventory;
    if let Some(w) = inventory.workload(&query.namespace, &query.name) {
        return Ok((w, None));
    }
    let in_namespace: Vec<&Workload> = inventory
        .workloads
        .iter()
        .filter(|w| w.namespace == query.namespace)
        .collect();
    if query.subject == Subject::Pod {
        // A replica name: the longest Deployment name that prefixes it.
        let owner = in_namespace
            .iter()
            .filter(|w| kind_of(input, w) == Kind::Deployment.as_str())
            .filter(|w| {
                query
                    .name
                    .strip_prefix(w.name.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|suffix| !suffix.is_empty())
            })
            .max_by_key(|w| w.name.len());
        if let Some(w) = owner {
            let note = format!("pod {} is a replica of Deployment {}", query.name, w.name);
            return Ok((w, Some(note)));
        }
        // A Deployment name, with its replicas running as `<name>-<n>`.
        let mut replicas: Vec<(u32, &Workload)> = in_namespace
            .iter()
            .filter_map(|w| {
                let n = w
                    .name
                    .strip_prefix(query.name.as_str())?
                    .strip_prefix('-')?
                    .parse::<u32>()
                    .ok()?;
                Some((n, *w))
            })
            .collect();
        replicas.sort_by_key(|(n, _)| *n);
        if let Some((_, first)) = replicas.first() {
            let note = format!(
                "Deployment {} runs {} pod(s); describing {} (its replicas share labels and identity)",
                query.name,
                replicas.len(),
                first.name
            );
            return Ok((first, Some(note)));
        }
    }
    let mut known: Vec<String> = in_namespace.iter().map(|w| w.name.clone()).collect();
    known.sort();
    known.dedup();
    Err(DescribeError::NotFound {
        subject: query.subject,
        namespace: query.namespace.clone(),
        name: query.name.clone(),
        known,
    })
}

/// What declares a workload.
pub(crate) fn kind_of(input: &Input<'_>, w: &Workload) -> &'static str {
    [Kind::Pod, Kind::Deployment, Kind::WorkloadEntry]
        .into_iter()
        .find(|k| input.find(*k, &w.namespace, &w.name).is_some())
        .map_or(DECLARED, Kind::as_str)
}

/// The pod spec behind a workload, for container names and port names.
pub(crate) fn pod_spec<'a>(input: &Input<'a>, w: &Workload) -> Option<&'a PodSpec> {
    let pod = input
        .find(Kind::Pod, &w.namespace, &w.name)
        .and_then(|r| match &r.resource {
            Resource::Pod(p) => Some(&p.spec),
            _ => None,
        });
    pod.or_else(|| {
        input
            .find(Kind::Deployment, &w.namespace, &w.name)
            .and_then(|r| match &r.resource {
                Resource::Deployment(d) => Some(&d.spec.template.spec),
                _ => None,
            })
    })
}

/// The workload's facts.
pub(crate) fn view(
    input: &Input<'_>,
    w: &Workload,
    requested: &str,
    resolved: Option<String>,
) -> WorkloadView {
    let kind = kind_of(input, w);
    let origin = [Kind::Pod, Kind::Deployment, Kind::WorkloadEntry]
        .into_iter()
        .find_map(|k| input.origin(k, &w.namespace, &w.name, &FieldPath::root()));
    let spec = pod_spec(input, w);
    let ports = w
        .ports
        .iter()
        .map(|p| {
            let container = spec.and_then(|s| {
                s.containers.iter().find_map(|c| {
                    c.ports
                        .iter()
                        .find(|cp| cp.container_port == p.port)
                        .map(|cp| (c.name.clone(), cp.name.clone()))
                })
            });
            PortView {
                port: p.port,
                protocol: protocol_name(p.protocol).to_owned(),
                protocol_source: protocol_source(input, w, p.port, kind),
                name: container.as_ref().and_then(|(_, name)| name.clone()),
                container: container.map(|(c, _)| c),
            }
        })
        .collect();
    WorkloadView {
        requested: requested.to_owned(),
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        kind: kind.to_owned(),
        resolved,
        origin,
        service_account: w.service_account.clone(),
        identity: w.spiffe_id(&input.mesh.settings.trust_domain),
        labels: w.labels.clone(),
        address: w.address.to_string(),
        address_note: (!address_is_known(input, w, kind))
            .then(|| "placeholder: the resources do not say where it runs".to_owned()),
        sidecar: w.sidecar,
        sidecar_reason: sidecar_reason(input, w, kind),
        gateway: w.is_gateway(),
        ports,
    }
}

/// A Pod's `status.podIP` (what `meshward up` writes), a WorkloadEntry's or a declaration's
/// `address`; Deployments and the rest get a made-up address in the inventory.
fn address_is_known(input: &Input<'_>, w: &Workload, kind: &str) -> bool {
    match kind {
        "Pod" => input
            .find(Kind::Pod, &w.namespace, &w.name)
            .is_some_and(|r| match &r.resource {
                Resource::Pod(p) => p.status.as_ref().is_some_and(|s| s.pod_ip.is_some()),
                _ => false,
            }),
        "WorkloadEntry" => input
            .find(Kind::WorkloadEntry, &w.namespace, &w.name)
            .is_some_and(|r| match &r.resource {
                Resource::WorkloadEntry(we) => we.spec.address.is_some(),
                _ => false,
            }),
        DECLARED => input.declarations.spec.workloads.iter().any(|d| {
            d.name == w.name
                && d.namespace.as_deref().unwrap_or("default") == w.namespace
                && d.address.is_some()
        }),
        _ => false,
    }
}

/// The spelling of a protocol.
pub(crate) fn protocol_name(p: crate::inventory::Protocol) -> &'static str {
    use crate::inventory::Protocol;
    match p {
        Protocol::Http => "HTTP",
        Protocol::Http2 => "HTTP2",
        Protocol::Grpc => "GRPC",
        Protocol::Tcp => "TCP",
    }
}

/// Istio picks a port's protocol from the Service port's `appProtocol` or name prefix; an
/// undeclared port is sniffed (authentication.md §7.1 prints `auto-detect`).
fn protocol_source(input: &Input<'_>, w: &Workload, port: u16, kind: &str) -> String {
    let declaring = input.mesh.inventory.services_of(w).find_map(|s| {
        s.ports.iter().find_map(|sp| {
            let targets = matches!(sp.target_port, TargetPort::Number(n) if n == port);
            (targets && sp.declared_protocol().is_some()).then(|| {
                let how = match (&sp.app_protocol, &sp.name) {
                    (Some(app), _) => format!("appProtocol `{app}`"),
                    (None, Some(name)) => format!("port name `{name}`"),
                    (None, None) => "its port".to_owned(),
                };
                format!("Service {} {how}", s.name)
            })
        })
    });
    match declaring {
        Some(text) => text,
        None if kind == DECLARED => "declared".to_owned(),
        None => "auto-detect: no Service names it (requests are sniffed as HTTP)".to_owned(),
    }
}

/// The injection rule of `Inventory::add_resources`, in words.
fn sidecar_reason(input: &Input<'_>, w: &Workload, kind: &str) -> String {
    match kind {
        "WorkloadEntry" => {
            return "a WorkloadEntry stands for a VM running Istio's agent".to_owned();
        }
        DECLARED if w.sidecar => return "declared with a sidecar".to_owned(),
        DECLARED => return "declared with `sidecar: false`".to_owned(),
        _ => {}
    }
    if let Some(value) = injection_override(input, w) {
        return format!("sidecar.istio.io/inject: \"{value}\"");
    }
    let ns = &w.namespace;
    match input.mesh.inventory.namespaces.get(ns) {
        None => format!("namespace {ns} is not declared: assumed injected"),
        Some(labels) if labels.get("istio-injection").map(String::as_str) == Some("enabled") => {
            format!("namespace {ns} has istio-injection=enabled")
        }
        Some(labels) if labels.contains_key("istio.io/rev") => {
            format!("namespace {ns} has istio.io/rev")
        }
        Some(_) => format!("namespace {ns} is not labelled istio-injection=enabled"),
    }
}

/// `sidecar.istio.io/inject` on the pod's labels or annotations.
fn injection_override(input: &Input<'_>, w: &Workload) -> Option<String> {
    const KEY: &str = "sidecar.istio.io/inject";
    if let Some(v) = w.labels.get(KEY) {
        return Some(v.clone());
    }
    let pod = input
        .find(Kind::Pod, &w.namespace, &w.name)
        .and_then(|r| match &r.resource {
            Resource::Pod(p) => Some(&p.metadata.annotations),
            _ => None,
        });
    let annotations = pod.or_else(|| {
        input
            .find(Kind::Deployment, &w.namespace, &w.name)
            .and_then(|r| match &r.resource {
                Resource::Deployment(d) => Some(&d.spec.template.metadata.annotations),
                _ => None,
            })
    })?;
    annotations.get(KEY).cloned()
}
