//! `meshward control-plane` as a process, driven by `meshward apply|get|delete` over its admin
//! API on 127.0.0.1: what is applied is served, an invalid change is refused with file and line
//! and changes nothing, watched folders are reloaded.

// A test binary: a failed expectation is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn meshward(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("MESHWARD_CONTROL_PLANE", url)
        .output()
        .expect("run meshward")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The control plane process; killed (and waited for) when dropped.
struct ControlPlane {
    child: Child,
    url: String,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, config: &Path) -> ControlPlane {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args([
            "control-plane",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--ca-dir",
        ])
        .arg(dir.join("ca"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the control plane");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split("admin API on ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .trim()
        .to_owned();
    ControlPlane { child, url }
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
