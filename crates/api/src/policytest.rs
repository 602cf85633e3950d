//! The `PolicyTest` kind (`meshward.dev/v1alpha1`): who exists, which resources apply, and what
//! must happen to given connections and requests. Format: `shared/spec/policy-tests.md`.
//!
//! Decoded strictly: an unknown field is an error naming the field and its line.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::mesh::MeshConfig;
use crate::resources::meta::ObjectMeta;

/// The API version of PolicyTest.
pub const POLICY_TEST_API_VERSION: &str = "meshward.dev/v1alpha1";

/// A PolicyTest document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PolicyTest {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PolicyTestSpec,
}

/// `PolicyTest.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PolicyTestSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<MeshConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<TestWorkload>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<TestService>,
    /// Resources exactly as applied with kubectl; decoded by the loader with their locations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Value>,
    /// Files or folders of manifests, relative to the PolicyTest's file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_errors: Option<Vec<ExpectedError>>,
    #[serde(default)]
    pub cases: Vec<TestCase>,
}

/// `spec.workloads[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TestWorkload {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TestPort>,
}

/// `spec.workloads[].ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TestPort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<PortProtocol>,
}

/// The protocol of a workload port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum PortProtocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

impl PortProtocol {
    /// HTTP, HTTP2 and GRPC ports get the HTTP filter chain.
    pub fn is_http(self) -> bool {
        self != PortProtocol::Tcp
    }
}

/// `spec.services[]`: the Kubernetes Service shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TestService {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TestServicePort>,
    /// The virtual IP (`spec.clusterIP`), where traffic captured to it is resolved.
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
}

/// `spec.services[].ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TestServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// `spec.expectErrors[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ExpectedError {
    /// `NS/NAME` of the offending resource.
    pub resource: String,
    /// A substring of the error message.
    pub contains: String,
}

impl ExpectedError {
    /// Is `d` the error this entry expects (same resource `NS/NAME`, message containing the
    /// text)?
    pub fn matches(&self, d: &crate::diag::Diagnostic) -> bool {
        d.is_error()
            && d.resource
                .as_ref()
                .is_some_and(|r| r.key() == self.resource)
            && d.message.contains(&self.contains)
    }
}

/// `spec.cases[]`: a connection/request case, or a configuration-only case.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TestCase {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<CaseSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<CaseDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<CaseRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Configuration-only case: the workload (`NS/NAME`) whose mTLS mode is expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Configuration-only case: the port of `workload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(deserialize_with = "deserialize_expectation")]
    pub expect: Expectation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `cases[].from`: exactly one of workload, principal, plaintext.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CaseSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `cases[].to`: a workload and container port, or a service host and service port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CaseDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub port: u16,
}

/// `cases[].request`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct CaseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValues>,
}

/// A header given once (a string) or on several lines (a list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HeaderValues {
    /// One line.
    One(String),
    /// Several lines of the same header.
    Many(Vec<String>),
}

impl HeaderValues {
    /// Every line's value.
    pub fn values(&self) -> Vec<&str> {
        match self {
            HeaderValues::One(v) => vec![v.as_str()],
            HeaderValues::Many(vs) => vs.iter().map(String::as_str).collect(),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(HeaderValues::One(s)),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(de::Error::custom("expected a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(HeaderValues::Many),
            _ => Err(de::Error::custom(
                "expected a string, or a list of strings for a repeated header",
            )),
        }
    }
}

/// The decision words of `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum ExpectedDecision {
    Allow,
    Deny,
    Reject,
    Unauthenticated,
}

impl ExpectedDecision {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedDecision::Allow => "ALLOW",
            ExpectedDecision::Deny => "DENY",
            ExpectedDecision::Reject => "REJECT",
            ExpectedDecision::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

/// `expect`: a decision word, or an object whose every given field must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Expectation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ExpectedDecision>,
    /// `NS/NAME` of the deciding policy, or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<String>,
}

/// Accepts `expect: ALLOW` as well as the object form.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectationObject {
    #[serde(default)]
    decision: Option<ExpectedDecision>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    rule: Option<usize>,
    #[serde(default)]
    mtls_mode: Option<String>,
    #[serde(default)]
    client_tls: Option<String>,
}

impl<'de> Deserialize<'de> for ExpectationWrapper {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectationWrapper;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ALLOW, DENY, REJECT, UNAUTHENTICATED, or an object with decision/policy/rule/mtlsMode/clientTls")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let decision =
                    ExpectedDecision::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(ExpectationWrapper(Expectation {
                    decision: Some(decision),
                    ..Expectation::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let o = ExpectationObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ExpectationWrapper(Expectation {
                    decision: o.decision,
                    policy: o.policy,
                    rule: o.rule,
                    mtls_mode: o.mtls_mode,
                    client_tls: o.client_tls,
                }))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Newtype used to give [`Expectation`] its two accepted shapes.
struct ExpectationWrapper(Expectation);

fn deserialize_expectation<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Expectation, D::Error> {
    ExpectationWrapper::deserialize(deserializer).map(|w| w.0)
}
