//! Control-plane mode: configuration pushed by `meshward control-plane` instead of read from
//! files, and the workload certificate from its CA service.
//!
//! - [`bootstrap`]: the first certificate is obtained from the CA with a bootstrap token, and
//!   rotated through the same service afterwards (`RemoteCa`); the proxy's identity is the one
//!   the CA certified for that token.
//! - [`client`]: one `ConfigDiscovery/StreamConfig` stream at a time, over TLS, presenting the
//!   workload certificate and checking the control plane's identity (secure naming). Each
//!   snapshot is compiled ([`compile`]) and installed, then ACKed; a snapshot that does not
//!   compile is NACKed with the error and the last good configuration stays in force. When the
//!   stream breaks, the proxy keeps enforcing what it has and reconnects with exponential
//!   backoff (100 ms doubling to 5 s, ±20 % jitter).
//! - [`compile`]: snapshot documents → `LoadReport` → JWKS inlined → `Mesh` → [`ProxyState`],
//!   with the loader and `meshward-policy` code the CLI uses (one compiler).

pub mod bootstrap;
pub mod client;
pub mod compile;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use bootstrap::{BootstrapError, Bootstrapped, bootstrap_certificate};
pub use client::{ControlClient, ControlError, jwks_refresh_sink};
pub use compile::{SnapshotError, compile_snapshot};

#[cfg(doc)]
use crate::state::ProxyState;

/// How to reach the control plane.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The config stream's `host:port` (the control plane's gRPC port, istiod's 15012).
    pub address: String,
    /// The CA's `host:port`; the control plane's address when `None`.
    pub ca_address: Option<String>,
    /// PEM root certificates the control plane's certificate must chain to.
    pub root_cert: PathBuf,
    /// A file holding the bootstrap token for the first certificate.
    pub token_file: Option<PathBuf>,
    /// The mesh trust domain.
    pub trust_domain: String,
    /// The control plane's expected identity, `NAMESPACE/SERVICE_ACCOUNT`
    /// (default `istio-system/istiod`).
    pub control_plane_identity: Option<(String, String)>,
    /// This pod's address, reported in `Hello`.
    pub pod_address: Option<IpAddr>,
    /// Requested certificate lifetime.
    pub cert_ttl: Option<Duration>,
}

impl ControlOptions {
    /// Options for the control plane at `address` trusting the roots in `root_cert`.
    pub fn new(address: impl Into<String>, root_cert: impl Into<PathBuf>) -> Self {
        Self {
            address: address.into(),
            ca_address: None,
            root_cert: root_cert.into(),
            token_file: None,
            trust_domain: "cluster.local".to_owned(),
            control_plane_identity: None,
            pod_address: None,
            cert_ttl: None,
        }
    }
}
