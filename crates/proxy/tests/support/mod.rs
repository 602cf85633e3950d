//! Shared helpers for the proxy's integration tests: a mesh from YAML, a CA and workload
//! credentials, echo applications, mesh and plaintext clients, and an inbound listener running
//! on loopback with its events collected.
// Test helpers: a failed setup step is a failing test, as in the tests themselves.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshward_identity::ca::DEFAULT_ROOT_TTL;
use meshward_identity::{
    CertificateAuthority, Credentials, KeyAlgorithm, MeshTls, SpiffeId, TrustDomain, TrustDomains,
};
use meshward_proxy::inbound::{
    AppTarget, EventSink, Inbound, InboundEvent, ListenerMode, Listening, Timeouts,
};
use meshward_proxy::state::{ProxyState, StateHandle};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const TRUST_DOMAIN: &str = "cluster.local";

/// A loopback address no other test uses (`127.77.0.N`), so fixed ports never collide.
pub fn unique_ip() -> IpAddr {
    static NEXT: AtomicU8 = AtomicU8::new(2);
    IpAddr::V4(Ipv4Addr::new(
        127,
        77,
        0,
        NEXT.fetch_add(1, Ordering::Relaxed),
    ))
}

/// `N` distinct ports currently free on `ip`.
pub fn free_ports<const N: usize>(ip: IpAddr) -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

pub fn spiffe(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TrustDomain::new(TRUST_DOMAIN).unwrap(), ns, sa).unwrap()
}

pub fn root_ca() -> CertificateAuthority {
    meshward_identity::crypto::install_default_provider();
    CertificateAuthority::generate_root(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        KeyAlgorithm::EcdsaP256,
        DEFAULT_ROOT_TTL,
    )
    .unwrap()
}

/// A workload's mesh TLS with a fresh certificate for `ns/sa`.
pub fn workload_tls(ca: &CertificateAuthority, ns: &str, sa: &str) -> MeshTls {
    let cert = ca
        .issue(&spiffe(ns, sa), KeyAlgorithm::EcdsaP256, None)
        .unwrap();
    MeshTls::new(
        Credentials::with_certificate(cert).unwrap(),
        TrustDomains::new(TrustDomain::new(TRUST_DOMAIN).unwrap(), []),
    )
}

/// SHA-256 of the workload's leaf certificate (XFCC `Hash=`).
pub fn leaf_hash(tls: &MeshTls) -> String {
    tls.credentials()
        .certificate()
        .unwrap()
        .cert
        .leaf()
        .sha256
        .clone()
}

/// The state of workload `foo/httpbin` in the mesh of `yaml` (a multi-document YAML string).
pub fn state_from_yaml(dir: &tempfile::TempDir, yaml: &str, version: u64) -> ProxyState {
    let path = dir.path().join(format!("mesh-{version}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let mesh = meshward_proxy::config::load_mesh(&[path]).unwrap();
    ProxyState::build(mesh, "foo", "httpbin", version).unwrap()
}

/// The PolicyTest document declaring `foo/httpbin` at `ip` with `ports` (`(port, protocol)`).
pub fn workloads_yaml(ip: IpAddr, ports: &[(u16, &str)]) -> String {
    let ports: String = ports
        .iter()
        .map(|(p, proto)| format!("    - {{port: {p}, protocol: {proto}}}\n"))
        .collect();
    format!(
        "apiVersion: meshward.dev/v1alpha1
kind: PolicyTest
metadata: {{name: inbound}}
spec:
  workloads:
  - name: httpbin
    namespace: foo
    serviceAccount: httpbin
    labels: {{app: httpbin}}
    address: {ip}
    ports:
{ports}  - name: sleep
    namespace: foo
    serviceAccount: sleep
    labels: {{app: sleep}}
    address: 127.0.0.1
"
    )
}

/// Events delivered by the listener.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<InboundEvent>>>);

impl Events {
    pub fn sink(&self) -> EventSink {
        let events = self.0.clone();
        Arc::new(move |e| events.lock().unwrap().push(e))
    }

    pub fn all(&self) -> Vec<InboundEvent> {
        self.0.lock().unwrap().clone()
    }

    /// Waits up to 5 s for an event matching `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&InboundEvent) -> bool) -> InboundEvent {
        for _ in 0..250 {
            if let Some(e) = self.0.lock().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no matching event; got {:#?}", self.all());
    }
}

/// An inbound listener on loopback, stopped (and drained) by [`Proxy::stop`].
pub struct Proxy {
    pub ip: IpAddr,
    pub handle: Arc<StateHandle>,
    pub tls: MeshTls,
    pub events: Events,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a per-port listener on `ip` for `ports`, forwarding port P to `apps[P]`.
    pub async fn start(
        ip: IpAddr,
        state: ProxyState,
        tls: MeshTls,
        ports: &[u16],
        apps: &[(u16, SocketAddr)],
    ) -> Proxy {
        let handle = StateHandle::new(state);
        let mut app = AppTarget::localhost();
        for (port, addr) in apps {
            app = app.with_port(*port, *addr);
        }
        let events = Events::default();
        let timeouts = Timeouts {
            drain: Duration::from_millis(500),
            ..Timeouts::default()
        };
        let listening: Listening = Inbound::new(
            handle.clone(),
            tls.clone(),
            app,
            ListenerMode::PerPort {
                bind_ip: ip,
                ports: ports.to_vec(),
            },
        )
        .with_events(events.sink())
        .with_timeouts(timeouts)
        .bind()
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listening.run(async move {
            let _ = stopped.await;
        }));
        Proxy {
            ip,
            handle,
            tls,
            events,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    /// Stops accepting, drains, and waits for every connection task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the listener drains within its drain time")
                .unwrap();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A running test application, aborted on drop.
pub struct App {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Every byte a TCP application received, in order.
    pub received: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 + h2c application answering every request with JSON describing it: method,
/// path, version, authority and headers (name → values).
pub async fn echo_http_app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            conns.spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for (n, v) in &parts.headers {
                        headers
                            .entry(n.as_str().to_owned())
                            .or_default()
                            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                    }
                    let json = serde_json::json!({
                        "method": parts.method.as_str(),
                        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
                        "authority": parts.uri.authority().map(|a| a.as_str()),
                        "version": format!("{:?}", parts.version),
                        "headers": headers,
                        "body_len": body.len(),
                    });
                    let response = http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(json.to_string())))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    App {
        addr,
        accepted,
        received: Arc::default(),
        task,
    }
}

/// A TCP application echoing every byte back, and recording what it received.
pub async fn echo_tcp_app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (counter, record) = (accepted.clone(), received.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let record = record.clone();
            conns.spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    App {
        addr,
        accepted,
        received,
        task,
    }
}

/// An address nothing listens on.
pub fn dead_app() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A TCP connection to `dst` from source address `src`.
pub async fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    socket.connect(dst).await.unwrap()
}

/// A mesh mTLS connection from `client` to the workload `server` at `dst`.
pub async fn mtls_connect(
    client: &MeshTls,
    server: &SpiffeId,
    alpn: Vec<Vec<u8>>,
    dst: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = client
        .client_config(std::slice::from_ref(server), alpn)
        .unwrap();
    let tcp = TcpStream::connect(dst).await.map_err(|e| e.to_string())?;
    let sni = ServerName::try_from("outbound_.8000_._.httpbin.foo.svc.cluster.local").unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(sni, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| meshward_identity::tls::describe_tls_error(&e))
}

/// A response, body and trailers collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A request header as the echo application saw it (all values joined with `,`).
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_array().map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

async fn collect(response: http::Response<Incoming>) -> Result<Reply, String> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// One HTTP/1.1 request over `io`.
pub async fn send_h1<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Reply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        collect(response).await
    })
    .await
    .map_err(|_| "request timed out".to_owned())?;
    driver.abort();
    result
}

/// One HTTP/2 request over `io`.
pub async fn send_h2<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Reply, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        collect(response).await
    })
    .await
    .map_err(|_| "request timed out".to_owned())?;
    driver.abort();
    result
}

/// `GET path` with `Host: host` and extra headers.
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request("GET", host, path, headers)
}

pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// Writes `bytes` (ignoring errors: the peer may already be gone) and reads until the
/// connection ends; returns how many bytes came back. A reset counts as an end.
pub async fn bytes_until_closed<IO: AsyncRead + AsyncWrite + Unpin>(
    mut io: IO,
    bytes: &[u8],
) -> usize {
    let _ = io.write_all(bytes).await;
    let mut total = 0;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    total
}
