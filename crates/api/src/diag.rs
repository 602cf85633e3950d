//! Diagnostics: an error or warning about one field of one resource, with its file and line.

use std::fmt;
use std::sync::Arc;

use crate::resources::ResourceId;
use crate::source::{FieldPath, Location, Origin};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The resource is refused.
    Error,
    /// Accepted, but probably not what was meant (Istio's webhook warnings).
    Warning,
}

/// One finding, located.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File name, or a label such as `<stdin>`.
    pub file: Arc<str>,
    /// Line and column, when known.
    pub location: Option<Location>,
    /// The resource concerned, when it could be identified.
    pub resource: Option<ResourceId>,
    /// The field concerned, relative to the resource (or the document).
    pub field: FieldPath,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about `field` of a resource read from `origin`.
    pub fn at(
        severity: Severity,
        origin: &Origin,
        resource: Option<ResourceId>,
        field: FieldPath,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            file: origin.file.clone(),
            location: origin.locate(&field),
            resource,
            field,
            message: message.into(),
        }
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{loc}")?;
        }
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {level}: ")?;
        if let Some(id) = &self.resource {
            write!(f, "{id}: ")?;
        }
        if !self.field.is_root() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A finding produced by validation, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Error or warning.
    pub severity: Severity,
    /// The field concerned, relative to the resource.
    pub field: FieldPath,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Issue {
    /// An error about `field`.
    pub fn error(field: FieldPath, message: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            field,
            message: message.into(),
        }
    }

    /// A warning about `field`.
    pub fn warning(field: FieldPath, message: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Warning,
            field,
            message: message.into(),
        }
    }
}
