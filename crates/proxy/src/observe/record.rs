//! What one access-log line can name about one request (HTTP) or one connection (TCP).
//!
//! A [`RequestRecord`] is plain owned data. The proxy fills it while it handles the traffic and
//! hands it to [`crate::observe::access_log::AccessLog::log`] when the request or connection
//! ends; the values that stay the same for a whole connection (cluster name, SNI, peer SANs) are
//! `Arc`s so a record per request costs a few reference-count increments, not string copies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use meshward_api::resources::security::Action;
use meshward_policy::authz::{AuthzDecision, RuleId};

/// Envoy's response flags (authentication.md §6.1 "Response flags"), as a bitset.
///
/// Rendered by `%RESPONSE_FLAGS%` and the `response_flags` metric label as Envoy does: the short
/// names of the set flags joined by `,` in Envoy's fixed order, or `-` when none is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// Envoy's short flag names, in the order Envoy prints them (its `ALL_RESPONSE_STRINGS_FLAGS`).
const FLAG_NAMES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

impl ResponseFlags {
    /// No flag: `-`.
    pub const NONE: Self = Self(0);
    /// `LH`: the local health check failed.
    pub const FAILED_LOCAL_HEALTH_CHECK: Self = Self(1 << 0);
    /// `UH`: no healthy upstream host.
    pub const NO_HEALTHY_UPSTREAM: Self = Self(1 << 1);
    /// `UT`: upstream request timeout.
    pub const UPSTREAM_REQUEST_TIMEOUT: Self = Self(1 << 2);
    /// `LR`: connection local reset.
    pub const LOCAL_RESET: Self = Self(1 << 3);
    /// `UR`: upstream remote reset.
    pub const UPSTREAM_REMOTE_RESET: Self = Self(1 << 4);
    /// `UF`: upstream connection (or TLS handshake) failure.
    pub const UPSTREAM_CONNECTION_FAILURE: Self = Self(1 << 5);
    /// `UC`: upstream connection terminated.
    pub const UPSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 6);
    /// `UO`: upstream overflow (circuit breaker).
    pub const UPSTREAM_OVERFLOW: Self = Self(1 << 7);
    /// `NR`: no route, or no filter chain matched (authentication.md §6.1).
    pub const NO_ROUTE_FOUND: Self = Self(1 << 8);
    /// `DI`: delay injected.
    pub const DELAY_INJECTED: Self = Self(1 << 9);
    /// `FI`: fault injected.
    pub const FAULT_INJECTED: Self = Self(1 << 10);
    /// `RL`: rate limited.
    pub const RATE_LIMITED: Self = Self(1 << 11);
    /// `UAEX`: denied by an external authorization service (CUSTOM).
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: Self = Self(1 << 12);
    /// `RLSE`: rate limit service error.
    pub const RATELIMIT_SERVICE_ERROR: Self = Self(1 << 13);
    /// `DC`: downstream connection terminated.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: Self = Self(1 << 14);
    /// `URX`: upstream retry limit exceeded.
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: Self = Self(1 << 15);
    /// `SI`: stream idle timeout.
    pub const STREAM_IDLE_TIMEOUT: Self = Self(1 << 16);
    /// `IH`: invalid Envoy request headers.
    pub const INVALID_ENVOY_REQUEST_HEADERS: Self = Self(1 << 17);
    /// `DPE`: downstream protocol error.
    pub const DOWNSTREAM_PROTOCOL_ERROR: Self = Self(1 << 18);
    /// `UMSDR`: upstream max stream duration reached.
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: Self = Self(1 << 19);
    /// `RFCF`: response from cache filter.
    pub const RESPONSE_FROM_CACHE_FILTER: Self = Self(1 << 20);
    /// `NFCF`: no filter config found.
    pub const NO_FILTER_CONFIG_FOUND: Self = Self(1 << 21);
    /// `DT`: duration timeout.
    pub const DURATION_TIMEOUT: Self = Self(1 << 22);
    /// `UPE`: upstream protocol error.
    pub const UPSTREAM_PROTOCOL_ERROR: Self = Self(1 << 23);
    /// `NC`: no cluster found.
    pub const NO_CLUSTER_FOUND: Self = Self(1 << 24);
    /// `OM`: overload manager terminated the request.
    pub const OVERLOAD_MANAGER: Self = Self(1 << 25);
    /// `DF`: DNS resolution failed.
    pub const DNS_FAIL: Self = Self(1 << 26);
    /// `DO`: drop overload.
    pub const DROP_OVERLOAD: Self = Self(1 << 27);
    /// `DR`: downstream remote reset.
    pub const DOWNSTREAM_REMOTE_RESET: Self = Self(1 << 28);
    /// `UDO`: unconditional drop overload.
    pub const UNCONDITIONAL_DROP_OVERLOAD: Self = Self(1 << 29);

    /// No flag set?
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Are all of `other`'s flags set?
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets `other`'s flags.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// The short names of the set flags, in Envoy's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        FLAG_NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }

    /// Writes Envoy's `%RESPONSE_FLAGS%` text: `UF,URX`, or `-` when empty.
    pub fn write_to(self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        if self.is_empty() {
            return out.write_str("-");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                out.write_char(',')?;
            }
            out.write_str(name)?;
        }
        Ok(())
    }

    /// Parses one short flag name (`UF`); `None` if Envoy has no such flag.
    pub fn from_short_name(name: &str) -> Option<Self> {
        FLAG_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|bit| Self(1 << bit))
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_to(f)
    }
}

/// meshward's summary of what authorization (and authentication in front of it) decided for the
/// request or connection. Written as `authz=<decision>` in TEXT lines and `authz_decision` in
/// JSON lines, and as the `decision` label of `meshward_authz_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthzOutcome {
    /// Allowed (no AUDIT rule matched).
    Allow,
    /// Denied by a DENY or CUSTOM rule, or no ALLOW rule matched.
    Deny,
    /// Allowed, and an AUDIT rule matched (Envoy's `access_log_hint`, authorization.md §9).
    Audit,
    /// RequestAuthentication refused a present, invalid token (401) before authorization ran.
    Unauthenticated,
    /// Refused below HTTP before authorization ran (PeerAuthentication mode, certificate checks).
    Reject,
}

impl AuthzOutcome {
    /// The spelling in logs and metric labels: `allow`, `deny`, `audit`, `unauthenticated`,
    /// `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzOutcome::Allow => "allow",
            AuthzOutcome::Deny => "deny",
            AuthzOutcome::Audit => "audit",
            AuthzOutcome::Unauthenticated => "unauthenticated",
            AuthzOutcome::Reject => "reject",
        }
    }
}

impl std::fmt::Display for AuthzOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of Envoy-style dynamic metadata, read by `%DYNAMIC_METADATA(namespace:key)%`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataEntry {
    /// The filter namespace, e.g. `envoy.filters.http.rbac`.
    pub namespace: &'static str,
    /// The key inside the namespace.
    pub key: String,
    /// The value.
    pub value: serde_json::Value,
}

/// Envoy's metadata namespace of the HTTP RBAC filter (authorization.md §9).
pub const RBAC_HTTP_NAMESPACE: &str = "envoy.filters.http.rbac";
/// Envoy's metadata namespace of the network (TCP) RBAC filter.
pub const RBAC_NETWORK_NAMESPACE: &str = "envoy.filters.network.rbac";
/// Envoy's common metadata namespace, where AUDIT puts `access_log_hint`.
pub const ENVOY_COMMON_NAMESPACE: &str = "envoy.common";

/// Everything one access-log line can name. Missing values render as `-` (authentication.md
/// §6.1: "Operators the project must implement (missing value ⇒ `-`)").
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    /// `%START_TIME%`: when the request (or connection) started.
    pub start_time: Timestamp,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'static str>,
    /// `%REQ(:METHOD)%`.
    pub method: Option<String>,
    /// `%REQ(:PATH)%`: the path as received, before any rewrite.
    pub path: Option<String>,
    /// `%REQ(:AUTHORITY)%` (the HTTP/1.1 `Host` header).
    pub authority: Option<String>,
    /// Other request headers `%REQ(...)%` may name, lower-case names. Only the headers the log
    /// format asks for need to be here (see
    /// [`LogFormat::request_header_names`](crate::observe::format::LogFormat::request_header_names)).
    pub request_headers: Vec<(String, String)>,
    /// Response headers for `%RESP(...)%`, lower-case names.
    pub response_headers: Vec<(String, String)>,
    /// `%RESPONSE_CODE%`: the HTTP status; 0 when there is none (TCP, connection rejected).
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`.
    pub response_flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. `via_upstream`, `rbac_access_denied_matched_policy[none]`.
    pub response_code_details: Option<String>,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<String>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub upstream_transport_failure_reason: Option<String>,
    /// `%BYTES_RECEIVED%`: body bytes received from downstream (TCP: all bytes).
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: body bytes sent downstream (TCP: all bytes).
    pub bytes_sent: u64,
    /// `%DURATION%`: start to last byte sent downstream; `None` if it never completed.
    pub duration: Option<Duration>,
    /// `%UPSTREAM_HOST%`: the chosen upstream `ip:port`.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER%` / `%UPSTREAM_CLUSTER_RAW%`: `inbound|8080||`,
    /// `outbound|8000||httpbin.foo.svc.cluster.local`.
    pub upstream_cluster: Option<Arc<str>>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: inbound, pod IP and target port; outbound, the service
    /// VIP and port.
    pub downstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the peer's `ip:port`.
    pub downstream_remote_address: Option<SocketAddr>,
    /// `%REQUESTED_SERVER_NAME%`: the SNI.
    pub requested_server_name: Option<Arc<str>>,
    /// `%ROUTE_NAME%`.
    pub route_name: Option<Arc<str>>,
    /// `%DOWNSTREAM_TLS_VERSION%`: `TLSv1.2`, `TLSv1.3`; `None` for plaintext.
    pub downstream_tls_version: Option<&'static str>,
    /// `%DOWNSTREAM_PEER_URI_SAN%`: the peer certificate's URI SANs (`spiffe://…`).
    pub downstream_peer_uri_sans: Arc<[String]>,
    /// `%DOWNSTREAM_PEER_SUBJECT%`: the peer certificate's subject DN (empty for Istio
    /// certificates, which renders `-` as Envoy does).
    pub downstream_peer_subject: Option<Arc<str>>,
    /// `%DYNAMIC_METADATA(namespace:key)%`.
    pub dynamic_metadata: Vec<MetadataEntry>,
    /// meshward: what authorization decided (`authz=`); `None` when it did not run (outbound).
    pub authz: Option<AuthzOutcome>,
    /// meshward: the deciding policy as `<namespace>/<name>` (`policy=`).
    pub authz_policy: Option<String>,
    /// meshward: one sentence saying why (`reason="…"`).
    pub authz_reason: Option<String>,
}

impl RequestRecord {
    /// A record for traffic that started at `start_time`, everything else unset.
    pub fn new(start_time: Timestamp) -> Self {
        RequestRecord {
            start_time,
            ..RequestRecord::default()
        }
    }

    /// The value of request header `name` as `%REQ(name)%` sees it: the pseudo-headers
    /// `:method`, `:path`, `:authority` come from their fields, anything else from
    /// `request_headers` (first value, names compared ASCII case-insensitively).
    pub fn request_header(&self, name: &str) -> Option<&str> {
        if name.eq_ignore_ascii_case(":method") {
            return self.method.as_deref();
        }
        if name.eq_ignore_ascii_case(":path") {
            return self.path.as_deref();
        }
        // Envoy keeps the HTTP/1.1 Host header as `:authority`; `host` is read from the same
        // place so `%REQ(HOST)%` works for both protocols.
        if (name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host"))
            && let Some(authority) = self.authority.as_deref()
        {
            return Some(authority);
        }
        find_header(&self.request_headers, name)
    }

    /// The value of response header `name` as `%RESP(name)%` sees it (first value).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        find_header(&self.response_headers, name)
    }

    /// The value of dynamic metadata `namespace:key`.
    pub fn metadata(&self, namespace: &str, key: &str) -> Option<&serde_json::Value> {
        self.dynamic_metadata
            .iter()
            .find(|m| m.namespace == namespace && m.key == key)
            .map(|m| &m.value)
    }

    /// Sets (or replaces) dynamic metadata `namespace:key`.
    pub fn set_metadata(&mut self, namespace: &'static str, key: &str, value: serde_json::Value) {
        match self
            .dynamic_metadata
            .iter_mut()
            .find(|m| m.namespace == namespace && m.key == key)
        {
            Some(entry) => entry.value = value,
            None => self.dynamic_metadata.push(MetadataEntry {
                namespace,
                key: key.to_owned(),
                value,
            }),
        }
    }

    /// Records an authorization decision: the meshward `authz`/`policy`/`reason` fields, and
    /// the dynamic metadata Envoy's RBAC filters would leave behind.
    ///
    /// * Denied: `%RESPONSE_CODE_DETAILS%` (HTTP) or `%CONNECTION_TERMINATION_DETAILS%` (TCP)
    ///   becomes `rbac_access_denied_matched_policy[<id>]` unless the caller already set it
    ///   (authorization.md §9: "response code details `rbac_access_denied_matched_policy[<id>]`").
    /// * AUDIT match: `envoy.common: {access_log_hint: true}` (authorization.md §9: "AUDIT
    ///   match | allowed; `access_log_hint=true` metadata").
    /// * Dry-run engines: `istio_dry_run_{allow,deny}_shadow_effective_policy_id` and
    ///   `…_shadow_engine_result` (`allowed`/`denied`) under the RBAC filter's namespace
    ///   (authorization.md §9 "Dry-run policy").
    ///
    /// The decision is `audit` when the request was allowed and an AUDIT rule matched; the policy
    /// is then the AUDIT policy. Otherwise it is the policy whose rule decided (none when no
    /// ALLOW policy applies, or when ALLOW policies apply and none matched).
    pub fn apply_authz(&mut self, decision: &AuthzDecision, is_http: bool) {
        let outcome = if !decision.allowed {
            AuthzOutcome::Deny
        } else if decision.audited.is_some() {
            AuthzOutcome::Audit
        } else {
            AuthzOutcome::Allow
        };
        self.authz = Some(outcome);
        self.authz_policy = decision.deciding_rule().map(|r| r.policy.to_string());
        self.authz_reason = Some(authz_reason(decision));

        if let Some(details) = decision.response_code_details() {
            let slot = if is_http {
                &mut self.response_code_details
            } else {
                &mut self.connection_termination_details
            };
            if slot.is_none() {
                *slot = Some(details);
            }
        }

        if decision.audited.is_some() {
            self.set_metadata(
                ENVOY_COMMON_NAMESPACE,
                "access_log_hint",
                serde_json::Value::Bool(true),
            );
        }
        let namespace = if is_http {
            RBAC_HTTP_NAMESPACE
        } else {
            RBAC_NETWORK_NAMESPACE
        };
        for shadow in &decision.shadow {
            let prefix = match shadow.action {
                Action::Deny => "istio_dry_run_deny_",
                _ => "istio_dry_run_allow_",
            };
            if let Some(rule) = &shadow.effective {
                self.set_metadata(
                    namespace,
                    &format!("{prefix}shadow_effective_policy_id"),
                    serde_json::Value::String(rule.policy.envoy_rule_id(rule.rule)),
                );
            }
            let result = if shadow.allowed { "allowed" } else { "denied" };
            self.set_metadata(
                namespace,
                &format!("{prefix}shadow_engine_result"),
                serde_json::Value::String(result.to_owned()),
            );
        }
    }
}

/// The `reason="…"` sentence: the policy crate's description, plus the AUDIT match and what the
/// dry-run policies would have done, since neither changes the decision but both are why an
/// operator reads the line.
fn authz_reason(decision: &AuthzDecision) -> String {
    let mut reason = meshward_policy::decision::describe(decision);
    if let Some(audit) = &decision.audited {
        reason.push_str("; audited by AUDIT policy ");
        push_rule(&mut reason, audit);
    }
    for shadow in &decision.shadow {
        let engine = match shadow.action {
            Action::Deny => "DENY",
            _ => "ALLOW",
        };
        let verdict = if shadow.allowed { "allow" } else { "deny" };
        reason.push_str("; dry-run ");
        reason.push_str(engine);
        reason.push_str(" policies would ");
        reason.push_str(verdict);
        if let Some(rule) = &shadow.effective {
            reason.push_str(" (policy ");
            push_rule(&mut reason, rule);
            reason.push(')');
        }
    }
    reason
}

fn push_rule(out: &mut String, rule: &RuleId) {
    use std::fmt::Write as _;
    // Writing into a String cannot fail.
    let _ = write!(out, "{} rule {}", rule.policy, rule.rule);
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Request headers copied into events: the ones Istio's default access-log format and the
/// metrics read.
const LOGGED_HEADERS: [&str; 3] = ["user-agent", "x-request-id", "x-forwarded-for"];

/// The [`LOGGED_HEADERS`] present in `headers` (first value each), for an event.
pub(crate) fn logged_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    LOGGED_HEADERS
        .iter()
        .filter_map(|name| {
            headers.get(*name).map(|v| {
                (
                    (*name).to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshward_policy::authz::AuthzReason;

    #[test]
    fn flags_render_in_envoy_order() {
        let flags = ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
            | ResponseFlags::UPSTREAM_CONNECTION_FAILURE;
        assert_eq!(flags.to_string(), "UF,URX");
        assert_eq!(ResponseFlags::NONE.to_string(), "-");
        assert_eq!(
            ResponseFlags::from_short_name("NR"),
            Some(ResponseFlags::NO_ROUTE_FOUND)
        );
        assert_eq!(ResponseFlags::from_short_name("XX"), None);
        assert!(flags.contains(ResponseFlags::UPSTREAM_CONNECTION_FAILURE));
        assert!(!flags.contains(ResponseFlags::NO_ROUTE_FOUND));
    }

    fn rule(ns: &str, name: &str, rule: usize) -> RuleId {
        RuleId {
            policy: meshward_policy::authz::PolicyRef {
                namespace: Arc::from(ns),
                name: Arc::from(name),
            },
            rule,
        }
    }

    #[test]
    fn denied_http_request() {
        let decision = AuthzDecision {
            allowed: false,
            reason: AuthzReason::DeniedBy(rule("foo", "deny-all", 0)),
            audited: None,
            shadow: Vec::new(),
        };
        let mut r = RequestRecord::default();
        r.apply_authz(&decision, true);
        assert_eq!(r.authz, Some(AuthzOutcome::Deny));
        assert_eq!(r.authz_policy.as_deref(), Some("foo/deny-all"));
        assert_eq!(
            r.response_code_details.as_deref(),
            Some("rbac_access_denied_matched_policy[ns[foo]-policy[deny-all]-rule[0]]")
        );
        assert_eq!(
            r.authz_reason.as_deref(),
            Some("denied by DENY policy foo/deny-all rule 0")
        );
        assert!(r.connection_termination_details.is_none());
    }

    #[test]
    fn denied_tcp_connection_without_allow_match() {
        let decision = AuthzDecision {
            allowed: false,
            reason: AuthzReason::NoAllowMatched,
            audited: None,
            shadow: Vec::new(),
        };
        let mut r = RequestRecord::default();
        r.apply_authz(&decision, false);
        assert_eq!(r.authz, Some(AuthzOutcome::Deny));
        assert_eq!(r.authz_policy, None);
        assert_eq!(
            r.connection_termination_details.as_deref(),
            Some("rbac_access_denied_matched_policy[none]")
        );
        assert!(r.response_code_details.is_none());
    }

    #[test]
    fn audit_and_dry_run() {
        let decision = AuthzDecision {
            allowed: true,
            reason: AuthzReason::AllowedBy(rule("foo", "allow-get", 1)),
            audited: Some(rule("foo", "audit-all", 0)),
            shadow: vec![meshward_policy::authz::ShadowResult {
                action: Action::Deny,
                allowed: false,
                effective: Some(rule("foo", "dry-deny", 2)),
            }],
        };
        let mut r = RequestRecord {
            response_code_details: Some("via_upstream".into()),
            ..RequestRecord::default()
        };
        r.apply_authz(&decision, true);
        assert_eq!(r.authz, Some(AuthzOutcome::Audit));
        assert_eq!(r.authz_policy.as_deref(), Some("foo/audit-all"));
        assert_eq!(r.response_code_details.as_deref(), Some("via_upstream"));
        assert_eq!(
            r.metadata(ENVOY_COMMON_NAMESPACE, "access_log_hint"),
            Some(&serde_json::Value::Bool(true))
        );
        assert_eq!(
            r.metadata(
                RBAC_HTTP_NAMESPACE,
                "istio_dry_run_deny_shadow_effective_policy_id"
            ),
            Some(&serde_json::json!("ns[foo]-policy[dry-deny]-rule[2]"))
        );
        assert_eq!(
            r.metadata(
                RBAC_HTTP_NAMESPACE,
                "istio_dry_run_deny_shadow_engine_result"
            ),
            Some(&serde_json::json!("denied"))
        );
        assert_eq!(
            r.authz_reason.as_deref(),
            Some(
                "allowed by ALLOW policy foo/allow-get rule 1; audited by AUDIT policy \
                 foo/audit-all rule 0; dry-run DENY policies would deny (policy foo/dry-deny rule 2)"
            )
        );
    }

    #[test]
    fn request_header_pseudo_headers_and_host_alias() {
        let mut r = RequestRecord {
            method: Some("GET".into()),
            authority: Some("httpbin:8000".into()),
            ..RequestRecord::default()
        };
        r.request_headers
            .push(("user-agent".into(), "curl/8".into()));
        assert_eq!(r.request_header(":METHOD"), Some("GET"));
        assert_eq!(r.request_header("HOST"), Some("httpbin:8000"));
        assert_eq!(r.request_header("User-Agent"), Some("curl/8"));
        assert_eq!(r.request_header(":path"), None);
    }
}
