//! Two real `meshward-proxy` processes between a client and an echo application, over loopback
//! addresses: mTLS between the sidecars, PeerAuthentication STRICT against a plaintext client,
//! authorization by principal and path with the exact 403 body, and an access-log line naming
//! each decision.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshward_identity::{CaDir, KeyAlgorithm, TrustDomain};

mod processes;
use processes::{Proxy, http, start_echo_app, wait_ready};

fn mesh_yaml(log: &Path) -> String {
    format!(
        r#"
apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata:
  name: e2e-mesh
spec:
  meshConfig:
    accessLogFile: {log}
    accessLogEncoding: TEXT
  workloads:
  - name: sleep
    namespace: foo
    serviceAccount: sleep
    labels: {{app: sleep}}
    address: 127.0.0.11
    ports:
    - port: 9000
      protocol: HTTP
  - name: httpbin
    namespace: foo
    serviceAccount: httpbin
    labels: {{app: httpbin}}
    address: 127.0.0.21
    ports:
    - port: 8000
      protocol: HTTP
  services:
  - name: httpbin
    namespace: foo
    selector: {{app: httpbin}}
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
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-readers
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/sleep"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/get", "/headers"]
"#,
        log = log.display()
    )
}

fn spawn_proxy(args: &[&str]) -> Proxy {
    let child = Command::new(env!("CARGO_BIN_EXE_meshward-proxy"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proxy(child)
}

#[test]
fn two_sidecars_enforce_mtls_and_authorization() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    CaDir::new(&ca_dir)
        .load_or_init(
            TrustDomain::new("cluster.local").unwrap(),
            KeyAlgorithm::EcdsaP256,
        )
        .unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let access_log = dir.path().join("access.log");
    std::fs::write(config.join("mesh.yaml"), mesh_yaml(&access_log)).unwrap();
    start_echo_app("127.0.0.22:8000".parse().unwrap());

    let config_arg = config.to_str().unwrap();
    let ca_arg = ca_dir.to_str().unwrap();
    let _server = spawn_proxy(&[
        "--workload",
        "foo/httpbin",
        "-f",
        config_arg,
        "--ca-dir",
        ca_arg,
        "--app-host",
        "127.0.0.22",
        "--admin",
        "127.0.0.21:15000",
    ]);
    let _client = spawn_proxy(&[
        "--workload",
        "foo/sleep",
        "-f",
        config_arg,
        "--ca-dir",
        ca_arg,
        "--http-proxy",
        "127.0.0.11:15080",
        "--admin",
        "127.0.0.11:15000",
    ]);
    wait_ready("127.0.0.21:15000".parse().unwrap());
    wait_ready("127.0.0.11:15000".parse().unwrap());
    let proxy: SocketAddr = "127.0.0.11:15080".parse().unwrap();

    // sleep → httpbin through both sidecars: mTLS, and the app sees sleep's identity in XFCC.
    let ok = http(
        proxy,
        "GET http://httpbin.foo:8000/get HTTP/1.1\r\nhost: httpbin.foo:8000\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("URI=spiffe://cluster.local/ns/foo/sa/sleep"),
        "the app sees the client identity: {ok}"
    );
    // The client sidecar gave the request an x-request-id, which the server sidecar kept.
    let request_id = ok
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no x-request-id reached the app: {ok}"));
    assert_eq!(request_id.len(), 36, "{request_id}");

    // A path the policy does not allow: 403 with Envoy's exact body.
    let denied = http(
        proxy,
        "GET http://httpbin.foo:8000/admin HTTP/1.1\r\nhost: httpbin.foo:8000\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.ends_with("RBAC: access denied"), "{denied}");

    // A plaintext client straight to the STRICT port: closed without a byte.
    let plaintext = http(
        "127.0.0.21:8000".parse().unwrap(),
        "GET /get HTTP/1.1\r\nhost: httpbin\r\nconnection: close\r\n\r\n",
    );
    match plaintext {
        Ok(bytes) => assert!(bytes.is_empty(), "STRICT answered plaintext: {bytes}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }

    // Every line of the access log names the decision.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        if log.contains("authz=deny") && log.contains("authz=allow") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains("authz=allow"), "{log}");
    assert_eq!(
        log.matches(request_id.as_str()).count(),
        2,
        "both sidecars log the request under one id: {log}"
    );
    assert!(log.contains("authz=deny policy=- "), "{log}");
    // With an access log, both sidecars' events carry the request itself.
    assert_eq!(
        log.matches("\"GET /get HTTP/1.1\"").count(),
        2,
        "both sidecars log the method and path: {log}"
    );
    assert!(log.contains("\"GET /admin HTTP/1.1\""), "{log}");
    assert!(
        log.contains("rbac_access_denied_matched_policy[none]"),
        "{log}"
    );
}
