//! What the proxy enforces right now: its workload's compiled policy and the mesh it lives in,
//! swapped atomically when configuration changes. A connection reads the state once when it
//! starts (and live TCP connections are re-checked when a new state arrives), so a swap never
//! drops traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshward_api::{SpiffeId, TrustDomain, TrustDomains};
use meshward_policy::inventory::Workload;
use meshward_policy::{InboundPolicy, Mesh};
use tokio::sync::watch;

/// A configuration that cannot be enforced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The proxy's workload is not in the configuration.
    #[error("workload {namespace}/{name} is not declared in the configuration")]
    UnknownWorkload {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A trust domain or identity is malformed.
    #[error("invalid identity: {0}")]
    Identity(#[from] meshward_api::SpiffeIdError),
}

/// One version of everything the proxy enforces.
#[derive(Debug)]
pub struct ProxyState {
    /// Increases with every accepted configuration.
    pub version: u64,
    /// The whole mesh: services and endpoints for outbound traffic, DestinationRules.
    pub mesh: Arc<Mesh>,
    /// This workload's inbound policy.
    pub inbound: InboundPolicy,
    /// This workload's SPIFFE identity.
    pub identity: SpiffeId,
    /// The mesh trust domain and its aliases.
    pub trust_domains: TrustDomains,
    /// Workloads by address (index into `mesh.inventory.workloads`), built once per version so
    /// labelling a request's peer is a hash lookup, not a scan.
    by_address: HashMap<IpAddr, usize>,
}

impl ProxyState {
    /// Compiles the state of workload `namespace/name` in `mesh`.
    pub fn build(
        mesh: Mesh,
        namespace: &str,
        name: &str,
        version: u64,
    ) -> Result<Self, StateError> {
        let workload = mesh
            .inventory
            .workload(namespace, name)
            .cloned()
            .ok_or_else(|| StateError::UnknownWorkload {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        let settings = &mesh.settings;
        let primary = TrustDomain::sanitized(&settings.trust_domain)?;
        let aliases = settings
            .trust_domain_aliases
            .iter()
            .map(|a| TrustDomain::sanitized(a))
            .collect::<Result<Vec<_>, _>>()?;
        let identity = SpiffeId::new(
            primary.clone(),
            &workload.namespace,
            &workload.service_account,
        )?;
        let inbound = InboundPolicy::new(&mesh, &workload);
        let by_address = mesh
            .inventory
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (w.address, i))
            .collect();
        Ok(Self {
            version,
            mesh: Arc::new(mesh),
            inbound,
            identity,
            trust_domains: TrustDomains::new(primary, aliases),
            by_address,
        })
    }

    /// The proxy's workload.
    pub fn workload(&self) -> &Workload {
        self.inbound.workload()
    }

    /// The mesh workload at `address`, if any.
    pub fn workload_at(&self, address: IpAddr) -> Option<&Workload> {
        self.by_address
            .get(&address)
            .and_then(|&i| self.mesh.inventory.workloads.get(i))
    }
}

/// The current state plus change notifications.
#[derive(Debug)]
pub struct StateHandle {
    current: ArcSwap<ProxyState>,
    changes: watch::Sender<u64>,
}

impl StateHandle {
    /// Starts with `initial`.
    pub fn new(initial: ProxyState) -> Arc<Self> {
        let (changes, _) = watch::channel(initial.version);
        Arc::new(Self {
            current: ArcSwap::from_pointee(initial),
            changes,
        })
    }

    /// The state new connections use.
    pub fn load(&self) -> Arc<ProxyState> {
        self.current.load_full()
    }

    /// Installs a new state and tells subscribers (live connections re-check themselves).
    pub fn store(&self, state: ProxyState) {
        let version = state.version;
        self.current.store(Arc::new(state));
        self.changes.send_replace(version);
    }

    /// Notified with the version of every new state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
