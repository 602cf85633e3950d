#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The local mesh under faults (netns mode), on seed 000's final state (only `frontend-sa` may
//! call backend): the control plane killed, then restarted by the supervisor; an invalid and a
//! valid policy applied to live traffic; a pod's app and proxy killed and restarted.
//!
//! Needs what `tests/mesh.rs` needs (root, iproute2, iptables, util-linux, curl and the
//! `meshward-proxy` binary); without it the tests say so and pass.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Mesh, eventually, seeds};

fn seed_000() -> PathBuf {
    seeds().join("000-frontend-backend-mtls-authz")
}

/// The tutorial's intruder (`kubectl run test`: a sidecar, service account `default`) as a
/// pod that stays, so that it can call backend while the control plane is down (a one-off
/// `meshward run` pod needs the control plane for its certificate).
const INTRUDER: &str = "apiVersion: v1
kind: Pod
metadata:
  name: test
  namespace: default
  labels: {run: test}
  annotations: {meshward.dev/run: sleep infinity}
spec:
  containers: [{name: test, image: curlimages/curl}]
";

/// Sidecars of seed 000 with the intruder: frontend, backend, test.
const SIDECARS: usize = 3;

/// Brings up seed 000's final state plus the intruder pod.
fn up(mesh: &Mesh, scratch: &tempfile::TempDir) {
    let intruder = scratch.path().join("intruder.yaml");
    std::fs::write(&intruder, INTRUDER).unwrap();
    mesh.up(&[seed_000(), intruder]);
}

/// `frontend → backend` and the intruder's `test → backend`: (HTTP code, HTTP code).
fn outcomes(mesh: &Mesh) -> (String, String) {
    let allowed = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    let intruder = mesh.curl(&["exec", "test"], "http://backend/", &[]);
    (allowed.http, intruder.http)
}

/// Sends SIGSTOP/SIGCONT (`kill -s`) to `pid`.
fn signal(pid: u64, sig: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {sig} {pid}");
}

/// Resumes the supervisor even when an assertion fails while it is stopped, so that `down`
/// can stop it.
struct Resume(u64);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "CONT", &self.0.to_string()])
            .status();
    }
}

/// Every sidecar of the mesh's pods is connected and has ACKed what it was sent.
fn all_synced(mesh: &Mesh, sidecars: usize) -> bool {
    let Some(proxies) = mesh.proxies() else {
        return false;
    };
    let proxies = proxies.as_array().unwrap();
    let synced = proxies
        .iter()
        .filter(|p| {
            p["connected"] == true
                && p["versionSent"].as_u64().is_some()
                && p["ackedVersion"] == p["versionSent"]
        })
        .count();
    synced >= sidecars
}

#[test]
fn control_plane_dies_restarts_and_live_policy_changes_take_effect() {
    let Some(mesh) = Mesh::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    up(&mesh, &scratch);
    let state = mesh.state();
    let supervisor = state["supervisor_pid"].as_u64().unwrap();
    let control_plane = state["control_plane_pid"].as_u64().unwrap();
    assert_eq!(outcomes(&mesh), ("200".into(), "403".into()));
    assert!(eventually(Duration::from_secs(10), || all_synced(
        &mesh, SIDECARS
    )));

    // (a) The control plane dies. The supervisor is held (SIGSTOP) so that the mesh stays
    // without one for as long as this part takes: the sidecars keep enforcing what they have.
    signal(supervisor, "STOP");
    let resume = Resume(supervisor);
    signal(control_plane, "KILL");
    assert!(eventually(Duration::from_secs(5), || mesh
        .proxies()
        .is_none()));
    for _ in 0..3 {
        assert_eq!(
            outcomes(&mesh),
            ("200".into(), "403".into()),
            "without a control plane, traffic flows and policy is enforced"
        );
    }
    let refused = mesh.apply_output(&[seed_000().join("02-deny-all.yaml")]);
    assert!(!refused.status.success(), "apply needs a control plane");

    // (b) The supervisor restarts it; every sidecar reconnects and ACKs the new one's
    // configuration.
    let restarted = Instant::now();
    drop(resume);
    assert!(
        eventually(Duration::from_secs(20), || all_synced(&mesh, SIDECARS)),
        "proxies did not reconnect: {:?}",
        mesh.proxies()
    );
    let reconnect = restarted.elapsed();
    eprintln!(
        "control plane restart: proxies reconnected and ACKed {} ms after the supervisor resumed",
        reconnect.as_millis()
    );
    let state = mesh.state();
    assert_eq!(state["control_plane_restarts"], 1, "{state}");
    assert_ne!(state["control_plane_pid"].as_u64(), Some(control_plane));
    assert_eq!(outcomes(&mesh), ("200".into(), "403".into()));

    // A policy applied live survives the next restart: the intruder is denied by it (not by
    // the seed's allow-nothing), and still is once a new control plane serves the sidecars.
    let deny_frontend = scratch.path().join("deny-frontend.yaml");
    std::fs::write(
        &deny_frontend,
        "apiVersion: security.istio.io/v1\n\
         kind: AuthorizationPolicy\n\
         metadata:\n  name: deny-frontend\n  namespace: default\n\
         spec:\n  selector:\n    matchLabels:\n      app: backend\n  action: DENY\n\
         \x20 rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/default/sa/frontend-sa\"]\n",
    )
    .unwrap();

    // (c) An invalid policy on live traffic: refused with file:line and the field, exit 1,
    // and nothing changes.
    let invalid = scratch.path().join("invalid.yaml");
    std::fs::write(
        &invalid,
        "apiVersion: security.istio.io/v1\n\
         kind: AuthorizationPolicy\n\
         metadata:\n  name: deny-frontend\n  namespace: default\n\
         spec:\n  selector:\n    matchLabels:\n      app: backend\n  action: DENYY\n",
    )
    .unwrap();
    let versions = |mesh: &Mesh| -> Vec<u64> {
        let proxies = mesh.proxies().unwrap();
        let mut v: Vec<u64> = proxies
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ackedVersion"].as_u64().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    let before = versions(&mesh);
    let out = mesh.apply_output(std::slice::from_ref(&invalid));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid.yaml:10"), "file:line: {stderr}");
    assert!(stderr.contains("action"), "the field: {stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(outcomes(&mesh), ("200".into(), "403".into()));
    assert_eq!(versions(&mesh), before, "no new configuration was pushed");

    // (d) A valid DENY for frontend, applied while frontend polls backend from inside its pod:
    // the first 403 comes within a second of `meshward apply` returning.
    let mut client = mesh.spawn(&[
        "exec",
        "deploy/frontend",
        "--",
        "sh",
        "-c",
        "end=$(($(date +%s) + 20)); \
         while [ $(date +%s) -lt $end ]; do \
           c=$(curl -s -o /dev/null -m 2 -w '%{http_code}' http://backend/); \
           echo \"$(date +%s.%N) $c\"; \
           [ \"$c\" = 403 ] && break; \
         done",
    ]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    // The loop is running and served before the change.
    let first = lines.next().unwrap().unwrap();
    assert!(first.ends_with(" 200"), "{first}");
    mesh.apply(std::slice::from_ref(&deny_frontend));
    let applied = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut denied_at = None;
    for line in lines {
        let line = line.unwrap();
        let (at, code) = line.split_once(' ').unwrap();
        if code == "403" {
            denied_at = Some(at.parse::<f64>().unwrap());
            break;
        }
        assert_eq!(code, "200", "{line}");
    }
    let _ = client.wait();
    let denied_at = denied_at.expect("the DENY never took effect");
    let latency = (denied_at - applied).max(0.0);
    eprintln!(
        "apply -> in force: first 403 seen by the polling client {:.0} ms after `meshward apply` returned",
        latency * 1000.0
    );
    assert!(latency < 1.0, "in force after {latency:.3} s");

    // The applied DENY survives a control plane restart, with no window without it: the new
    // control plane restores it before it serves any sidecar. The dead one recorded it on disk
    // before `apply` returned, so nothing needs to be waited for before the kill.
    let control_plane = mesh.state()["control_plane_pid"].as_u64().unwrap();
    signal(control_plane, "KILL");
    assert!(eventually(Duration::from_secs(20), || {
        mesh.state()["control_plane_restarts"] == 2 && all_synced(&mesh, SIDECARS)
    }));
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    let out = mesh.cmd(&["get", "ap", "-n", "default", "-o", "json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deny-frontend"),
        "the restarted control plane has the applied policy"
    );
    // And it can still be deleted like any applied resource.
    let out = mesh.cmd(&["delete", "-f", deny_frontend.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(eventually(Duration::from_secs(2), || {
        mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[])
            .http
            == "200"
    }));

    mesh.down();
    mesh.assert_clean();
}

#[test]
fn dead_app_and_proxy_are_restarted_and_the_pod_serves_again() {
    let Some(mesh) = Mesh::new() else { return };
    let scratch = tempfile::tempdir().unwrap();
    up(&mesh, &scratch);
    let pod = |mesh: &Mesh| -> serde_json::Value {
        let state = mesh.state();
        state["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "backend-0")
            .unwrap()
            .clone()
    };
    let view = |mesh: &Mesh| -> serde_json::Value {
        mesh.pods()
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "backend-0")
            .unwrap()
            .clone()
    };
    let running = |mesh: &Mesh, restarts: u64| {
        let v = view(mesh);
        v["status"] == "Running" && v["ready"] == "2/2" && v["restarts"] == restarts
    };
    assert!(running(&mesh, 0), "{}", view(&mesh));

    for (container, restarts) in [("app_pid", 1), ("proxy_pid", 2)] {
        let pid = pod(&mesh)[container].as_u64().unwrap();
        signal(pid, "KILL");
        let killed = Instant::now();
        // Until the supervisor brings it back, backend is unavailable, not open.
        assert!(eventually(Duration::from_secs(5), || {
            view(&mesh)["status"] != "Running"
        }));
        assert!(
            eventually(Duration::from_secs(30), || running(&mesh, restarts)),
            "{container}: {}",
            view(&mesh)
        );
        assert!(eventually(Duration::from_secs(10), || {
            mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[])
                .http
                == "200"
        }));
        eprintln!(
            "{container} killed: backend-0 Running and serving again after {} ms",
            killed.elapsed().as_millis()
        );
        assert_ne!(pod(&mesh)[container].as_u64(), Some(pid));
        // Policy is enforced by the new processes as by the old ones.
        assert_eq!(outcomes(&mesh), ("200".into(), "403".into()));
    }
    let table = mesh.cmd(&["get", "pods"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("RESTARTS"), "{table}");

    mesh.down();
    mesh.assert_clean();
}
