//! Metadata rules shared by every kind: a name is required.

use crate::diag::Issue;
use crate::resources::Resource;
use crate::source::FieldPath;

pub(crate) fn validate_metadata(resource: &Resource) -> Vec<Issue> {
    let mut issues = Vec::new();
    if resource.metadata().name().is_empty() {
        issues.push(Issue::error(
            FieldPath::root().key("metadata").key("name"),
            "`metadata.name` is required",
        ));
    }
    issues
}
