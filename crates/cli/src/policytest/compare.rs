//! One PolicyTest's cases against the engine.

use std::net::IpAddr;

use meshward_api::LoadedTest;
use meshward_api::policytest::{Expectation, ExpectedDecision, TestCase};
use meshward_policy::authz::AuthzReason;
use meshward_policy::{Client, HttpRequest, Mesh, Outcome, Target, Traffic, Verdict};

use super::build_mesh;

/// The result of one case (or one expected error).
#[derive(Debug, Clone)]
pub(crate) struct CaseResult {
    /// Case name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// What happened, in words (always set; shown for failures and with `-v`).
    pub detail: String,
    /// The case's `note`, shown when it fails.
    pub note: Option<String>,
}

/// Runs every case of a loaded test.
pub(crate) fn run_test(loaded: &LoadedTest, now_unix: i64) -> Vec<CaseResult> {
    let test = &loaded.test;
    let mut results = Vec::new();
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    let expected = test.spec.expect_errors.clone().unwrap_or_default();
    // "A file with `expectErrors` passes when loading its resources fails with each listed
    // error and with no other."
    for e in &expected {
        let found = errors.iter().any(|d| e.matches(d));
        results.push(CaseResult {
            name: format!("expected error in {}: {}", e.resource, e.contains),
            passed: found,
            detail: if found {
                "refused as expected".to_owned()
            } else {
                format!(
                    "no such error; errors were: {}",
                    if errors.is_empty() {
                        "none".to_owned()
                    } else {
                        errors
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    }
                )
            },
            note: None,
        });
    }
    let unexpected: Vec<String> = errors
        .iter()
        .filter(|d| !expected.iter().any(|e| e.matches(d)))
        .map(|d| d.to_string())
        .collect();
    if !unexpected.is_empty() {
        let detail = format!("invalid configuration: {}", unexpected.join(" | "));
        results.extend(test.spec.cases.iter().map(|c| CaseResult {
            name: c.name.clone(),
            passed: false,
            detail: detail.clone(),
            note: c.note.clone(),
        }));
        if test.spec.cases.is_empty() {
            results.push(CaseResult {
                name: format!("{} loads", test.metadata.name()),
                passed: false,
                detail,
                note: None,
            });
        }
        return results;
    }
    let mesh = match build_mesh(test, &loaded.resources) {
        Ok(m) => m,
        Err(err) => {
            results.extend(test.spec.cases.iter().map(|c| CaseResult {
                name: c.name.clone(),
                passed: false,
                detail: format!("{err:#}"),
                note: c.note.clone(),
            }));
            return results;
        }
    };
    for case in &test.spec.cases {
        let (passed, detail) = match run_case(&mesh, case, now_unix) {
            Ok(r) => r,
            Err(err) => (false, format!("{err:#}")),
        };
        results.push(CaseResult {
            name: case.name.clone(),
            passed,
            detail,
            note: case.note.clone(),
        });
    }
    results
}

/// Builds the engine's traffic description from a case.
pub(crate) fn traffic_of(case: &TestCase, now_unix: i64) -> anyhow::Result<Traffic> {
    let from = case
        .from
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("case needs `from`"))?;
    let to = case
        .to
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("case needs `to`"))?;
    let given = [
        from.workload.is_some(),
        from.principal.is_some(),
        from.plaintext == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        anyhow::bail!("`from` needs exactly one of workload, principal, plaintext: true");
    }
    let client = if let Some(w) = &from.workload {
        Client::Workload(w.clone())
    } else if let Some(p) = &from.principal {
        Client::Principal {
            principal: p.clone(),
            trusted_ca: from.trusted_ca.unwrap_or(true),
        }
    } else {
        Client::Plaintext
    };
    let source_address = from
        .address
        .as_deref()
        .map(|a| a.parse::<IpAddr>())
        .transpose()
        .map_err(|_| anyhow::anyhow!("`from.address` is not an IP address"))?;
    let target = match (&to.workload, &to.service) {
        (Some(w), None) => Target::Workload {
            workload: w.clone(),
            port: to.port,
        },
        (None, Some(s)) => Target::Service {
            host: s.clone(),
            port: to.port,
        },
        _ => anyhow::bail!("`to` needs exactly one of workload, service"),
    };
    let request = case.request.as_ref().map(|r| HttpRequest {
        method: r.method.clone(),
        path: r.path.clone(),
        host: r.host.clone(),
        headers: r
            .headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .values()
                    .into_iter()
                    .map(move |v| (name.to_ascii_lowercase(), v.trim().to_owned()))
            })
            .collect(),
    });
    Ok(Traffic {
        client,
        source_address,
        target,
        request,
        sni: case.sni.clone(),
        now_unix,
    })
}

fn run_case(mesh: &Mesh, case: &TestCase, now_unix: i64) -> anyhow::Result<(bool, String)> {
    let expect = &case.expect;
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    if let Some(mode) = &expect.mtls_mode {
        let key = case
            .workload
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("`expect.mtlsMode` needs `workload`"))?;
        let w = mesh
            .find_workload(key, None)
            .ok_or_else(|| anyhow::anyhow!("no workload `{key}`"))?;
        let resolved = mesh.peer_authn.resolve(w.selector_view());
        let actual = match case.port {
            Some(p) => resolved.for_port(p),
            None => resolved.mode,
        };
        seen.push(format!("mtlsMode {}", actual.as_str()));
        if actual.as_str() != mode {
            failures.push(format!("expected mtlsMode {mode}, got {}", actual.as_str()));
        }
    }
    if let Some(mode) = &expect.client_tls {
        let from = case
            .from
            .as_ref()
            .and_then(|f| f.workload.as_deref())
            .ok_or_else(|| anyhow::anyhow!("`expect.clientTls` needs `from.workload`"))?;
        let traffic = traffic_of(case, now_unix)?;
        let tls = mesh.client_tls(from, &traffic.target)?;
        let actual = tls.as_ref().map(|t| t.mode.as_str()).unwrap_or("DISABLE");
        seen.push(format!("clientTls {actual}"));
        if actual != mode {
            failures.push(format!("expected clientTls {mode}, got {actual}"));
        }
    }
    if expect.decision.is_some() || expect.policy.is_some() || expect.rule.is_some() {
        let traffic = traffic_of(case, now_unix)?;
        let outcome = mesh.evaluate(&traffic, false)?;
        seen.push(describe_outcome(&outcome));
        failures.extend(compare_decision(expect, &outcome));
    }
    if seen.is_empty() {
        anyhow::bail!("`expect` states nothing to check");
    }
    let happened = seen.join("; ");
    if failures.is_empty() {
        Ok((true, happened))
    } else {
        Ok((
            false,
            format!("{}; happened: {happened}", failures.join("; ")),
        ))
    }
}

/// `VERDICT (reason)`.
pub(crate) fn describe_outcome(o: &Outcome) -> String {
    format!("{} ({})", o.verdict.as_str(), o.reason)
}

fn compare_decision(expect: &Expectation, outcome: &Outcome) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(decision) = expect.decision {
        let matches = matches!(
            (decision, outcome.verdict),
            (ExpectedDecision::Allow, Verdict::Allow)
                | (ExpectedDecision::Deny, Verdict::Deny)
                | (ExpectedDecision::Reject, Verdict::Reject)
                | (ExpectedDecision::Unauthenticated, Verdict::Unauthenticated)
        );
        if !matches {
            failures.push(format!(
                "expected {}, got {}",
                decision.as_str(),
                outcome.verdict.as_str()
            ));
        }
    }
    let deciding = outcome.authz.as_ref().map(|a| match &a.reason {
        AuthzReason::DeniedBy(r) | AuthzReason::AllowedBy(r) => {
            (r.policy.to_string(), Some(r.rule))
        }
        AuthzReason::CustomDenied { rule, .. } => (rule.policy.to_string(), Some(rule.rule)),
        AuthzReason::NoAllowMatched | AuthzReason::NoAllowPolicies => ("none".to_owned(), None),
    });
    if let Some(policy) = &expect.policy {
        match &deciding {
            Some((actual, _)) if actual == policy => {}
            Some((actual, _)) => failures.push(format!("expected policy {policy}, got {actual}")),
            None => failures.push(format!(
                "expected policy {policy}, but authorization did not run"
            )),
        }
    }
    if let Some(rule) = expect.rule {
        match deciding {
            Some((_, Some(actual))) if actual == rule => {}
            Some((_, actual)) => failures.push(format!(
                "expected rule {rule}, got {}",
                actual
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "none".to_owned())
            )),
            None => failures.push(format!(
                "expected rule {rule}, but authorization did not run"
            )),
        }
    }
    failures
}
