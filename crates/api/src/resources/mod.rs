//! Resource types, one module per API group, and the [`Resource`] sum type.

pub mod inventory;
pub mod mesh;
pub mod meta;
pub mod networking;
pub mod security;

use std::fmt;

pub use inventory::{Deployment, Namespace, Pod, Service, ServiceAccount};
pub use mesh::MeshConfig;
pub use meta::{ObjectMeta, WorkloadSelector};
pub use networking::{DestinationRule, WorkloadEntry};
pub use security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};

/// Every kind meshward understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Kind {
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    DestinationRule,
    WorkloadEntry,
    Namespace,
    ServiceAccount,
    Service,
    Deployment,
    Pod,
}

impl Kind {
    /// The `kind:` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::DestinationRule => "DestinationRule",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
        }
    }

    /// The kind named `kind`, if meshward knows it.
    pub fn from_kind(kind: &str) -> Option<Kind> {
        Some(match kind {
            "AuthorizationPolicy" => Kind::AuthorizationPolicy,
            "PeerAuthentication" => Kind::PeerAuthentication,
            "RequestAuthentication" => Kind::RequestAuthentication,
            "DestinationRule" => Kind::DestinationRule,
            "WorkloadEntry" => Kind::WorkloadEntry,
            "Namespace" => Kind::Namespace,
            "ServiceAccount" => Kind::ServiceAccount,
            "Service" => Kind::Service,
            "Deployment" => Kind::Deployment,
            "Pod" => Kind::Pod,
            _ => return None,
        })
    }

    /// The `apiVersion` values accepted for this kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                &["security.istio.io/v1", "security.istio.io/v1beta1"]
            }
            Kind::DestinationRule | Kind::WorkloadEntry => &[
                "networking.istio.io/v1",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3",
            ],
            Kind::Namespace | Kind::ServiceAccount | Kind::Service | Kind::Pod => &["v1"],
            Kind::Deployment => &["apps/v1"],
        }
    }

    /// Namespaced kinds default to `default`; a Namespace has none.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind, namespace and name of a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace (`""` for a Namespace).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ResourceId {
    /// `ns/name`, or `name` for cluster-scoped kinds.
    pub fn key(&self) -> String {
        if self.kind.is_namespaced() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            self.name.clone()
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key())
    }
}

/// A decoded resource of a kind meshward understands.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "resources are decoded once per load and moved rarely; boxing would only add noise"
)]
#[allow(missing_docs)]
pub enum Resource {
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    RequestAuthentication(RequestAuthentication),
    DestinationRule(DestinationRule),
    WorkloadEntry(WorkloadEntry),
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Service(Service),
    Deployment(Deployment),
    Pod(Pod),
}

impl Resource {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::RequestAuthentication(_) => Kind::RequestAuthentication,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::WorkloadEntry(_) => Kind::WorkloadEntry,
            Resource::Namespace(_) => Kind::Namespace,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Service(_) => Kind::Service,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::Pod(_) => Kind::Pod,
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Resource::AuthorizationPolicy(r) => &r.metadata,
            Resource::PeerAuthentication(r) => &r.metadata,
            Resource::RequestAuthentication(r) => &r.metadata,
            Resource::DestinationRule(r) => &r.metadata,
            Resource::WorkloadEntry(r) => &r.metadata,
            Resource::Namespace(r) => &r.metadata,
            Resource::ServiceAccount(r) => &r.metadata,
            Resource::Service(r) => &r.metadata,
            Resource::Deployment(r) => &r.metadata,
            Resource::Pod(r) => &r.metadata,
        }
    }

    /// Kind, namespace (defaulted) and name.
    pub fn id(&self) -> ResourceId {
        let kind = self.kind();
        let meta = self.metadata();
        ResourceId {
            kind,
            namespace: if kind.is_namespaced() {
                meta.namespace().to_owned()
            } else {
                String::new()
            },
            name: meta.name().to_owned(),
        }
    }
}
