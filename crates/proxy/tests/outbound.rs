//! The outbound side over real loopback sockets: the explicit HTTP proxy and the capture path
//! in front of test "server sidecars" (mTLS servers built from `MeshTls::server_config`) and
//! plain servers, with the mesh built from PolicyTest-shaped YAML.
// Helpers outside `#[test]` functions fail the test the same way when they unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::tls::{alpn, peer_certificate};
use meshward_identity::{
    CertificateAuthority, Credentials, KeyAlgorithm, MeshTls, SpiffeId, TrustDomain, TrustDomains,
};
use meshward_proxy::outbound::{BoundOutbound, EventSink, Outbound, OutboundConfig, OutboundEvent};
use meshward_proxy::state::{ProxyState, StateHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

// ---------------------------------------------------------------------------------------------
// Mesh, identities and the proxy under test.

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate_root(
        TrustDomain::new("cluster.local").unwrap(),
        KeyAlgorithm::EcdsaP256,
        DEFAULT_ROOT_TTL,
    )
    .unwrap()
}

/// The TLS setup of workload `ns/sa` with a fresh certificate from `ca`.
fn workload_tls(ca: &CertificateAuthority, ns: &str, sa: &str) -> MeshTls {
    let id = SpiffeId::new(ca.trust_domain().clone(), ns, sa).unwrap();
    let cert = ca.issue(&id, KeyAlgorithm::EcdsaP256, None).unwrap();
    MeshTls::new(
        Credentials::with_certificate(cert).unwrap(),
        TrustDomains::new(ca.trust_domain().clone(), []),
    )
}

/// The mesh of `yaml` (a PolicyTest document) as seen by workload `foo/sleep`.
fn state(yaml: &str) -> Arc<StateHandle> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mesh = meshward_proxy::config::load_mesh(&[path]).unwrap();
    StateHandle::new(ProxyState::build(mesh, "foo", "sleep", 1).unwrap())
}

/// A PolicyTest with the client `foo/sleep`, `workloads` and `services` added, and `resources`.
fn mesh_yaml(workloads: &str, services: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata: {{name: outbound}}
spec:
  workloads:
  - {{name: sleep, namespace: foo, serviceAccount: sleep, labels: {{app: sleep}}, address: 127.0.0.10}}
{workloads}
  services:
  - {{name: sleep, namespace: foo, selector: {{app: sleep}}, ports: [{{name: http, port: 80}}]}}
{services}
  resources: [{resources}]
"#
    )
}

/// `foo/httpbin` (sa `httpbin`) at `addr`, behind service `httpbin.foo:8000`.
fn httpbin(addr: SocketAddr, sidecar: bool) -> (String, String) {
    (
        format!(
            "  - {{name: httpbin, namespace: foo, serviceAccount: httpbin, labels: {{app: httpbin}}, address: {}, sidecar: {sidecar}, ports: [{{port: {}, protocol: HTTP}}]}}",
            addr.ip(),
            addr.port()
        ),
        format!(
            "  - {{name: httpbin, namespace: foo, selector: {{app: httpbin}}, ports: [{{name: http, port: 8000, targetPort: {}}}]}}",
            addr.port()
        ),
    )
}

type Events = Arc<Mutex<Vec<OutboundEvent>>>;

fn collector() -> (EventSink, Events) {
    let events: Events = Arc::default();
    let sink_events = events.clone();
    let sink: EventSink = Arc::new(move |e| sink_events.lock().unwrap().push(e));
    (sink, events)
}

/// Waits until `n` events arrived (events are emitted when a response body or tunnel ends).
async fn wait_events(events: &Events, n: usize) -> Vec<OutboundEvent> {
    for _ in 0..200 {
        if events.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    events.lock().unwrap().clone()
}

struct Proxy {
    addr: SocketAddr,
    events: Events,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the proxy drains and stops")
            .unwrap()
            .unwrap();
    }
}

fn config(state: Arc<StateHandle>, tls: MeshTls, sink: EventSink) -> OutboundConfig {
    let mut config = OutboundConfig::new(state, tls);
    config.event_sink = sink;
    config.timeouts.connect = Duration::from_secs(2);
    config.timeouts.tls_handshake = Duration::from_secs(2);
    config.timeouts.drain = Duration::from_millis(500);
    config
}

/// The explicit proxy of `foo/sleep` on 127.0.0.1.
async fn start_proxy(state: Arc<StateHandle>, tls: MeshTls) -> Proxy {
    let (sink, events) = collector();
    let mut config = config(state, tls, sink);
    config.http_proxy_addr = Some("127.0.0.1:0".parse().unwrap());
    let bound: BoundOutbound = Outbound::new(config).bind().await.unwrap();
    let addr = bound.http_proxy_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(bound.run(async {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        events,
        shutdown: Some(tx),
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// Test servers standing in for the destination's sidecar or application.

/// What a test server saw of one connection and request.
#[derive(Debug, Clone, Default)]
struct Seen {
    sni: Option<String>,
    alpn_offered: Vec<String>,
    alpn: Option<String>,
    peer: Option<String>,
}

#[derive(Clone, Default)]
struct ServerLog {
    accepts: Arc<AtomicUsize>,
    connections: Arc<Mutex<Vec<Seen>>>,
}

impl ServerLog {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.connections
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Accepts TLS with `tls`'s server configuration, recording the ClientHello (SNI, ALPN
/// offered) and the verified client identity.
async fn accept_tls(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Seen)> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
        .await
        .ok()?;
    let hello = start.client_hello();
    let mut seen = Seen {
        sni: hello.server_name().map(str::to_owned),
        alpn_offered: hello
            .alpn()
            .map(|it| {
                it.map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        ..Seen::default()
    };
    let tls = start.into_stream(config).await.ok()?;
    let (_, session) = tls.get_ref();
    seen.alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    seen.peer =
        peer_certificate(session.peer_certificates()).and_then(|c| c.uri_sans.first().cloned());
    Some((tls, seen))
}

/// Answers every request with what it saw, one `key=value` per line.
async fn serve_echo_http<I>(io: I, seen: Seen)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.uri().authority().map(ToString::to_string))
                .unwrap_or_default();
            let body = format!(
                "peer={}\nsni={}\nalpn_offered={}\nalpn={}\nhost={}\npath={}\nversion={:?}\nproxy_connection={}\n",
                seen.peer.unwrap_or_default(),
                seen.sni.unwrap_or_default(),
                seen.alpn_offered.join(","),
                seen.alpn.unwrap_or_default(),
                host,
                req.uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or_default(),
                req.version(),
                req.headers().contains_key("proxy-connection"),
            );
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                Bytes::from(body),
            )))
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A destination sidecar: mTLS with `tls`'s identity, then HTTP answering what it saw.
async fn mtls_http_server(ip: &str, tls: &MeshTls) -> (SocketAddr, ServerLog) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls.server_config(alpn::server()).unwrap();
    let log = ServerLog::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            server_log.accepts.fetch_add(1, Ordering::SeqCst);
            let config = config.clone();
            let log = server_log.clone();
            tokio::spawn(async move {
                if let Some((tls, seen)) = accept_tls(tcp, config).await {
                    log.connections.lock().unwrap().push(seen.clone());
                    serve_echo_http(tls, seen).await;
                }
            });
        }
    });
    (addr, log)
}

/// An application without a sidecar: plaintext HTTP answering what it saw.
async fn plain_http_server(ip: &str) -> (SocketAddr, ServerLog) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = ServerLog::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            server_log.accepts.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_echo_http(tcp, Seen::default()));
        }
    });
    (addr, log)
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A TCP echo behind a destination sidecar (mTLS).
async fn mtls_echo_server(ip: &str, tls: &MeshTls) -> (SocketAddr, ServerLog) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = tls.server_config(alpn::server()).unwrap();
    let log = ServerLog::default();
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            server_log.accepts.fetch_add(1, Ordering::SeqCst);
            let config = config.clone();
            let log = server_log.clone();
            tokio::spawn(async move {
                if let Some((tls, seen)) = accept_tls(tcp, config).await {
                    log.connections.lock().unwrap().push(seen);
                    echo(tls).await;
                }
            });
        }
    });
    (addr, log)
}

/// A plain TCP echo outside the mesh.
async fn plain_echo_server(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(echo(tcp));
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// One request through the proxy on a fresh connection: `target` is the request target as an
/// HTTP proxy client writes it (absolute form).
async fn get_via(proxy: SocketAddr, target: &str) -> (StatusCode, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let uri: hyper::Uri = target.parse().unwrap();
    let req = Request::get(target)
        .header(hyper::header::HOST, uri.authority().unwrap().as_str())
        .header("proxy-connection", "keep-alive")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
}

// ---------------------------------------------------------------------------------------------
// Explicit proxy.

#[tokio::test]
async fn explicit_proxy_originates_mtls_with_identity_alpn_and_sni() {
    let ca = ca();
    let (upstream, log) = mtls_http_server("127.0.0.2", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;

    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/headers?x=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // §1.8: the server verified the client's workload certificate.
    assert_eq!(
        field(&body, "peer"),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    // §4.2: HTTP/1.1 offers `istio-http/1.1, istio, http/1.1`.
    assert_eq!(
        field(&body, "alpn_offered"),
        "istio-http/1.1,istio,http/1.1"
    );
    // §4.3: `outbound_.<port>_._.<fqdn>`.
    assert_eq!(
        field(&body, "sni"),
        "outbound_.8000_._.httpbin.foo.svc.cluster.local"
    );
    // Forwarded in origin form with the requested Host; proxy headers stay behind.
    assert_eq!(field(&body, "host"), "httpbin.foo:8000");
    assert_eq!(field(&body, "path"), "/headers?x=1");
    assert_eq!(field(&body, "proxy_connection"), "false");
    assert_eq!(log.accepts(), 1);

    let events = wait_events(&proxy.events, 1).await;
    let e = &events[0];
    assert_eq!(e.response_code, 200);
    assert_eq!(e.method.as_deref(), Some("GET"));
    assert_eq!(e.path.as_deref(), Some("/headers?x=1"));
    assert_eq!(e.authority.as_deref(), Some("httpbin.foo:8000"));
    assert_eq!(
        e.upstream_cluster.as_deref(),
        Some("outbound|8000||httpbin.foo.svc.cluster.local")
    );
    assert_eq!(
        e.requested_server_name.as_deref(),
        Some("outbound_.8000_._.httpbin.foo.svc.cluster.local")
    );
    assert_eq!(
        e.upstream_peer_identity.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/httpbin")
    );
    assert_eq!(e.upstream_host, Some(upstream));
    assert!(e.upstream_mtls);
    assert_eq!(
        e.destination_service.as_deref(),
        Some("httpbin.foo.svc.cluster.local")
    );
    assert_eq!(e.bytes_sent as usize, body.len());
    assert!(e.response_flags.is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn short_names_resolve_in_the_client_namespace() {
    let ca = ca();
    let (upstream, _log) =
        mtls_http_server("127.0.0.2", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    for host in [
        "httpbin",
        "httpbin.foo.svc",
        "httpbin.foo.svc.cluster.local",
    ] {
        let (status, body) = get_via(proxy.addr, &format!("http://{host}:8000/")).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        assert_eq!(field(&body, "host"), format!("{host}:8000"));
        assert_eq!(
            field(&body, "sni"),
            "outbound_.8000_._.httpbin.foo.svc.cluster.local"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn secure_naming_refuses_a_server_with_the_wrong_identity() {
    let ca = ca();
    // The endpoint's sidecar presents `attacker`, but the service runs as `httpbin`.
    let (upstream, _log) =
        mtls_http_server("127.0.0.3", &workload_tls(&ca, "foo", "attacker")).await;
    let (w, s) = httpbin(upstream, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;

    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/").await;
    // §1.8 client step 4: "Failure ⇒ upstream TLS handshake failure ⇒ 503 `UF`".
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: "
        ),
        "{body}"
    );
    assert!(
        body.contains("spiffe://cluster.local/ns/foo/sa/httpbin"),
        "{body}"
    );
    assert!(
        body.contains("spiffe://cluster.local/ns/foo/sa/attacker"),
        "{body}"
    );

    let events = wait_events(&proxy.events, 1).await;
    let e = &events[0];
    assert_eq!(e.response_code, 503);
    // The default retry policy retries connect failures (§3.5): `UF,URX`.
    assert_eq!(e.flags_text(), "UF,URX");
    assert!(
        e.upstream_transport_failure_reason
            .as_deref()
            .unwrap()
            .contains("sa/attacker")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn destination_rule_disable_sends_plaintext() {
    let ca = ca();
    let (upstream, log) = plain_http_server("127.0.0.4").await;
    let (w, s) = httpbin(upstream, true);
    let dr = r#"{apiVersion: networking.istio.io/v1, kind: DestinationRule, metadata: {name: httpbin, namespace: foo}, spec: {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}}"#;
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, dr)),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/ip").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "path"), "/ip");
    assert_eq!(field(&body, "host"), "httpbin.foo:8000");
    assert_eq!(log.accepts(), 1);
    let events = wait_events(&proxy.events, 1).await;
    assert!(!events[0].upstream_mtls);
    assert_eq!(events[0].requested_server_name, None);
    proxy.stop().await;
}

#[tokio::test]
async fn plaintext_into_an_mtls_only_server_is_a_503_uc() {
    let ca = ca();
    // The destination's sidecar only speaks mTLS (STRICT), the DestinationRule says DISABLE.
    let (upstream, _log) =
        mtls_http_server("127.0.0.16", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let dr = r#"{apiVersion: networking.istio.io/v1, kind: DestinationRule, metadata: {name: httpbin, namespace: foo}, spec: {host: httpbin, trafficPolicy: {tls: {mode: DISABLE}}}}"#;
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, dr)),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/").await;
    // §3.5: "plaintext … STRICT | HTTP 503 from client sidecar, body `upstream connect error or
    // disconnect/reset before headers. …` (reset reason "connection termination", flag `UC`)".
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    );
    let events = wait_events(&proxy.events, 1).await;
    assert_eq!(events[0].flags_text(), "UC");
    proxy.stop().await;
}

#[tokio::test]
async fn destination_rule_subject_alt_names_replace_the_service_accounts() {
    let ca = ca();
    // §1.8 client step 3: "`DR.tls.subjectAltNames` if non-nil, else the service's account
    // list". The endpoint runs as `attacker`, which the DestinationRule names.
    let (upstream, _log) =
        mtls_http_server("127.0.0.17", &workload_tls(&ca, "foo", "attacker")).await;
    let (w, s) = httpbin(upstream, true);
    let dr = r#"{apiVersion: networking.istio.io/v1, kind: DestinationRule, metadata: {name: httpbin, namespace: foo}, spec: {host: httpbin, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: ["spiffe://cluster.local/ns/foo/sa/attacker"]}}}}"#;
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, dr)),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        field(&body, "peer"),
        "spiffe://cluster.local/ns/foo/sa/sleep"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn requests_naming_the_proxy_itself_are_refused() {
    let ca = ca();
    let proxy = start_proxy(
        state(&mesh_yaml("", "", "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, _) = get_via(proxy.addr, &format!("http://{}/", proxy.addr)).await;
    assert_eq!(status, StatusCode::LOOP_DETECTED);
    proxy.stop().await;
}

#[tokio::test]
async fn unresolvable_hosts_outside_the_mesh_are_a_503_df() {
    let ca = ca();
    let proxy = start_proxy(
        state(&mesh_yaml("", "", "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    // `.invalid` never resolves (RFC 6761).
    let (status, _) = get_via(proxy.addr, "http://nothing.invalid/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let events = wait_events(&proxy.events, 1).await;
    assert_eq!(events[0].flags_text(), "DF");
    assert_eq!(
        events[0].upstream_cluster.as_deref(),
        Some("PassthroughCluster")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn http2_clients_get_http2_upstream() {
    let ca = ca();
    let (upstream, _log) =
        mtls_http_server("127.0.0.18", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://httpbin.foo:8000/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(field(&body, "alpn_offered"), "istio-h2,istio,h2");
    assert_eq!(field(&body, "version"), "HTTP/2.0");
    assert_eq!(field(&body, "host"), "httpbin.foo:8000");
    assert_eq!(field(&body, "path"), "/h2");
    let events = wait_events(&proxy.events, 1).await;
    assert_eq!(events[0].protocol, Some("HTTP/2"));
    proxy.stop().await;
}

#[tokio::test]
async fn auto_mtls_sends_plaintext_to_a_destination_without_sidecar() {
    let ca = ca();
    let (upstream, log) = plain_http_server("127.0.0.5").await;
    let (w, s) = httpbin(upstream, false);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/get").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "path"), "/get");
    assert_eq!(log.accepts(), 1);
    let events = wait_events(&proxy.events, 1).await;
    assert!(!events[0].upstream_mtls);
    assert_eq!(
        events[0].upstream_cluster.as_deref(),
        Some("outbound|8000||httpbin.foo.svc.cluster.local")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_destinations_pass_through() {
    let ca = ca();
    let (upstream, log) = plain_http_server("127.0.0.6").await;
    let proxy = start_proxy(
        state(&mesh_yaml("", "", "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let target = format!("http://{upstream}/outside");
    let (status, body) = get_via(proxy.addr, &target).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "path"), "/outside");
    assert_eq!(field(&body, "host"), upstream.to_string());
    assert_eq!(log.accepts(), 1);
    let events = wait_events(&proxy.events, 1).await;
    assert_eq!(
        events[0].upstream_cluster.as_deref(),
        Some("PassthroughCluster")
    );
    assert!(!events[0].upstream_mtls);
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_destination_is_a_503_uf() {
    let ca = ca();
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (w, s) = httpbin(addr, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://httpbin.foo:8000/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: 111"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn service_without_endpoints_is_no_healthy_upstream() {
    let ca = ca();
    let services = "  - {name: empty, namespace: foo, selector: {app: nothing}, ports: [{name: http, port: 8000}]}";
    let proxy = start_proxy(
        state(&mesh_yaml("", services, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    let (status, body) = get_via(proxy.addr, "http://empty.foo:8000/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no healthy upstream");
    let events = wait_events(&proxy.events, 1).await;
    assert_eq!(events[0].flags_text(), "UH");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests() {
    let ca = ca();
    let (upstream, log) = mtls_http_server("127.0.0.8", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let proxy = start_proxy(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    // Clients one after the other, each on its own connection to the proxy: every request
    // after the first takes the pooled upstream connection.
    for path in ["/one", "/two", "/three"] {
        let (status, body) = get_via(proxy.addr, &format!("http://httpbin.foo:8000{path}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(field(&body, "path"), path);
    }
    // Two requests on one kept-alive client connection.
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for path in ["/four", "/five"] {
        let req = Request::get(format!("http://httpbin.foo:8000{path}"))
            .header(hyper::header::HOST, "httpbin.foo:8000")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(field(&String::from_utf8_lossy(&body), "path"), path);
    }
    assert_eq!(log.accepts(), 1, "one upstream connection for all requests");
    assert_eq!(wait_events(&proxy.events, 5).await.len(), 5);
    proxy.stop().await;
}

#[tokio::test]
async fn grpc_ports_use_http2_upstream_with_h2_alpn() {
    let ca = ca();
    let (upstream, log) = mtls_http_server("127.0.0.9", &workload_tls(&ca, "foo", "grpc")).await;
    let workloads = format!(
        "  - {{name: grpc, namespace: foo, serviceAccount: grpc, labels: {{app: grpc}}, address: {}, ports: [{{port: {}, protocol: GRPC}}]}}",
        upstream.ip(),
        upstream.port()
    );
    let services = format!(
        "  - {{name: grpc, namespace: foo, selector: {{app: grpc}}, ports: [{{name: grpc, port: 9000, targetPort: {}}}]}}",
        upstream.port()
    );
    let proxy = start_proxy(
        state(&mesh_yaml(&workloads, &services, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    for _ in 0..2 {
        let (status, body) = get_via(proxy.addr, "http://grpc.foo:9000/pkg.Svc/Call").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // §4.2: HTTP/2 offers `istio-h2, istio, h2`; the server picks h2.
        assert_eq!(field(&body, "alpn_offered"), "istio-h2,istio,h2");
        assert_eq!(field(&body, "alpn"), "h2");
        assert_eq!(field(&body, "version"), "HTTP/2.0");
        assert_eq!(field(&body, "host"), "grpc.foo:9000");
    }
    // HTTP/2 connections are shared.
    assert_eq!(log.accepts(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn connect_tunnels_tcp_over_mtls() {
    let ca = ca();
    let (upstream, log) = mtls_echo_server("127.0.0.11", &workload_tls(&ca, "foo", "echo")).await;
    let workloads = format!(
        "  - {{name: echo, namespace: foo, serviceAccount: echo, labels: {{app: echo}}, address: {}, ports: [{{port: {}, protocol: TCP}}]}}",
        upstream.ip(),
        upstream.port()
    );
    let services = format!(
        "  - {{name: echo, namespace: foo, selector: {{app: echo}}, ports: [{{name: tcp, port: 9000, targetPort: {}}}]}}",
        upstream.port()
    );
    let proxy = start_proxy(
        state(&mesh_yaml(&workloads, &services, "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;

    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"CONNECT echo.foo:9000 HTTP/1.1\r\nHost: echo.foo:9000\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    tcp.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    drop(tcp);

    let seen = log.last();
    // §4.2: TCP offers `istio-peer-exchange, istio`.
    assert_eq!(seen.alpn_offered, ["istio-peer-exchange", "istio"]);
    assert_eq!(
        seen.sni.as_deref(),
        Some("outbound_.9000_._.echo.foo.svc.cluster.local")
    );
    assert_eq!(
        seen.peer.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/sleep")
    );
    let events = wait_events(&proxy.events, 1).await;
    let e = &events[0];
    assert_eq!(e.method.as_deref(), Some("CONNECT"));
    assert_eq!(e.response_code, 200);
    assert_eq!(e.bytes_received, 4);
    assert_eq!(e.bytes_sent, 4);
    assert_eq!(
        e.upstream_peer_identity.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/echo")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_drains_and_returns() {
    let ca = ca();
    let proxy = start_proxy(
        state(&mesh_yaml("", "", "")),
        workload_tls(&ca, "foo", "sleep"),
    )
    .await;
    // An idle keep-alive client must not hold the drain beyond its limit.
    let _idle = TcpStream::connect(proxy.addr).await.unwrap();
    let addr = proxy.addr;
    proxy.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

// ---------------------------------------------------------------------------------------------
// Capture path (the part after the original destination is read from the socket).

/// A redirected connection from the client's point of view: the test accepts it and hands it
/// to the proxy with `original_dst`, as the capture listener does after `SO_ORIGINAL_DST`.
async fn redirected(
    outbound: &Arc<Outbound>,
    original_dst: SocketAddr,
) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let outbound = outbound.clone();
    let task = tokio::spawn(async move {
        outbound.serve_redirected(accepted, original_dst).await;
    });
    (client, task)
}

fn transparent_outbound(state: Arc<StateHandle>, tls: MeshTls) -> (Arc<Outbound>, Events) {
    let (sink, events) = collector();
    (Arc::new(Outbound::new(config(state, tls, sink))), events)
}

#[tokio::test]
async fn captured_http_to_a_pod_ip_originates_mtls_per_request() {
    let ca = ca();
    let (upstream, log) =
        mtls_http_server("127.0.0.12", &workload_tls(&ca, "foo", "httpbin")).await;
    let (w, s) = httpbin(upstream, true);
    let (outbound, events) = transparent_outbound(
        state(&mesh_yaml(&w, &s, "")),
        workload_tls(&ca, "foo", "sleep"),
    );
    let (client, _task) = redirected(&outbound, upstream).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .unwrap();
    tokio::spawn(conn);
    for path in ["/a", "/b"] {
        let req = Request::get(path)
            .header(hyper::header::HOST, "httpbin.foo:8000")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            field(&body, "peer"),
            "spiffe://cluster.local/ns/foo/sa/sleep"
        );
        assert_eq!(
            field(&body, "alpn_offered"),
            "istio-http/1.1,istio,http/1.1"
        );
        // The pod IP belongs to service port 8000 of httpbin: its SNI and cluster apply.
        assert_eq!(
            field(&body, "sni"),
            "outbound_.8000_._.httpbin.foo.svc.cluster.local"
        );
        assert_eq!(field(&body, "host"), "httpbin.foo:8000");
        assert_eq!(field(&body, "path"), path);
    }
    let events = wait_events(&events, 2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].downstream_local_address, Some(upstream));
    assert_eq!(
        events[1].upstream_cluster.as_deref(),
        Some("outbound|8000||httpbin.foo.svc.cluster.local")
    );
    assert_eq!(log.accepts(), 1);
}

#[tokio::test]
async fn captured_tcp_goes_over_mtls_with_the_tcp_alpn() {
    let ca = ca();
    let (upstream, log) = mtls_echo_server("127.0.0.13", &workload_tls(&ca, "foo", "echo")).await;
    let workloads = format!(
        "  - {{name: echo, namespace: foo, serviceAccount: echo, labels: {{app: echo}}, address: {}, ports: [{{port: {}, protocol: TCP}}]}}",
        upstream.ip(),
        upstream.port()
    );
    let services = format!(
        "  - {{name: echo, namespace: foo, selector: {{app: echo}}, ports: [{{name: tcp, port: 9000, targetPort: {}}}]}}",
        upstream.port()
    );
    let (outbound, events) = transparent_outbound(
        state(&mesh_yaml(&workloads, &services, "")),
        workload_tls(&ca, "foo", "sleep"),
    );
    let (mut client, task) = redirected(&outbound, upstream).await;
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    drop(client);
    task.await.unwrap();
    let seen = log.last();
    assert_eq!(seen.alpn_offered, ["istio-peer-exchange", "istio"]);
    assert_eq!(
        seen.peer.as_deref(),
        Some("spiffe://cluster.local/ns/foo/sa/sleep")
    );
    let events = wait_events(&events, 1).await;
    let e = &events[0];
    assert_eq!(e.protocol, None);
    assert_eq!((e.bytes_received, e.bytes_sent), (5, 5));
    assert_eq!(
        e.upstream_cluster.as_deref(),
        Some("outbound|9000||echo.foo.svc.cluster.local")
    );
    assert!(e.upstream_mtls);
}

#[tokio::test]
async fn captured_connection_to_an_unknown_address_passes_through() {
    let ca = ca();
    let upstream = plain_echo_server("127.0.0.14").await;
    let (outbound, events) = transparent_outbound(
        state(&mesh_yaml("", "", "")),
        workload_tls(&ca, "foo", "sleep"),
    );
    let (mut client, task) = redirected(&outbound, upstream).await;
    client.write_all(b"outside").await.unwrap();
    let mut buf = [0u8; 7];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"outside");
    drop(client);
    task.await.unwrap();
    let events = wait_events(&events, 1).await;
    assert_eq!(
        events[0].upstream_cluster.as_deref(),
        Some("PassthroughCluster")
    );
    assert_eq!(events[0].upstream_host, Some(upstream));
    assert!(!events[0].upstream_mtls);
}

#[tokio::test]
async fn captured_tcp_to_a_server_with_the_wrong_identity_is_closed() {
    let ca = ca();
    let (upstream, _log) =
        mtls_echo_server("127.0.0.15", &workload_tls(&ca, "foo", "attacker")).await;
    let workloads = format!(
        "  - {{name: echo, namespace: foo, serviceAccount: echo, labels: {{app: echo}}, address: {}, ports: [{{port: {}, protocol: TCP}}]}}",
        upstream.ip(),
        upstream.port()
    );
    let services = format!(
        "  - {{name: echo, namespace: foo, selector: {{app: echo}}, ports: [{{name: tcp, port: 9000, targetPort: {}}}]}}",
        upstream.port()
    );
    let (outbound, events) = transparent_outbound(
        state(&mesh_yaml(&workloads, &services, "")),
        workload_tls(&ca, "foo", "sleep"),
    );
    let (mut client, task) = redirected(&outbound, upstream).await;
    task.await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).await.unwrap_or(0), 0, "closed");
    let events = wait_events(&events, 1).await;
    assert_eq!(events[0].flags_text(), "UF");
    assert!(
        events[0]
            .upstream_transport_failure_reason
            .as_deref()
            .unwrap()
            .contains("spiffe://cluster.local/ns/foo/sa/echo")
    );
}
