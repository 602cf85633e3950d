//! The sidecars' access logs as evidence: each proxy of a live document writes JSON lines
//! (`accessLogFile: /dev/stdout`, `accessLogEncoding: JSON`) into its `proxy.log`, next to its
//! own (non-JSON) log lines. A request is found by its `x-request-id`; a TCP connection by the
//! client address the server saw. Both are looked up in every pod's log but the client's own
//! sidecar: a client sidecar may pick another endpoint of a service than the engine's first.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// What the destination's line says about authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthzSeen {
    /// `allow`, `deny`, `audit`, … (`authz_decision`); `None`: authorization did not run.
    pub(crate) decision: Option<String>,
    /// The deciding policy `ns/name`, or `none` (no ALLOW policy, or none matched).
    pub(crate) policy: String,
    /// The deciding rule.
    pub(crate) rule: Option<usize>,
    /// The proxy's sentence.
    pub(crate) reason: String,
}

/// The JSON access-log lines of some proxy logs, read on demand.
#[derive(Debug, Default)]
pub(crate) struct Logs {
    lines: BTreeMap<String, Vec<Value>>,
}

impl Logs {
    /// (Re)reads the log of `pod` from `path`.
    pub(crate) fn load(&mut self, pod: &str, path: &Path) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines = text
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("start_time").is_some())
            .collect();
        self.lines.insert(pod.to_owned(), lines);
    }

    /// The line for request `id` in any pod but `except` (a client sidecar logs the request
    /// too; the line wanted is the server's, wherever the client's sidecar sent it).
    pub(crate) fn by_request_id(&self, except: Option<&str>, id: &str) -> Option<&Value> {
        self.find_any(except, |v| {
            v.get("request_id").and_then(Value::as_str) == Some(id)
        })
    }

    /// The line, in any pod but `except`, whose downstream peer was `addr` (`ip:port`).
    pub(crate) fn by_downstream(&self, except: Option<&str>, addr: &str) -> Option<&Value> {
        self.find_any(except, |v| downstream(v) == Some(addr))
    }

    /// The line of `pod` whose downstream peer was `addr`.
    pub(crate) fn by_downstream_in(&self, pod: &str, addr: &str) -> Option<&Value> {
        self.lines
            .get(pod)?
            .iter()
            .rev()
            .find(|v| downstream(v) == Some(addr))
    }

    fn find_any(&self, except: Option<&str>, want: impl Fn(&Value) -> bool) -> Option<&Value> {
        self.lines
            .iter()
            .filter(|(pod, _)| Some(pod.as_str()) != except)
            .find_map(|(_, lines)| lines.iter().rev().find(|v| want(v)))
    }
}

fn downstream(line: &Value) -> Option<&str> {
    line.get("downstream_remote_address")
        .and_then(Value::as_str)
}

/// The address the client sidecar connected from, on its line for the app's connection.
pub(crate) fn upstream_local(line: &Value) -> Option<&str> {
    line.get("upstream_local_address").and_then(Value::as_str)
}

/// Authorization as a line reports it.
pub(crate) fn authz(line: &Value) -> AuthzSeen {
    let decision = line
        .get("authz_decision")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let reason = line
        .get("authz_reason")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (policy, rule) = deciding(&reason);
    AuthzSeen {
        decision,
        policy,
        rule,
        reason,
    }
}

/// The deciding policy and rule from the reason's first clause (`denied by DENY policy P rule
/// N`, `allowed by ALLOW policy P rule N`, `denied: CUSTOM policy P rule N …`); `none` when no
/// policy decided. The first clause is used, not `authz_policy`, because an AUDIT match makes
/// that field name the AUDIT policy.
fn deciding(reason: &str) -> (String, Option<usize>) {
    let first = reason.split(';').next().unwrap_or_default();
    let mut words = first.split_whitespace();
    while let Some(w) = words.next() {
        // `ns/name` after `policy` (not the words of "no ALLOW policy applies").
        if w == "policy"
            && let Some(policy) = words.next()
            && policy.contains('/')
        {
            let rule = match (words.next(), words.next()) {
                (Some("rule"), Some(n)) => n.parse().ok(),
                _ => None,
            };
            return (policy.to_owned(), rule);
        }
    }
    ("none".to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciding_policy_and_rule_come_from_the_first_clause() {
        assert_eq!(
            deciding("denied by DENY policy foo/deny-all rule 0"),
            ("foo/deny-all".to_owned(), Some(0))
        );
        assert_eq!(
            deciding("allowed by ALLOW policy a/b rule 3; audited by AUDIT policy a/c rule 0"),
            ("a/b".to_owned(), Some(3))
        );
        assert_eq!(
            deciding("denied: ALLOW policies apply to the workload and none matched"),
            ("none".to_owned(), None)
        );
        assert_eq!(
            deciding("allowed: no ALLOW policy applies to the workload"),
            ("none".to_owned(), None)
        );
        assert_eq!(
            deciding(
                "denied: CUSTOM policy ns/ext rule 1 matched and its ext_authz provider `x` is not available (fail closed)"
            ),
            ("ns/ext".to_owned(), Some(1))
        );
    }

    #[test]
    fn lines_are_found_by_request_id_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:00Z INFO meshward-proxy ready\n\
             {\"start_time\":\"x\",\"request_id\":\"r1\",\"downstream_remote_address\":\"10.244.0.3:4000\",\"authz_decision\":\"deny\",\"authz_reason\":\"denied by DENY policy a/b rule 2\"}\n",
        )
        .unwrap();
        let mut logs = Logs::default();
        logs.load("a/p", &path);
        let line = logs.by_request_id(None, "r1").unwrap();
        assert_eq!(authz(line).rule, Some(2));
        assert!(logs.by_request_id(Some("a/p"), "r1").is_none());
        assert!(logs.by_downstream(None, "10.244.0.3:4000").is_some());
        assert!(logs.by_downstream_in("a/p", "10.244.0.3:4000").is_some());
        assert!(logs.by_request_id(None, "r2").is_none());
    }
}
