//! Loading resources from files, folders and text: multi-document YAML, `List` objects,
//! PolicyTests with their embedded and included resources, validation of everything.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::decode::{Decoded, decode_as, decode_resource, identify};
use crate::diag::{Diagnostic, Severity};
use crate::policytest::{POLICY_TEST_API_VERSION, PolicyTest};
use crate::resources::Resource;
use crate::source::{FieldPath, Location, LocationMap, Origin};
use crate::validate::validate;
use crate::yaml::parse_documents;

/// A valid resource and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedResource {
    /// The resource.
    pub resource: Resource,
    /// Its file and field locations.
    pub origin: Origin,
}

/// A PolicyTest, with the resources it embeds and includes already loaded.
#[derive(Debug, Clone)]
pub struct LoadedTest {
    /// The test document.
    pub test: PolicyTest,
    /// Where it came from.
    pub origin: Origin,
    /// Valid resources from `spec.resources` and `spec.include`.
    pub resources: Vec<LoadedResource>,
    /// Findings about those resources (the test's `expectErrors` are matched against them).
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds meshward does not use.
    pub skipped: Vec<SkippedDocument>,
}

/// A well-formed document of a kind meshward does not use, reported rather than dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedDocument {
    /// File name.
    pub file: Arc<str>,
    /// Where the document starts.
    pub location: Option<Location>,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    /// `ns/name`.
    pub name: String,
}

/// Everything read from a set of inputs.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Valid resources, in input order.
    pub resources: Vec<LoadedResource>,
    /// PolicyTests.
    pub tests: Vec<LoadedTest>,
    /// Documents of other kinds.
    pub skipped: Vec<SkippedDocument>,
    /// Errors and warnings. A resource with an error is not in `resources`.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadReport {
    /// Errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// True when any input was refused.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Resources loaded from the file `generated` that equal a resource of `originals` (same
    /// kind, namespace and name, same content) take that resource's origin, so a file a tool
    /// wrote from manifests (the local mesh's `resources.json`) is reported at the manifests'
    /// own files and lines. A resource that differs (its manifest changed since) keeps the
    /// generated file's origin: that copy is the one in force. Returns how many moved.
    pub fn restate_origins(&mut self, generated: &str, originals: &LoadReport) -> usize {
        let mut moved = 0;
        for loaded in self
            .resources
            .iter_mut()
            .filter(|r| &*r.origin.file == generated)
        {
            let id = loaded.resource.id();
            let original = originals
                .resources
                .iter()
                .rev()
                .find(|o| o.resource.id() == id)
                .filter(|o| o.resource == loaded.resource);
            if let Some(original) = original {
                loaded.origin = original.origin.clone();
                moved += 1;
            }
        }
        moved
    }

    fn absorb(&mut self, other: LoadReport) {
        self.resources.extend(other.resources);
        self.tests.extend(other.tests);
        self.skipped.extend(other.skipped);
        self.diagnostics.extend(other.diagnostics);
    }
}

/// A file or folder that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading failed.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Loads every YAML/JSON file in `paths` (folders recursively, files sorted by name).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for path in paths {
        for file in manifest_files(path.as_ref())? {
            report.absorb(load_file(&file)?);
        }
    }
    Ok(report)
}

/// Loads one file.
pub fn load_file(path: &Path) -> Result<LoadReport, LoadError> {
    let text = fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(load_text(&text, &path.display().to_string(), path.parent()))
}

/// Lists manifest files: `path` itself if it is a file, else every `.yaml`/`.yml`/`.json` below.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(manifest_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Loads a YAML text. `base_dir` resolves PolicyTest `include` paths.
pub fn load_text(text: &str, file: &str, base_dir: Option<&Path>) -> LoadReport {
    let file: Arc<str> = Arc::from(file);
    let mut report = LoadReport::default();
    let documents = match parse_documents(text) {
        Ok(d) => d,
        Err(err) => {
            report.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                location: Some(err.location),
                resource: None,
                field: FieldPath::root(),
                message: format!("invalid YAML: {}", err.message),
            });
            return report;
        }
    };
    for doc in documents {
        let locations = Arc::new(doc.locations);
        load_value(
            &doc.value,
            &file,
            &locations,
            &FieldPath::root(),
            base_dir,
            &mut report,
        );
    }
    report
}

fn load_value(
    value: &Value,
    file: &Arc<str>,
    locations: &Arc<LocationMap>,
    base: &FieldPath,
    base_dir: Option<&Path>,
    report: &mut LoadReport,
) {
    let origin = Origin {
        file: file.clone(),
        locations: if base.is_root() {
            locations.clone()
        } else {
            Arc::new(locations.subtree(base))
        },
        base: base.clone(),
    };
    if !value.is_object() {
        report.diagnostics.push(Diagnostic::at(
            Severity::Error,
            &origin,
            None,
            FieldPath::root(),
            "expected a resource (a mapping with apiVersion and kind)",
        ));
        return;
    }
    let (kind, api_version, _) = identify(value);
    // `kubectl get -o yaml` of several objects gives a `List`; load its items in place.
    if kind == Some("List")
        || kind.is_some_and(|k| k.ends_with("List") && value.get("items").is_some())
    {
        if let Some(items) = value.get("items").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                load_value(
                    item,
                    file,
                    locations,
                    &base.key("items").index(i),
                    base_dir,
                    report,
                );
            }
        }
        return;
    }
    if kind == Some("PolicyTest") && api_version == Some(POLICY_TEST_API_VERSION) {
        match decode_as::<PolicyTest>(value, &origin, None) {
            Ok(test) => report.tests.push(load_test(test, origin, base_dir)),
            Err(d) => report.diagnostics.push(d),
        }
        return;
    }
    load_resource(value, origin, report);
}

fn load_resource(value: &Value, origin: Origin, report: &mut LoadReport) {
    match decode_resource(value, &origin) {
        Ok(Decoded::Resource(resource)) => {
            let id = resource.id();
            let issues = validate(&resource);
            let mut refused = false;
            for issue in issues {
                refused |= issue.severity == Severity::Error;
                report.diagnostics.push(Diagnostic::at(
                    issue.severity,
                    &origin,
                    Some(id.clone()),
                    issue.field,
                    issue.message,
                ));
            }
            if !refused {
                report.resources.push(LoadedResource { resource, origin });
            }
        }
        Ok(Decoded::Skipped {
            api_version,
            kind,
            name,
        }) => report.skipped.push(SkippedDocument {
            file: origin.file.clone(),
            location: origin.start(),
            api_version,
            kind,
            name,
        }),
        Err(d) => report.diagnostics.push(d),
    }
}

fn load_test(test: PolicyTest, origin: Origin, base_dir: Option<&Path>) -> LoadedTest {
    let mut inner = LoadReport::default();
    let resources_path = FieldPath::root().key("spec").key("resources");
    for (i, value) in test.spec.resources.iter().enumerate() {
        let base = origin.base.join(&resources_path.index(i));
        // Embedded resources are located through the test's own map, rebased.
        let sub = origin.locations.subtree(&resources_path.index(i));
        let embedded = Origin {
            file: origin.file.clone(),
            locations: Arc::new(sub),
            base,
        };
        if value.is_object() {
            load_resource(value, embedded, &mut inner);
        } else {
            inner.diagnostics.push(Diagnostic::at(
                Severity::Error,
                &embedded,
                None,
                FieldPath::root(),
                "expected a resource (a mapping with apiVersion and kind)",
            ));
        }
    }
    for (i, include) in test.spec.include.iter().enumerate() {
        let path = match base_dir {
            Some(dir) => dir.join(include),
            None => PathBuf::from(include),
        };
        match load_paths(&[&path]) {
            Ok(mut included) => {
                // PolicyTests inside included folders are not part of this test.
                included.tests.clear();
                inner.absorb(included);
            }
            Err(err) => inner.diagnostics.push(Diagnostic::at(
                Severity::Error,
                &origin,
                None,
                FieldPath::root().key("spec").key("include").index(i),
                err.to_string(),
            )),
        }
    }
    LoadedTest {
        test,
        origin,
        resources: inner.resources,
        diagnostics: inner.diagnostics,
        skipped: inner.skipped,
    }
}
