//! Two real `meshward-proxy` processes configured by a real control plane (run in this test
//! process, watching a folder): live traffic follows a policy change within a second, keeps
//! flowing with policy enforced while the control plane is down, and the proxies reconnect when
//! it is back. Loopback addresses only.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshward_control::{ControlPlane, ControlPlaneOptions};

mod processes;
use processes::{Proxy, http, start_echo_app, wait_ready};

const SLEEP: &str = "127.0.0.61";
const APP: &str = "127.0.0.72:8000";

const MESH: &str = r#"
apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata:
  name: mesh
spec:
  workloads:
  - name: sleep
    namespace: foo
    serviceAccount: sleep
    labels: {app: sleep}
    address: 127.0.0.61
    ports:
    - port: 9000
      protocol: HTTP
  - name: httpbin
    namespace: foo
    serviceAccount: httpbin
    labels: {app: httpbin}
    address: 127.0.0.71
    ports:
    - port: 8000
      protocol: HTTP
  services:
  - name: httpbin
    namespace: foo
    selector: {app: httpbin}
    ports:
    - port: 8000
      name: http
  cases: []
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
"#;

const DENY_GET: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-get
  namespace: foo
spec:
  selector:
    matchLabels: {app: httpbin}
  action: DENY
  rules:
  - to:
    - operation:
        paths: [/get]
";

/// Answers every request with 200 and the request head.
/// The status line of `path` on httpbin, through sleep's sidecar.
fn get(path: &str) -> String {
    let proxy: SocketAddr = format!("{SLEEP}:15080").parse().unwrap();
    let answer = http(
        proxy,
        &format!("GET http://httpbin.foo:8000{path} HTTP/1.1\r\nhost: httpbin.foo:8000\r\nconnection: close\r\n\r\n"),
    )
    .unwrap_or_else(|e| format!("error: {e}"));
    answer.lines().next().unwrap_or_default().to_owned()
}

/// How long until `get(path)` answers `status` (polling every 10 ms, up to 5 s).
fn time_until(path: &str, status: &str) -> Duration {
    let started = Instant::now();
    loop {
        if get(path).starts_with(status) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} never answered {status}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start_control_plane(rt: &tokio::runtime::Runtime, dir: &Path, grpc: SocketAddr) -> ControlPlane {
    let mut options = ControlPlaneOptions::new(dir.join("ca"));
    options.grpc_listen = grpc;
    options.admin_listen = "127.0.0.1:0".parse().unwrap();
    options.config_paths = vec![dir.join("config")];
    options.poll_interval = Duration::from_millis(100);
    rt.block_on(ControlPlane::start(options)).unwrap()
}

fn spawn_proxy(cp: &ControlPlane, dir: &Path, workload: &str, extra: &[&str]) -> Proxy {
    let root = dir.join("root-cert.pem");
    std::fs::write(&root, cp.ca().trust_bundle().to_pem()).unwrap();
    let token = dir.join(format!("{workload}.token"));
    std::fs::write(&token, cp.issue_token("foo", workload).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meshward-proxy"))
        .args(["--workload", &format!("foo/{workload}")])
        .args(["--control-plane", &cp.grpc_addr().to_string()])
        .arg("--ca-root")
        .arg(&root)
        .arg("--token-file")
        .arg(&token)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proxy(child)
}

#[test]
fn live_traffic_follows_the_control_plane_and_survives_its_absence() {
    meshward_identity::crypto::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("mesh.yaml"), MESH).unwrap();
    start_echo_app(APP.parse().unwrap());

    let cp = start_control_plane(&rt, dir.path(), "127.0.0.1:0".parse().unwrap());
    let grpc = cp.grpc_addr();
    let _server = spawn_proxy(
        &cp,
        dir.path(),
        "httpbin",
        &["--app-host", "127.0.0.72", "--admin", "127.0.0.71:15000"],
    );
    let _client = spawn_proxy(
        &cp,
        dir.path(),
        "sleep",
        &[
            "--http-proxy",
            "127.0.0.61:15080",
            "--admin",
            "127.0.0.61:15000",
        ],
    );
    wait_ready("127.0.0.71:15000".parse().unwrap());
    wait_ready("127.0.0.61:15000".parse().unwrap());
    assert!(get("/get").starts_with("HTTP/1.1 200"), "{}", get("/get"));

    // A valid policy takes effect on live traffic.
    std::fs::write(config.join("deny.yaml"), DENY_GET).unwrap();
    let took = time_until("/get", "HTTP/1.1 403");
    println!(
        "DENY policy in force on live traffic {took:?} after the file was written (100 ms polling included)"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(get("/headers").starts_with("HTTP/1.1 200"));

    // An invalid policy is refused: nothing changes.
    std::fs::write(config.join("broken.yaml"), "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: broken, namespace: foo}\nspec:\n  action: MAYBE\n").unwrap();
    std::fs::remove_file(config.join("deny.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        get("/get").starts_with("HTTP/1.1 403"),
        "the refused change did not apply"
    );
    std::fs::remove_file(config.join("broken.yaml")).unwrap();
    std::fs::write(config.join("deny.yaml"), DENY_GET).unwrap();

    // Control plane down: traffic flows, policy stays enforced.
    let registry = cp.registry().clone();
    rt.block_on(cp.stop());
    std::thread::sleep(Duration::from_millis(300));
    assert!(get("/headers").starts_with("HTTP/1.1 200"));
    assert!(get("/get").starts_with("HTTP/1.1 403"));
    drop(registry);

    // Back (same address, same CA, same folder): the proxies reconnect and follow changes again.
    let cp = start_control_plane(&rt, dir.path(), grpc);
    let started = Instant::now();
    loop {
        let synced = cp
            .registry()
            .list()
            .iter()
            .filter(|p| {
                p.connected && p.acked_version.is_some() && p.acked_version == p.version_sent
            })
            .count();
        if synced == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxies did not reconnect: {:?}",
            cp.registry().list()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "both proxies reconnected and ACKed {:?} after the restart",
        started.elapsed()
    );
    std::fs::remove_file(config.join("deny.yaml")).unwrap();
    let took = time_until("/get", "HTTP/1.1 200");
    println!("policy removal in force {took:?} after the file was deleted");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    rt.block_on(cp.stop());
}
