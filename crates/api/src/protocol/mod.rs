//! The control-plane ↔ proxy protocol (`meshward.config.v1.ConfigDiscovery/StreamConfig`) and
//! the document handling both ends share.
//!
//! A snapshot carries source documents, not compiled configuration: each [`proto::Document`] is
//! one YAML document as it was written, with its file name and first line, so the proxy loads it
//! with the same loader and compiles it with the same `meshward-policy` code the CLI runs (one
//! compiler), and an error in it still names `file:line:column` and the field.
//!
//! - [`split_documents`] cuts a YAML stream into its documents, remembering where each starts.
//! - [`load_document`] / [`load_documents`] turn snapshot documents back into a [`LoadReport`].
//! - [`inline_jwks`] puts the JWKS the control plane fetched into the `jwksUri` rules, as istiod
//!   inlines `local_jwks` into Envoy's configuration (authentication.md §5.6).

use std::collections::{BTreeMap, BTreeSet};

use crate::load::{LoadReport, load_text};
use crate::resources::Resource;

/// Rust types and gRPC stubs generated from `proto/meshward/config/v1/config.proto`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms
)]
pub mod proto {
    tonic::include_proto!("meshward.config.v1");
}

/// One document of a YAML stream and the 1-based line where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDocument {
    /// The line of the stream where `text` starts (1-based).
    pub first_line: u32,
    /// The document's text (its `---` marker line included, when it has one).
    pub text: String,
}

/// Cuts a YAML stream at its document markers: a line starting with `---` begins a document, a
/// line `...` ends one. Documents holding only blank lines and comments are dropped.
///
/// Marker lines are recognised at column 0 only, as YAML defines them; this does not handle
/// `%YAML` directives (Kubernetes manifests do not use them).
pub fn split_documents(text: &str) -> Vec<SourceDocument> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut first_line = 1u32;
    let flush = |current: &mut String, first_line: u32, out: &mut Vec<SourceDocument>| {
        let meaningful = current.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "---"
        });
        if meaningful {
            out.push(SourceDocument {
                first_line,
                text: std::mem::take(current),
            });
        } else {
            current.clear();
        }
    };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let bare = line.trim_end_matches(['\n', '\r']);
        let starts_document =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let ends_document = bare == "..." || bare.starts_with("... ");
        if starts_document {
            flush(&mut current, first_line, &mut out);
            first_line = number;
            current.push_str(line);
        } else if ends_document {
            flush(&mut current, first_line, &mut out);
            first_line = number.saturating_add(1);
        } else {
            if current.is_empty() {
                first_line = number;
            }
            current.push_str(line);
        }
    }
    flush(&mut current, first_line, &mut out);
    out
}

/// Loads one snapshot document: its text is placed at its original line so that every
/// diagnostic names the line of the original file, and only the resource at `item` is kept when
/// the document is a `List`.
pub fn load_document(document: &proto::Document) -> LoadReport {
    let padding = usize::try_from(document.first_line.saturating_sub(1)).unwrap_or(0);
    let mut text = "\n".repeat(padding);
    text.push_str(&document.text);
    let mut report = load_text(&text, &document.origin, None);
    if !document.item.is_empty() {
        report
            .resources
            .retain(|r| r.origin.base.as_str() == document.item);
        report.tests.clear();
        report.skipped.clear();
    }
    report
}

/// Loads every document of a snapshot, in order, into one report.
pub fn load_documents(documents: &[proto::Document]) -> LoadReport {
    let mut report = LoadReport::default();
    for document in documents {
        let one = load_document(document);
        report.resources.extend(one.resources);
        report.tests.extend(one.tests);
        report.skipped.extend(one.skipped);
        report.diagnostics.extend(one.diagnostics);
    }
    report
}

/// The `jwksUri` values of `resources` whose rules have no inline `jwks`: what the control plane
/// must fetch (authentication.md §5.6: "istiod fetches `jwksUri`").
pub fn jwks_uris<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for resource in resources {
        if let Resource::RequestAuthentication(ra) = resource {
            for rule in ra.spec.jwt_rules.iter().flatten().flatten() {
                let inline = rule.jwks.as_deref().is_some_and(|j| !j.is_empty());
                if let Some(uri) = rule.jwks_uri.as_deref().filter(|u| !u.is_empty())
                    && !inline
                {
                    out.insert(uri.to_owned());
                }
            }
        }
    }
    out
}

/// Every `jwksUri` of the RequestAuthentications in `report` (embedded PolicyTest resources
/// included).
pub fn report_jwks_uris(report: &LoadReport) -> BTreeSet<String> {
    let embedded = report.tests.iter().flat_map(|t| &t.resources);
    jwks_uris(report.resources.iter().chain(embedded).map(|r| &r.resource))
}

/// Puts each fetched JWKS into the `jwks` of the rules whose `jwksUri` it came from, as istiod
/// inlines it (authentication.md §5.6: "The JWKS JSON is inlined into Envoy config
/// (`local_jwks`)"). A rule whose fetch failed, or was not attempted, keeps no `jwks`, and the
/// policy compiler then gives it istiod's placeholder key: "Fetch failure or non-JWKS body ⇒ a
/// fixed RSA public key whose private key was discarded is inlined ⇒ every token for that issuer
/// fails".
pub fn inline_jwks(report: &mut LoadReport, fetched: &[proto::FetchedJwks]) {
    let documents: BTreeMap<&str, &str> = fetched
        .iter()
        .filter_map(|f| match &f.result {
            Some(proto::fetched_jwks::Result::Document(d)) => Some((f.uri.as_str(), d.as_str())),
            _ => None,
        })
        .collect();
    let embedded = report.tests.iter_mut().flat_map(|t| t.resources.iter_mut());
    for loaded in report.resources.iter_mut().chain(embedded) {
        if let Resource::RequestAuthentication(ra) = &mut loaded.resource {
            for rule in ra.spec.jwt_rules.iter_mut().flatten().flatten() {
                let inline = rule.jwks.as_deref().is_some_and(|j| !j.is_empty());
                if inline {
                    continue;
                }
                if let Some(document) = rule.jwks_uri.as_deref().and_then(|uri| documents.get(uri))
                {
                    rule.jwks = Some((*document).to_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
