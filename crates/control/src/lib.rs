//! meshward-control: the control plane (`meshward control-plane`), istiod's role.
//!
//! Role: keep a versioned store of the mesh's configuration ([`store`]), fed by watched files
//! and folders ([`sources`]) and by `meshward apply|delete` through the admin API ([`admin`]);
//! push each proxy the part of it that concerns its workload over a gRPC stream, and track what
//! each proxy ACKed or NACKed ([`push`]); fetch the JWKS of `jwksUri` rules ([`jwks`]); and host
//! the CA service from `meshward-identity` on the same TLS port ([`server`]). With a state
//! directory, the store records every accepted change durably before acknowledging it and a
//! restarted control plane restores it ([`store::persist`]).
//!
//! The store validates every change by building the mesh with `meshward-policy`, and proxies
//! compile their snapshots with that same code: there is one compiler, so what the control plane
//! accepts, `meshward check` explains and the proxy enforces are the same thing.
//!
//! Depends on `meshward-api` (resources and the control-plane ↔ proxy protocol),
//! `meshward-policy` and `meshward-identity`; never on `meshward-proxy`.

pub mod admin;
pub mod jwks;
pub mod push;
pub mod server;
pub mod sources;
pub mod store;

pub use jwks::{JwksCache, JwksOptions};
pub use push::{ProxyRegistry, ProxyStatus};
pub use server::{ControlPlane, ControlPlaneOptions, StartError};
pub use store::{InputFile, Source, StateDirError, Store, StoreError, StoreKey};
