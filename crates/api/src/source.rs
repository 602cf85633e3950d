//! Where a piece of configuration came from: file, line, column and field path.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A position in a source text. Lines and columns are 1-based, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A dotted field path inside one document, such as `spec.rules[0].from[1].source.principals[0]`.
///
/// Keys that are not plain identifiers are quoted: `metadata.labels["app.kubernetes.io/name"]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// The path of the document root.
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// Parses the textual form produced by [`FieldPath::key`] and [`FieldPath::index`] chains.
    pub fn from_dotted(path: &str) -> Self {
        FieldPath(path.to_owned())
    }

    /// This path extended with a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let mut out = self.0.clone();
        if plain {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        } else {
            out.push('[');
            out.push_str(&format!("{key:?}"));
            out.push(']');
        }
        FieldPath(out)
    }

    /// This path extended with a sequence index.
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// This path with `other` appended (`other` relative to this one).
    pub fn join(&self, other: &FieldPath) -> Self {
        if self.0.is_empty() {
            return other.clone();
        }
        if other.0.is_empty() {
            return self.clone();
        }
        if other.0.starts_with('[') {
            FieldPath(format!("{}{}", self.0, other.0))
        } else {
            FieldPath(format!("{}.{}", self.0, other.0))
        }
    }

    /// The enclosing path, or `None` at the root.
    pub fn parent(&self) -> Option<FieldPath> {
        if self.0.is_empty() {
            return None;
        }
        let s = self.0.as_str();
        // The last segment starts at the last '.' or '[' that is not inside a quoted key.
        let mut cut = 0;
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_quotes = false;
                }
                continue;
            }
            match c {
                '"' => in_quotes = true,
                '.' | '[' => cut = i,
                _ => {}
            }
        }
        Some(FieldPath(s.get(..cut).unwrap_or_default().to_owned()))
    }

    /// The textual form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(document)")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// The locations of every field of one YAML document, by field path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocationMap {
    by_path: HashMap<FieldPath, Location>,
}

impl LocationMap {
    pub(crate) fn insert(&mut self, path: FieldPath, location: Location) {
        self.by_path.entry(path).or_insert(location);
    }

    /// The location of `path`, or of its nearest ancestor that has one (a missing field is
    /// reported at the object that lacks it).
    pub fn find(&self, path: &FieldPath) -> Option<Location> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            if let Some(loc) = self.by_path.get(&p) {
                return Some(*loc);
            }
            current = p.parent();
        }
        None
    }

    /// A map for the subtree at `prefix`, with paths made relative to it.
    pub fn subtree(&self, prefix: &FieldPath) -> LocationMap {
        let mut by_path = HashMap::new();
        for (path, loc) in &self.by_path {
            let p = path.as_str();
            let pre = prefix.as_str();
            if p == pre {
                by_path.insert(FieldPath::root(), *loc);
            } else if let Some(rest) = p.strip_prefix(pre) {
                if let Some(rel) = rest.strip_prefix('.') {
                    by_path.insert(FieldPath(rel.to_owned()), *loc);
                } else if rest.starts_with('[') {
                    by_path.insert(FieldPath(rest.to_owned()), *loc);
                }
            }
        }
        LocationMap { by_path }
    }
}

/// Where a resource was read from: the file (or a label such as `<stdin>`), and the locations
/// of its fields, kept so that later stages (analysis, `describe`) can point into the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// File name as given by the user, or a label.
    pub file: Arc<str>,
    /// Locations of the resource's fields, paths relative to the resource.
    pub locations: Arc<LocationMap>,
    /// The field path of the resource inside its document (non-root for resources embedded in a
    /// PolicyTest or a `List`).
    pub base: FieldPath,
}

impl Origin {
    /// An origin for resources built in code, with no file behind them.
    pub fn synthetic(label: &str) -> Self {
        Origin {
            file: Arc::from(label),
            locations: Arc::new(LocationMap::default()),
            base: FieldPath::root(),
        }
    }

    /// The location of a field of this resource.
    pub fn locate(&self, path: &FieldPath) -> Option<Location> {
        self.locations.find(path)
    }

    /// The location of the resource itself.
    pub fn start(&self) -> Option<Location> {
        self.locations.find(&FieldPath::root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_keys_and_indexes() {
        let p = FieldPath::root()
            .key("spec")
            .key("rules")
            .index(0)
            .key("from");
        assert_eq!(p.as_str(), "spec.rules[0].from");
        let q = FieldPath::root()
            .key("metadata")
            .key("labels")
            .key("app.kubernetes.io/name");
        assert_eq!(q.as_str(), "metadata.labels[\"app.kubernetes.io/name\"]");
        assert_eq!(q.parent().map(|p| p.0), Some("metadata.labels".to_owned()));
        assert_eq!(p.parent().map(|p| p.0), Some("spec.rules[0]".to_owned()));
        assert_eq!(FieldPath::root().key("a").parent(), Some(FieldPath::root()));
    }

    #[test]
    fn missing_field_falls_back_to_parent_location() {
        let mut m = LocationMap::default();
        m.insert(
            FieldPath::root().key("spec"),
            Location { line: 3, column: 1 },
        );
        let loc = m.find(&FieldPath::root().key("spec").key("rules").index(2));
        assert_eq!(loc, Some(Location { line: 3, column: 1 }));
    }

    #[test]
    fn subtree_rebases_paths() {
        let mut m = LocationMap::default();
        let base = FieldPath::root().key("spec").key("resources").index(1);
        m.insert(
            base.clone(),
            Location {
                line: 10,
                column: 3,
            },
        );
        m.insert(
            base.key("kind"),
            Location {
                line: 11,
                column: 5,
            },
        );
        let sub = m.subtree(&base);
        assert_eq!(
            sub.find(&FieldPath::root().key("kind")),
            Some(Location {
                line: 11,
                column: 5
            })
        );
        assert_eq!(
            sub.find(&FieldPath::root()),
            Some(Location {
                line: 10,
                column: 3
            })
        );
    }
}
