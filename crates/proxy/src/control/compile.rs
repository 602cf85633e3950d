//! A snapshot, compiled: its documents loaded with `meshward-api`'s loader (errors name the
//! original file, line and field), the fetched JWKS inlined into the `jwksUri` rules, the mesh
//! built by `meshward-policy` exactly as `meshward check` builds it, and this workload's state.

use meshward_api::protocol::proto::Snapshot;
use meshward_api::protocol::{inline_jwks, load_documents};

use crate::state::{ProxyState, StateError};

/// Why a snapshot cannot be enforced (sent back in the NACK).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Documents with errors; one `file:line:column: error: …` line each.
    #[error("the snapshot has errors:\n{0}")]
    Invalid(String),
    /// Declarations that do not form a mesh.
    #[error(transparent)]
    Build(#[from] meshward_policy::declared::MeshBuildError),
    /// This workload's state cannot be built (not in the snapshot, bad identity).
    #[error(transparent)]
    State(#[from] StateError),
}

/// Compiles `snapshot` into the state of workload `namespace/name`, numbered `version` locally.
pub fn compile_snapshot(
    snapshot: &Snapshot,
    namespace: &str,
    name: &str,
    version: u64,
) -> Result<ProxyState, SnapshotError> {
    let mut report = load_documents(&snapshot.documents);
    if report.has_errors() {
        let lines: Vec<String> = report.errors().map(ToString::to_string).collect();
        return Err(SnapshotError::Invalid(lines.join("\n")));
    }
    // authentication.md §5.6: the JWKS istiod fetched is inlined; a `jwksUri` without a fetched
    // document gets the placeholder key, so that issuer's tokens are rejected.
    inline_jwks(&mut report, &snapshot.jwks);
    let mesh = meshward_policy::declared::mesh_from_report(&report)?;
    Ok(ProxyState::build(mesh, namespace, name, version)?)
}
