//! meshward-policy: the decision engine.
//!
//! Role: decide what happens to a connection or request exactly as an Istio sidecar (istiod +
//! Envoy) would: which AuthorizationPolicies apply to a workload and how they combine, the
//! effective PeerAuthentication per port, what a client sidecar originates (DestinationRule TLS
//! and auto mTLS), RequestAuthentication JWT checks, and path normalization. Every decision
//! carries its reason. The proxy runs it on live traffic; `meshward check` and `meshward test`
//! run it offline, so both say the same thing.
//!
//! Pure and synchronous: no I/O, no async, no clock (callers pass the time). Depends only on
//! `meshward-api`. Contains no `unsafe`.

#![warn(missing_docs)]

pub mod analyze;
pub mod attributes;
pub mod authz;
pub mod client_tls;
pub mod decision;
pub mod declared;
pub mod describe;
pub mod flow;
pub mod inbound;
pub mod inventory;
pub mod jwt;
pub mod matcher;
pub mod mesh;
pub mod path;
pub mod peer_authn;
pub mod request_authn;

pub use attributes::{Attributes, Header, HttpAttributes, borrow_headers};
pub use flow::{Client, HttpRequest, Mesh, Outcome, Target, Traffic, Verdict};
pub use inbound::{HttpDecision, HttpVerdict, InboundConnection, InboundPolicy, InboundRequest};
pub use mesh::MeshSettings;
