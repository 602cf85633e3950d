//! `meshward control-plane` as a process, driven by `meshward apply|get|delete` over its admin
//! API on 127.0.0.1: what is applied is served, an invalid change is refused with file and line
//! and changes nothing, watched folders are reloaded; with `--state-dir`, what was accepted
//! survives `kill -9`, and a damaged state file stops the start with the file named.

// A test binary: a failed expectation is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::control_plane::{
    ControlPlane, command as control_plane_command, meshward, start as start_with,
};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn start(dir: &Path, config: &Path) -> ControlPlane {
    start_with(dir, config, &[])
}

const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: httpbin
  namespace: foo
  labels: {app: httpbin}
spec:
  serviceAccountName: httpbin
  containers:
  - name: app
    ports:
    - containerPort: 8000
";

const POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-get
  namespace: foo
spec:
  selector:
    matchLabels: {app: httpbin}
  rules:
  - to:
    - operation:
        methods: [GET]
";

const INVALID: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: broken
  namespace: foo
spec:
  action: MAYBE
";

#[test]
fn apply_get_delete_against_a_running_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("pods.yaml"), PODS).unwrap();
    let cp = start(dir.path(), &watched);
    let url = cp.url.as_str();

    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = meshward(url, &["apply", "-f", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "authorizationpolicy/allow-get -n foo created\n"
    );

    let out = meshward(url, &["get", "ap"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("NAMESPACE  NAME       SOURCE"), "{table}");
    assert!(table.contains("foo        allow-get"), "{table}");

    let out = meshward(
        url,
        &["get", "authorizationpolicies", "-n", "foo", "-o", "yaml"],
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("kind: List"), "{yaml}");
    assert!(yaml.contains("- GET"), "{yaml}");
    let out = meshward(url, &["get", "pods", "-o", "json"]);
    // `get pods` belongs to the local mesh runtime; with no mesh running it says so.
    assert!(!out.status.success() || String::from_utf8_lossy(&out.stdout).contains('['));
    let out = meshward(url, &["get", "workloads", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let workloads: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        workloads[0]["identity"],
        "spiffe://cluster.local/ns/foo/sa/httpbin"
    );

    // Invalid: refused with file, line and field; nothing changes.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!("{INVALID}---\n{}", POLICY.replace("allow-get", "second")),
    )
    .unwrap();
    let out = meshward(url, &["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7:", bad.display())), "{err}");
    assert!(err.contains("spec.action"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let out = meshward(url, &["get", "ap", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "the valid half was not taken either"
    );

    // A watched folder is reloaded.
    std::fs::write(watched.join("svc.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {app: httpbin}\n  ports:\n  - port: 80\n    targetPort: 8000\n").unwrap();
    let started = Instant::now();
    loop {
        let out = meshward(url, &["get", "svc", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if list["items"].as_array().is_some_and(|i| i.len() == 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the folder change was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = meshward(url, &["delete", "-f", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "authorizationpolicy/allow-get -n foo deleted\n"
    );
    let out = meshward(url, &["get", "ap"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found."));

    let out = meshward(url, &["get", "proxies"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// `meshward apply -f` of a seed tutorial's whole folder (manifests, policies and the
/// policytest.yaml beside them) configures the mesh with the manifests and policies only: the
/// PolicyTests are test descriptions, ignored with a warning naming file and line, and none of
/// the workloads, service accounts, services or resources they imagine reaches the proxies.
#[test]
fn applying_a_folder_with_policytests_ignores_them_and_serves_only_the_manifests() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seeds/000-frontend-backend-mtls-authz");
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    std::fs::create_dir(&watched).unwrap();
    std::fs::copy(seed.join("00-apps.yaml"), watched.join("00-apps.yaml")).unwrap();
    let cp = start(dir.path(), &watched);
    let url = cp.url.as_str();
    let workloads = |url: &str| -> Vec<String> {
        let out = meshward(url, &["get", "workloads", "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                format!(
                    "{} {}",
                    w["name"].as_str().unwrap(),
                    w["identity"].as_str().unwrap()
                )
            })
            .collect();
        ids.sort();
        ids
    };
    let served = [
        "backend spiffe://cluster.local/ns/default/sa/backend-sa",
        "frontend spiffe://cluster.local/ns/default/sa/frontend-sa",
    ];
    assert_eq!(workloads(url), served);

    let out = meshward(url, &["apply", "-f", seed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("authorizationpolicy/deny-all -n default created"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deployment/backend -n default configured"),
        "the Deployment the control plane already serves is the same resource: {stdout}"
    );
    assert!(!stdout.contains("policytest"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = seed.join("policytest.yaml");
    assert!(
        stderr.contains(&format!(
            "{}:18:1: PolicyTest default/seed-000-step-2-mesh-wide-strict ignored: a PolicyTest \
             with test cases is run with `meshward test`, not applied",
            file.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("ignored: a PolicyTest").count(),
        4,
        "{stderr}"
    );

    // The same two workloads, with their own service accounts, and nothing the tests declare.
    assert_eq!(workloads(url), served);
    let out = meshward(url, &["get", "dr"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No resources found."),
        "the tests' embedded DestinationRule is not applied: {}",
        text(&out)
    );
    let out = meshward(url, &["get", "svc", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn get_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("pods.yaml"), PODS).unwrap();
    std::fs::write(watched.join("policy.yaml"), POLICY).unwrap();
    let cp = start(dir.path(), &watched);
    for args in [&["get", "ap", "-o", "json"][..], &["get", "ap"][..]] {
        // The reader is gone before the first write, as after `| head -1` read its line.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
            .args(args)
            .env("MESHWARD_CONTROL_PLANE", &cp.url)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "{args:?}");
    }
}

#[test]
fn an_unreachable_control_plane_is_reported() {
    let out = meshward("http://127.0.0.1:9", &["get", "ap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("cannot reach the control plane"),
        "{}",
        text(&out)
    );
}

/// `kill -9` of the control plane (no shutdown path runs) and the wait for it to be gone.
fn kill_9(mut cp: ControlPlane) {
    cp.child.kill().unwrap();
    cp.child.wait().unwrap();
}

#[test]
fn what_was_accepted_survives_kill_9_of_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("pods.yaml"), PODS).unwrap();
    let seeded = POLICY.replace("allow-get", "from-folder");
    std::fs::write(watched.join("policy.yaml"), &seeded).unwrap();
    let state = dir.path().join("state");
    let state_arg = ["--state-dir", state.to_str().unwrap()];
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();

    let mut timings = Vec::new();
    for round in 0..3 {
        let cp = start_with(dir.path(), &watched, &state_arg);
        let url = cp.url.clone();
        match round {
            0 => {
                // A policy applied, and one of the watched folder's deleted: both are changes
                // made through the API that the folder, unchanged, must not undo.
                let started = Instant::now();
                let out = meshward(&url, &["apply", "-f", policy.to_str().unwrap()]);
                timings.push(started.elapsed());
                assert!(out.status.success(), "{}", text(&out));
                let folder_policy = watched.join("policy.yaml");
                let out = meshward(&url, &["delete", "-f", folder_policy.to_str().unwrap()]);
                assert!(out.status.success(), "{}", text(&out));
            }
            1 => {
                // Re-applying with a change, then killed at once: the answer came after the
                // change was on disk.
                let edited = dir.path().join("edited.yaml");
                std::fs::write(&edited, POLICY.replace("[GET]", "[GET, HEAD]")).unwrap();
                let started = Instant::now();
                let out = meshward(&url, &["apply", "-f", edited.to_str().unwrap()]);
                timings.push(started.elapsed());
                assert!(out.status.success(), "{}", text(&out));
            }
            _ => {
                let out = meshward(&url, &["get", "ap", "-o", "json"]);
                assert!(out.status.success(), "{}", text(&out));
                let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let names: Vec<&str> = list["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["metadata"]["name"].as_str().unwrap())
                    .collect();
                assert_eq!(names, ["allow-get"], "{list}");
                let methods =
                    &list["items"][0]["spec"]["rules"][0]["to"][0]["operation"]["methods"];
                assert_eq!(
                    methods,
                    &serde_json::json!(["GET", "HEAD"]),
                    "the last apply"
                );
                let out = meshward(&url, &["get", "ap"]);
                let table = String::from_utf8_lossy(&out.stdout);
                assert!(table.contains("foo        allow-get"), "{table}");
                // The folder's pods are there, from the folder.
                let out = meshward(&url, &["get", "workloads", "-o", "json"]);
                let workloads: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(workloads.as_array().map(Vec::len), Some(1), "{workloads}");
                // A later edit of the folder's policy is a newer write than the delete.
                std::fs::write(
                    watched.join("policy.yaml"),
                    seeded.replace("[GET]", "[POST]"),
                )
                .unwrap();
                let started = Instant::now();
                loop {
                    let out = meshward(&url, &["get", "ap", "-n", "foo", "-o", "json"]);
                    if String::from_utf8_lossy(&out.stdout).contains("POST") {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "the folder edit was not taken"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        kill_9(cp);
    }
    eprintln!(
        "apply with --state-dir (CLI process included): {:?}",
        timings.iter().map(|t| t.as_millis()).collect::<Vec<_>>()
    );
}

#[test]
fn a_corrupt_state_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("mesh");
    std::fs::create_dir(&watched).unwrap();
    std::fs::write(watched.join("pods.yaml"), PODS).unwrap();
    let state = dir.path().join("state");
    let state_arg = ["--state-dir", state.to_str().unwrap()];
    let cp = start_with(dir.path(), &watched, &state_arg);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = meshward(&cp.url, &["apply", "-f", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    kill_9(cp);

    // One byte of the recorded policy changed: the file still parses, but it is not what was
    // accepted.
    let file = state.join("store.json");
    let recorded = std::fs::read_to_string(&file).unwrap();
    assert!(recorded.contains("allow-get"));
    std::fs::write(&file, recorded.replace("allow-get", "allow-gex")).unwrap();

    let mut child = control_plane_command(dir.path(), &watched, &state_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the control plane started on a corrupt state file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "the file is named: {stderr}"
    );
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains("sha256"), "what is wrong: {stderr}");
    // The file is left as it was, for whoever repairs it.
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("allow-gex")
    );
}
