//! The CA over gRPC, wire-compatible with istiod's certificate service (authentication.md §1.5).
//!
//! Role: [`CaService`] answers `istio.v1.auth.IstioCertificateService/CreateCertificate` for
//! callers that [`auth`] authenticates, issuing certificates for the authenticated identity
//! only; [`serve`] runs it over TLS the way istiod serves port 15012; [`CaClient`] is the
//! workload side that sends a CSR and gets its certificate back.

pub mod auth;
mod client;
mod incoming;
mod server;
mod source;
mod tls;

/// Rust types and gRPC stubs generated from `proto/istio/v1/auth/ca.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms
)]
pub mod proto {
    tonic::include_proto!("istio.v1.auth");
}

pub use auth::{
    AuthError, AuthFuture, BootstrapTokens, Caller, CallerAuthenticator, Chain, PeerCertificate,
    TokenError,
};
pub use client::{CaClient, CaClientConfig, ClientError};
pub use server::{
    AUTHENTICATE_FAILURE, CERT_SIGNER, CaService, IMPERSONATED_IDENTITY, IMPERSONATION_FAILURE,
    ServeError, serve,
};
pub use source::RemoteCa;
pub use tls::{ca_client_tls_config, ca_server_tls_config};
