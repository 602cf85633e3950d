//! The `meshward analyze` findings that concern the workload: those about the workload itself,
//! its namespace, or a resource the description shows as applying to it (a Service selecting
//! it, a DestinationRule towards it, a PeerAuthentication, AuthorizationPolicy or
//! RequestAuthentication that applies), and those whose message names the workload. A finding
//! about some of the workloads a resource applies to is shown for those only.

use meshward_api::{Kind, LoadReport};

use super::model::FindingView;
use crate::analyze::analyze;
use crate::inventory::Workload;

/// A resource the description refers to.
pub(crate) struct Related {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Related {
    /// `ns/name` as the description writes it.
    pub(crate) fn from_key(kind: Kind, key: &str) -> Option<Related> {
        let (namespace, name) = key.split_once('/')?;
        Some(Related {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The findings of `report` about `w` or `related`. Findings that only a PolicyTest stage shows
/// are left out: the description is of the configuration as a whole.
pub(crate) fn findings(report: &LoadReport, w: &Workload, related: &[Related]) -> Vec<FindingView> {
    let key = w.key();
    analyze(report)
        .into_iter()
        .filter(|f| f.stages.is_empty())
        .filter(|f| f.workloads.is_empty() || f.workloads.contains(&key))
        .filter(|f| {
            let about_related = f.resource.as_ref().is_some_and(|id| {
                (id.kind == Kind::Namespace && id.name == w.namespace)
                    || related.iter().any(|r| {
                        r.kind == id.kind && r.namespace == id.namespace && r.name == id.name
                    })
            });
            about_related || names(&f.message, &key)
        })
        .map(|f| FindingView {
            level: f.level.as_str().to_owned(),
            code: f.code.to_owned(),
            resource: f.resource.as_ref().map(ToString::to_string),
            origin: Some(match f.location {
                Some(l) => format!("{}:{}", f.file, l.line),
                None => f.file.to_string(),
            }),
            message: f.message,
        })
        .collect()
}

/// Does `text` name `key` as a whole word (`default/backend`, not `default/backend-v2`)?
fn names(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        let before = text.get(..at).and_then(|t| t.chars().next_back());
        let after = text.get(at + key.len()..).and_then(|t| t.chars().next());
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '/');
        !word(before) && !word(after)
    })
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn a_workload_is_named_as_a_whole_word() {
        assert!(names("on default/backend port 80", "default/backend"));
        assert!(!names("on default/backend-v2 port 80", "default/backend"));
        assert!(!names("x/default/backend", "default/backend"));
    }
}
