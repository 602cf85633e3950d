//! meshward-api: the resources people already write for Istio and Kubernetes, as Rust types.
//!
//! Role: read YAML (files, folders, multi-document streams, `List`s) into typed resources,
//! refuse what Istio refuses with an error that names the file, line, column and field, and
//! describe the `PolicyTest` format. Every other meshward crate builds on these types. It also
//! defines the control-plane ↔ proxy protocol ([`protocol`]): the generated gRPC types, which
//! the control plane and the proxy share and nothing else of each other.
//!
//! Depends on no other meshward crate, does no network I/O, and contains no `unsafe`.

#![warn(missing_docs)]

pub mod decode;
pub mod diag;
pub mod load;
pub mod path_template;
pub mod policytest;
pub mod protocol;
pub mod resources;
pub mod source;
pub mod spiffe;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Issue, Severity};
pub use load::{
    LoadError, LoadReport, LoadedResource, LoadedTest, load_file, load_paths, load_text,
};
pub use resources::{Kind, Resource, ResourceId};
pub use source::{FieldPath, Location, Origin};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain, TrustDomains};
