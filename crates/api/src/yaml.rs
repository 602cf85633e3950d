//! Multi-document YAML to JSON values, keeping the line and column of every field.
//!
//! Resources are deserialized from `serde_json::Value` with `serde_path_to_error`, so every error
//! has a field path; the [`LocationMap`] built here turns that path back into a line and column.
//! Plain scalars are resolved as `kubectl` resolves them (sigs.k8s.io/yaml, YAML 1.1 booleans
//! `yes`/`no`/`on`/`off` included), so a value Kubernetes would reject as "not a string" is
//! rejected here too.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::source::{FieldPath, Location, LocationMap};

/// One YAML document of a stream.
#[derive(Debug, Clone)]
pub struct YamlDocument {
    /// The document as a JSON value.
    pub value: Value,
    /// Where each field of `value` is.
    pub locations: LocationMap,
    /// Where the document starts.
    pub start: Location,
}

/// A YAML text that is not well-formed, or uses a construct resources cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct YamlError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong.
    pub message: String,
}

/// Parses every document of `text`. Empty documents (a lone `---`) are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<YamlDocument>, YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            location: Location {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_owned(),
        })?;
        builder.on_event(event, span)?;
    }
    Ok(builder.documents)
}

fn location(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

enum Frame {
    Sequence {
        items: Vec<Value>,
        anchor: usize,
        path: FieldPath,
    },
    Mapping {
        entries: Map<String, Value>,
        anchor: usize,
        path: FieldPath,
        /// The key read, waiting for its value.
        pending_key: Option<String>,
    },
}

#[derive(Default)]
struct Builder {
    documents: Vec<YamlDocument>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    locations: LocationMap,
    doc_start: Location,
    root: Option<Value>,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let at = location(&span);
        match event {
            Event::DocumentStart(_) => {
                self.doc_start = at;
                self.locations = LocationMap::default();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                if let Some(value) = self.root.take()
                    && !value.is_null()
                {
                    self.documents.push(YamlDocument {
                        value,
                        locations: std::mem::take(&mut self.locations),
                        start: self.doc_start,
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let in_key_position = matches!(
                    self.stack.last(),
                    Some(Frame::Mapping {
                        pending_key: None,
                        ..
                    })
                );
                if in_key_position {
                    return self.set_key(text.into_owned(), at);
                }
                let tag_suffix = tag.as_ref().map(|t| {
                    if t.is_yaml_core_schema() {
                        t.suffix.clone()
                    } else {
                        format!("{}{}", t.handle, t.suffix)
                    }
                });
                let value = resolve_scalar(&text, style, tag_suffix.as_deref(), at)?;
                let path = self.next_value_path();
                self.locations.insert(path, at);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value, at)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.check_not_key(at)?;
                let path = self.next_value_path();
                self.locations.insert(path.clone(), at);
                self.stack.push(Frame::Sequence {
                    items: Vec::new(),
                    anchor,
                    path,
                });
            }
            Event::MappingStart(anchor, _) => {
                self.check_not_key(at)?;
                let path = self.next_value_path();
                self.locations.insert(path.clone(), at);
                self.stack.push(Frame::Mapping {
                    entries: Map::new(),
                    anchor,
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Sequence { items, anchor, .. }) = self.stack.pop() {
                    let value = Value::Array(items);
                    if anchor > 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    self.push_value(value, at)?;
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Mapping {
                    entries, anchor, ..
                }) = self.stack.pop()
                {
                    let value = Value::Object(entries);
                    if anchor > 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    self.push_value(value, at)?;
                }
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    location: at,
                    message: "alias refers to an unknown anchor".to_owned(),
                })?;
                if let Some(Frame::Mapping {
                    pending_key: None, ..
                }) = self.stack.last()
                {
                    return match value {
                        Value::String(s) => self.set_key(s, at),
                        _ => Err(YamlError {
                            location: at,
                            message: "mapping keys must be strings".to_owned(),
                        }),
                    };
                }
                let path = self.next_value_path();
                self.locations.insert(path, at);
                self.push_value(value, at)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn check_not_key(&self, at: Location) -> Result<(), YamlError> {
        if let Some(Frame::Mapping {
            pending_key: None, ..
        }) = self.stack.last()
        {
            return Err(YamlError {
                location: at,
                message: "mapping keys must be scalars".to_owned(),
            });
        }
        Ok(())
    }

    fn set_key(&mut self, key: String, at: Location) -> Result<(), YamlError> {
        if let Some(Frame::Mapping {
            entries,
            pending_key,
            path,
            ..
        }) = self.stack.last_mut()
        {
            // kubectl's strict decoding refuses duplicate fields; a silent "last one wins"
            // would let a second `action:` or `rules:` hide the first.
            if entries.contains_key(&key) {
                return Err(YamlError {
                    location: at,
                    message: format!("duplicate key `{key}` in mapping"),
                });
            }
            self.locations.insert(path.key(&key), at);
            *pending_key = Some(key);
        }
        Ok(())
    }

    fn next_value_path(&self) -> FieldPath {
        match self.stack.last() {
            None => FieldPath::root(),
            Some(Frame::Sequence { items, path, .. }) => path.index(items.len()),
            Some(Frame::Mapping {
                path, pending_key, ..
            }) => path.key(pending_key.as_deref().unwrap_or_default()),
        }
    }

    fn push_value(&mut self, value: Value, at: Location) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
            }
            Some(Frame::Sequence { items, .. }) => items.push(value),
            Some(Frame::Mapping {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                Some(key) => {
                    entries.insert(key, value);
                }
                None => {
                    return Err(YamlError {
                        location: at,
                        message: "mapping keys must be scalars".to_owned(),
                    });
                }
            },
        }
        Ok(())
    }
}

/// Resolves a scalar the way Kubernetes' YAML decoder does.
fn resolve_scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&str>,
    at: Location,
) -> Result<Value, YamlError> {
    match tag {
        Some("str") => return Ok(Value::String(text.to_owned())),
        Some("null") => return Ok(Value::Null),
        Some("bool") | Some("int") | Some("float") | None => {}
        Some(other) => {
            return Err(YamlError {
                location: at,
                message: format!("unsupported YAML tag `{other}`"),
            });
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Value::Number(n);
    }
    if looks_like_float(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

fn parse_int(text: &str) -> Option<Number> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    let (radix, body) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = digits.strip_prefix("0o") {
        (8, oct)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    if let Ok(v) = i64::try_from(value) {
        Some(Number::from(v))
    } else {
        u64::try_from(value).ok().map(Number::from)
    }
}

fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '0'..='9' => seen_digit = true,
            '.' if !seen_dot => seen_dot = true,
            'e' | 'E' if seen_digit => {
                if matches!(chars.peek(), Some('-') | Some('+')) {
                    chars.next();
                }
                return chars.clone().count() > 0 && chars.all(|c| c.is_ascii_digit());
            }
            _ => return false,
        }
    }
    seen_digit && seen_dot
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loc(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn documents_values_and_locations() {
        let text =
            "a: 1\nb:\n  - x\n  - 'true'\n---\n---\nkind: Foo\nspec:\n  ports: [\"80\", 81]\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2, "the empty middle document is dropped");
        assert_eq!(docs[0].value, json!({"a": 1, "b": ["x", "true"]}));
        assert_eq!(
            docs[1].value,
            json!({"kind": "Foo", "spec": {"ports": ["80", 81]}})
        );
        let p = FieldPath::root().key("b").index(1);
        assert_eq!(docs[0].locations.find(&p), loc(4, 5));
        let p = FieldPath::root().key("spec").key("ports").index(1);
        assert_eq!(docs[1].locations.find(&p), loc(9, 17));
        assert_eq!(
            docs[1].locations.find(&FieldPath::root().key("spec")),
            loc(8, 1)
        );
    }

    #[test]
    fn plain_scalars_resolve_like_kubectl() {
        let docs =
            parse_documents("[yes, off, ~, 0x1F, -3, 1.5, 1e3, 1.2.3, '7', abc, 80, .5]").unwrap();
        assert_eq!(
            docs[0].value,
            json!([
                true, false, null, 31, -3, 1.5, 1000.0, "1.2.3", "7", "abc", 80, 0.5
            ])
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let err = parse_documents("spec:\n  action: ALLOW\n  action: DENY\n").unwrap_err();
        assert_eq!(err.location, Location { line: 3, column: 3 });
        assert!(err.message.contains("duplicate key `action`"));
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let docs = parse_documents("a: &x [1, 2]\nb: *x\n").unwrap();
        assert_eq!(docs[0].value, json!({"a": [1, 2], "b": [1, 2]}));
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.location.line >= 1, "{err}");
    }

    #[test]
    fn numeric_keys_are_strings() {
        let docs = parse_documents("portLevelMtls:\n  8080: {mode: DISABLE}\n").unwrap();
        assert_eq!(
            docs[0].value,
            json!({"portLevelMtls": {"8080": {"mode": "DISABLE"}}})
        );
    }
}
