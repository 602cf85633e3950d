//! Typed decoding of one document, with every error located by field path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diag::{Diagnostic, Severity};
use crate::resources::{Kind, Resource, ResourceId};
use crate::source::{FieldPath, Origin};

/// What one document turned out to be.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "built once per document, then unpacked"
)]
pub enum Decoded {
    /// A kind meshward understands.
    Resource(Resource),
    /// A well-formed object of a kind meshward does not use (a Gateway, a ConfigMap…).
    Skipped {
        /// Its `apiVersion`.
        api_version: String,
        /// Its `kind`.
        kind: String,
        /// `ns/name` as far as it is known.
        name: String,
    },
}

/// Decodes `value` as `T`, turning a serde error into a located diagnostic.
#[expect(
    clippy::result_large_err,
    reason = "errors happen once per bad document; a boxed diagnostic would buy nothing"
)]
pub fn decode_as<T: DeserializeOwned>(
    value: &Value,
    origin: &Origin,
    resource: Option<&ResourceId>,
) -> Result<T, Diagnostic> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = path_of(err.path());
        Diagnostic::at(
            Severity::Error,
            origin,
            resource.cloned(),
            field,
            tidy_serde_message(&err.inner().to_string()),
        )
    })
}

fn path_of(path: &serde_path_to_error::Path) -> FieldPath {
    let mut out = FieldPath::root();
    for segment in path.iter() {
        out = match segment {
            serde_path_to_error::Segment::Seq { index } => out.index(*index),
            serde_path_to_error::Segment::Map { key } => out.key(key),
            serde_path_to_error::Segment::Enum { variant } => out.key(variant),
            serde_path_to_error::Segment::Unknown => out,
        };
    }
    out
}

/// serde's wording ("invalid type", untagged-enum failures) is written for programmers; say it in
/// the terms a manifest author uses.
fn tidy_serde_message(message: &str) -> String {
    message.replace("invalid type: ", "wrong type: ").replace(
        "data did not match any variant of untagged enum IntOrString",
        "expected an integer or a string",
    )
}

/// The `kind`/`apiVersion`/name of a document, read leniently so that errors can name it.
pub fn identify(value: &Value) -> (Option<&str>, Option<&str>, ResourceHint) {
    let kind = value.get("kind").and_then(Value::as_str);
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    (kind, api_version, ResourceHint { name, namespace })
}

/// Name and namespace read before decoding.
#[derive(Debug, Clone)]
pub struct ResourceHint {
    /// `metadata.name`, or `""`.
    pub name: String,
    /// `metadata.namespace`, or `default`.
    pub namespace: String,
}

/// Decodes one resource document. `Ok(Decoded::Skipped)` for kinds meshward does not use.
#[expect(
    clippy::result_large_err,
    reason = "errors happen once per bad document; a boxed diagnostic would buy nothing"
)]
pub fn decode_resource(value: &Value, origin: &Origin) -> Result<Decoded, Diagnostic> {
    let (kind_name, api_version, hint) = identify(value);
    let root = FieldPath::root();
    let Some(kind_name) = kind_name else {
        return Err(Diagnostic::at(
            Severity::Error,
            origin,
            None,
            root.key("kind"),
            "missing `kind`: expected a Kubernetes or Istio resource",
        ));
    };
    let Some(api_version) = api_version else {
        return Err(Diagnostic::at(
            Severity::Error,
            origin,
            None,
            root.key("apiVersion"),
            format!("missing `apiVersion` for kind `{kind_name}`"),
        ));
    };
    let Some(kind) = Kind::from_kind(kind_name) else {
        return Ok(Decoded::Skipped {
            api_version: api_version.to_owned(),
            kind: kind_name.to_owned(),
            name: format!("{}/{}", hint.namespace, hint.name),
        });
    };
    let id = ResourceId {
        kind,
        namespace: if kind.is_namespaced() {
            hint.namespace.clone()
        } else {
            String::new()
        },
        name: hint.name.clone(),
    };
    if !kind.api_versions().contains(&api_version) {
        // A kind with the same name in another group (e.g. a Gateway API `Service`-like CRD) is
        // not ours: skip it. The same group at an unsupported version is an error.
        let group = api_version.split('/').next().unwrap_or_default();
        let ours = kind.api_versions().iter().any(|v| {
            let g = v.split('/').next().unwrap_or_default();
            g == group || (!v.contains('/') && !api_version.contains('/'))
        });
        if !ours {
            return Ok(Decoded::Skipped {
                api_version: api_version.to_owned(),
                kind: kind_name.to_owned(),
                name: format!("{}/{}", hint.namespace, hint.name),
            });
        }
        return Err(Diagnostic::at(
            Severity::Error,
            origin,
            Some(id),
            root.key("apiVersion"),
            format!(
                "unsupported apiVersion `{api_version}` for {kind}: expected one of {}",
                kind.api_versions().join(", ")
            ),
        ));
    }
    let id = Some(&id);
    let resource = match kind {
        Kind::AuthorizationPolicy => Resource::AuthorizationPolicy(decode_as(value, origin, id)?),
        Kind::PeerAuthentication => Resource::PeerAuthentication(decode_as(value, origin, id)?),
        Kind::RequestAuthentication => {
            Resource::RequestAuthentication(decode_as(value, origin, id)?)
        }
        Kind::DestinationRule => Resource::DestinationRule(decode_as(value, origin, id)?),
        Kind::WorkloadEntry => Resource::WorkloadEntry(decode_as(value, origin, id)?),
        Kind::Namespace => Resource::Namespace(decode_as(value, origin, id)?),
        Kind::ServiceAccount => Resource::ServiceAccount(decode_as(value, origin, id)?),
        Kind::Service => Resource::Service(decode_as(value, origin, id)?),
        Kind::Deployment => Resource::Deployment(decode_as(value, origin, id)?),
        Kind::Pod => Resource::Pod(decode_as(value, origin, id)?),
    };
    Ok(Decoded::Resource(resource))
}
