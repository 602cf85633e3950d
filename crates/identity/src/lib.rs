//! meshward-identity: who a workload is, and proof of it on the wire.
//!
//! Role: SPIFFE identities (re-exported from `meshward-api`), the certificate authority (a
//! self-signed root or an organisation's plug-in intermediate in Istio's `cacerts` layout) and its
//! gRPC service and client in Istio's wire format (§1.5), workload certificates and CSRs, the trust bundle, certificate rotation, and the rustls
//! configurations whose verifiers enforce authentication.md §1.8: servers require a client
//! certificate chaining to the bundle with a SPIFFE ID in an accepted trust domain; clients check
//! the server's identity against the destination's expected identities (secure naming).
//!
//! Depends only on `meshward-api`. All TLS uses the aws-lc-rs provider, chosen in [`crypto`].

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod crypto;
pub mod pem;
pub mod rotation;
pub mod service;
pub mod tls;
pub mod workload;

pub use bundle::TrustBundle;
pub use ca::{CaDir, CaError, CertificateAuthority, TtlPolicy, Validity};
pub use cert::CertInfo;
pub use meshward_api::spiffe::{SpiffeId, SpiffeIdError, TrustDomain, TrustDomains};
pub use rotation::{CertManager, CertState, CertificateSource, LocalCa, RotationPolicy};
pub use service::{CaClient, CaClientConfig, CaService};
pub use tls::{Credentials, MeshTls, PeerIdentityError};
pub use workload::{CertificateRequest, KeyAlgorithm, WorkloadCertificate};
