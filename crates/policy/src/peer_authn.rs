//! PeerAuthentication: the effective mTLS mode of a workload, per port (authentication.md §2).

use std::collections::BTreeMap;
use std::sync::Arc;

use meshward_api::resources::security::{MtlsMode, PeerAuthentication};

use crate::authz::WorkloadSelectorView;

/// The effective inbound mode. UNSET never survives resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectiveMtls {
    /// Only mTLS; plaintext is closed without a byte.
    Strict,
    /// mTLS and plaintext.
    Permissive,
    /// Plaintext only; TLS from a client finds no filter chain.
    Disable,
}

impl EffectiveMtls {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectiveMtls::Strict => "STRICT",
            EffectiveMtls::Permissive => "PERMISSIVE",
            EffectiveMtls::Disable => "DISABLE",
        }
    }

    fn from_mode(mode: MtlsMode) -> Option<EffectiveMtls> {
        match mode {
            MtlsMode::Unset => None,
            MtlsMode::Strict => Some(EffectiveMtls::Strict),
            MtlsMode::Permissive => Some(EffectiveMtls::Permissive),
            MtlsMode::Disable => Some(EffectiveMtls::Disable),
        }
    }
}

/// A PeerAuthentication with its scope class (§2.2).
#[derive(Debug, Clone)]
struct Classified {
    policy: Arc<PeerAuthentication>,
    scope: Scope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Mesh,
    Namespace,
    Workload,
    /// "In root namespace **with** a non-empty selector | **ignored**".
    Ignored,
}

/// The mode resolved for one workload, with the resources that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadMtls {
    /// Mode on ports without a port-level setting.
    pub mode: EffectiveMtls,
    /// Port-level modes (container ports).
    pub ports: BTreeMap<u16, EffectiveMtls>,
    /// `name.namespace` of the PeerAuthentications that apply (mesh, namespace, workload), as
    /// `istioctl x describe` lists them.
    pub applied: Vec<String>,
}

impl WorkloadMtls {
    /// `effective(targetPort) = perPort.get(targetPort, mode)`.
    pub fn for_port(&self, port: u16) -> EffectiveMtls {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Every PeerAuthentication of the mesh, ordered and classified.
#[derive(Debug, Clone, Default)]
pub struct PeerAuthnIndex {
    root_namespace: String,
    /// Sorted by (creationTimestamp, name, namespace).
    policies: Vec<Classified>,
}

impl PeerAuthnIndex {
    /// authentication.md §2.3: "Sort all PAs by `(metadata.creationTimestamp asc, name asc,
    /// namespace asc)`". A resource without a timestamp counts as created when it was loaded:
    /// those keep their input order after every timestamped one of the same second.
    pub fn build<'a>(
        policies: impl IntoIterator<Item = &'a PeerAuthentication>,
        root_namespace: &str,
    ) -> Self {
        let mut list: Vec<(usize, Classified)> = policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let has_selector = p.spec.selector.as_ref().is_some_and(|s| !s.is_empty());
                let in_root = p.metadata.namespace() == root_namespace;
                let scope = match (in_root, has_selector) {
                    (true, false) => Scope::Mesh,
                    (true, true) => Scope::Ignored,
                    (false, false) => Scope::Namespace,
                    (false, true) => Scope::Workload,
                };
                (
                    i,
                    Classified {
                        policy: Arc::new(p.clone()),
                        scope,
                    },
                )
            })
            .collect();
        list.sort_by(|(ia, a), (ib, b)| {
            let ta = a.policy.metadata.creation_timestamp.as_deref();
            let tb = b.policy.metadata.creation_timestamp.as_deref();
            // Absent timestamps sort last (they are "now"), in input order.
            // Kubernetes writes RFC 3339 UTC (`…Z`) timestamps, which order correctly as text.
            (ta.is_none(), ta.map(str::trim))
                .cmp(&(tb.is_none(), tb.map(str::trim)))
                .then_with(|| {
                    if ta.is_none() && tb.is_none() {
                        ia.cmp(ib)
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
                .then_with(|| a.policy.metadata.name().cmp(b.policy.metadata.name()))
                .then_with(|| {
                    a.policy
                        .metadata
                        .namespace()
                        .cmp(b.policy.metadata.namespace())
                })
        });
        PeerAuthnIndex {
            root_namespace: root_namespace.to_owned(),
            policies: list.into_iter().map(|(_, c)| c).collect(),
        }
    }

    fn first(&self, scope: Scope, namespace: Option<&str>) -> Option<&Classified> {
        self.policies.iter().find(|c| {
            c.scope == scope && namespace.is_none_or(|ns| c.policy.metadata.namespace() == ns)
        })
    }

    /// authentication.md §2.3:
    /// ```text
    /// mesh = first (oldest) mesh-class PA;  ns = first namespace-class PA in workload's ns
    /// wl   = oldest workload-class PA in the ns whose selector ⊆ pod labels
    /// mode = PERMISSIVE; then mesh, ns, wl modes override when not UNSET
    /// if wl: for (port, m) in wl.portLevelMtls: perPort[port] = (m.mode == UNSET) ? mode : m.mode
    /// ```
    pub fn resolve(&self, workload: WorkloadSelectorView<'_>) -> WorkloadMtls {
        let mesh = self.first(Scope::Mesh, None);
        let ns = if workload.namespace == self.root_namespace {
            None
        } else {
            self.first(Scope::Namespace, Some(workload.namespace))
        };
        let wl = self.policies.iter().find(|c| {
            c.scope == Scope::Workload
                && c.policy.metadata.namespace() == workload.namespace
                && c.policy
                    .spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| s.matches(workload.labels))
        });
        let mut mode = EffectiveMtls::Permissive;
        let mut applied = Vec::new();
        for c in [mesh, ns, wl].into_iter().flatten() {
            applied.push(format!(
                "{}.{}",
                c.policy.metadata.name(),
                c.policy.metadata.namespace()
            ));
            if let Some(m) = policy_mode(&c.policy) {
                mode = m;
            }
        }
        let mut ports = BTreeMap::new();
        if let Some(wl) = wl {
            for (port, setting) in wl.policy.spec.port_level_mtls.iter().flatten() {
                let Ok(port) = port.parse::<u16>() else {
                    continue;
                };
                let m = setting
                    .as_ref()
                    .and_then(|s| s.mode)
                    .and_then(EffectiveMtls::from_mode)
                    .unwrap_or(mode);
                ports.insert(port, m);
            }
        }
        WorkloadMtls {
            mode,
            ports,
            applied,
        }
    }

    /// The client-side view of a namespace's mode, used by auto mTLS (§2.3): the oldest
    /// namespace PA (UNSET ⇒ mesh mode), else the mesh mode; `None` when nothing is configured.
    pub fn namespace_mode(&self, namespace: &str) -> Option<EffectiveMtls> {
        let mesh = self
            .first(Scope::Mesh, None)
            .and_then(|c| policy_mode(&c.policy));
        let ns = if namespace == self.root_namespace {
            None
        } else {
            self.first(Scope::Namespace, Some(namespace))
        };
        match ns {
            Some(c) => policy_mode(&c.policy)
                .or(mesh)
                .or(Some(EffectiveMtls::Permissive)),
            None => mesh.or_else(|| {
                self.first(Scope::Mesh, None)
                    .map(|_| EffectiveMtls::Permissive)
            }),
        }
    }
}

fn policy_mode(p: &PeerAuthentication) -> Option<EffectiveMtls> {
    p.spec
        .mtls
        .as_ref()
        .and_then(|m| m.mode)
        .and_then(EffectiveMtls::from_mode)
}
