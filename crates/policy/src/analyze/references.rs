//! References to things the files do not contain: IST0101, IST0102, IST0103, IST0127.
//!
//! authorization.md §8.3:
//! * "IST0101 | ReferencedResourceNotFound | a `namespaces`/`notNamespaces` value (with `*`
//!   prefix/suffix support) matches no existing Namespace". Istio reports it as an error against
//!   the live cluster; offline, the files are a partial view (namespaces are often made with
//!   `kubectl create ns`), so meshward reports a warning.
//! * "IST0127 | NoMatchingWorkloadsFound | selector matches no in‑mesh pod (root ns: in any
//!   namespace); selector‑less non‑root policy in a namespace with no in‑mesh pods". Applied to
//!   AuthorizationPolicy, RequestAuthentication and PeerAuthentication, as Istio's selector
//!   analyzer does.
//! * "IST0102 / IST0103 | NamespaceNotInjected / PodMissingProxy | no sidecar ⇒ policies are not
//!   enforced there". IST0102 (info) for a declared Namespace without `istio-injection=enabled`
//!   or `istio.io/rev`; IST0103 for a Deployment/Pod without a sidecar that a policy selects.
//!
//! Analyzers that need workloads stay quiet when the files describe none.

use std::collections::BTreeMap;

use meshward_api::resources::WorkloadSelector;
use meshward_api::{FieldPath, LoadedResource, Resource};

use super::{Context, Finding, IST0101, IST0102, IST0103, IST0127, Level, rules_of};
use crate::authz::identity::namespace_glob;
use crate::inventory::Workload;

/// Namespaces Istio's analyzers leave alone.
const SYSTEM_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

pub(super) fn analyze(cx: &Context<'_>, out: &mut Vec<Finding>) {
    namespaces_referenced(cx, out);
    if !cx.knows_workloads() {
        return;
    }
    no_matching_workloads(cx, out);
    namespace_not_injected(cx, out);
    pod_missing_proxy(cx, out);
}

fn namespaces_referenced(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (policy, loaded) in cx.authorization_policies() {
        for (_, rule, path) in rules_of(policy) {
            for (j, from) in rule.from.iter().flatten().enumerate() {
                let Some(source) = from.as_ref().and_then(|f| f.source.as_ref()) else {
                    continue;
                };
                let base = path.key("from").index(j).key("source");
                for (field, values) in [
                    ("namespaces", &source.namespaces),
                    ("notNamespaces", &source.not_namespaces),
                ] {
                    for (k, value) in values.iter().flatten().enumerate() {
                        check_namespace(cx, loaded, base.key(field).index(k), value, out);
                    }
                }
            }
            for (j, cond) in rule.when.iter().flatten().enumerate() {
                let Some(cond) = cond else { continue };
                if cond.key.as_deref() != Some("source.namespace") {
                    continue;
                }
                let base = path.key("when").index(j);
                for (field, values) in [("values", &cond.values), ("notValues", &cond.not_values)] {
                    for (k, value) in values.iter().flatten().enumerate() {
                        check_namespace(cx, loaded, base.key(field).index(k), value, out);
                    }
                }
            }
        }
    }
}

fn check_namespace(
    cx: &Context<'_>,
    loaded: &LoadedResource,
    field: FieldPath,
    value: &str,
    out: &mut Vec<Finding>,
) {
    // The engine's own matcher: `.*/ns/<V>/.*` with every `*` a wildcard (§4.3).
    let glob = namespace_glob(value);
    if cx
        .namespaces
        .iter()
        .any(|ns| glob.matches(&format!("x/ns/{ns}/x")))
    {
        return;
    }
    let known: Vec<&str> = cx.namespaces.iter().map(String::as_str).collect();
    out.push(cx.finding(
        IST0101,
        Level::Warning,
        loaded,
        field,
        format!("Referenced namespace not found: \"{value}\""),
        format!(
            "Correct the name, or add the Namespace to the files analyzed (namespaces known here: {})",
            known.join(", ")
        ),
    ));
}

/// The selector of a security resource, if it has one that is not empty.
fn selector_of(resource: &Resource) -> Option<(Option<&WorkloadSelector>, bool)> {
    // (selector, uses targetRefs)
    match resource {
        Resource::AuthorizationPolicy(p) => Some((
            p.spec.selector.as_ref(),
            p.spec.target_ref.is_some()
                || p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()),
        )),
        Resource::RequestAuthentication(p) => Some((
            p.spec.selector.as_ref(),
            p.spec.target_ref.is_some()
                || p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty()),
        )),
        Resource::PeerAuthentication(p) => Some((p.spec.selector.as_ref(), false)),
        _ => None,
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn no_matching_workloads(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = cx.mesh.settings.root_namespace.as_str();
    for loaded in cx.resources() {
        let Some((selector, targets)) = selector_of(&loaded.resource) else {
            continue;
        };
        if targets {
            // Gateway/waypoint attachment: not about sidecar pods.
            continue;
        }
        let ns = loaded.resource.metadata().namespace();
        let is_pa = matches!(loaded.resource, Resource::PeerAuthentication(_));
        let selector = selector.filter(|s| !s.is_empty());
        // authentication.md §2.2: a root-namespace PeerAuthentication with a selector is ignored
        // and reaches no workload at all; any other root-namespace selector reaches every namespace.
        let in_scope = |w: &&Workload| {
            if ns == root {
                !(is_pa && selector.is_some())
            } else {
                w.namespace == ns
            }
        };
        let candidates: Vec<&Workload> = cx
            .mesh
            .inventory
            .workloads
            .iter()
            .filter(in_scope)
            .collect();
        let selected: Vec<&Workload> = candidates
            .iter()
            .copied()
            .filter(|w| selector.is_none_or(|s| s.matches(&w.labels)))
            .collect();
        if selected.iter().any(|w| w.sidecar) {
            continue;
        }
        let kind = loaded.resource.kind();
        let (field, message) = match selector {
            Some(s) => {
                let labels = labels_text(s.match_labels.as_ref().unwrap_or(&BTreeMap::new()));
                let mut message = format!(
                    "No matching workloads for this resource with the following labels: {labels}"
                );
                if is_pa && ns == root {
                    message.push_str(&format!(
                        " (a PeerAuthentication with a selector in the root namespace `{root}` is ignored)"
                    ));
                } else if !selected.is_empty() {
                    message.push_str(&format!(
                        " (it selects {}, which has no sidecar, so nothing enforces this {kind})",
                        super::names(&selected)
                    ));
                }
                (FieldPath::root().key("spec").key("selector"), message)
            }
            None if ns == root => continue,
            None => (
                FieldPath::root().key("metadata").key("namespace"),
                format!(
                    "No matching workloads for this resource: namespace `{ns}` has no workloads with a sidecar"
                ),
            ),
        };
        out.push(cx.finding(
            IST0127,
            Level::Warning,
            loaded,
            field,
            message,
            "Correct the selector's labels (they must all appear, with equal values, on the pod template's labels), or the namespace",
        ));
    }
}

fn namespace_not_injected(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for loaded in cx.resources() {
        let Resource::Namespace(ns) = &loaded.resource else {
            continue;
        };
        let name = ns.metadata.name();
        let labels = &ns.metadata.labels;
        if SYSTEM_NAMESPACES.contains(&name)
            || name == cx.mesh.settings.root_namespace
            || labels.contains_key("istio-injection")
            || labels.contains_key("istio.io/rev")
        {
            continue;
        }
        out.push(cx.finding(
            IST0102,
            Level::Info,
            loaded,
            FieldPath::root().key("metadata").key("name"),
            format!(
                "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
            ),
            format!("Label the namespace `istio-injection: enabled`; without a sidecar, the pods of `{name}` are not protected by any policy"),
        ));
    }
}

fn pod_missing_proxy(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let root = cx.mesh.settings.root_namespace.as_str();
    for loaded in cx.resources() {
        if !matches!(loaded.resource, Resource::Deployment(_) | Resource::Pod(_)) {
            continue;
        }
        let meta = loaded.resource.metadata();
        let Some(w) = cx
            .mesh
            .inventory
            .workload(meta.namespace(), meta.name())
            .filter(|w| !w.sidecar)
        else {
            continue;
        };
        // Policies that name this workload through a selector.
        let selecting: Vec<String> = cx
            .resources()
            .filter_map(|r| {
                let (selector, _) = selector_of(&r.resource)?;
                let selector = selector.filter(|s| !s.is_empty())?;
                let ns = r.resource.metadata().namespace();
                ((ns == w.namespace || ns == root) && selector.matches(&w.labels))
                    .then(|| r.resource.id().to_string())
            })
            .collect();
        if selecting.is_empty() {
            continue;
        }
        out.push(cx.finding(
            IST0103,
            Level::Warning,
            loaded,
            FieldPath::root().key("metadata").key("name"),
            format!(
                "The pod {} is missing the Istio proxy, so nothing enforces {} on it",
                w.key(),
                selecting.join(", ")
            ),
            "Enable injection for the pod (namespace label `istio-injection: enabled`, no `sidecar.istio.io/inject: \"false\"`) and restart it",
        ));
    }
}
