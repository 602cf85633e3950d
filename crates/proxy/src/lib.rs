//! meshward-proxy: the sidecar data plane.
//!
//! Role: accept a workload's inbound connections (Istio's 15006 role), tell mesh mTLS from
//! plaintext, apply the workload's PeerAuthentication per port, terminate mTLS with the SPIFFE
//! verifiers of `meshward-identity`, authenticate JWTs and authorize every connection and request
//! with `meshward-policy` exactly as an Envoy sidecar would, and forward to the application; on
//! the way out (the 15001 role), resolve services, originate mTLS with secure naming, and pass
//! through traffic leaving the mesh. Every decision is logged and counted.

pub mod certs;
pub mod config;
pub mod control;
pub mod forwarder;
pub mod inbound;
pub mod observe;
pub mod outbound;
mod request_id;
pub mod run;
pub mod state;
pub mod telemetry;
pub mod wire;
