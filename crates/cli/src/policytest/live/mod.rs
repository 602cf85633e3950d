//! `meshward test --live`: each PolicyTest document runs on a real local mesh (netns mode)
//! built from its workloads, and each case is sent as a real connection or request.
//!
//! Per document: the engine's mesh ([`crate::policytest::build_mesh`]) becomes a plan
//! ([`crate::mesh::plan::plan_declared`]); the control plane (restarted with the document's
//! trust domain) gets the test's resources and a declaration of the pods with the test's
//! `meshConfig` ([`declare`]); the pods start with their sidecars ([`pods`]) and the runner waits
//! until every proxy has ACKed that version; the cases become probes ([`cases`]) that one
//! client process per source pod sends ([`client`], `meshward live-client`); what came back,
//! with the destination sidecar's access-log line ([`logs`]), is read as a decision and compared
//! with the case ([`judge`]); then the pods are removed. Configuration-only cases read the
//! proxies' `/config_dump` or try the port in question ([`config`]). Cases that cannot be run
//! live are reported as skipped with the reason, never passed.
//!
//! Documents with `expectErrors` run no mesh: their resources are handed to the control
//! plane's store, which must refuse them with the expected errors.

pub(crate) mod client;
pub(crate) mod wire;

mod cases;
mod config;
mod declare;
mod judge;
mod logs;
mod pods;
mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshward_api::LoadedTest;
use meshward_api::policytest::TestCase;

use self::cases::{CaseAction, DumpCase, PortProbe, TrafficCase};
use self::logs::{AuthzSeen, Logs};
use self::pods::{DocMesh, Spot};
use self::session::Session;
use self::wire::{Observed, Probe, ProbeResult};
use crate::mesh::plan::plan_declared;
use crate::policytest::build_mesh;

/// What each probe brought back (by probe id), or why it did not run.
type Observations = BTreeMap<usize, Result<ProbeResult, String>>;

/// How long the runner waits for access-log lines after a document's traffic.
const LOG_WAIT: Duration = Duration::from_secs(1);

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Passed,
    Failed,
    /// Not runnable live, with the reason.
    Skipped(String),
}

/// One case's live result.
#[derive(Debug, Clone)]
pub(crate) struct LiveResult {
    pub(crate) name: String,
    pub(crate) status: Status,
    /// What happened (live, and what the engine says).
    pub(crate) detail: String,
    pub(crate) note: Option<String>,
}

/// Runs every test live, calling `report` after each document.
pub(crate) fn run(
    tests: &[LoadedTest],
    now: i64,
    mut report: impl FnMut(&LoadedTest, &[LiveResult]),
) -> anyhow::Result<()> {
    let mut session = Session::start()?;
    for (doc, loaded) in tests.iter().enumerate() {
        let results = run_document(&mut session, loaded, doc, now);
        report(loaded, &results);
    }
    session.finish()
}

fn result(case: &TestCase, status: Status, detail: String) -> LiveResult {
    LiveResult {
        name: case.name.clone(),
        status,
        detail,
        note: case.note.clone(),
    }
}

fn all(cases: &[TestCase], status: &Status, detail: &str) -> Vec<LiveResult> {
    cases
        .iter()
        .map(|c| result(c, status.clone(), detail.to_owned()))
        .collect()
}

fn run_document(
    session: &mut Session,
    loaded: &LoadedTest,
    doc: usize,
    now: i64,
) -> Vec<LiveResult> {
    let test = &loaded.test;
    let cases = &test.spec.cases;
    if let Some(expected) = &test.spec.expect_errors {
        let mut out = expected_errors(loaded, expected);
        out.extend(all(
            cases,
            &Status::Skipped(
                "the document's configuration is invalid on purpose: no mesh runs it".to_owned(),
            ),
            "",
        ));
        return out;
    }
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        let detail = format!("invalid configuration: {}", errors.join(" | "));
        return all(cases, &Status::Failed, &detail);
    }
    let mesh = match build_mesh(test, &loaded.resources) {
        Ok(m) => m,
        Err(e) => return all(cases, &Status::Failed, &e.to_string()),
    };
    let mut declared = match plan_declared(&mesh) {
        Ok(d) => d,
        Err(e) => return all(cases, &Status::Skipped(format!("cannot run live: {e}")), ""),
    };
    let trust_domain = mesh.settings.trust_domain.clone();
    if let Err(e) = session.restart_control_plane(&trust_domain) {
        return all(cases, &Status::Failed, &format!("{e:#}"));
    }
    let actions = cases::plan_cases(session, &mesh, &declared, cases, doc, now);
    // A port tried for its mode is served by the workload's app too, so an accepted request
    // gets an answer; the workload still does not declare it to the control plane.
    for a in &actions {
        if let CaseAction::PortProbe(p) = a
            && let Some(pod) = declared
                .plan
                .pods
                .iter_mut()
                .find(|pod| pod.key() == p.workload)
            && let Some(app) = pod.containers.first_mut()
            && !app.ports.contains(&p.port)
        {
            app.ports.push(p.port);
        }
    }
    let runnable = actions.iter().any(|a| !a.probes().is_empty());
    let mut observed: Observations = BTreeMap::new();
    let mut logs = Logs::default();
    if runnable {
        let ran = declare::inputs(loaded, &mesh, &declared)
            .and_then(|files| match session.apply(&files)? {
                Ok(version) => Ok(version),
                Err(lines) => Err(anyhow::anyhow!(
                    "the control plane refused the configuration: {}",
                    lines.join(" | ")
                )),
            })
            .and_then(|version| run_traffic(session, &declared, &actions, &trust_domain, version));
        match ran {
            Ok((o, l)) => {
                observed = o;
                logs = l;
            }
            Err(e) => {
                let detail = format!("{e:#}");
                for (_, probe) in actions.iter().flat_map(CaseAction::probes) {
                    observed.insert(probe.id, Err(detail.clone()));
                }
            }
        }
    }
    cases
        .iter()
        .zip(actions)
        .map(|(case, action)| judge_case(case, action, &mut observed, &logs))
        .collect()
}

/// The mesh of one document: start it, send everything, read the logs, stop it.
fn run_traffic(
    session: &mut Session,
    declared: &crate::mesh::plan::DeclaredPlan,
    actions: &[CaseAction],
    trust_domain: &str,
    version: u64,
) -> anyhow::Result<(Observations, Logs)> {
    let mut batches: BTreeMap<Spot, Vec<Probe>> = BTreeMap::new();
    let mut sources: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for (spot, probe) in actions.iter().flat_map(CaseAction::probes) {
        if let Some(ip) = probe.bind.as_deref().and_then(|b| b.parse().ok()) {
            sources.insert(ip);
        }
        batches.entry(spot.clone()).or_default().push(probe.clone());
    }
    let mut mesh = DocMesh::start(session, declared, &sources, trust_domain)?;
    let outcome = send(session, &mesh, &batches, actions, version);
    mesh.stop(session);
    outcome
}

fn send(
    session: &Session,
    mesh: &DocMesh,
    batches: &BTreeMap<Spot, Vec<Probe>>,
    actions: &[CaseAction],
    version: u64,
) -> anyhow::Result<(Observations, Logs)> {
    let proxies: Vec<(String, String)> = mesh
        .state
        .pods
        .iter()
        .filter(|p| p.plan.sidecar)
        .map(|p| (p.plan.namespace.clone(), p.plan.name.clone()))
        .collect();
    session.wait_acked(&proxies, version)?;
    let mut observed = BTreeMap::new();
    // One client process per source pod, all at once: each case is found again by its id.
    let answers: Vec<(Vec<usize>, anyhow::Result<Vec<ProbeResult>>)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = batches
                .iter()
                .map(|(spot, probes)| {
                    let ids: Vec<usize> = probes.iter().map(|p| p.id).collect();
                    (
                        ids,
                        scope.spawn(move || mesh.run_probes(session, spot, probes)),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(ids, h)| {
                    let r = h
                        .join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the client thread failed")));
                    (ids, r)
                })
                .collect()
        });
    for (ids, answer) in answers {
        match answer {
            Ok(results) => {
                for r in results {
                    observed.insert(r.id, Ok(r));
                }
                for id in ids {
                    observed
                        .entry(id)
                        .or_insert_with(|| Err("the client gave no result".to_owned()));
                }
            }
            Err(e) => {
                for id in ids {
                    observed.insert(id, Err(format!("{e:#}")));
                }
            }
        }
    }
    let logs = read_logs(session, mesh, actions, &observed);
    Ok((observed, logs))
}

/// Reads the proxies' logs until every line a case needs is there, or [`LOG_WAIT`] passed
/// (some connections leave no line: a refused handshake, for one).
fn read_logs(
    session: &Session,
    mesh: &DocMesh,
    actions: &[CaseAction],
    observed: &Observations,
) -> Logs {
    let pods: Vec<(String, std::path::PathBuf)> = mesh
        .state
        .pods
        .iter()
        .filter(|p| p.plan.sidecar)
        .map(|p| {
            (
                p.plan.key(),
                session
                    .home
                    .pod_log(&p.plan.namespace, &p.plan.name, "proxy"),
            )
        })
        .collect();
    let wanted: Vec<(&TrafficCase, &ProbeResult)> = actions
        .iter()
        .filter_map(|a| match a {
            CaseAction::Traffic(t) if t.destination_sidecar => match observed.get(&t.probe.id) {
                Some(Ok(r)) => Some((t, r)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let mut logs = Logs::default();
        for (key, path) in &pods {
            logs.load(key, path);
        }
        let complete = wanted.iter().all(|(t, r)| line_of(&logs, t, r).is_some());
        if complete || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server sidecar's access-log line for a case's traffic.
fn line_of(logs: &Logs, t: &TrafficCase, r: &ProbeResult) -> Option<AuthzSeen> {
    let except = t.via.as_deref();
    let line = match &t.request_id {
        Some(id) => logs.by_request_id(except, id),
        None => {
            let local = r.local.as_deref()?;
            match except {
                // The server saw the client sidecar's address, which only the client sidecar's
                // own line for this connection names.
                Some(client) => {
                    let out = logs.by_downstream_in(client, local)?;
                    logs.by_downstream(except, logs::upstream_local(out)?)
                }
                None => logs.by_downstream(None, local),
            }
        }
    }?;
    Some(logs::authz(line))
}

fn judge_case(
    case: &TestCase,
    action: CaseAction,
    observed: &mut Observations,
    logs: &Logs,
) -> LiveResult {
    let mut take = |probe: &Probe| -> Result<ProbeResult, String> {
        observed
            .remove(&probe.id)
            .unwrap_or_else(|| Err("the case was not run".to_owned()))
    };
    match action {
        CaseAction::Skip(why) => result(case, Status::Skipped(why), String::new()),
        CaseAction::Fail(why) => result(case, Status::Failed, why),
        CaseAction::Traffic(t) => match take(&t.probe) {
            Ok(r) => judge_traffic(case, &t, &r, logs),
            Err(e) => result(case, Status::Failed, e),
        },
        CaseAction::Dump(d) => match take(&d.probe) {
            Ok(r) => judge_dump(case, &d, &r.observed),
            Err(e) => result(case, Status::Failed, e),
        },
        CaseAction::PortProbe(p) => match (take(&p.plaintext), take(&p.mtls)) {
            (Ok(plain), Ok(mtls)) => judge_port(case, &p, &plain.observed, &mtls.observed),
            (Err(e), _) | (_, Err(e)) => result(case, Status::Failed, e),
        },
    }
}

fn judge_traffic(
    case: &TestCase,
    t: &TrafficCase,
    observed: &ProbeResult,
    logs: &Logs,
) -> LiveResult {
    let authz = if t.destination_sidecar {
        line_of(logs, t, observed)
    } else {
        None
    };
    let seen = judge::verdict(&observed.observed, authz.as_ref());
    let failures = judge::compare(&case.expect, &seen, authz.as_ref());
    let mut happened = format!(
        "live: {} ({})",
        seen.as_str(),
        judge::describe(&observed.observed)
    );
    if let Some(a) = &authz
        && !a.reason.is_empty()
    {
        happened.push_str(&format!("; proxy: {}", a.reason));
    }
    happened.push_str(&format!("; offline: {}", t.offline));
    if failures.is_empty() {
        result(case, Status::Passed, happened)
    } else {
        result(
            case,
            Status::Failed,
            format!("{}; {happened}", failures.join("; ")),
        )
    }
}

/// A configuration value read from a proxy's `/config_dump`.
fn judge_dump(case: &TestCase, d: &DumpCase, observed: &Observed) -> LiveResult {
    let field = d.check.field();
    let actual = match observed {
        Observed::Response {
            status: 200, body, ..
        } => d.check.read(body),
        other => Err(format!("/config_dump: {}", judge::describe(other))),
    };
    let whose = match &d.spot {
        Spot::Pod { key, .. } => format!("{key} proxy /config_dump"),
        Spot::Outside => "proxy /config_dump".to_owned(),
    };
    match actual {
        Ok(value) if value == d.expected => result(
            case,
            Status::Passed,
            format!("live: {field} {value} ({whose}); offline: {}", d.offline),
        ),
        Ok(value) => result(
            case,
            Status::Failed,
            format!(
                "expected {field} {}, got {value} ({whose}); offline: {}",
                d.expected, d.offline
            ),
        ),
        Err(e) => result(case, Status::Failed, e),
    }
}

/// The mode a port showed to a plaintext and an mTLS request.
fn judge_port(case: &TestCase, p: &PortProbe, plaintext: &Observed, mtls: &Observed) -> LiveResult {
    let seen = format!(
        "plaintext: {}; mTLS: {}",
        judge::describe(plaintext),
        judge::describe(mtls)
    );
    match config::port_mode(plaintext, mtls) {
        Ok(mode) if mode == p.expected => result(
            case,
            Status::Passed,
            format!(
                "live: mtlsMode {mode} on undeclared port {} ({seen}); offline: {}",
                p.port, p.offline
            ),
        ),
        Ok(mode) => result(
            case,
            Status::Failed,
            format!(
                "expected mtlsMode {}, got {mode} on undeclared port {} ({seen}); offline: {}",
                p.expected, p.port, p.offline
            ),
        ),
        Err(e) => result(case, Status::Failed, format!("{e} ({seen})")),
    }
}

/// `expectErrors`: the control plane's store must refuse the document with each listed error.
fn expected_errors(
    loaded: &LoadedTest,
    expected: &[meshward_api::policytest::ExpectedError],
) -> Vec<LiveResult> {
    let refusal: Result<Vec<String>, String> = declare::test_resources(loaded)
        .map_err(|e| format!("{e:#}"))
        .map(|file| {
            match meshward_control::Store::new().apply(meshward_control::Source::Api, &[file]) {
                Ok(_) => Vec::new(),
                Err(e) => e.lines().to_vec(),
            }
        });
    expected
        .iter()
        .map(|e| {
            let name = format!("expected error in {}: {}", e.resource, e.contains);
            let (status, detail) = match &refusal {
                Err(why) => (Status::Failed, why.clone()),
                Ok(lines) if lines.iter().any(|l| l.contains(&e.contains)) => (
                    Status::Passed,
                    "live: the control plane refused it as expected".to_owned(),
                ),
                Ok(lines) if lines.is_empty() => (
                    Status::Failed,
                    "the control plane accepted the configuration".to_owned(),
                ),
                Ok(lines) => (
                    Status::Failed,
                    format!(
                        "the control plane refused it with other errors: {}",
                        lines.join(" | ")
                    ),
                ),
            };
            LiveResult {
                name,
                status,
                detail,
                note: None,
            }
        })
        .collect()
}
