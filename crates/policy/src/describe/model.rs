//! The description of one workload, as plain data: what `meshward describe` prints as text and
//! serializes as JSON or YAML, and what the control plane's admin API returns for a live mesh.
//! Every field is owned and deserializable, so a description computed by the control plane reads
//! back exactly as one computed from files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything that decides traffic to one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    /// The workload itself.
    pub workload: WorkloadView,
    /// Services selecting it, with what client sidecars originate towards each port.
    pub services: Vec<ServiceView>,
    /// DestinationRules that client sidecars use towards those services.
    pub destination_rules: Vec<DestinationRuleView>,
    /// The effective PeerAuthentication per port, and which resources set it.
    pub peer_authentication: PeerAuthnView,
    /// AuthorizationPolicies that apply, in evaluation order.
    pub authorization: AuthorizationView,
    /// RequestAuthentications that apply.
    pub request_authentication: RequestAuthnView,
    /// `meshward analyze` findings about this workload or a resource that applies to it.
    pub findings: Vec<FindingView>,
}

/// The workload: identity, labels, address, sidecar, ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    /// The name asked for (a pod name may stand for a Deployment replica).
    pub requested: String,
    /// The workload's name in the policy inventory.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// What declares it: `Pod`, `Deployment`, `WorkloadEntry` or `PolicyTest workload`.
    pub kind: String,
    /// How the requested name was resolved, when it was not the workload's own name.
    pub resolved: Option<String>,
    /// Where it is declared (`file:line`).
    pub origin: Option<String>,
    /// Service account.
    pub service_account: String,
    /// The SPIFFE ID of its certificate.
    pub identity: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// Pod IP.
    pub address: String,
    /// Set when the address is a placeholder: the resources do not say where the pod runs.
    pub address_note: Option<String>,
    /// Has a sidecar.
    pub sidecar: bool,
    /// Why it has (or lacks) a sidecar.
    pub sidecar_reason: String,
    /// Is an Istio ingress/egress or Gateway API gateway.
    pub gateway: bool,
    /// Container ports.
    pub ports: Vec<PortView>,
}

/// One container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    /// The port number.
    pub port: u16,
    /// `HTTP`, `HTTP2`, `GRPC` or `TCP`: the inbound filter chain it gets.
    pub protocol: String,
    /// Where the protocol comes from (a Service port name, `appProtocol`, a declaration, or
    /// sniffing).
    pub protocol_source: String,
    /// The container port's name.
    pub name: Option<String>,
    /// The container it belongs to.
    pub container: Option<String>,
}

/// A Service selecting the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `name.namespace.svc.cluster.local`.
    pub host: String,
    /// Where it is declared.
    pub origin: Option<String>,
    /// Its ports.
    pub ports: Vec<ServicePortView>,
}

/// One Service port and what clients originate towards it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortView {
    /// Port name.
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// The container port it reaches on this workload.
    pub target_port: Option<u16>,
    /// `HTTP`, `HTTP2`, `GRPC`, `TCP`, or `auto-detect` when neither the name nor
    /// `appProtocol` declares it.
    pub protocol: String,
    /// What sidecar clients originate, grouped by the client namespaces that get the same.
    pub client_tls: Vec<ClientTlsView>,
}

/// The TLS that sidecar clients in some namespaces originate towards one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsView {
    /// `ISTIO_MUTUAL`, `SIMPLE`, `MUTUAL` or `DISABLE` (plaintext).
    pub mode: String,
    /// `DestinationRule ns/name`, `auto mTLS`, or why auto mTLS chose plaintext.
    pub source: String,
    /// The client namespaces this applies to.
    pub client_namespaces: Vec<String>,
    /// Identities the client accepts from the server (secure naming).
    pub expected_identities: Vec<String>,
}

/// A DestinationRule used towards one of the workload's services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `spec.host`.
    pub host: String,
    /// Where it is declared.
    pub origin: Option<String>,
    /// Top-level `trafficPolicy.tls.mode`, `None` when it sets no TLS.
    pub tls_mode: Option<String>,
    /// `portLevelSettings` with a TLS mode.
    pub port_tls: Vec<PortTlsView>,
    /// Subsets whose labels this workload carries.
    pub matching_subsets: Vec<String>,
    /// Subsets it does not match.
    pub other_subsets: Vec<String>,
}

/// A DestinationRule's TLS mode for one service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTlsView {
    /// Service port.
    pub port: u16,
    /// `tls.mode`.
    pub mode: String,
}

/// The effective PeerAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthnView {
    /// Is it enforced at all (the workload has a sidecar and is not a gateway).
    pub enforced: bool,
    /// Why not, when not enforced.
    pub not_enforced_reason: Option<String>,
    /// The workload-level mode, on ports without a port-level setting.
    pub mode: String,
    /// The resolution, step by step: built-in default, mesh, namespace, workload.
    pub steps: Vec<PeerAuthnStep>,
    /// The mode of every container port and every port-level setting.
    pub ports: Vec<PortMtlsView>,
    /// PeerAuthentications that look relevant but do not apply, and why.
    pub ignored: Vec<IgnoredPolicy>,
}

/// One level of the PeerAuthentication resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthnStep {
    /// `default`, `mesh`, `namespace` or `workload`.
    pub level: String,
    /// `ns/name`, `None` for the built-in default.
    pub policy: Option<String>,
    /// Where it is declared.
    pub origin: Option<String>,
    /// The mode it writes (`UNSET` when it writes none).
    pub written: String,
    /// The mode after this step.
    pub result: String,
    /// The step in words: "sets STRICT" or "UNSET: inherits STRICT".
    pub effect: String,
}

/// The effective mode of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMtlsView {
    /// Container (target) port.
    pub port: u16,
    /// STRICT, PERMISSIVE or DISABLE.
    pub mode: String,
    /// What set it.
    pub set_by: String,
}

/// A policy that does not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredPolicy {
    /// `ns/name`.
    pub policy: String,
    /// Where it is declared.
    pub origin: Option<String>,
    /// Why it does not apply.
    pub reason: String,
}

/// The AuthorizationPolicies of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationView {
    /// Is it enforced at all (the workload has a sidecar).
    pub enforced: bool,
    /// Enforced policies in evaluation order: CUSTOM, AUDIT, DENY, ALLOW.
    pub policies: Vec<PolicyView>,
    /// Dry-run policies: evaluated as shadow rules, never change a decision.
    pub dry_run: Vec<PolicyView>,
    /// What happens to a request, in words, in evaluation order.
    pub verdict: Vec<String>,
    /// ALLOW/DENY rules that read the request principal (`requestPrincipals`,
    /// `request.auth.*`): `ACTION ns/name rule N: what`.
    pub request_principal_rules: Vec<String>,
}

/// One AuthorizationPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// `ns/name`.
    pub policy: String,
    /// CUSTOM, AUDIT, DENY or ALLOW.
    pub action: String,
    /// Why it applies: mesh-wide, namespace-wide or its selector.
    pub scope: String,
    /// Where it is declared.
    pub origin: Option<String>,
    /// CUSTOM provider.
    pub provider: Option<String>,
    /// Its rules, one line each.
    pub rules: Vec<RuleView>,
    /// What the proxy does differently from the YAML (rules dropped or widened on TCP ports).
    pub notes: Vec<String>,
}

/// One rule, in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    /// Index in `spec.rules`.
    pub index: usize,
    /// The rule in words.
    pub summary: String,
    /// Where it is declared.
    pub origin: Option<String>,
}

/// The RequestAuthentications of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthnView {
    /// The policies that apply.
    pub policies: Vec<RequestAuthnPolicyView>,
    /// What happens to a request without a token, in words.
    pub token_required: String,
}

/// One RequestAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthnPolicyView {
    /// `ns/name`.
    pub policy: String,
    /// Why it applies.
    pub scope: String,
    /// Where it is declared.
    pub origin: Option<String>,
    /// Its JWT rules.
    pub rules: Vec<JwtRuleView>,
}

/// One JWT rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtRuleView {
    /// `issuer`.
    pub issuer: String,
    /// Where keys come from: `jwksUri …`, `inline jwks`, or OIDC discovery.
    pub keys: String,
    /// `audiences`; empty means no audience check.
    pub audiences: Vec<String>,
    /// Where the token is read from.
    pub token_locations: Vec<String>,
    /// `forwardOriginalToken`.
    pub forward_original_token: bool,
    /// `outputPayloadToHeader`.
    pub output_payload_to_header: Option<String>,
    /// Why the rule's keys cannot be used, if they cannot (tokens of its issuer are rejected).
    pub error: Option<String>,
}

/// One `meshward analyze` finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingView {
    /// Error, Warning or Info.
    pub level: String,
    /// `IST0127`, `MW0003`, …
    pub code: String,
    /// `Kind ns/name` of the resource concerned.
    pub resource: Option<String>,
    /// `file:line`.
    pub origin: Option<String>,
    /// What is wrong.
    pub message: String,
}
