//! AuthorizationPolicy → compiled rules, once per filter chain (HTTP and TCP), applying
//! istiod's translation rules for values that cannot be used on a chain (authorization.md §6).

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use meshward_api::path_template::PathTemplate;
use meshward_api::resources::security::{
    Action, AuthorizationPolicy, Condition, Operation, Source,
};

use super::identity::{
    PrincipalMatch, RequestPrincipalMatch, ServiceAccountMatch, TrustDomainBundle,
    TrustDomainMatch, namespace_glob,
};
use super::matchers::Matcher;
use crate::attributes::Attributes;
use crate::matcher::StringMatch;

/// `ns/name` of an AuthorizationPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyRef {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PolicyRef {
    /// Envoy's RBAC policy name for one rule, `ns[<ns>]-policy[<name>]-rule[<i>]` (§9). Envoy
    /// keeps policies in a map ordered by this name and reports the first that matches.
    pub fn envoy_rule_id(&self, rule: usize) -> String {
        format!("ns[{}]-policy[{}]-rule[{rule}]", self.namespace, self.name)
    }
}

/// One field of a source/operation, or one `when` condition: `values` ∧ ¬`notValues`.
#[derive(Debug, Clone)]
pub struct FieldMatcher {
    /// Where it came from, for traces: `principals`, `when[request.headers[x-id]]`…
    pub label: String,
    /// Positive values; empty means no constraint.
    pub values: Vec<Matcher>,
    /// Negative values; empty means no constraint.
    pub not_values: Vec<Matcher>,
}

impl FieldMatcher {
    /// authorization.md §4.1: `field(X, notX) ⇔ (X empty ∨ ∃ v∈X : m(v, attr)) ∧ (notX empty ∨
    /// ¬∃ v∈notX : m(v, attr))`.
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        (self.values.is_empty() || self.values.iter().any(|m| m.matches(a)))
            && !self.not_values.iter().any(|m| m.matches(a))
    }
}

/// One source or operation: every field must match. Empty = matches everything.
#[derive(Debug, Clone, Default)]
pub struct Clause {
    /// The fields, ANDed.
    pub fields: Vec<FieldMatcher>,
}

impl Clause {
    /// All fields match.
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        self.fields.iter().all(|f| f.matches(a))
    }
}

/// A rule as it stands on one chain.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Index in the policy's `rules`.
    pub index: usize,
    /// Any of these sources (none = no constraint).
    pub from: Vec<Clause>,
    /// Any of these operations (none = no constraint).
    pub to: Vec<Clause>,
    /// All of these conditions.
    pub when: Vec<FieldMatcher>,
}

impl CompiledRule {
    /// `rule_matches(r) ⇔ FROM(r) ∧ TO(r) ∧ ∀ c ∈ r.when : cond(c)` (§4.1).
    pub fn matches(&self, a: &Attributes<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|c| c.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|c| c.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }
}

/// A rule that does not exist on a chain, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRule {
    /// Index in the policy's `rules`.
    pub index: usize,
    /// Why (istiod's "skipped rule … on TCP filter chain").
    pub reason: String,
}

/// The rules of a policy on one chain.
#[derive(Debug, Clone, Default)]
pub struct ChainRules {
    /// Rules present on the chain.
    pub rules: Vec<CompiledRule>,
    /// Rules dropped from the chain (ALLOW rules with unusable values).
    pub skipped: Vec<SkippedRule>,
    /// Values dropped from DENY/AUDIT/CUSTOM rules, which widen them.
    pub narrowed: Vec<String>,
}

/// A compiled AuthorizationPolicy.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `ns/name`.
    pub id: PolicyRef,
    /// Its action.
    pub action: Action,
    /// `istio.io/dry-run: "true"`: evaluated as shadow rules only (§9).
    pub dry_run: bool,
    /// CUSTOM provider name.
    pub provider: Option<String>,
    /// Rules on HTTP chains.
    pub http: ChainRules,
    /// Rules on TCP chains.
    pub tcp: ChainRules,
    /// The source, for selection and display.
    pub source: Arc<AuthorizationPolicy>,
}

impl CompiledPolicy {
    /// The rules of the chain the request is on.
    pub fn chain(&self, is_http: bool) -> &ChainRules {
        if is_http { &self.http } else { &self.tcp }
    }
}

/// Why a value cannot be used on a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ValueError {
    /// An HTTP-only attribute on a TCP chain (§6).
    HttpOnly(String),
    /// A value istiod cannot translate (bad IP, bad port, malformed key); the webhook normally
    /// refuses these first.
    Invalid(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::HttpOnly(what) => write!(f, "{what} is HTTP-only and this is a TCP port"),
            ValueError::Invalid(what) => f.write_str(what),
        }
    }
}

/// Context for compiling one policy's values.
struct Ctx<'a> {
    policy_namespace: &'a str,
    bundle: &'a TrustDomainBundle,
    is_http: bool,
}

/// Which attribute a field or condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Principal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    RequestPrincipal,
    SourceIp,
    RemoteIp,
    DestinationIp,
    Port,
    Host,
    Method,
    Path,
    Sni,
    Audience,
    Presenter,
}

impl FieldKind {
    fn http_only(self) -> bool {
        matches!(
            self,
            FieldKind::RequestPrincipal
                | FieldKind::Host
                | FieldKind::Method
                | FieldKind::Path
                | FieldKind::Audience
                | FieldKind::Presenter
        )
    }
}

fn parse_cidr(value: &str) -> Result<IpNet, ValueError> {
    // A bare IP is /32 or /128 (§4.3).
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| ValueError::Invalid(format!("`{value}` is not an IP address or CIDR")))
}

fn parse_port(value: &str) -> Result<u16, ValueError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Invalid(format!(
            "`{value}` is not a port number"
        )));
    }
    value
        .parse::<u16>()
        .map_err(|_| ValueError::Invalid(format!("`{value}` is not a port in 0-65535")))
}

impl Ctx<'_> {
    fn compile_value(
        &self,
        kind: FieldKind,
        label: &str,
        value: &str,
    ) -> Result<Vec<Matcher>, ValueError> {
        if kind.http_only() && !self.is_http {
            return Err(ValueError::HttpOnly(label.to_owned()));
        }
        Ok(match kind {
            FieldKind::Principal => self
                .bundle
                .expand_principal(value)
                .iter()
                .map(|p| Matcher::Principal(PrincipalMatch::parse(p)))
                .collect(),
            FieldKind::Namespace => vec![Matcher::Namespace(namespace_glob(value))],
            FieldKind::ServiceAccount => vec![Matcher::ServiceAccount(ServiceAccountMatch::parse(
                value,
                self.policy_namespace,
            ))],
            FieldKind::TrustDomain => self
                .bundle
                .expand_trust_domain(value)
                .iter()
                .map(|td| Matcher::TrustDomain(TrustDomainMatch::parse(td)))
                .collect(),
            FieldKind::RequestPrincipal => {
                vec![Matcher::RequestPrincipal(RequestPrincipalMatch::parse(
                    value,
                ))]
            }
            FieldKind::SourceIp => vec![Matcher::SourceIp(parse_cidr(value)?)],
            FieldKind::RemoteIp => vec![Matcher::RemoteIp(parse_cidr(value)?)],
            FieldKind::DestinationIp => vec![Matcher::DestinationIp(parse_cidr(value)?)],
            FieldKind::Port => vec![Matcher::DestinationPort(parse_port(value)?)],
            FieldKind::Host => vec![Matcher::Host(StringMatch::parse(value).ignore_case())],
            FieldKind::Method => vec![Matcher::Method(StringMatch::parse(value))],
            FieldKind::Path => {
                if PathTemplate::is_template(value) {
                    let t = PathTemplate::parse(value).map_err(|e| {
                        ValueError::Invalid(format!("path template `{value}`: {e}"))
                    })?;
                    vec![Matcher::PathTemplate(t)]
                } else {
                    vec![Matcher::Path(StringMatch::parse(value))]
                }
            }
            FieldKind::Sni => vec![Matcher::Sni(StringMatch::parse(value))],
            FieldKind::Audience => vec![Matcher::Audience(StringMatch::parse(value))],
            FieldKind::Presenter => vec![Matcher::Presenter(StringMatch::parse(value))],
        })
    }
}

/// Collects what a rule turned into on this chain, applying `checkError` (§6): "ALLOW ⇒ rule
/// dropped, DENY/AUDIT ⇒ value dropped".
struct RuleBuilder<'a> {
    ctx: &'a Ctx<'a>,
    action: Action,
    /// Set when an ALLOW rule must be skipped.
    skip: Option<String>,
    narrowed: Vec<String>,
}

impl RuleBuilder<'_> {
    fn values(
        &mut self,
        kind: FieldKind,
        label: &str,
        values: Option<&Vec<String>>,
    ) -> Vec<Matcher> {
        self.values_with(label, values, |ctx, v| ctx.compile_value(kind, label, v))
    }

    fn values_with(
        &mut self,
        label: &str,
        values: Option<&Vec<String>>,
        compile: impl Fn(&Ctx<'_>, &str) -> Result<Vec<Matcher>, ValueError>,
    ) -> Vec<Matcher> {
        let mut out = Vec::new();
        for value in values.into_iter().flatten() {
            match compile(self.ctx, value) {
                Ok(ms) => out.extend(ms),
                Err(err) => {
                    if self.action == Action::Allow {
                        self.skip.get_or_insert_with(|| err.to_string());
                    } else {
                        self.narrowed
                            .push(format!("{label} value `{value}` dropped: {err}"));
                    }
                }
            }
        }
        out
    }

    fn field(
        &mut self,
        fields: &mut Vec<FieldMatcher>,
        kind: FieldKind,
        name: &str,
        not_name: &str,
        values: Option<&Vec<String>>,
        not_values: Option<&Vec<String>>,
    ) {
        let positive = self.values(kind, name, values);
        let negative = self.values(kind, not_name, not_values);
        // "a field/condition whose values are all dropped disappears".
        if !positive.is_empty() || !negative.is_empty() {
            fields.push(FieldMatcher {
                label: name.to_owned(),
                values: positive,
                not_values: negative,
            });
        }
    }

    fn source(&mut self, s: &Source) -> Clause {
        use FieldKind as K;
        let mut f = Vec::new();
        self.field(
            &mut f,
            K::Principal,
            "principals",
            "notPrincipals",
            s.principals.as_ref(),
            s.not_principals.as_ref(),
        );
        self.field(
            &mut f,
            K::RequestPrincipal,
            "requestPrincipals",
            "notRequestPrincipals",
            s.request_principals.as_ref(),
            s.not_request_principals.as_ref(),
        );
        self.field(
            &mut f,
            K::Namespace,
            "namespaces",
            "notNamespaces",
            s.namespaces.as_ref(),
            s.not_namespaces.as_ref(),
        );
        self.field(
            &mut f,
            K::ServiceAccount,
            "serviceAccounts",
            "notServiceAccounts",
            s.service_accounts.as_ref(),
            s.not_service_accounts.as_ref(),
        );
        self.field(
            &mut f,
            K::TrustDomain,
            "trustDomains",
            "notTrustDomains",
            s.trust_domains.as_ref(),
            s.not_trust_domains.as_ref(),
        );
        self.field(
            &mut f,
            K::SourceIp,
            "ipBlocks",
            "notIpBlocks",
            s.ip_blocks.as_ref(),
            s.not_ip_blocks.as_ref(),
        );
        self.field(
            &mut f,
            K::RemoteIp,
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            s.remote_ip_blocks.as_ref(),
            s.not_remote_ip_blocks.as_ref(),
        );
        Clause { fields: f }
    }

    fn operation(&mut self, o: &Operation) -> Clause {
        use FieldKind as K;
        let mut f = Vec::new();
        self.field(
            &mut f,
            K::Host,
            "hosts",
            "notHosts",
            o.hosts.as_ref(),
            o.not_hosts.as_ref(),
        );
        self.field(
            &mut f,
            K::Port,
            "ports",
            "notPorts",
            o.ports.as_ref(),
            o.not_ports.as_ref(),
        );
        self.field(
            &mut f,
            K::Method,
            "methods",
            "notMethods",
            o.methods.as_ref(),
            o.not_methods.as_ref(),
        );
        self.field(
            &mut f,
            K::Path,
            "paths",
            "notPaths",
            o.paths.as_ref(),
            o.not_paths.as_ref(),
        );
        Clause { fields: f }
    }

    /// One `when` condition. `Err` for a key istiod does not know: "istiod skips the whole rule
    /// (all actions)" (§5).
    fn condition(&mut self, c: &Condition) -> Result<Option<FieldMatcher>, String> {
        let key = c.key.as_deref().unwrap_or_default();
        let label = format!("when[{key}]");
        let parsed = ConditionKey::parse(key);
        if let ConditionKey::Unknown = parsed {
            return Err(format!("unknown condition key `{key}`"));
        }
        let compile = |ctx: &Ctx<'_>, v: &str| -> Result<Vec<Matcher>, ValueError> {
            match &parsed {
                ConditionKey::Simple(kind) => ctx.compile_value(*kind, &label, v),
                ConditionKey::Header(_) | ConditionKey::Claim(_) if !ctx.is_http => {
                    Err(ValueError::HttpOnly(label.clone()))
                }
                ConditionKey::Header(name) => Ok(vec![Matcher::Header(
                    name.as_str().into(),
                    StringMatch::parse(v),
                )]),
                ConditionKey::Claim(path) => Ok(vec![Matcher::Claim(
                    path.clone().into(),
                    StringMatch::parse(v),
                )]),
                ConditionKey::Unsupported(why) => Err(ValueError::Invalid(why.clone())),
                ConditionKey::Unknown => Err(ValueError::Invalid(format!(
                    "unknown condition key `{key}`"
                ))),
            }
        };
        let positive = self.values_with(&label, c.values.as_ref(), compile);
        let negative = self.values_with(&label, c.not_values.as_ref(), compile);
        if positive.is_empty() && negative.is_empty() {
            return Ok(None);
        }
        Ok(Some(FieldMatcher {
            label,
            values: positive,
            not_values: negative,
        }))
    }
}

/// A parsed `when` key (authorization.md §5).
enum ConditionKey {
    Simple(FieldKind),
    Header(String),
    Claim(Vec<String>),
    /// Known but not supported by meshward (Envoy dynamic metadata): fails closed.
    Unsupported(String),
    Unknown,
}

impl ConditionKey {
    fn parse(key: &str) -> ConditionKey {
        use FieldKind as K;
        match key {
            "source.ip" => return ConditionKey::Simple(K::SourceIp),
            "remote.ip" => return ConditionKey::Simple(K::RemoteIp),
            "source.namespace" => return ConditionKey::Simple(K::Namespace),
            "source.principal" => return ConditionKey::Simple(K::Principal),
            "source.serviceAccount" => return ConditionKey::Simple(K::ServiceAccount),
            "source.trustDomain" => return ConditionKey::Simple(K::TrustDomain),
            "request.auth.principal" => return ConditionKey::Simple(K::RequestPrincipal),
            "request.auth.audiences" => return ConditionKey::Simple(K::Audience),
            "request.auth.presenter" => return ConditionKey::Simple(K::Presenter),
            "destination.ip" => return ConditionKey::Simple(K::DestinationIp),
            "destination.port" => return ConditionKey::Simple(K::Port),
            "connection.sni" => return ConditionKey::Simple(K::Sni),
            _ => {}
        }
        if let Some(name) = bracketed(key, "request.headers") {
            return match name.as_slice() {
                [single] if !single.is_empty() => ConditionKey::Header(single.to_ascii_lowercase()),
                _ => ConditionKey::Unknown,
            };
        }
        if let Some(path) = bracketed(key, "request.auth.claims") {
            return if path.is_empty() || path.iter().any(String::is_empty) {
                ConditionKey::Unknown
            } else {
                ConditionKey::Claim(path)
            };
        }
        if key.starts_with("experimental.envoy.filters.") {
            return ConditionKey::Unsupported(format!(
                "condition key `{key}` (Envoy dynamic metadata) is not supported"
            ));
        }
        ConditionKey::Unknown
    }
}

/// `prefix[a][b]` → `[a, b]`.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        parts.push(inner.get(..end)?.to_owned());
        rest = inner.get(end + 1..)?;
    }
    Some(parts)
}

/// Go's `strconv.ParseBool` true values, as istiod reads `istio.io/dry-run`.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Compiles a policy for both chains.
pub fn compile_policy(
    policy: Arc<AuthorizationPolicy>,
    bundle: &TrustDomainBundle,
) -> CompiledPolicy {
    let action = policy.spec.action.unwrap_or_default();
    let id = PolicyRef {
        namespace: policy.metadata.namespace().into(),
        name: policy.metadata.name().into(),
    };
    let dry_run = matches!(action, Action::Allow | Action::Deny)
        && policy
            .metadata
            .annotations
            .get("istio.io/dry-run")
            .and_then(|v| parse_go_bool(v))
            .unwrap_or(false);
    let http = compile_chain(&policy, action, bundle, true);
    let tcp = compile_chain(&policy, action, bundle, false);
    CompiledPolicy {
        id,
        action,
        dry_run,
        provider: policy.spec.provider.as_ref().map(|p| p.name.clone()),
        http,
        tcp,
        source: policy,
    }
}

fn compile_chain(
    policy: &AuthorizationPolicy,
    action: Action,
    bundle: &TrustDomainBundle,
    is_http: bool,
) -> ChainRules {
    let ctx = Ctx {
        policy_namespace: policy.metadata.namespace(),
        bundle,
        is_http,
    };
    let mut chain = ChainRules::default();
    for (index, rule) in policy.spec.rules.iter().flatten().enumerate() {
        let Some(rule) = rule else {
            chain.skipped.push(SkippedRule {
                index,
                reason: "rule is null".to_owned(),
            });
            continue;
        };
        let mut b = RuleBuilder {
            ctx: &ctx,
            action,
            skip: None,
            narrowed: Vec::new(),
        };
        let from: Vec<Clause> = rule
            .from
            .iter()
            .flatten()
            .map(|f| {
                f.as_ref()
                    .and_then(|f| f.source.as_ref())
                    .map(|s| b.source(s))
                    .unwrap_or_default()
            })
            .collect();
        let to: Vec<Clause> = rule
            .to
            .iter()
            .flatten()
            .map(|t| {
                t.as_ref()
                    .and_then(|t| t.operation.as_ref())
                    .map(|o| b.operation(o))
                    .unwrap_or_default()
            })
            .collect();
        let mut when = Vec::new();
        let mut unknown_key = None;
        for c in rule.when.iter().flatten().flatten() {
            match b.condition(c) {
                Ok(Some(m)) => when.push(m),
                Ok(None) => {}
                Err(why) => unknown_key = Some(why),
            }
        }
        if let Some(reason) = unknown_key.or(b.skip) {
            chain.skipped.push(SkippedRule { index, reason });
            continue;
        }
        chain
            .narrowed
            .extend(b.narrowed.into_iter().map(|n| format!("rule {index}: {n}")));
        chain.rules.push(CompiledRule {
            index,
            from,
            to,
            when,
        });
    }
    chain
}
