//! The store on disk (`meshward control-plane --state-dir DIR`): every accepted change is
//! recorded, and fsynced, before it is published to proxies and before the admin API answers, so
//! a control plane killed at any moment restarts with exactly the configuration it had
//! acknowledged.
//!
//! ## A snapshot, replaced atomically
//!
//! Each change writes the whole store to `DIR/store.json.tmp`, fsyncs it, renames it over
//! `DIR/store.json` and fsyncs `DIR` (so the rename itself survives a power cut). An append-only
//! journal would write less per change, but:
//! - the store is small (the manifests of one mesh: kilobytes to a few megabytes) and changes are
//!   rare (a person running `meshward apply`, a file edit), so rewriting it is cheap — one fsync
//!   of one file either way, which dominates the cost;
//! - a snapshot is the state itself: restoring needs no replay, so it cannot diverge from what was
//!   served if a later meshward validates a past change differently, and there is no compaction
//!   step, torn-tail recovery or journal growth to get wrong;
//! - the rename is atomic: a reader sees the old file or the new one, never half of one; a crash
//!   between the write and the rename leaves the previous `store.json` (the last acknowledged
//!   change) and a stray `.tmp` that the next start removes.
//!
//! ## Format
//!
//! ```text
//! meshward control-plane state v1 sha256=<hex digest of everything after this line>
//! {"version": N, "entries": [...], "files": [...]}
//! ```
//! `entries` are the stored resources in store order, each as its source document (file name,
//! first line, text, List item) and who wrote it, so a restored resource still names `file:line`
//! and is parsed by the same loader as on the way in; `files` is what each watched path
//! contained when it was last loaded (see "Precedence" in [`super`]).
//!
//! ## Failure is closed
//!
//! A state file that cannot be read, whose digest does not match (truncated, bit rot, edited by
//! hand), that does not parse, or whose documents no longer load or build a mesh stops the
//! control plane with an error naming the file and what is wrong. Starting anyway would serve a
//! configuration without some of what was accepted — a DENY policy applied live would silently
//! disappear. The message says how to recover (restore the file, or move it away to start from
//! an empty store). A directory is used by one control plane at a time (`DIR/lock`, an advisory
//! lock released when the process ends, even by `kill -9`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use meshward_api::protocol::proto::Document;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Entry, Source, StoreKey, Views, parse_document};

/// The state file in the state directory.
pub const STATE_FILE: &str = "store.json";
/// The advisory lock held by the control plane using the directory.
const LOCK_FILE: &str = "lock";
/// The first line, before the digest.
const HEADER: &str = "meshward control-plane state v1 sha256=";

/// Why the state directory cannot be used, or a change cannot be recorded in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    /// The directory cannot be created or locked.
    #[error("state directory {dir}: {detail}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// Another control plane holds the directory.
    #[error(
        "state directory {dir} is in use by another control plane (it holds {dir}/{LOCK_FILE}); two control planes writing one store would lose changes"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The state file exists but cannot be read.
    #[error(
        "cannot read the control-plane state {file}: {detail}; refusing to start without the configuration it holds"
    )]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        detail: String,
    },
    /// The state file is damaged or not one this version writes.
    #[error(
        "the control-plane state {file} is corrupt: {detail}; refusing to start rather than serve a configuration without what it recorded (restore the file from a backup, or move it away to start from an empty store)"
    )]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The state file is intact but its configuration no longer loads.
    #[error(
        "the control-plane state {file} cannot be restored: {detail}; refusing to start rather than serve a configuration without it (fix or remove that resource in the file, or move the file away to start from an empty store)"
    )]
    Unloadable {
        /// The file.
        file: PathBuf,
        /// What does not load.
        detail: String,
    },
    /// A change could not be written; it was not made.
    #[error("cannot record the change in {file}: {detail}")]
    Write {
        /// The file.
        file: PathBuf,
        /// The OS error.
        detail: String,
    },
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Snapshot {
    /// The store version.
    pub(crate) version: u64,
    /// The entries, in store order.
    pub(crate) entries: Vec<StoredEntry>,
    /// What each watched path contained when last loaded.
    pub(crate) files: Vec<StoredView>,
}

/// One entry: its source document and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredEntry {
    key: StoreKey,
    source: Source,
    origin: String,
    first_line: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    item: String,
    text: String,
}

/// What one watched path contained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredView {
    source: Source,
    resources: Vec<StoredObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StoredObject {
    key: StoreKey,
    object: Value,
}

/// An open, locked state directory.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    file: PathBuf,
    /// Held for the store's life: the lock is the open file.
    _lock: File,
}

// === impl StateDir ===

impl StateDir {
    /// Creates (if needed) and locks `dir`, and reads its state file (`None`: a new store).
    pub(crate) fn open(dir: &Path) -> Result<(Self, Option<Snapshot>), StateDirError> {
        let dir_error = |detail: String| StateDirError::Dir {
            dir: dir.to_owned(),
            detail,
        };
        std::fs::create_dir_all(dir).map_err(|e| dir_error(e.to_string()))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| dir_error(format!("{}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateDirError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(dir_error(format!("{}: {e}", lock_path.display())));
            }
        }
        let state = Self {
            dir: dir.to_owned(),
            file: dir.join(STATE_FILE),
            _lock: lock,
        };
        // A write that never reached its rename: the change was not acknowledged, and the
        // state file still holds the last one that was.
        let _ = std::fs::remove_file(state.tmp_file());
        let bytes = match std::fs::read(&state.file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((state, None)),
            Err(e) => {
                return Err(StateDirError::Read {
                    file: state.file.clone(),
                    detail: e.to_string(),
                });
            }
        };
        let snapshot = decode(&bytes).map_err(|detail| StateDirError::Corrupt {
            file: state.file.clone(),
            detail,
        })?;
        Ok((state, Some(snapshot)))
    }

    /// The state file.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    fn tmp_file(&self) -> PathBuf {
        self.dir.join(format!("{STATE_FILE}.tmp"))
    }

    /// Replaces the state file with `snapshot`, durably: when this returns `Ok`, the change
    /// survives a crash of the process or the machine.
    pub(crate) fn save(&self, snapshot: &Snapshot) -> Result<(), StateDirError> {
        let tmp = self.tmp_file();
        let fail = |path: &Path, e: std::io::Error| StateDirError::Write {
            file: path.to_owned(),
            detail: e.to_string(),
        };
        let bytes = encode(snapshot);
        let mut file = File::create(&tmp).map_err(|e| fail(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| fail(&tmp, e))?;
        file.sync_all().map_err(|e| fail(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &self.file).map_err(|e| fail(&self.file, e))?;
        // The rename is an update of the directory; without this it may not survive a power
        // loss even though the file's data did.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(&self.dir, e))
    }
}

/// The header line and the JSON body.
fn encode(snapshot: &Snapshot) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    let body = serde_json::to_vec_pretty(snapshot).unwrap_or_default();
    let mut out = format!("{HEADER}{}\n", sha256_hex(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Checks the header and digest, then parses the body; the error says what is wrong.
fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.is_empty() {
        return Err("the file is empty".to_owned());
    }
    let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
        return Err("the header line is incomplete (the file is truncated)".to_owned());
    };
    let (header, body) = bytes.split_at(newline);
    let body = body.get(1..).unwrap_or_default();
    let header = String::from_utf8_lossy(header);
    let Some(digest) = header.strip_prefix(HEADER) else {
        let shown: String = header.chars().take(60).collect();
        return Err(format!(
            "the first line is `{shown}`, expected `{HEADER}<digest>` (not a meshward control-plane state file, or a format this version does not read)"
        ));
    };
    let actual = sha256_hex(body);
    if digest.trim() != actual {
        return Err(format!(
            "its content does not match its sha256 digest (recorded {}, computed {actual}): the file was truncated or changed after it was written",
            digest.trim()
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // Line numbers count the header line too, so they match an editor's.
        format!(
            "line {}, column {}: {e}",
            e.line().saturating_add(1),
            e.column()
        )
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// The snapshot of a store version and its views.
pub(crate) fn snapshot(version: u64, entries: &[std::sync::Arc<Entry>], views: &Views) -> Snapshot {
    Snapshot {
        version,
        entries: entries
            .iter()
            .map(|e| StoredEntry {
                key: e.key.clone(),
                source: e.source.clone(),
                origin: e.document.origin.clone(),
                first_line: e.document.first_line,
                item: e.document.item.clone(),
                text: e.document.text.clone(),
            })
            .collect(),
        files: views
            .iter()
            .map(|(source, objects)| StoredView {
                source: source.clone(),
                resources: objects
                    .iter()
                    .map(|(key, object)| StoredObject {
                        key: key.clone(),
                        object: object.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The entries and views of a snapshot, each document parsed again by the loader the change
/// went through, and how many stored entries were dropped. Anything that does not come back
/// exactly is an error: a restore never drops a resource, with one exception: a PolicyTest with
/// test cases, which earlier versions stored and pushed to the proxies, is dropped with a
/// warning (it never was configuration; see "PolicyTests" in the store's docs).
pub(crate) fn restore(
    snapshot: Snapshot,
    file: &Path,
) -> Result<(Vec<Entry>, Views, usize), StateDirError> {
    let unloadable = |detail: String| StateDirError::Unloadable {
        file: file.to_owned(),
        detail,
    };
    let mut seen = BTreeSet::new();
    let mut entries = Vec::with_capacity(snapshot.entries.len());
    let mut dropped = 0;
    for (i, stored) in snapshot.entries.into_iter().enumerate() {
        if !seen.insert(stored.key.clone()) {
            return Err(StateDirError::Corrupt {
                file: file.to_owned(),
                detail: format!("entry {i} ({}) is stored twice", stored.key),
            });
        }
        let document = Document {
            origin: stored.origin,
            first_line: stored.first_line,
            text: stored.text,
            item: stored.item,
        };
        let parsed = parse_document(&stored.source, &document);
        if !parsed.errors.is_empty() {
            return Err(unloadable(format!(
                "entry {i} ({}) no longer loads: {}",
                stored.key,
                parsed.errors.join("; ")
            )));
        }
        if parsed.ignored.contains(&stored.key) {
            tracing::warn!(
                file = %file.display(),
                resource = %stored.key,
                "dropped from the restored configuration: a PolicyTest with test cases is run \
                 with `meshward test`, not applied"
            );
            dropped += 1;
            continue;
        }
        let Some(entry) = parsed.entries.into_iter().find(|e| e.key == stored.key) else {
            return Err(StateDirError::Corrupt {
                file: file.to_owned(),
                detail: format!(
                    "entry {i} ({}): its document does not contain that resource",
                    stored.key
                ),
            });
        };
        entries.push(entry);
    }
    let mut views = Views::new();
    for view in snapshot.files {
        let objects: BTreeMap<StoreKey, Value> = view
            .resources
            .into_iter()
            .map(|o| (o.key, o.object))
            .collect();
        views.insert(view.source, objects);
    }
    Ok((entries, views, dropped))
}

#[cfg(test)]
mod tests;
