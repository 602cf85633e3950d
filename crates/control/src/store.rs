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
//! Two kinds of writers feed it: watched files and folders ([`Source::Path`]) and the admin API
//! ([`Source::Api`], `meshward apply|delete`).
//!
//! ## Precedence: the most recent write of a resource wins
//!
//! As with `kubectl apply` against one API server, a resource is whatever was last written to
//! it, by whichever writer. A file reload is a write only of what the file *changed*, because
//! the store remembers what each watched path contained when it was last loaded (its view):
//! - a resource the file adds, or whose content it edits, is written from the file, even over an
//!   earlier `meshward apply` or `delete` of it (the edit is the later write);
//! - a resource the file still holds unchanged is left alone: a reload caused by an edit
//!   elsewhere in the folder, or by a restart, does not undo an `apply` or `delete` made since;
//! - a resource the file no longer holds is removed only while the file is still its writer: a
//!   resource `meshward apply` wrote since belongs to the API, and removing the file's old copy
//!   of it says nothing about the applied one.
//!
//! Reformatting a file (same content, other lines) re-points the resources the file still owns
//! at their new lines, and is otherwise not a change.
//!
//! ## PolicyTests
//!
//! A PolicyTest with test cases describes a test and the mesh it imagines; `meshward test` runs
//! it. It is not configuration: applying one (alone or within a folder) ignores it with a
//! warning, and nothing it declares reaches the proxies. A PolicyTest-shaped declaration without
//! cases (`workloads`, `services`, `meshConfig`, `resources`) is configuration and is stored.
//!
//! ## Pods and Services run by a local mesh
//!
//! Under `meshward up`, the local mesh runs the pods: the Deployments, Pods and Services given to
//! `up` are its, and it writes the running pods (with their addresses) and the Services (with
//! their virtual IPs) into a watched inventory. A store told so ([`Store::set_pods_run_by_mesh`])
//! ignores those kinds in `apply` and `delete`, with a warning naming the document: re-applying
//! the tutorial's folder must not add a Deployment's template as a pod without an address, nor
//! replace a Service by a copy without its virtual IP. Kubernetes would reconcile the pods
//! instead; here the mesh changes them when `meshward up` runs again.
//!
//! ## Persistence
//!
//! A store opened with [`Store::open`] records every accepted change in a state directory
//! before publishing it (see [`persist`]), and starts from what that directory holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use meshward_api::protocol::proto::Document;
use meshward_api::protocol::{load_document, split_documents};
use meshward_api::{LoadReport, LoadedResource, LoadedTest};
use meshward_policy::Mesh;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

pub mod persist;

use persist::StateDir;
pub use persist::StateDirError;

/// Kind, namespace and name of a stored resource. PolicyTest-shaped declarations (which may
/// declare `workloads`, `services` and `meshConfig`, as the proxy's local mode reads them) are
/// stored under the kind `PolicyTest`; PolicyTests with test cases are not stored at all (see
/// [`is_test_description`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    fn empty() -> Self {
        Self {
            version: 0,
            entries: Arc::new(Vec::new()),
            mesh: Arc::new(Mesh::default()),
        }
    }

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
    /// The change could not be recorded in the state directory, so it was not made.
    #[error("the change was not made: {0}")]
    Unrecorded(#[from] StateDirError),
}

impl StoreError {
    /// The error lines.
    pub fn lines(&self) -> Vec<String> {
        match self {
            StoreError::Invalid(lines) => lines.clone(),
            StoreError::Unrecorded(_) => vec![self.to_string()],
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
    /// Serialises writers and holds what only writers use; readers use the watch channel.
    write: Mutex<Writer>,
    current: watch::Sender<Arc<StoreState>>,
}

/// What each watched source contained when it was last loaded: resource → its fields.
pub(crate) type Views = BTreeMap<Source, BTreeMap<StoreKey, Value>>;

#[derive(Debug, Default)]
struct Writer {
    /// See "Precedence" in the module docs.
    views: Views,
    /// Where changes are recorded; `None` keeps the store in memory only.
    state_dir: Option<StateDir>,
    /// See "Pods and Services run by a local mesh" in the module docs.
    pods_run_by_mesh: bool,
}

/// The kinds a local mesh runs itself (see [`Store::set_pods_run_by_mesh`]).
const MESH_RUN_KINDS: [&str; 3] = ["Deployment", "Pod", "Service"];

/// Why a change to a kind the local mesh runs is left out.
const MESH_RUN_WHY: &str = "the local mesh runs this control plane's pods and services as \
     `meshward up` started them; to change them, edit the manifests and run `meshward up` again";

fn run_by_mesh(key: &StoreKey) -> bool {
    MESH_RUN_KINDS.contains(&key.kind.as_str())
}

/// Entries read from some input files, or why they are unusable.
#[derive(Default)]
struct Parsed {
    entries: Vec<Entry>,
    errors: Vec<String>,
    skipped: Vec<String>,
    warnings: Vec<String>,
    /// PolicyTests that describe test cases (see [`is_test_description`]): not stored.
    ignored: Vec<StoreKey>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store at version 0, in memory only.
    pub fn new() -> Self {
        Self::with(StoreState::empty(), Writer::default())
    }

    /// The store recorded in `dir` (created and empty at version 0 if it holds none), which
    /// records every later change there before publishing it. Fails, naming the file and what is
    /// wrong, if the recorded store cannot be restored whole, or if another process uses `dir`.
    pub fn open(dir: &Path) -> Result<Self, StateDirError> {
        let (state_dir, snapshot) = StateDir::open(dir)?;
        let Some(snapshot) = snapshot else {
            let writer = Writer {
                views: Views::new(),
                state_dir: Some(state_dir),
                pods_run_by_mesh: false,
            };
            return Ok(Self::with(StoreState::empty(), writer));
        };
        let file = state_dir.file().to_owned();
        // Dropped entries change what is served: a new version, so that no proxy takes the
        // restored configuration for the one it already holds.
        let recorded = snapshot.version;
        let (entries, views, dropped) = persist::restore(snapshot, &file)?;
        let version = if dropped > 0 { recorded + 1 } else { recorded };
        let entries: Vec<Arc<Entry>> = entries.into_iter().map(Arc::new).collect();
        let mesh =
            meshward_policy::declared::mesh_from_report(&report_of(&entries)).map_err(|e| {
                StateDirError::Unloadable {
                    file: file.clone(),
                    detail: format!("the restored resources do not build a mesh: {e}"),
                }
            })?;
        if dropped > 0 {
            state_dir.save(&persist::snapshot(version, &entries, &views))?;
        }
        tracing::info!(
            file = %file.display(),
            version,
            resources = entries.len(),
            "configuration store restored"
        );
        let state = StoreState {
            version,
            entries: Arc::new(entries),
            mesh: Arc::new(mesh),
        };
        Ok(Self::with(
            state,
            Writer {
                views,
                state_dir: Some(state_dir),
                pods_run_by_mesh: false,
            },
        ))
    }

    fn with(state: StoreState, writer: Writer) -> Self {
        let (current, _) = watch::channel(Arc::new(state));
        Self {
            inner: Arc::new(Inner {
                write: Mutex::new(writer),
                current,
            }),
        }
    }

    /// The state file changes are recorded in, if any.
    pub fn state_file(&self) -> Option<PathBuf> {
        self.writer()
            .state_dir
            .as_ref()
            .map(|d| d.file().to_owned())
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A poisoned lock only means another writer panicked; the published state is still whole
        // (it is replaced atomically) and views change only together with it, so writing can go
        // on.
        self.inner
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            entries: mut new,
            skipped,
            mut warnings,
            ..
        } = parsed;
        if self.writer().pods_run_by_mesh {
            new.retain(|entry| {
                if !run_by_mesh(&entry.key) {
                    return true;
                }
                warnings.push(format!(
                    "{}: {} ignored: {MESH_RUN_WHY}",
                    entry.location(),
                    entry.key
                ));
                false
            });
        }
        self.commit(|entries, _| upsert(entries, new), skipped, warnings)
    }

    /// Marks the store as serving a local mesh, which runs the pods and services itself (see
    /// "Pods and Services run by a local mesh" in the module docs).
    pub fn set_pods_run_by_mesh(&self, on: bool) {
        self.writer().pods_run_by_mesh = on;
    }

    /// Loads the current content of the watched source `source` (all its files): what it adds
    /// or edits is written, what it no longer holds and still owns is removed, what it holds
    /// unchanged is left as the last writer made it (see "Precedence" in the module docs).
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
            |entries, views| {
                let before = views.remove(&source).unwrap_or_default();
                // The later document wins when one key appears twice, as in `upsert`.
                let view: BTreeMap<StoreKey, Value> = new
                    .iter()
                    .map(|e| (e.key.clone(), e.object.clone()))
                    .collect();
                let mut changes = Vec::new();
                entries.retain(|e| {
                    let gone = e.source == source && !view.contains_key(&e.key);
                    if gone {
                        changes.push((e.key.clone(), Action::Deleted));
                    }
                    !gone
                });
                let owned: HashSet<StoreKey> = entries
                    .iter()
                    .filter(|e| e.source == source)
                    .map(|e| e.key.clone())
                    .collect();
                // Owned resources are always refreshed (their lines may have moved); others
                // only when the file added or edited them since it was last loaded.
                let written: Vec<Entry> = new
                    .into_iter()
                    .filter(|e| owned.contains(&e.key) || before.get(&e.key) != Some(&e.object))
                    .collect();
                changes.extend(upsert(entries, written));
                views.insert(source, view);
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
        let mut warnings = Vec::new();
        let mut keys = keys.to_vec();
        if self.writer().pods_run_by_mesh {
            keys.retain(|key| {
                if !run_by_mesh(key) {
                    return true;
                }
                let warning = format!("{key} not deleted: {MESH_RUN_WHY}");
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
                false
            });
        }
        self.commit(
            |entries, _| {
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
            warnings,
        )
    }

    /// Applies `change` to a copy of the entries and views, validates the result, records it
    /// (with a state directory) and publishes it as the next version if any entry changed.
    /// Nothing is published that was not recorded first: a change the state directory cannot
    /// take is refused.
    fn commit(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Entry>>, &mut Views) -> Vec<(StoreKey, Action)>,
        skipped: Vec<String>,
        warnings: Vec<String>,
    ) -> Result<ChangeOutcome, StoreError> {
        let mut writer = self.writer();
        let current = self.current();
        let mut entries: Vec<Arc<Entry>> = current.entries.as_ref().clone();
        let mut views = writer.views.clone();
        let changes = change(&mut entries, &mut views);
        let outcome = |version| ChangeOutcome {
            version,
            changes: changes.clone(),
            skipped: skipped.clone(),
            warnings: warnings.clone(),
        };
        if changes.iter().all(|(_, a)| *a == Action::Unchanged) {
            // The served configuration is the same; a source's view may still have moved on
            // (it no longer holds a resource the API owns), which the next reload compares to.
            if views != writer.views {
                if let Some(dir) = &writer.state_dir {
                    dir.save(&persist::snapshot(
                        current.version,
                        &current.entries,
                        &views,
                    ))?;
                }
                writer.views = views;
            }
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
        if let Some(dir) = &writer.state_dir {
            dir.save(&persist::snapshot(next.version, &next.entries, &views))?;
        }
        writer.views = views;
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
    let mut parsed = Parsed::default();
    for file in files {
        for doc in split_documents(&file.text) {
            let document = Document {
                origin: file.name.clone(),
                first_line: doc.first_line,
                text: doc.text,
                item: String::new(),
            };
            parse_into(source, &document, &mut parsed);
        }
    }
    parsed
}

/// The entries of one document (a document naming a List `item` gives that item's only).
fn parse_document(source: &Source, document: &Document) -> Parsed {
    let mut parsed = Parsed::default();
    parse_into(source, document, &mut parsed);
    parsed
}

fn parse_into(source: &Source, document: &Document, parsed: &mut Parsed) {
    let report = load_document(document);
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
        return;
    }
    let object = document_object(document);
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
        if is_test_description(&test) {
            let key = key_of_test(&test);
            parsed.warnings.push(format!(
                "{}: {key} ignored: a PolicyTest with test cases is run with \
                 `meshward test`, not applied; it does not change what the proxies enforce",
                location(document, &test.origin)
            ));
            parsed.ignored.push(key);
            continue;
        }
        parsed.entries.push(Entry {
            key: key_of_test(&test),
            source: source.clone(),
            document: document.clone(),
            content: Content::Test(Box::new(test)),
            object: object.clone(),
        });
    }
}

impl Entry {
    /// `file:line` where this resource or test starts.
    fn location(&self) -> String {
        let origin = match &self.content {
            Content::Resource(r) => &r.origin,
            Content::Test(t) => &t.origin,
        };
        location(&self.document, origin)
    }
}

/// `file:line` of a resource or test in `document`.
fn location(document: &Document, origin: &meshward_api::source::Origin) -> String {
    match origin.start() {
        Some(line) => format!("{}:{line}", document.origin),
        None => document.origin.clone(),
    }
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

/// A PolicyTest with `cases` or `expectErrors` is a test description: what `meshward test`
/// runs against a mesh of its own, not configuration of this one. Its `workloads`, `services`,
/// `meshConfig` and embedded resources describe the test's imagined mesh (often several stages
/// of a tutorial, one document each), so storing it would push phantom workloads and services,
/// other service accounts and policies to every proxy of the running mesh. Only the
/// declaration shape (workloads, services, meshConfig and resources, no cases) is
/// configuration.
fn is_test_description(test: &LoadedTest) -> bool {
    let spec = &test.test.spec;
    !spec.cases.is_empty() || spec.expect_errors.is_some()
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
