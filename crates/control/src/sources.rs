//! Configuration files and folders, watched: each path given to `meshward control-plane
//! --config` is one [`Source::Path`] of the store. Files are polled (every 200 ms by default:
//! cheap for the few hundred manifests of a mesh, and within the one-second propagation budget);
//! a change re-reads every file of the path and loads it into the store as one change, refused
//! as a whole if any file is invalid, in which case the last good configuration stays in force.
//! A reload writes what the path added, edited or dropped since it was last loaded, and leaves
//! what it holds unchanged as `meshward apply|delete` may have made it since (the most recent
//! write of a resource wins; see "Precedence" in [`crate::store`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::{ChangeOutcome, InputFile, Source, Store, StoreError};

/// The default polling interval.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Why a path could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A file or folder cannot be read.
    #[error(transparent)]
    Read(#[from] meshward_api::LoadError),
    /// A file is not UTF-8 text.
    #[error("{0}: not UTF-8 text")]
    NotText(PathBuf),
    /// The store refused the content.
    #[error(transparent)]
    Refused(#[from] StoreError),
}

/// Reads every manifest under `path` (folders recursively, files sorted by name).
pub fn read_files(path: &Path) -> Result<Vec<InputFile>, SourceError> {
    let mut out = Vec::new();
    for file in meshward_api::load::manifest_files(path)? {
        let bytes = std::fs::read(&file).map_err(|source| meshward_api::LoadError::Io {
            path: file.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SourceError::NotText(file.clone()))?;
        out.push(InputFile {
            name: file.display().to_string(),
            text,
        });
    }
    Ok(out)
}

/// Loads `path` into the store as its own source.
pub fn load(store: &Store, path: &Path) -> Result<ChangeOutcome, SourceError> {
    let files = read_files(path)?;
    Ok(store.replace_source(Source::Path(path.to_owned()), &files)?)
}

/// Polls `path` every `interval` and reloads it when a file under it changes, until `stop`
/// becomes true. Errors are logged; the store keeps its last good version.
pub fn watch_path(
    store: Store,
    path: PathBuf,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = fingerprint(&path);
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = fingerprint(&path);
            if now == last {
                continue;
            }
            last = now;
            let store = store.clone();
            let reload_path = path.clone();
            let result = tokio::task::spawn_blocking(move || load(&store, &reload_path)).await;
            match result {
                Ok(Ok(outcome)) => tracing::info!(
                    path = %path.display(),
                    version = outcome.version,
                    changes = outcome.changes.len(),
                    "configuration reloaded"
                ),
                Ok(Err(e)) => tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "configuration change refused; the last good configuration stays in force"
                ),
                Err(e) => tracing::error!(error = %e, "configuration reload task failed"),
            }
        }
    })
}

/// Modification times and sizes of every file under `path`, in a stable order.
fn fingerprint(path: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        match std::fs::metadata(&p) {
            Ok(meta) if meta.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(&p) {
                    stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
                }
            }
            Ok(meta) => out.push((p, meta.modified().ok(), meta.len())),
            Err(_) => out.push((p, None, 0)),
        }
    }
    out.sort();
    out
}
