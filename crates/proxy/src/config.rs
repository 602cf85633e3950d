//! Local configuration: the mesh from files (ordinary Kubernetes and Istio manifests, and
//! `workloads`/`services` declarations in the PolicyTest shape), so a proxy runs with no control
//! plane, like ztunnel's local mode. An invalid file is refused with the file, line and field.

use std::path::PathBuf;

use meshward_policy::Mesh;

/// Why the files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file cannot be read.
    #[error(transparent)]
    Load(#[from] meshward_api::LoadError),
    /// The files contain errors; each line names file, line, column and field.
    #[error("the configuration has errors:\n{0}")]
    Invalid(String),
    /// Declarations that do not form a mesh.
    #[error(transparent)]
    Build(#[from] meshward_policy::declared::MeshBuildError),
}

/// Loads and validates `paths` into a mesh.
pub fn load_mesh(paths: &[PathBuf]) -> Result<Mesh, ConfigError> {
    let report = meshward_api::load_paths(paths)?;
    if report.has_errors() {
        let lines: Vec<String> = report.errors().map(ToString::to_string).collect();
        return Err(ConfigError::Invalid(lines.join("\n")));
    }
    Ok(meshward_policy::declared::mesh_from_report(&report)?)
}

/// How often configuration files are checked for changes.
const CONFIG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-reads `paths` whenever a file under them changes and installs the new state; an invalid
/// configuration is refused with its errors logged, and the last good one stays in force.
pub fn watch(
    paths: Vec<PathBuf>,
    namespace: String,
    name: String,
    state: std::sync::Arc<crate::state::StateHandle>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint(&paths);
        loop {
            tokio::time::sleep(CONFIG_POLL_INTERVAL).await;
            let now = fingerprint(&paths);
            if now == last {
                continue;
            }
            last = now;
            let version = state.load().version + 1;
            let built = load_mesh(&paths)
                .map_err(|e| e.to_string())
                .and_then(|mesh| {
                    crate::state::ProxyState::build(mesh, &namespace, &name, version)
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(new) => {
                    tracing::info!(version, "configuration reloaded");
                    state.store(new);
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "configuration change refused; the last good configuration stays in force"
                ),
            }
        }
    })
}

/// Modification times and sizes of every file under `paths`, in a stable order.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
                }
            }
            Ok(meta) => out.push((path, meta.modified().ok(), meta.len())),
            Err(_) => out.push((path, None, 0)),
        }
    }
    out.sort();
    out
}
