//! The effective PeerAuthentication of the workload, per port, and which resources set it.
//!
//! The modes are the engine's ([`crate::peer_authn::PeerAuthnIndex::resolve`], what the proxy
//! enforces); this module only explains them, level by level, with authentication.md §2.3:
//!
//! ```text
//! mode = PERMISSIVE                                   # built-in default
//! if mesh and mesh.mtls.mode != UNSET: mode = mesh.mode
//! if ns   and ns.mtls.mode   != UNSET: mode = ns.mode
//! if wl   and wl.mtls.mode   != UNSET: mode = wl.mode
//! if wl: for (port, m) in wl.portLevelMtls: perPort[port] = (m.mode == UNSET or m absent) ? mode : m.mode
//! ```
//!
//! and lists the PeerAuthentications that look relevant but do not apply (§2.2: a root-namespace
//! policy with a selector is ignored; §2.3: only the oldest mesh, namespace and matching workload
//! policy count).

use std::collections::BTreeSet;

use meshward_api::resources::security::{MtlsMode, PeerAuthentication};
use meshward_api::{FieldPath, Kind, Resource};

use super::input::Input;
use super::model::{IgnoredPolicy, PeerAuthnStep, PeerAuthnView, PortMtlsView};
use crate::inventory::Workload;

/// The PeerAuthentication part of the description.
pub(crate) fn peer_authentication(input: &Input<'_>, w: &Workload) -> PeerAuthnView {
    let mesh = &input.mesh;
    let resolved = mesh.peer_authn.resolve(w.selector_view());
    let root = mesh.settings.root_namespace.as_str();
    let policies: Vec<&PeerAuthentication> = input
        .resources
        .iter()
        .filter_map(|r| match &r.resource {
            Resource::PeerAuthentication(p) => Some(p),
            _ => None,
        })
        .collect();
    let find = |key: &str| {
        policies
            .iter()
            .copied()
            .find(|p| format!("{}.{}", p.metadata.name(), p.metadata.namespace()) == key)
    };
    let mut steps = vec![PeerAuthnStep {
        level: "default".to_owned(),
        policy: None,
        origin: None,
        written: "PERMISSIVE".to_owned(),
        result: "PERMISSIVE".to_owned(),
        effect: "built-in default".to_owned(),
    }];
    let mut mode = "PERMISSIVE".to_owned();
    let mut workload_policy = None;
    for key in &resolved.applied {
        let Some(p) = find(key) else { continue };
        let level = level_of(p, root);
        let written = written_mode(p);
        let effect = match written {
            Some(m) => {
                mode = m.to_owned();
                format!("sets {m}")
            }
            None => format!("UNSET: inherits {mode}"),
        };
        if level == "workload" {
            workload_policy = Some(p);
        }
        steps.push(PeerAuthnStep {
            level: level.to_owned(),
            policy: Some(key_of(p)),
            origin: origin(input, p, &FieldPath::root()),
            written: written.unwrap_or("UNSET").to_owned(),
            result: mode.clone(),
            effect,
        });
    }
    let mut ports: BTreeSet<u16> = w.ports.iter().map(|p| p.port).collect();
    ports.extend(resolved.ports.keys().copied());
    let ports = ports
        .into_iter()
        .map(|port| {
            let effective = resolved.for_port(port).as_str().to_owned();
            let set_by = match (workload_policy, resolved.ports.contains_key(&port)) {
                (Some(p), true) => {
                    let written = port_mode(p, port);
                    match written {
                        Some(_) => format!("{} portLevelMtls[{port}]", key_of(p)),
                        None => format!(
                            "{} portLevelMtls[{port}] is UNSET: inherits the workload mode",
                            key_of(p)
                        ),
                    }
                }
                _ => "the workload mode".to_owned(),
            };
            PortMtlsView {
                port,
                mode: effective,
                set_by,
            }
        })
        .collect();
    let not_enforced_reason = if !w.sidecar {
        Some(
            "no sidecar: nothing terminates mTLS, the application receives whatever arrives"
                .to_owned(),
        )
    } else if w.is_gateway() {
        Some("a gateway: its listeners are not governed by PeerAuthentication".to_owned())
    } else {
        None
    };
    PeerAuthnView {
        enforced: not_enforced_reason.is_none(),
        not_enforced_reason,
        mode: resolved.mode.as_str().to_owned(),
        steps,
        ports,
        ignored: ignored(input, w, &policies, &resolved.applied),
    }
}

/// §2.2 scope classes.
fn level_of(p: &PeerAuthentication, root: &str) -> &'static str {
    let selector = p.spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    match (p.metadata.namespace() == root, selector) {
        (true, false) => "mesh",
        (false, false) => "namespace",
        (_, true) => "workload",
    }
}

fn written_mode(p: &PeerAuthentication) -> Option<&'static str> {
    mode_name(p.spec.mtls.as_ref().and_then(|m| m.mode))
}

fn port_mode(p: &PeerAuthentication, port: u16) -> Option<&'static str> {
    let setting = p
        .spec
        .port_level_mtls
        .as_ref()?
        .iter()
        .find(|(k, _)| k.parse::<u16>().ok() == Some(port))?
        .1;
    mode_name(setting.as_ref().and_then(|m| m.mode))
}

fn mode_name(mode: Option<MtlsMode>) -> Option<&'static str> {
    match mode? {
        MtlsMode::Unset => None,
        MtlsMode::Strict => Some("STRICT"),
        MtlsMode::Permissive => Some("PERMISSIVE"),
        MtlsMode::Disable => Some("DISABLE"),
    }
}

fn key_of(p: &PeerAuthentication) -> String {
    format!("{}/{}", p.metadata.namespace(), p.metadata.name())
}

fn origin(input: &Input<'_>, p: &PeerAuthentication, field: &FieldPath) -> Option<String> {
    input.origin(
        Kind::PeerAuthentication,
        p.metadata.namespace(),
        p.metadata.name(),
        field,
    )
}

/// PeerAuthentications in the root namespace or the workload's namespace that would select the
/// workload by their scope but were not applied, with the rule that drops them.
fn ignored(
    input: &Input<'_>,
    w: &Workload,
    policies: &[&PeerAuthentication],
    applied: &[String],
) -> Vec<IgnoredPolicy> {
    let root = input.mesh.settings.root_namespace.as_str();
    policies
        .iter()
        .filter(|p| {
            let key = format!("{}.{}", p.metadata.name(), p.metadata.namespace());
            !applied.contains(&key)
        })
        .filter_map(|p| {
            let ns = p.metadata.namespace();
            let selector = p.spec.selector.as_ref().filter(|s| !s.is_empty());
            let reason = if ns == root && selector.is_some() {
                // authentication.md §9 #1: "PA selector in root namespace … ignored".
                selector
                    .is_some_and(|s| s.matches(&w.labels))
                    .then_some("a selector in the root namespace is ignored (authentication.md §2.2)")?
            } else if ns == root {
                "an older mesh-wide PeerAuthentication wins; newer ones are dropped (§2.3)"
            } else if ns != w.namespace {
                return None;
            } else if let Some(s) = selector {
                s.matches(&w.labels).then_some(
                    "an older PeerAuthentication also selects this workload; only the oldest applies (§2.3)",
                )?
            } else {
                "an older namespace-wide PeerAuthentication wins; newer ones are dropped (§2.3)"
            };
            Some(IgnoredPolicy {
                policy: key_of(p),
                origin: origin(input, p, &FieldPath::root()),
                reason: reason.to_owned(),
            })
        })
        .collect()
}
