//! The versioned configuration store.
//!
//! The store holds source documents, one entry per resource (kind, namespace, name), each with
//! the file it came from and its text, so that what a proxy receives still names `file:line`.
//! Entries keep the order in which they first arrived (a re-applied resource keeps its place, as
//! a Kubernetes object keeps its creation order): declared workloads get their addresses and
//! PeerAuthentication ties are broken in that order, the same on every proxy.
//!
//! Every change is all-or-nothing: the candidate set (the current entries with the change
//! applied) must load without errors and build a [`Mesh`] with `meshward-policy`, or the change
//! is refused with every error (file, line, column, field) and the current version stays in
//! force. A change that alters nothing does not make a new version.
//!
//! Two kinds of writers feed it: watched files and folders ([`Source::Path`], each owning the
//! resources it last contained) and the admin API ([`Source::Api`], `meshward apply|delete`).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use meshward_api::protocol::proto::Document;
use meshward_api::protocol::{load_document, split_documents};
use meshward_api::{LoadReport, LoadedResource, LoadedTest};
use meshward_policy::Mesh;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

/// Kind, namespace and name of a stored resource. PolicyTest documents (which may declare
/// `workloads`, `services` and `meshConfig`, as the proxy's local mode reads them) are stored
/// under the kind `PolicyTest`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StoreKey {
    /// `AuthorizationPolicy`, `Service`, …, or `PolicyTest`.
    pub kind: String,
    /// Namespace (`""` for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Who wrote an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// A watched file or folder.
    Path(PathBuf),
    /// `meshward apply` through the admin API.
    Api,
}

/// What a stored resource is.
#[derive(Debug, Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "entries are built once per change and shared behind `Arc`; boxing the common case would only add noise"
)]
pub enum Content {
    /// A Kubernetes or Istio resource.
    Resource(LoadedResource),
    /// A PolicyTest-shaped declaration (workloads, services, meshConfig, embedded resources).
    Test(Box<LoadedTest>),
}

/// One stored resource.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its key.
    pub key: StoreKey,
    /// Who wrote it.
    pub source: Source,
    /// Its source document, as sent to proxies.
    pub document: Document,
    /// Its parsed form.
    pub content: Content,
    /// Its fields as JSON (for `meshward get -o json|yaml`).
    pub object: Value,
}

/// One version of the store.
#[derive(Debug, Clone)]
pub struct StoreState {
    /// Starts at 0 (empty) and increases by one with every accepted change.
    pub version: u64,
    /// The entries, in store order.
    pub entries: Arc<Vec<Arc<Entry>>>,
    /// The mesh they build (what the proxies will compile, compiled once here to validate).
    pub mesh: Arc<Mesh>,
}

impl StoreState {
    /// The resources and declarations as a load report (what `mesh_from_report` reads).
    pub fn report(&self) -> LoadReport {
        report_of(&self.entries)
    }
}

/// A file given to [`Store::apply`]: its name (used in every error) and its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct InputFile {
    /// File name or label.
    pub name: String,
    /// Its YAML text.
    pub text: String,
}

/// A change the store refused; the current version stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Documents with errors: each line names file, line, column, resource and field.
    #[error("the configuration was refused; the last good version stays in force:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl StoreError {
    /// The error lines.
    pub fn lines(&self) -> &[String] {
        match self {
            StoreError::Invalid(lines) => lines,
        }
    }
}

/// What happened to one resource in an accepted change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New.
    Created,
    /// Replaced with different content.
    Configured,
    /// Identical to what was stored.
    Unchanged,
    /// Removed.
    Deleted,
}

/// The result of an accepted change.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeOutcome {
    /// The store version after the change (the same as before if nothing changed).
    pub version: u64,
    /// Each resource touched and what happened to it.
    pub changes: Vec<(StoreKey, Action)>,
    /// Documents of kinds meshward does not use (`Kind ns/name`), ignored.
    pub skipped: Vec<String>,
    /// Warnings (accepted, probably not what was meant).
    pub warnings: Vec<String>,
}

/// The store. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Serialises writers; readers use the watch channel.
    write: Mutex<()>,
    current: watch::Sender<Arc<StoreState>>,
}

/// Entries read from some input files, or why they are unusable.
struct Parsed {
    entries: Vec<Entry>,
    errors: Vec<String>,
    skipped: Vec<String>,
    warnings: Vec<String>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at version 0.
    pub fn new() -> Self {
        let empty = StoreState {
            version: 0,
            entries: Arc::new(Vec::new()),
            mesh: Arc::new(Mesh::default()),
        };
        let (current, _) = watch::channel(Arc::new(empty));
        Self {
            inner: Arc::new(Inner {
                write: Mutex::new(()),
                current,
            }),
        }
    }

    /// The current version.
    pub fn current(&self) -> Arc<StoreState> {
        self.inner.current.borrow().clone()
    }

    /// Notified with every new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<StoreState>> {
        self.inner.current.subscribe()
    }

    /// Adds or replaces the resources of `files` (`meshward apply -f`).
    pub fn apply(&self, source: Source, files: &[InputFile]) -> Result<ChangeOutcome, StoreError> {
        let parsed = parse_files(&source, files);
        if !parsed.errors.is_empty() {
            return Err(StoreError::Invalid(parsed.errors));
        }
        let Parsed {
            entries: new,
            skipped,
            warnings,
            ..
        } = parsed;
        self.commit(|entries| upsert(entries, new), skipped, warnings)
    }

    /// Makes `source` hold exactly the resources of `files`: its entries that are no longer there
    /// are removed (a watched folder whose file was deleted or edited).
    pub fn replace_source(
        &self,
        source: Source,
        files: &[InputFile],
    ) -> Result<ChangeOutcome, StoreError> {
        let parsed = parse_files(&source, files);
        if !parsed.errors.is_empty() {
            return Err(StoreError::Invalid(parsed.errors));
        }
        let Parsed {
            entries: new,
            skipped,
            warnings,
            ..
        } = parsed;
        self.commit(
            |entries| {
                let keep: std::collections::HashSet<StoreKey> =
                    new.iter().map(|e| e.key.clone()).collect();
                let mut changes = Vec::new();
                entries.retain(|e| {
                    let gone = e.source == source && !keep.contains(&e.key);
                    if gone {
                        changes.push((e.key.clone(), Action::Deleted));
                    }
                    !gone
                });
                changes.extend(upsert(entries, new));
                changes
            },
            skipped,
            warnings,
        )
    }

    /// Removes the resources named by `files` (`meshward delete -f`). Documents are identified by
    /// kind, namespace and name only, so an invalid document can still be deleted.
    pub fn delete_files(&self, files: &[InputFile]) -> Result<ChangeOutcome, StoreError> {
        let mut keys = Vec::new();
        for file in files {
            let report = meshward_api::load_text(&file.text, &file.name, None);
            keys.extend(
                report
                    .resources
                    .iter()
                    .map(|r| key_of_resource(&r.resource)),
            );
            keys.extend(report.tests.iter().map(key_of_test));
            keys.extend(
                report
                    .diagnostics
                    .iter()
                    .filter_map(|d| d.resource.as_ref())
                    .map(|id| StoreKey {
                        kind: id.kind.as_str().to_owned(),
                        namespace: id.namespace.clone(),
                        name: id.name.clone(),
                    }),
            );
        }
        self.delete(&keys)
    }

    /// Removes `keys`; keys not in the store are reported as not found by omission.
    pub fn delete(&self, keys: &[StoreKey]) -> Result<ChangeOutcome, StoreError> {
        self.commit(
            |entries| {
                let mut changes = Vec::new();
                entries.retain(|e| {
                    let gone = keys.contains(&e.key);
                    if gone && !changes.iter().any(|(k, _)| k == &e.key) {
                        changes.push((e.key.clone(), Action::Deleted));
                    }
                    !gone
                });
                changes
            },
            Vec::new(),
            Vec::new(),
        )
    }

    /// Applies `change` to a copy of the entries, validates the result, and publishes it as the
    /// next version if anything changed.
    fn commit(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Entry>>) -> Vec<(StoreKey, Action)>,
        skipped: Vec<String>,
        warnings: Vec<String>,
    ) -> Result<ChangeOutcome, StoreError> {
        // A poisoned lock only means another writer panicked; the published state is still whole
        // (it is replaced atomically), so writing can go on.
        let _guard = self
            .inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let mut entries: Vec<Arc<Entry>> = current.entries.as_ref().clone();
        let changes = change(&mut entries);
        let outcome = |version| ChangeOutcome {
            version,
            changes: changes.clone(),
            skipped: skipped.clone(),
            warnings: warnings.clone(),
        };
        if changes.iter().all(|(_, a)| *a == Action::Unchanged) {
            return Ok(outcome(current.version));
        }
        let report = report_of(&entries);
        let mesh = meshward_policy::declared::mesh_from_report(&report)
            .map_err(|e| StoreError::Invalid(vec![e.to_string()]))?;
        let next = StoreState {
            version: current.version + 1,
            entries: Arc::new(entries),
            mesh: Arc::new(mesh),
        };
        let version = next.version;
        self.inner.current.send_replace(Arc::new(next));
        tracing::info!(
            version,
            changes = changes.len(),
            "configuration store: new version"
        );
        Ok(outcome(version))
    }
}

/// Inserts or replaces `new` entries, keeping the position of replaced ones.
fn upsert(entries: &mut Vec<Arc<Entry>>, new: Vec<Entry>) -> Vec<(StoreKey, Action)> {
    let mut index: HashMap<StoreKey, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.key.clone(), i))
        .collect();
    let mut changes: Vec<(StoreKey, Action)> = Vec::new();
    for entry in new {
        let key = entry.key.clone();
        let action = match index
            .get(&key)
            .and_then(|&i| entries.get(i).map(|e| (i, e)))
        {
            Some((_, old)) if same_content(old, &entry) => Action::Unchanged,
            Some((i, _)) => {
                if let Some(slot) = entries.get_mut(i) {
                    *slot = Arc::new(entry);
                }
                Action::Configured
            }
            None => {
                index.insert(key.clone(), entries.len());
                entries.push(Arc::new(entry));
                Action::Created
            }
        };
        // The same key twice in one change: the later document wins, reported once.
        match changes.iter_mut().find(|(k, _)| k == &key) {
            Some(existing) => {
                if action != Action::Unchanged {
                    existing.1 = action;
                }
            }
            None => changes.push((key, action)),
        }
    }
    changes
}

/// Same resource content and same source document (a moved or reformatted file is a change:
/// proxies must see the new file and line numbers).
fn same_content(old: &Entry, new: &Entry) -> bool {
    old.object == new.object && old.document == new.document && old.source == new.source
}

fn parse_files(source: &Source, files: &[InputFile]) -> Parsed {
    let mut parsed = Parsed {
        entries: Vec::new(),
        errors: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    for file in files {
        for doc in split_documents(&file.text) {
            let document = Document {
                origin: file.name.clone(),
                first_line: doc.first_line,
                text: doc.text,
                item: String::new(),
            };
            let report = load_document(&document);
            for d in &report.diagnostics {
                if d.is_error() {
                    parsed.errors.push(d.to_string());
                } else {
                    parsed.warnings.push(d.to_string());
                }
            }
            for s in &report.skipped {
                parsed.skipped.push(format!("{} {}", s.kind, s.name));
            }
            if report.has_errors() {
                continue;
            }
            let object = document_object(&document);
            for resource in report.resources {
                let item = resource.origin.base.as_str().to_owned();
                let object = if item.is_empty() {
                    object.clone()
                } else {
                    item_object(&object, &item)
                };
                parsed.entries.push(Entry {
                    key: key_of_resource(&resource.resource),
                    source: source.clone(),
                    document: Document {
                        item,
                        ..document.clone()
                    },
                    content: Content::Resource(resource),
                    object,
                });
            }
            for test in report.tests {
                parsed.entries.push(Entry {
                    key: key_of_test(&test),
                    source: source.clone(),
                    document: document.clone(),
                    content: Content::Test(Box::new(test)),
                    object: object.clone(),
                });
            }
        }
    }
    parsed
}

/// The document as JSON (already known to parse).
fn document_object(document: &Document) -> Value {
    meshward_api::yaml::parse_documents(&document.text)
        .ok()
        .and_then(|docs| docs.into_iter().next())
        .map(|d| d.value)
        .unwrap_or(Value::Null)
}

/// The item at `items[N]` (the only item paths the loader produces for `List`s).
fn item_object(list: &Value, item: &str) -> Value {
    item.strip_prefix("items[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| list.get("items").and_then(|items| items.get(n)))
        .cloned()
        .unwrap_or(Value::Null)
}

fn key_of_resource(resource: &meshward_api::Resource) -> StoreKey {
    let id = resource.id();
    StoreKey {
        kind: id.kind.as_str().to_owned(),
        namespace: id.namespace,
        name: id.name,
    }
}

fn key_of_test(test: &LoadedTest) -> StoreKey {
    StoreKey {
        kind: "PolicyTest".to_owned(),
        namespace: test.test.metadata.namespace().to_owned(),
        name: test.test.metadata.name().to_owned(),
    }
}

fn report_of(entries: &[Arc<Entry>]) -> LoadReport {
    let mut report = LoadReport::default();
    for entry in entries {
        match &entry.content {
            Content::Resource(r) => report.resources.push(r.clone()),
            Content::Test(t) => report.tests.push(t.as_ref().clone()),
        }
    }
    report
}

#[cfg(test)]
mod tests;
