#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! The proxy's control-plane client against a real control plane: real TLS, real gRPC, real
//! certificates from the control plane's CA, on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use meshward_api::TrustDomains;
use meshward_api::protocol::proto::{Document, FetchedJwks, Snapshot, fetched_jwks};
use meshward_control::{ControlPlane, ControlPlaneOptions, InputFile, Source};
use meshward_policy::jwt::{JwtOutcome, JwtRequest};
use meshward_proxy::control::{
    ControlClient, ControlOptions, bootstrap_certificate, compile_snapshot,
};
use meshward_proxy::state::StateHandle;

fn file(name: &str, text: &str) -> InputFile {
    InputFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

const MESH: &str = "apiVersion: v1
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
---
apiVersion: v1
kind: Pod
metadata:
  name: sleep
  namespace: foo
  labels: {app: sleep}
spec:
  serviceAccountName: sleep
  containers:
  - name: app
";

fn policy(name: &str, app: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: foo\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n"
    )
}

/// The AuthorizationPolicies in force, sorted.
fn policies(state: &StateHandle) -> Vec<String> {
    let mut names: Vec<String> = state
        .load()
        .inbound
        .authz()
        .policies()
        .iter()
        .map(|p| p.id.to_string())
        .collect();
    names.sort();
    names
}

async fn start_control_plane(ca_dir: &Path, grpc: SocketAddr) -> ControlPlane {
    let mut options = ControlPlaneOptions::new(ca_dir);
    options.grpc_listen = grpc;
    options.admin_listen = "127.0.0.1:0".parse().unwrap();
    ControlPlane::start(options).await.unwrap()
}

/// Proxy options for workload `foo/<sa>` with a fresh bootstrap token.
fn proxy_options(cp: &ControlPlane, dir: &Path, sa: &str) -> ControlOptions {
    let root = dir.join("root-cert.pem");
    std::fs::write(&root, cp.ca().trust_bundle().to_pem()).unwrap();
    let token = dir.join(format!("{sa}.token"));
    std::fs::write(&token, cp.issue_token("foo", sa).unwrap()).unwrap();
    let mut options = ControlOptions::new(cp.grpc_addr().to_string(), root);
    options.token_file = Some(token);
    options
}

async fn connect(
    options: &ControlOptions,
    workload: &str,
) -> (ControlClient, meshward_proxy::control::Bootstrapped) {
    let boot = tokio::time::timeout(
        Duration::from_secs(10),
        bootstrap_certificate(options, "foo"),
    )
    .await
    .expect("a certificate within 10 s")
    .unwrap();
    let trust_domains = TrustDomains::new(boot.identity.trust_domain().clone(), []);
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        ControlClient::connect(
            options,
            "foo",
            workload,
            boot.credentials.clone(),
            trust_domains,
            boot.identity.clone(),
        ),
    )
    .await
    .expect("a first configuration within 10 s")
    .unwrap();
    (client, boot)
}

/// Waits until `f` holds, up to `limit`.
async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn snapshot_ack_live_change_nack_and_last_good_kept() {
    meshward_identity::crypto::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let cp = start_control_plane(&dir.path().join("ca"), "127.0.0.1:0".parse().unwrap()).await;
    cp.store()
        .apply(
            Source::Api,
            &[
                file("mesh.yaml", MESH),
                file("httpbin.yaml", &policy("httpbin-get", "httpbin")),
            ],
        )
        .unwrap();
    let options = proxy_options(&cp, dir.path(), "httpbin");
    let (client, boot) = connect(&options, "httpbin").await;
    assert_eq!(
        boot.identity.uri(),
        "spiffe://cluster.local/ns/foo/sa/httpbin"
    );
    let state = client.state().clone();
    assert_eq!(policies(&state), ["foo/httpbin-get"]);
    assert_eq!(state.load().identity, boot.identity);

    // The control plane sees the ACK.
    let registry = cp.registry().clone();
    eventually(Duration::from_secs(5), "ACK recorded", || {
        registry
            .connected("foo", "httpbin")
            .first()
            .is_some_and(|p| p.acked_version.is_some() && p.acked_version == p.version_sent)
    })
    .await;
    let sent = registry.connected("foo", "httpbin")[0].version_sent;

    // A policy for another workload does not reach this proxy.
    cp.store()
        .apply(
            Source::Api,
            &[file("sleep.yaml", &policy("sleep-get", "sleep"))],
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(registry.connected("foo", "httpbin")[0].version_sent, sent);

    // A policy for this workload reaches it, measured from the apply to the new state in force.
    let mut changes = state.subscribe();
    changes.borrow_and_update();
    let started = Instant::now();
    cp.store()
        .apply(
            Source::Api,
            &[file("deny.yaml", &policy("httpbin-deny", "httpbin"))],
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("the change arrives")
        .unwrap();
    let elapsed = started.elapsed();
    println!("policy change in force on the proxy after {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "propagation took {elapsed:?}"
    );
    assert_eq!(policies(&state), ["foo/httpbin-deny", "foo/httpbin-get"]);

    // A snapshot the proxy cannot enforce: the mesh's trust domain no longer matches its
    // certificate. The control plane accepts it (it is valid configuration); the proxy NACKs.
    let local_version = state.load().version;
    let other_domain = "apiVersion: meshward.dev/v1alpha1\nkind: PolicyTest\nmetadata:\n  name: mesh-config\n  namespace: istio-system\nspec:\n  meshConfig:\n    trustDomain: other.local\n";
    cp.store()
        .apply(Source::Api, &[file("mesh-config.yaml", other_domain)])
        .unwrap();
    let mut status = client.status();
    tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.last_nack.is_some()),
    )
    .await
    .expect("a NACK")
    .unwrap();
    let nack = client.status().borrow().last_nack.clone().unwrap();
    assert!(nack.1.contains("other.local"), "{}", nack.1);
    eventually(Duration::from_secs(5), "NACK recorded", || {
        registry.connected("foo", "httpbin")[0]
            .last_nack
            .as_ref()
            .is_some_and(|n| n.error.contains("other.local"))
    })
    .await;
    assert_eq!(
        state.load().version,
        local_version,
        "the last good state stays"
    );
    assert_eq!(policies(&state), ["foo/httpbin-deny", "foo/httpbin-get"]);

    // Fixed: the next snapshot is ACKed and in force.
    cp.store()
        .delete_files(&[
            file("mesh-config.yaml", other_domain),
            file("deny.yaml", &policy("httpbin-deny", "httpbin")),
        ])
        .unwrap();
    eventually(Duration::from_secs(5), "the fix in force", || {
        policies(&state) == ["foo/httpbin-get"]
    })
    .await;
    drop(client);
    cp.stop().await;
}

#[tokio::test]
async fn the_proxy_keeps_its_configuration_while_the_control_plane_is_down_and_reconnects() {
    meshward_identity::crypto::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let cp = start_control_plane(&ca_dir, "127.0.0.1:0".parse().unwrap()).await;
    let grpc = cp.grpc_addr();
    let config = [
        file("mesh.yaml", MESH),
        file("httpbin.yaml", &policy("httpbin-get", "httpbin")),
    ];
    cp.store().apply(Source::Api, &config).unwrap();
    let options = proxy_options(&cp, dir.path(), "httpbin");
    let (client, _boot) = connect(&options, "httpbin").await;
    let state = client.state().clone();
    let before = state.load();

    cp.stop().await;
    let mut status = client.status();
    tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| !s.connected))
        .await
        .expect("the proxy notices")
        .unwrap();
    // Down for a while: still the same configuration.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        Arc::ptr_eq(&before, &state.load()),
        "the state is untouched"
    );
    assert_eq!(policies(&state), ["foo/httpbin-get"]);

    // Back, on the same address and CA, with a new policy.
    let cp = start_control_plane(&ca_dir, grpc).await;
    cp.store().apply(Source::Api, &config).unwrap();
    cp.store()
        .apply(
            Source::Api,
            &[file("deny.yaml", &policy("httpbin-deny", "httpbin"))],
        )
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.connected && s.connects == 2),
    )
    .await
    .expect("the proxy reconnects")
    .unwrap();
    eventually(Duration::from_secs(5), "the new policy", || {
        policies(&state) == ["foo/httpbin-deny", "foo/httpbin-get"]
    })
    .await;
    println!(
        "reconnected and updated {:?} after the restart",
        started.elapsed()
    );
    drop(client);
    cp.stop().await;
}

const SECRET_A: &[u8] = b"issuer-a-secret-0123456789abcdef";
const SECRET_B: &[u8] = b"issuer-b-secret-0123456789abcdef";

fn hs256_jwks(secret: &[u8], kid: &str) -> String {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}]}}"#)
}

fn token(issuer: &str, secret: &[u8], kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let claims = serde_json::json!({"iss": issuer, "sub": "alice", "exp": 4_102_444_800i64});
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// authentication.md §5.6: a `jwksUri` whose fetch failed gets the placeholder key, so tokens of
/// that issuer are rejected; another issuer's fetched JWKS works.
#[test]
fn a_failed_jwks_fetch_rejects_only_that_issuers_tokens() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: httpbin\n  namespace: foo\n  labels: {app: httpbin}\nspec:\n  serviceAccountName: httpbin\n  containers:\n  - name: app\n    ports:\n    - containerPort: 8000\n---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: foo\nspec:\n  jwtRules:\n  - issuer: issuer-a\n    jwksUri: http://127.0.0.1:1/a\n  - issuer: issuer-b\n    jwksUri: http://127.0.0.1:1/b\n";
    let documents: Vec<Document> = meshward_api::protocol::split_documents(text)
        .into_iter()
        .map(|d| Document {
            origin: "mesh.yaml".into(),
            first_line: d.first_line,
            text: d.text,
            item: String::new(),
        })
        .collect();
    let snapshot = Snapshot {
        version: 1,
        documents,
        jwks: vec![
            FetchedJwks {
                uri: "http://127.0.0.1:1/a".into(),
                result: Some(fetched_jwks::Result::Document(hs256_jwks(SECRET_A, "a1"))),
            },
            FetchedJwks {
                uri: "http://127.0.0.1:1/b".into(),
                result: Some(fetched_jwks::Result::Error("connection refused".into())),
            },
        ],
    };
    let state = compile_snapshot(&snapshot, "foo", "httpbin", 1).unwrap();
    let jwt = state.inbound.jwt();
    let check = |token: String| {
        let headers = vec![("authorization".to_owned(), format!("Bearer {token}"))];
        jwt.authenticate(
            &JwtRequest {
                method: "GET",
                path: "/",
                headers: &meshward_policy::borrow_headers(&headers),
            },
            1_800_000_000,
        )
    };
    assert!(matches!(
        check(token("issuer-a", SECRET_A, "a1")),
        JwtOutcome::Verified(_)
    ));
    assert!(matches!(
        check(token("issuer-b", SECRET_B, "b1")),
        JwtOutcome::Rejected(_)
    ));
}

/// A snapshot with an invalid document is refused with the original file and line.
#[test]
fn an_invalid_snapshot_names_the_file_and_line() {
    let snapshot = Snapshot {
        version: 7,
        documents: vec![Document {
            origin: "policies/bad.yaml".into(),
            first_line: 10,
            text: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad\n  namespace: foo\nspec:\n  action: MAYBE\n".into(),
            item: String::new(),
        }],
        jwks: Vec::new(),
    };
    let err = compile_snapshot(&snapshot, "foo", "httpbin", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("policies/bad.yaml:16:"), "{err}");
    assert!(err.contains("spec.action"), "{err}");
}

/// Serves `body` (changeable) over HTTP on 127.0.0.1 and counts requests.
struct JwksServer {
    addr: SocketAddr,
    body: Arc<std::sync::Mutex<String>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(std::sync::Mutex::new(body));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let body = b.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            addr,
            body,
            hits,
            task,
        }
    }
}

/// A key rotation at the issuer: the proxy's unknown-`kid` request makes the control plane fetch
/// the JWKS again, and the new key reaches the proxy in its next snapshot.
#[tokio::test]
async fn a_jwks_refresh_request_brings_a_rotated_key() {
    meshward_identity::crypto::install_default_provider();
    let jwks_server = JwksServer::start(hs256_jwks(SECRET_A, "a1")).await;
    let uri = format!("http://{}/jwks", jwks_server.addr);
    let dir = tempfile::tempdir().unwrap();
    let mut options = ControlPlaneOptions::new(dir.path().join("ca"));
    options.grpc_listen = "127.0.0.1:0".parse().unwrap();
    options.admin_listen = "127.0.0.1:0".parse().unwrap();
    options.jwks.on_demand_min_interval = Duration::from_millis(100);
    let cp = ControlPlane::start(options).await.unwrap();
    let ra = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: jwt\n  namespace: foo\nspec:\n  selector:\n    matchLabels: {{app: httpbin}}\n  jwtRules:\n  - issuer: issuer-a\n    jwksUri: {uri}\n"
    );
    cp.store()
        .apply(
            Source::Api,
            &[file("mesh.yaml", MESH), file("ra.yaml", &ra)],
        )
        .unwrap();
    let options = proxy_options(&cp, dir.path(), "httpbin");
    let (client, _boot) = connect(&options, "httpbin").await;
    let state = client.state().clone();
    let verify = |state: &StateHandle, token: &str| {
        let headers = vec![("authorization".to_owned(), format!("Bearer {token}"))];
        let outcome = state.load().inbound.jwt().authenticate(
            &JwtRequest {
                method: "GET",
                path: "/",
                headers: &meshward_policy::borrow_headers(&headers),
            },
            1_800_000_000,
        );
        matches!(outcome, JwtOutcome::Verified(_))
    };
    // The first snapshot may come before the fetch completes; the fetched keys follow.
    eventually(Duration::from_secs(5), "the fetched JWKS in force", || {
        verify(&state, &token("issuer-a", SECRET_A, "a1"))
    })
    .await;

    // The issuer rotates to a new key: tokens with kid a2 fail until the proxy asks.
    *jwks_server.body.lock().unwrap() = hs256_jwks(SECRET_B, "a2");
    let rotated = token("issuer-a", SECRET_B, "a2");
    assert!(!verify(&state, &rotated));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = jwks_server.hits.load(std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    client.request_jwks_refresh();
    eventually(Duration::from_secs(5), "the rotated key in force", || {
        verify(&state, &rotated)
    })
    .await;
    println!(
        "rotated JWKS in force {:?} after the proxy's request",
        started.elapsed()
    );
    assert_eq!(
        jwks_server.hits.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );
    drop(client);
    cp.stop().await;
}
