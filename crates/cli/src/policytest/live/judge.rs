//! Reading a live observation as a PolicyTest decision (`shared/spec/policy-tests.md`, "meaning
//! (live)") and comparing it with what the case expects.
//!
//! - ALLOW: the echo app answered (its `x-meshward-pod` header), or the TCP line came back.
//! - DENY: 403 `RBAC: access denied` (gRPC status 7); a TCP connection closed with no data
//!   whose destination log line says authorization denied it.
//! - UNAUTHENTICATED: 401 (gRPC status 16), or Envoy's 403 for an audience mismatch.
//! - REJECT: a reset, an empty reply or a failed handshake, or a client sidecar's 503.

use meshward_api::policytest::{Expectation, ExpectedDecision};

use super::logs::AuthzSeen;
use super::wire::Observed;

/// What happened, as a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    Allow,
    Deny,
    Reject,
    Unauthenticated,
    /// Something no decision explains (the words say what).
    Other(String),
}

impl Seen {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Seen::Allow => "ALLOW",
            Seen::Deny => "DENY",
            Seen::Reject => "REJECT",
            Seen::Unauthenticated => "UNAUTHENTICATED",
            Seen::Other(s) => s,
        }
    }
}

/// The decision `observed` shows; `authz` is the destination's log line, when found.
pub(crate) fn verdict(observed: &Observed, authz: Option<&AuthzSeen>) -> Seen {
    match observed {
        Observed::Response { from_app: true, .. } => Seen::Allow,
        Observed::Response {
            status,
            grpc_status,
            body,
            ..
        } => match (grpc_status.as_deref(), *status) {
            (Some("7"), _) => Seen::Deny,
            (Some("16"), _) => Seen::Unauthenticated,
            (_, 403) if body.contains("RBAC: access denied") => Seen::Deny,
            (_, 401) => Seen::Unauthenticated,
            (_, 403) if body.contains("Audiences") || body.contains("Jwt") => Seen::Unauthenticated,
            (_, 503) => Seen::Reject,
            (_, s) => Seen::Other(format!(
                "HTTP {s} not from the app: {}",
                body.lines().next().unwrap_or_default()
            )),
        },
        Observed::Echoed => Seen::Allow,
        Observed::Closed { .. } => match authz.and_then(|a| a.decision.as_deref()) {
            Some("deny") => Seen::Deny,
            _ => Seen::Reject,
        },
        Observed::ConnectFailed { detail } => Seen::Other(format!("no connection: {detail}")),
    }
}

/// `observed` in words.
pub(crate) fn describe(observed: &Observed) -> String {
    match observed {
        Observed::Response {
            status,
            from_app,
            grpc_status,
            body,
        } => {
            let mut s = format!("HTTP {status}");
            if let Some(g) = grpc_status {
                s.push_str(&format!(" grpc-status {g}"));
            }
            if *from_app {
                s.push_str(" from the app");
            } else if let Some(line) = body.lines().next().filter(|l| !l.is_empty()) {
                s.push_str(&format!(" `{line}`"));
            }
            s
        }
        Observed::Echoed => "TCP data echoed".to_owned(),
        Observed::Closed { detail } => format!("closed ({detail})"),
        Observed::ConnectFailed { detail } => format!("no connection ({detail})"),
    }
}

/// Every way `seen` and `authz` differ from `expect`.
pub(crate) fn compare(expect: &Expectation, seen: &Seen, authz: Option<&AuthzSeen>) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(decision) = expect.decision {
        let matches = matches!(
            (decision, seen),
            (ExpectedDecision::Allow, Seen::Allow)
                | (ExpectedDecision::Deny, Seen::Deny)
                | (ExpectedDecision::Reject, Seen::Reject)
                | (ExpectedDecision::Unauthenticated, Seen::Unauthenticated)
        );
        if !matches {
            failures.push(format!(
                "expected {}, got {}",
                decision.as_str(),
                seen.as_str()
            ));
        }
    }
    // Authorization ran when the line carries an allow/deny/audit decision.
    let ran = authz.filter(|a| matches!(a.decision.as_deref(), Some("allow" | "deny" | "audit")));
    if let Some(policy) = &expect.policy {
        match ran {
            Some(a) if &a.policy == policy => {}
            Some(a) => failures.push(format!("expected policy {policy}, got {}", a.policy)),
            None => failures.push(format!(
                "expected policy {policy}, but the destination's access log shows no authorization decision"
            )),
        }
    }
    if let Some(rule) = expect.rule {
        match ran {
            Some(a) if a.rule == Some(rule) => {}
            Some(a) => failures.push(format!(
                "expected rule {rule}, got {}",
                a.rule
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "none".to_owned())
            )),
            None => failures.push(format!(
                "expected rule {rule}, but the destination's access log shows no authorization decision"
            )),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, from_app: bool, body: &str) -> Observed {
        Observed::Response {
            status,
            from_app,
            grpc_status: None,
            body: body.to_owned(),
        }
    }

    #[test]
    fn responses_read_as_decisions() {
        assert_eq!(verdict(&response(200, true, ""), None), Seen::Allow);
        // The app's own 403 is still the app answering.
        assert_eq!(verdict(&response(403, true, "x"), None), Seen::Allow);
        assert_eq!(
            verdict(&response(403, false, "RBAC: access denied"), None),
            Seen::Deny
        );
        assert_eq!(
            verdict(&response(401, false, "Jwt is expired"), None),
            Seen::Unauthenticated
        );
        assert_eq!(
            verdict(
                &response(403, false, "Audiences in Jwt are not allowed"),
                None
            ),
            Seen::Unauthenticated
        );
        assert_eq!(
            verdict(&response(503, false, "upstream connect error"), None),
            Seen::Reject
        );
        assert!(matches!(
            verdict(&response(404, false, ""), None),
            Seen::Other(_)
        ));
    }

    #[test]
    fn a_closed_tcp_connection_is_a_deny_only_when_authorization_said_so() {
        let closed = Observed::Closed {
            detail: "closed with no data".to_owned(),
        };
        let deny = AuthzSeen {
            decision: Some("deny".to_owned()),
            policy: "none".to_owned(),
            rule: None,
            reason: String::new(),
        };
        assert_eq!(verdict(&closed, Some(&deny)), Seen::Deny);
        assert_eq!(verdict(&closed, None), Seen::Reject);
        assert_eq!(verdict(&Observed::Echoed, None), Seen::Allow);
    }

    #[test]
    fn policy_and_rule_are_compared_with_the_log() {
        let expect = Expectation {
            decision: Some(ExpectedDecision::Deny),
            policy: Some("foo/deny".to_owned()),
            rule: Some(1),
            ..Expectation::default()
        };
        let seen = AuthzSeen {
            decision: Some("deny".to_owned()),
            policy: "foo/deny".to_owned(),
            rule: Some(1),
            reason: String::new(),
        };
        assert!(compare(&expect, &Seen::Deny, Some(&seen)).is_empty());
        let other = AuthzSeen {
            rule: Some(0),
            ..seen
        };
        assert_eq!(
            compare(&expect, &Seen::Deny, Some(&other)),
            ["expected rule 1, got 0"]
        );
        assert_eq!(compare(&expect, &Seen::Allow, None).len(), 3);
    }
}
