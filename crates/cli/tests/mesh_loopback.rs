#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The local mesh in loopback mode, without root: seed 000 end to end with real processes and
//! sockets — mTLS between sidecars with the caller's identity at the app, STRICT resetting a
//! plaintext client (curl exit 56), deny-all then allow-frontend (200 vs 403 `RBAC: access
//! denied`), a policy on port 80 (served at 10080 on the wire) with an `ipBlocks` source (the
//! sidecar's bound pod address), the seed's PolicyTests applied live changing nothing — and
//! `down` leaving no process, listener or file.
//!
//! When the test runs as root (as in CI), every `meshward` command runs as `nobody`
//! (`support::Mesh::loopback`). Meshes are global to the machine, so the tests take turns with
//! the netns ones.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Curl, Mesh, eventually, seeds};

/// What seed 000 lacks for this test: a pod without sidecar in its own namespace (the
/// tutorial's plaintext client), and a workload serving port 80, below the privileged limit.
const EXTRA: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: legacy}
spec: {containers: [{name: sleep, image: curlimages/curl}]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: default}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 80}]}
";

/// Port 80 of web, only from `source` (the frontend pod's address): it passes only if web's
/// sidecar sees the logical port 80 (not the wire's 10080) and the frontend sidecar's
/// connections leave from the frontend's own address.
fn web_policy(source: &str) -> String {
    format!(
        "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-port-80-from-frontend, namespace: default}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{ipBlocks: [\"{source}/32\"]}}}}]
    to: [{{operation: {{ports: [\"80\"]}}}}]
"
    )
}

/// Whether the process `pid` ended (a zombie has: only its parent's wait is missing).
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn scratch(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// [`Mesh::curl`], again until `check` holds (for at most 5 s): the first request after
/// `meshward apply`, which returns once the control plane took the change, not once every
/// sidecar enforces it.
fn curl_until(mesh: &Mesh, how: &[&str], url: &str, check: impl Fn(&Curl) -> bool) -> Curl {
    let mut last = None;
    let settled = eventually(Duration::from_secs(5), || {
        let c = mesh.curl(how, url, &[]);
        let ok = check(&c);
        last = Some(c);
        ok
    });
    let last = last.unwrap();
    assert!(settled, "{how:?} {url}: {last:?}");
    last
}

#[test]
fn seed_000_in_loopback_mode_without_root() {
    let Some(mesh) = Mesh::loopback() else { return };
    let dir = seeds().join("000-frontend-backend-mtls-authz");
    // Readable by the unprivileged user the commands run as.
    let extra_dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(
        extra_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let extra = scratch(&extra_dir, "extra.yaml", EXTRA);

    let started = Instant::now();
    mesh.up(&[dir.join("00-apps.yaml"), extra.clone()]);
    eprintln!(
        "loopback `up -d`: 4 pods ready after {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(mesh.state()["mode"], "loopback");
    if support::is_root() {
        // The mesh really runs without root.
        let supervisor = mesh.state()["supervisor_pid"].as_u64().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap();
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t65534")),
            "{status}"
        );
    }
    let pods = mesh.pods();
    let pods = pods.as_array().unwrap();
    let names: Vec<&str> = pods.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["frontend-0", "backend-0", "sleep", "web-0"]);
    for p in pods {
        assert_eq!(p["status"], "Running", "{p}");
        assert_eq!(p["mode"], "loopback", "{p}");
        let ip = p["ip"].as_str().unwrap();
        assert!(ip.starts_with("127.100."), "{p}");
        assert_eq!(p["http_proxy"], format!("{ip}:15080"), "{p}");
    }
    let frontend = &pods[0];
    assert_eq!(frontend["ready"], "2/2");
    assert_eq!(frontend["app_ip"], "127.101.0.1", "{frontend}");
    let frontend_ip = frontend["ip"].as_str().unwrap().to_owned();
    // Nothing listens on a privileged port: web's 80 is served at 10080.
    let listening = support::loopback_listeners();
    assert!(
        listening.contains(&"127.100.0.4:10080".to_owned())
            && listening.contains(&"127.101.0.4:10080".to_owned()),
        "{listening:?}"
    );
    assert!(
        listening.iter().all(|l| !l.ends_with(":80")),
        "{listening:?}"
    );

    // The frontend's sidecar is the client's HTTP proxy: mTLS, and the app sees who called.
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    assert!(
        c.body
            .contains("identity: spiffe://cluster.local/ns/default/sa/frontend-sa"),
        "{c:?}"
    );
    assert!(c.body.contains("pod: default/backend-0"), "{c:?}");

    // Step 2: mesh-wide STRICT. A client without sidecar is reset (curl exit 56), never a 403.
    mesh.apply(&[dir.join("01-peer-authentication.yaml")]);
    let c = curl_until(
        &mesh,
        &["exec", "sleep", "-n", "legacy"],
        "http://backend.default/",
        |c| c.exit == Some(56),
    );
    assert!(c.stderr.contains("reset"), "{c:?}");
    let c = mesh.curl(
        &["run", "plain", "-n", "outside", "--no-sidecar"],
        "http://backend.default/",
        &[],
    );
    assert_eq!(c.exit, Some(56), "{c:?}");
    let log = mesh.cmd(&["logs", "deploy/backend", "-c", "proxy"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("STRICT"),
        "the backend proxy logs why it closed the plaintext connection"
    );
    // The sidecar client is still served, over mTLS.
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!(c.http, "200", "{c:?}");
    assert!(c.body.contains("sa/frontend-sa"), "{c:?}");

    // Steps 5 and 6: deny-all, then backend allows frontend only; web's port 80 allows the
    // frontend's address only.
    let web = scratch(&extra_dir, "web-policy.yaml", &web_policy(&frontend_ip));
    mesh.apply(&[
        dir.join("02-deny-all.yaml"),
        dir.join("03-backend-allow-frontend.yaml"),
        web,
    ]);
    // In force once backend (another address, the same port 80) is refused by web, and
    // frontend (S000-5: the namespace allow-nothing) refuses backend.
    let c = curl_until(&mesh, &["exec", "deploy/backend"], "http://web/", |c| {
        c.http == "403"
    });
    assert_eq!(c.body, "RBAC: access denied", "{c:?}");
    curl_until(&mesh, &["exec", "deploy/backend"], "http://frontend", |c| {
        c.http == "403"
    });
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://web.default:80/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    assert!(c.body.contains("pod: default/web-0"), "{c:?}");
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");
    // S000-2: the intruder `kubectl run test` (sidecar, service account default) gets 403.
    let c = mesh.curl(&["run", "test", "-n", "default"], "http://backend", &[]);
    assert_eq!(c.http, "403", "{c:?}");
    assert_eq!(c.body, "RBAC: access denied", "{c:?}");

    // The seed's PolicyTests (test descriptions whose workloads run as other service accounts,
    // stage by stage) applied to the live mesh: ignored with a warning, and nothing changes for
    // the proxies: no unknown-issuer reset, frontend still 200, the intruder still 403.
    let out = mesh.apply_output(&[dir.join("policytest.yaml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ignored: a PolicyTest with test cases is run with `meshward test`"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("policytest"));
    let c = mesh.curl(&["run", "intruder", "-n", "default"], "http://backend", &[]);
    assert_eq!(
        (c.http.as_str(), c.body.as_str()),
        ("403", "RBAC: access denied"),
        "{c:?}"
    );
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");

    // The tutorial's own Deployments and Services applied again (as `apply -f` of the folder
    // does): the mesh runs them as `up` started them, so they are left out with a warning, and
    // no pod without an address appears, no Service loses its virtual IP.
    let workloads = |mesh: &Mesh| {
        let out = mesh.cmd(&["get", "workloads", "-o", "json"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let services = |mesh: &Mesh| {
        let out = mesh.cmd(&["get", "svc", "-o", "json"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // (The one-off pods above leave the inventory shortly after their command ends.)
    assert!(support::eventually(Duration::from_secs(5), || {
        !workloads(&mesh).contains("\"intruder\"")
    }));
    let (workloads_before, services_before) = (workloads(&mesh), services(&mesh));
    let out = mesh.apply_output(&[dir.join("00-apps.yaml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Deployment default/backend ignored: the local mesh runs")
            && stderr.contains("Service default/backend ignored: the local mesh runs"),
        "{stderr}"
    );
    assert_eq!(workloads(&mesh), workloads_before);
    assert_eq!(services(&mesh), services_before);
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!((c.exit, c.http.as_str()), (Some(0), "200"), "{c:?}");

    // One-off pods are gone once their command ends; the table says how clients get in.
    assert_eq!(mesh.pods().as_array().unwrap().len(), 4);
    let table = mesh.cmd(&["get", "pods"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("mode: loopback") && table.contains("HTTP PROXY"),
        "{table}"
    );

    let stopping = Instant::now();
    mesh.down();
    eprintln!("loopback `down`: {} ms", stopping.elapsed().as_millis());
    mesh.assert_clean_loopback();
    mesh.purge();
}

#[test]
fn bare_up_runs_the_embedded_default_and_down_cleans_up_after_a_crash() {
    let Some(mesh) = Mesh::loopback() else { return };
    let started = Instant::now();
    let out = mesh.cmd(&["up", "-d"]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    eprintln!(
        "loopback `up -d` (embedded default): ready after {} ms",
        started.elapsed().as_millis()
    );
    assert!(progress.contains("mode: loopback ("), "{progress}");
    assert!(progress.contains("embedded default"), "{progress}");
    let c = mesh.curl(&["exec", "deploy/frontend"], "http://backend/", &[]);
    assert_eq!(c.http, "200", "{c:?}");

    // A second `up` is refused while the mesh runs.
    let again = mesh.cmd(&["up", "-d"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already running"),
        "{again:?}"
    );

    // The supervisor dies without tearing down: `down` still finds and stops everything it
    // started, from the process ledger, and touches nothing else.
    let bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let supervisor = mesh.state()["supervisor_pid"].as_u64().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(eventually(Duration::from_secs(5), || gone(supervisor)));
    assert!(
        !support::loopback_listeners().is_empty(),
        "the pods outlive their supervisor until `down`"
    );
    mesh.down();
    mesh.assert_clean_loopback();
    let mut bystander = bystander;
    assert!(bystander.try_wait().unwrap().is_none(), "not the mesh's");
    let _ = bystander.kill();
    let _ = bystander.wait();
}
