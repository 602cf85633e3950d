//! Per-proxy snapshots and the `ConfigDiscovery/StreamConfig` stream that pushes them.
//!
//! A proxy's snapshot is the store's documents minus what cannot affect it:
//! - AuthorizationPolicies and RequestAuthentications are inbound-only, so only those that
//!   select the proxy's workload are sent. Selection is `meshward-policy`'s own
//!   ([`AuthzIndex::select`](meshward_policy::authz::AuthzIndex::select),
//!   [`RequestAuthnIndex::select`](meshward_policy::request_authn::RequestAuthnIndex::select)),
//!   so the control plane and the proxy cannot disagree about what applies.
//! - PeerAuthentications are all sent: the client side needs the destination's effective mode
//!   for auto mTLS (authentication.md §3.4: "the endpoint's own effective PA mode (§2.3,
//!   including workload and port-level PAs)").
//! - DestinationRules, the registry (Namespaces, Services, Pods, Deployments, WorkloadEntries,
//!   ServiceAccounts) and PolicyTest-shaped declarations are all sent.
//! - The fetched JWKS of the `jwksUri`s in the proxy's RequestAuthentications.
//!
//! A snapshot is sent only when its content differs from the last one sent on that stream, so
//! a change that does not concern a proxy does not reach it. Its version is the store version
//! plus the JWKS generation: it grows with every change, not necessarily by one.
//!
//! The stream is authenticated fail-closed: the proxy must present a mesh certificate (the TLS
//! layer verified it; it is verified again here with [`PeerCertificate`]), the `Hello` must name
//! the certificate's namespace, and the workload must run as the certificate's service account.
//! Anything else is refused and nothing is sent.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use meshward_api::protocol::jwks_uris;
use meshward_api::protocol::proto::config_discovery_server::{
    ConfigDiscovery, ConfigDiscoveryServer,
};
use meshward_api::protocol::proto::{
    ControlMessage, Document, FetchedJwks, Hello, ProxyMessage, Snapshot, control_message,
    proxy_message,
};
use meshward_api::{Resource, SpiffeId};
use meshward_identity::service::{Caller, CallerAuthenticator, PeerCertificate};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::jwks::JwksCache;
use crate::store::{Content, Store, StoreState};

mod certs;

pub use certs::{CertificateOrigin, HeldCertificate, RecordingCa};

/// How long a proxy has to send its `Hello` after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Disconnected proxies remembered for `meshward get proxies`.
const KEEP_DISCONNECTED: usize = 256;

/// What one proxy receives (without its version).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Documents, in store order.
    pub documents: Vec<Document>,
    /// JWKS of the `jwksUri`s in those documents.
    pub jwks: Vec<FetchedJwks>,
    /// The workload's service account (checked against the proxy's certificate).
    pub service_account: String,
}

/// Why there is no snapshot for a workload yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The workload is not in the store (yet).
    #[error("workload {0} is not in the configuration")]
    UnknownWorkload(String),
}

/// The snapshot of workload `namespace/name` in `state`; `jwks` answers for each `jwksUri`.
pub fn proxy_config(
    state: &StoreState,
    namespace: &str,
    name: &str,
    jwks: &dyn Fn(&str) -> FetchedJwks,
) -> Result<ProxyConfig, NotReady> {
    let workload = state
        .mesh
        .inventory
        .workload(namespace, name)
        .ok_or_else(|| NotReady::UnknownWorkload(format!("{namespace}/{name}")))?;
    let view = workload.selector_view();
    let policies: HashSet<(String, String)> = state
        .mesh
        .authz
        .select(view)
        .iter()
        .map(|p| (p.id.namespace.to_string(), p.id.name.to_string()))
        .collect();
    let authentications: HashSet<(String, String)> = state
        .mesh
        .request_authn
        .select(view)
        .iter()
        .map(|p| {
            (
                p.metadata.namespace().to_owned(),
                p.metadata.name().to_owned(),
            )
        })
        .collect();
    let mut documents = Vec::new();
    let mut uris = BTreeSet::new();
    for entry in state.entries.iter() {
        let id = (entry.key.namespace.clone(), entry.key.name.clone());
        let wanted = match entry.key.kind.as_str() {
            "AuthorizationPolicy" => policies.contains(&id),
            "RequestAuthentication" => authentications.contains(&id),
            _ => true,
        };
        if !wanted {
            continue;
        }
        match &entry.content {
            Content::Resource(r) => uris.extend(jwks_uris([&r.resource])),
            Content::Test(t) => uris.extend(jwks_uris(
                t.resources
                    .iter()
                    .map(|r| &r.resource)
                    .filter(|r| matches!(r, Resource::RequestAuthentication(_))),
            )),
        }
        documents.push(entry.document.clone());
    }
    Ok(ProxyConfig {
        documents,
        jwks: uris.iter().map(|uri| jwks(uri)).collect(),
        service_account: workload.service_account.clone(),
    })
}

/// A refused snapshot.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NackStatus {
    /// The version refused.
    pub version: u64,
    /// The proxy's error.
    pub error: String,
    /// When.
    pub at: Timestamp,
}

/// What the control plane knows about one proxy stream (issue 6 shows these in
/// `meshward proxy-status`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// Stream number, unique for this control plane's lifetime.
    pub id: u64,
    /// Workload namespace.
    pub namespace: String,
    /// Workload name.
    pub workload: String,
    /// SPIFFE ID of the proxy's certificate.
    pub identity: String,
    /// Address the proxy reported.
    pub pod_address: String,
    /// Version the proxy reported.
    pub proxy_version: String,
    /// The stream's remote address.
    pub remote_address: Option<String>,
    /// Whether the stream is open.
    pub connected: bool,
    /// When the stream opened.
    pub connected_at: Timestamp,
    /// When it closed.
    pub disconnected_at: Option<Timestamp>,
    /// Last snapshot version sent.
    pub version_sent: Option<u64>,
    /// When it was sent.
    pub sent_at: Option<Timestamp>,
    /// Last version the proxy ACKed.
    pub acked_version: Option<u64>,
    /// When.
    pub last_ack_at: Option<Timestamp>,
    /// Last NACK.
    pub last_nack: Option<NackStatus>,
    /// Why nothing can be sent yet.
    pub waiting: Option<String>,
    /// The workload certificate the proxy holds, when known (see [`certs`]).
    pub certificate: Option<HeldCertificate>,
}

/// Every proxy stream, open or recently closed.
#[derive(Debug, Default)]
pub struct ProxyRegistry {
    next_id: AtomicU64,
    proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl ProxyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ProxyStatus>> {
        // Statuses are plain data updated field by field; a panicked writer leaves them usable.
        self.proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(&self, status: ProxyStatus) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut proxies = self.lock();
        proxies.insert(id, ProxyStatus { id, ..status });
        let closed: Vec<u64> = proxies
            .values()
            .filter(|p| !p.connected)
            .map(|p| p.id)
            .collect();
        for old in closed
            .iter()
            .take(closed.len().saturating_sub(KEEP_DISCONNECTED))
        {
            proxies.remove(old);
        }
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(status) = self.lock().get_mut(&id) {
            f(status);
        }
    }

    /// The CA issued `certificate` for `identity` (a SPIFFE URI) to a caller at `address`: the
    /// open stream of that identity from that address now holds it. When several open streams
    /// match, which one renewed cannot be told, so their certificate becomes unknown.
    pub fn certificate_issued(
        &self,
        identity: &str,
        address: IpAddr,
        certificate: HeldCertificate,
    ) {
        let mut proxies = self.lock();
        let mut matching: Vec<&mut ProxyStatus> = proxies
            .values_mut()
            .filter(|p| p.connected && p.identity == identity)
            .filter(|p| {
                p.remote_address
                    .as_deref()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .is_some_and(|a| a.ip() == address)
            })
            .collect();
        match matching.as_mut_slice() {
            [] => {}
            [only] => only.certificate = Some(certificate),
            several => {
                for status in several {
                    status.certificate = None;
                }
            }
        }
    }

    /// Every stream, oldest first.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.lock().values().cloned().collect()
    }

    /// Open streams of workload `namespace/name`.
    pub fn connected(&self, namespace: &str, workload: &str) -> Vec<ProxyStatus> {
        self.lock()
            .values()
            .filter(|p| p.connected && p.namespace == namespace && p.workload == workload)
            .cloned()
            .collect()
    }
}

/// The `ConfigDiscovery` service.
#[derive(Clone)]
pub struct PushService {
    store: Store,
    jwks: JwksCache,
    registry: Arc<ProxyRegistry>,
    authenticator: Arc<PeerCertificate>,
    shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService").finish_non_exhaustive()
    }
}

impl PushService {
    /// Serves snapshots of `store` (with JWKS from `jwks`) to proxies whose certificates
    /// `authenticator` accepts; every stream ends when `shutdown` becomes true.
    pub fn new(
        store: Store,
        jwks: JwksCache,
        registry: Arc<ProxyRegistry>,
        authenticator: PeerCertificate,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            jwks,
            registry,
            authenticator: Arc::new(authenticator),
            shutdown,
        }
    }

    /// The tonic service.
    pub fn into_server(self) -> ConfigDiscoveryServer<Self> {
        ConfigDiscoveryServer::new(self)
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for PushService {
    type StreamConfigStream = ReceiverStream<Result<ControlMessage, Status>>;

    async fn stream_config(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamConfigStream>, Status> {
        let tls = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let peer_certificates = tls.as_ref().and_then(TlsConnectInfo::peer_certs);
        let remote_addr = tls.as_ref().and_then(|info| info.get_ref().remote_addr());
        let caller = Caller {
            metadata: request.metadata(),
            peer_certificates: peer_certificates.as_deref().map(Vec::as_slice),
            remote_addr,
        };
        // Fail closed: no verified mesh certificate, no configuration.
        let identity = match self.authenticator.authenticate(&caller).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!(client = ?remote_addr, reason = %e, "config stream refused: caller not authenticated");
                return Err(Status::unauthenticated(
                    "a mesh workload certificate is required",
                ));
            }
        };
        let presented = peer_certificates
            .as_deref()
            .and_then(|chain| HeldCertificate::presented(chain));
        let (tx, rx) = mpsc::channel(4);
        let session = Session {
            service: self.clone(),
            identity,
            remote_addr,
            presented,
            tx,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One proxy stream.
struct Session {
    service: PushService,
    identity: SpiffeId,
    remote_addr: Option<SocketAddr>,
    /// The certificate the proxy opened the stream with.
    presented: Option<HeldCertificate>,
    tx: mpsc::Sender<Result<ControlMessage, Status>>,
}

impl Session {
    async fn refuse(&self, status: Status) {
        tracing::warn!(identity = %self.identity, client = ?self.remote_addr, reason = status.message(), "config stream refused");
        let _ = self.tx.send(Err(status)).await;
    }

    async fn run(self, mut inbound: Streaming<ProxyMessage>) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(ProxyMessage {
                message: Some(proxy_message::Message::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return self
                    .refuse(Status::invalid_argument("the first message must be Hello"))
                    .await;
            }
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => {
                return self
                    .refuse(Status::deadline_exceeded("no Hello received"))
                    .await;
            }
        };
        if hello.namespace != self.identity.namespace() {
            return self
                .refuse(Status::permission_denied(format!(
                    "the certificate {} may not receive the configuration of namespace {}",
                    self.identity, hello.namespace
                )))
                .await;
        }
        let registry = self.service.registry.clone();
        let mut status = status_for(&hello, &self.identity, self.remote_addr);
        status.certificate = self.presented.clone();
        let id = registry.register(status);
        tracing::info!(id, workload = %format!("{}/{}", hello.namespace, hello.workload), identity = %self.identity, "proxy connected");
        self.serve(id, &hello, &mut inbound).await;
        registry.update(id, |s| {
            s.connected = false;
            s.disconnected_at = Some(Timestamp::now());
        });
        tracing::info!(id, workload = %format!("{}/{}", hello.namespace, hello.workload), "proxy disconnected");
    }

    async fn serve(&self, id: u64, hello: &Hello, inbound: &mut Streaming<ProxyMessage>) {
        let service = &self.service;
        let mut store_rx = service.store.subscribe();
        let mut jwks_rx = service.jwks.subscribe();
        let mut shutdown = service.shutdown.clone();
        let mut last_sent: Option<(Vec<Document>, Vec<FetchedJwks>)> = None;
        let mut last_uris: Vec<String> = Vec::new();
        let mut dirty = true;
        loop {
            if dirty {
                dirty = false;
                let state = store_rx.borrow_and_update().clone();
                let generation = *jwks_rx.borrow_and_update();
                let jwks = service.jwks.clone();
                let lookup = move |uri: &str| jwks.lookup(uri);
                match proxy_config(&state, &hello.namespace, &hello.workload, &lookup) {
                    Ok(config) if config.service_account != self.identity.service_account() => {
                        return self
                            .refuse(Status::permission_denied(format!(
                                "workload {}/{} runs as service account {}, but the certificate is {}",
                                hello.namespace,
                                hello.workload,
                                config.service_account,
                                self.identity
                            )))
                            .await;
                    }
                    Ok(config) => {
                        let content = (config.documents, config.jwks);
                        if last_sent.as_ref() != Some(&content) {
                            let version = state.version + generation;
                            last_uris = content.1.iter().map(|j| j.uri.clone()).collect();
                            let message = ControlMessage {
                                message: Some(control_message::Message::Snapshot(Snapshot {
                                    version,
                                    documents: content.0.clone(),
                                    jwks: content.1.clone(),
                                })),
                            };
                            if self.tx.send(Ok(message)).await.is_err() {
                                return;
                            }
                            tracing::debug!(id, version, "snapshot sent");
                            service.registry.update(id, |s| {
                                s.version_sent = Some(version);
                                s.sent_at = Some(Timestamp::now());
                                s.waiting = None;
                            });
                            last_sent = Some(content);
                        }
                    }
                    Err(not_ready) => {
                        service
                            .registry
                            .update(id, |s| s.waiting = Some(not_ready.to_string()));
                    }
                }
            }
            tokio::select! {
                changed = store_rx.changed() => {
                    if changed.is_err() { return; }
                    dirty = true;
                }
                changed = jwks_rx.changed() => {
                    if changed.is_err() { return; }
                    dirty = true;
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.on_message(id, message, &last_uris),
                    Ok(None) | Err(_) => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.tx.closed() => return,
            }
        }
    }

    fn on_message(&self, id: u64, message: ProxyMessage, uris: &[String]) {
        let registry = &self.service.registry;
        match message.message {
            Some(proxy_message::Message::Ack(ack)) => registry.update(id, |s| {
                s.acked_version = Some(ack.version);
                s.last_ack_at = Some(Timestamp::now());
            }),
            Some(proxy_message::Message::Nack(nack)) => {
                tracing::warn!(id, version = nack.version, error = %nack.error, "proxy refused a snapshot");
                registry.update(id, |s| {
                    s.last_nack = Some(NackStatus {
                        version: nack.version,
                        error: nack.error,
                        at: Timestamp::now(),
                    });
                });
            }
            Some(proxy_message::Message::JwksRefresh(refresh)) => {
                // Only URIs of this proxy's own snapshot: a proxy cannot make the control plane
                // fetch anything else.
                let asked: Vec<&str> = if refresh.uris.is_empty() {
                    uris.iter().map(String::as_str).collect()
                } else {
                    refresh
                        .uris
                        .iter()
                        .map(String::as_str)
                        .filter(|u| uris.iter().any(|mine| mine == u))
                        .collect()
                };
                self.service.jwks.request_refresh(asked);
            }
            Some(proxy_message::Message::Hello(_)) | None => {
                tracing::debug!(id, "ignoring an unexpected message on a config stream");
            }
        }
    }
}

fn status_for(hello: &Hello, identity: &SpiffeId, remote: Option<SocketAddr>) -> ProxyStatus {
    ProxyStatus {
        id: 0,
        namespace: hello.namespace.clone(),
        workload: hello.workload.clone(),
        identity: identity.uri(),
        pod_address: hello.pod_address.clone(),
        proxy_version: hello.proxy_version.clone(),
        remote_address: remote.map(|a| a.to_string()),
        connected: true,
        connected_at: Timestamp::now(),
        disconnected_at: None,
        version_sent: None,
        sent_at: None,
        acked_version: None,
        last_ack_at: None,
        last_nack: None,
        waiting: None,
        certificate: None,
    }
}

#[cfg(test)]
mod tests;
