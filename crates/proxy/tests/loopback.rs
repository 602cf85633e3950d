//! The flags for hosts without traffic capture or privileges (the local mesh's loopback mode),
//! on real `meshward-proxy` processes: `--port-shift` (a workload port 80 is served and dialled
//! at 10080 while AuthorizationPolicy `ports` still match 80), `--outbound-bind` (the receiving
//! side sees the pod's address as the source, so `ipBlocks` match), and `--plain-forwarder` (a
//! pod without sidecar: plaintext from its own address, and a STRICT destination's refusal
//! reaches the client as a connection reset).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};

use meshward_identity::{CaDir, KeyAlgorithm, TrustDomain};

mod processes;
use processes::{Proxy, http, start_echo_app, wait_ready};

/// client (sidecar) .81, web (sidecar, app on .83) .82, plain (no sidecar) .84, recorder (no
/// sidecar) .85: one-host "pods" as loopback mode gives them.
const MESH: &str = r#"
apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata:
  name: loopback-flags
spec:
  workloads:
  - {name: client, namespace: foo, serviceAccount: client, labels: {app: client}, address: 127.0.0.81, ports: [{port: 9000, protocol: HTTP}]}
  - {name: web, namespace: foo, serviceAccount: web, labels: {app: web}, address: 127.0.0.82, ports: [{port: 80, protocol: HTTP}, {port: 8080, protocol: HTTP}]}
  - {name: plain, namespace: foo, labels: {app: plain}, address: 127.0.0.84, sidecar: false}
  - {name: recorder, namespace: foo, labels: {app: recorder}, address: 127.0.0.85, sidecar: false, ports: [{port: 80, protocol: HTTP}]}
  services:
  - {name: web, namespace: foo, selector: {app: web}, ports: [{port: 80, name: http}, {port: 8080, name: http-alt}]}
  - {name: recorder, namespace: foo, selector: {app: recorder}, ports: [{port: 80, name: http}]}
  cases: []
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: foo}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
---
# Port 80 only, and only from the client pod's own address: passes only if the server sidecar
# sees the logical port and the bound source.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-port-80-from-client, namespace: foo}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {ipBlocks: ["127.0.0.81/32"]}}]
    to: [{operation: {ports: ["80"]}}]
"#;

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

/// A plain HTTP server answering every request with `peer <ip>` (the connection's source).
fn start_peer_recorder(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let peer = stream.peer_addr().map(|p| p.ip().to_string());
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("peer {}", peer.unwrap_or_default());
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

fn get(proxy: SocketAddr, url: &str) -> std::io::Result<String> {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    http(
        proxy,
        &format!("GET {url} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
    )
}

#[test]
fn port_shift_outbound_bind_and_the_plain_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    CaDir::new(&ca_dir)
        .load_or_init(
            TrustDomain::new("cluster.local").unwrap(),
            KeyAlgorithm::EcdsaP256,
        )
        .unwrap();
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, MESH).unwrap();
    // The applications listen where the shift puts them: port 80 on 10080.
    start_echo_app("127.0.0.83:10080".parse().unwrap());
    start_echo_app("127.0.0.83:8080".parse().unwrap());
    start_peer_recorder("127.0.0.85:10080".parse().unwrap());

    let config = config.to_str().unwrap();
    let ca = ca_dir.to_str().unwrap();
    let common = ["-f", config, "--port-shift", "10000"];
    let web_args = [
        "--workload",
        "foo/web",
        "--ca-dir",
        ca,
        "--inbound-ip",
        "127.0.0.82",
        "--app-host",
        "127.0.0.83",
        "--admin",
        "127.0.0.82:15000",
    ];
    let _web = spawn_proxy(&[&common[..], &web_args[..]].concat());
    let client_args = [
        "--workload",
        "foo/client",
        "--ca-dir",
        ca,
        "--inbound-ip",
        "127.0.0.81",
        "--http-proxy",
        "127.0.0.81:15080",
        "--outbound-bind",
        "127.0.0.81",
        "--admin",
        "127.0.0.81:15000",
    ];
    let _client = spawn_proxy(&[&common[..], &client_args[..]].concat());
    let plain_args = [
        "--workload",
        "foo/plain",
        "--plain-forwarder",
        "--http-proxy",
        "127.0.0.84:15080",
        "--outbound-bind",
        "127.0.0.84",
        "--admin",
        "127.0.0.84:15000",
    ];
    let _plain = spawn_proxy(&[&common[..], &plain_args[..]].concat());
    for admin in ["127.0.0.82:15000", "127.0.0.81:15000", "127.0.0.84:15000"] {
        wait_ready(admin.parse().unwrap());
    }
    let client: SocketAddr = "127.0.0.81:15080".parse().unwrap();
    let plain: SocketAddr = "127.0.0.84:15080".parse().unwrap();

    // The web sidecar listens on 10080 for port 80, and nothing listens on 80 itself.
    assert!(std::net::TcpStream::connect("127.0.0.82:10080").is_ok());
    assert!(std::net::TcpStream::connect("127.0.0.82:80").is_err());

    // client → web:80 through both sidecars: dialled at 10080, mTLS, and allowed by the
    // policy on port 80 from 127.0.0.81 — the logical port and the bound source.
    let ok = get(client, "http://web.foo/").unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("URI=spiffe://cluster.local/ns/foo/sa/client"),
        "{ok}"
    );
    // Port 8080 is not shifted, and no rule allows it.
    let denied = get(client, "http://web.foo:8080/").unwrap();
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.ends_with("RBAC: access denied"), "{denied}");

    // A destination without sidecar sees the pod's address, on the shifted port.
    let seen = get(client, "http://recorder.foo/").unwrap();
    assert!(seen.ends_with("peer 127.0.0.81"), "{seen}");
    let seen = get(plain, "http://recorder.foo/").unwrap();
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.ends_with("peer 127.0.0.84"), "{seen}");

    // The plain forwarder sends plaintext, which STRICT refuses: the client's connection is
    // reset, with no response, as if it had reached the web sidecar itself.
    match get(plain, "http://web.foo/") {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(answer) => panic!("the forwarder answered instead of resetting: {answer:?}"),
    }
    // What the forwarder passes on: the web sidecar itself closes plaintext without a byte.
    let direct = http(
        "127.0.0.82:10080".parse().unwrap(),
        "GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n",
    );
    assert!(
        direct.as_ref().map_or(true, String::is_empty),
        "STRICT answered plaintext: {direct:?}"
    );
}
