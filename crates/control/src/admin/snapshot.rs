//! `GET /api/v1/snapshot`: the store's current version as source documents, for the commands
//! that run `meshward-policy` on the running mesh (`meshward check` and `meshward analyze`
//! without `-f`).
//!
//! A snapshot carries what the proxies receive — each stored resource's source document (file,
//! first line, text, `List` item) and the JWKS fetched for `jwksUri` rules — plus who wrote each
//! document (a watched path or `meshward apply`). [`StoreSnapshot::report`] turns it back into
//! the [`LoadReport`] the offline commands load from files, with the loader the proxies use
//! ([`load_document`]), so a live answer is the offline answer computed on the store's contents:
//! one code path, and every resource and finding still names its `file:line`.
//!
//! Nothing is computed here; the control plane only lists what it holds.

use std::collections::BTreeSet;

use meshward_api::protocol::proto::{Document, FetchedJwks, fetched_jwks};
use meshward_api::protocol::{inline_jwks, jwks_uris, load_document};
use meshward_api::{LoadReport, ResourceId};
use serde::{Deserialize, Serialize};

use crate::store::{Content, Source, StoreState};

/// The store's current version, as documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreSnapshot {
    /// The store version these documents are.
    pub version: u64,
    /// One document per stored resource, in store order.
    pub documents: Vec<SnapshotDocument>,
    /// For each `jwksUri` of the stored RequestAuthentications, what the proxies receive.
    #[serde(default)]
    pub jwks: Vec<SnapshotJwks>,
}

/// One stored resource's source document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotDocument {
    /// `AuthorizationPolicy`, `Pod`, …, or `PolicyTest`.
    pub kind: String,
    /// Namespace (`""` for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Who wrote it.
    pub written_by: WrittenBy,
    /// The file it came from (for `meshward apply`, the file name the command sent).
    pub origin: String,
    /// The line of `origin` where `text` starts (1-based).
    pub first_line: u32,
    /// The document's text.
    pub text: String,
    /// The item path (`items[2]`) of the resource inside a `List`, or empty.
    #[serde(default)]
    pub item: String,
}

/// Who wrote a stored resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum WrittenBy {
    /// A file or folder the control plane watches (`meshward control-plane -f`, or the
    /// generated configuration of `meshward up`).
    Watched {
        /// The watched path.
        path: String,
    },
    /// `meshward apply`, through the admin API.
    Apply,
}

/// The JWKS the proxies receive for one `jwksUri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotJwks {
    /// The URI.
    pub uri: String,
    /// The fetched key set, when there is one.
    #[serde(default)]
    pub document: Option<String>,
    /// Why there is none.
    #[serde(default)]
    pub error: Option<String>,
}

// === impl StoreSnapshot ===

impl StoreSnapshot {
    /// The snapshot of `state`; `jwks` answers for each `jwksUri` as it does for the proxies.
    pub fn of(state: &StoreState, jwks: &dyn Fn(&str) -> FetchedJwks) -> Self {
        let mut uris = BTreeSet::new();
        let documents = state
            .entries
            .iter()
            .map(|entry| {
                match &entry.content {
                    Content::Resource(r) => uris.extend(jwks_uris([&r.resource])),
                    Content::Test(t) => {
                        uris.extend(jwks_uris(t.resources.iter().map(|r| &r.resource)))
                    }
                }
                SnapshotDocument {
                    kind: entry.key.kind.clone(),
                    namespace: entry.key.namespace.clone(),
                    name: entry.key.name.clone(),
                    written_by: match &entry.source {
                        Source::Path(path) => WrittenBy::Watched {
                            path: path.display().to_string(),
                        },
                        Source::Api => WrittenBy::Apply,
                    },
                    origin: entry.document.origin.clone(),
                    first_line: entry.document.first_line,
                    text: entry.document.text.clone(),
                    item: entry.document.item.clone(),
                }
            })
            .collect();
        let jwks = uris
            .iter()
            .map(|uri| {
                let fetched = jwks(uri);
                let (document, error) = match fetched.result {
                    Some(fetched_jwks::Result::Document(d)) => (Some(d), None),
                    Some(fetched_jwks::Result::Error(e)) => (None, Some(e)),
                    None => (None, None),
                };
                SnapshotJwks {
                    uri: fetched.uri,
                    document,
                    error,
                }
            })
            .collect();
        StoreSnapshot {
            version: state.version,
            documents,
            jwks,
        }
    }

    /// The stored resources as a load report, exactly as stored (what `meshward analyze` reads):
    /// each document loaded at its original line, so locations name the original file.
    pub fn report(&self) -> LoadReport {
        let mut report = LoadReport::default();
        for d in &self.documents {
            let one = load_document(&Document {
                origin: d.origin.clone(),
                first_line: d.first_line,
                text: d.text.clone(),
                item: d.item.clone(),
            });
            report.resources.extend(one.resources);
            report.tests.extend(one.tests);
            report.skipped.extend(one.skipped);
            // A `List` is stored once per item, and each copy reloads the whole document: keep
            // each warning once.
            for diagnostic in one.diagnostics {
                if !report.diagnostics.contains(&diagnostic) {
                    report.diagnostics.push(diagnostic);
                }
            }
        }
        report
    }

    /// [`report`](Self::report) with the fetched JWKS inlined into the `jwksUri` rules, as each
    /// proxy inlines them (authentication.md §5.6: "The JWKS JSON is inlined into Envoy config
    /// (`local_jwks`)"): what the sidecars enforce, for `meshward check`.
    pub fn enforced_report(&self) -> LoadReport {
        let mut report = self.report();
        let fetched: Vec<FetchedJwks> = self
            .jwks
            .iter()
            .map(|j| FetchedJwks {
                uri: j.uri.clone(),
                result: match (&j.document, &j.error) {
                    (Some(d), _) => Some(fetched_jwks::Result::Document(d.clone())),
                    (None, Some(e)) => Some(fetched_jwks::Result::Error(e.clone())),
                    (None, None) => None,
                },
            })
            .collect();
        inline_jwks(&mut report, &fetched);
        report
    }

    /// Who wrote the resource `id` (the last document of that kind, namespace and name).
    pub fn written_by(&self, id: &ResourceId) -> Option<&WrittenBy> {
        let namespace = if id.kind.is_namespaced() {
            id.namespace.as_str()
        } else {
            ""
        };
        self.documents
            .iter()
            .rev()
            .find(|d| d.kind == id.kind.as_str() && d.namespace == namespace && d.name == id.name)
            .map(|d| &d.written_by)
    }
}

#[cfg(test)]
mod tests;
