//! Wiring: the CA, the store and its watched sources, JWKS fetching, one TLS gRPC listener
//! serving both the CA service and the config stream (istiod's port 15012 does the same), and
//! the admin HTTP listener.
//!
//! The gRPC listener presents the control plane's own certificate, issued by the mesh CA for
//! `spiffe://<trust domain>/ns/istio-system/sa/istiod` and rotated like any workload's. Client
//! certificates are optional at the TLS layer (a workload asking for its first certificate has
//! none and authenticates with a bootstrap token instead) and verified when offered; the config
//! stream then requires one (see [`crate::push`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshward_api::protocol::jwks_uris;
use meshward_api::{SpiffeId, TrustDomain, TrustDomains};
use meshward_identity::service::{
    BootstrapTokens, CaService, Chain, PeerCertificate, ca_server_tls_config,
};
use meshward_identity::{
    CaDir, CertManager, CertificateAuthority, Credentials, KeyAlgorithm, LocalCa, RotationPolicy,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::admin::{AdminState, Origins, router};
use crate::jwks::{JwksCache, JwksOptions};
use crate::push::{ProxyRegistry, PushService, RecordingCa};
use crate::sources::{self, DEFAULT_POLL_INTERVAL};
use crate::store::{Content, Store, StoreState};

/// The namespace of the control plane's identity.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";

/// The service account of the control plane's identity (istiod's, so Istio's agents would
/// recognise it too).
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";

/// Default gRPC address (istiod's 15012).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:15012";

/// Default admin address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15014";

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 keepalive pings, so a proxy that vanished without closing its connection is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Files and folders to load and watch.
    pub config_paths: Vec<PathBuf>,
    /// gRPC (CA + config stream) address.
    pub grpc_listen: SocketAddr,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// The CA directory (created with a new self-signed root when empty).
    pub ca_dir: PathBuf,
    /// The mesh trust domain.
    pub trust_domain: String,
    /// A file of bootstrap tokens: lines `TOKEN NAMESPACE/SERVICE_ACCOUNT`.
    pub bootstrap_tokens: Option<PathBuf>,
    /// JWKS fetching.
    pub jwks: JwksOptions,
    /// How often watched files are checked.
    pub poll_interval: Duration,
    /// Where the store is recorded (see [`crate::store::persist`]); `None` keeps it in memory,
    /// so what `meshward apply|delete` changed is lost with the process.
    pub state_dir: Option<PathBuf>,
    /// The pods and services are run by a local mesh (`meshward up`): `apply` and `delete` leave
    /// Deployments, Pods and Services out, with a warning (see [`Store::set_pods_run_by_mesh`]).
    pub local_mesh: bool,
    /// Manifests that the watched files restate (the local mesh's generated `resources.json`
    /// holds the resources of the files given to `meshward up`): `describe` reports a resource
    /// that is unchanged in them at their own file and line. Read once, at start.
    pub origins_from: Vec<PathBuf>,
}

impl ControlPlaneOptions {
    /// Defaults: no files, loopback ports 15012 and 15014, trust domain `cluster.local`.
    pub fn new(ca_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_paths: Vec::new(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 15012)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 15014)),
            ca_dir: ca_dir.into(),
            trust_domain: "cluster.local".to_owned(),
            bootstrap_tokens: None,
            jwks: JwksOptions::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            state_dir: None,
            local_mesh: false,
            origins_from: Vec::new(),
        }
    }
}

/// Why the control plane cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The trust domain is malformed.
    #[error("trust domain: {0}")]
    TrustDomain(#[from] meshward_api::SpiffeIdError),
    /// The CA directory cannot be loaded or created.
    #[error("CA directory {dir}: {detail}")]
    Ca {
        /// The directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// The bootstrap token file is unusable.
    #[error("bootstrap tokens {file}: {detail}")]
    Tokens {
        /// The file.
        file: PathBuf,
        /// Why.
        detail: String,
    },
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS cannot be configured.
    #[error("TLS: {0}")]
    Tls(String),
    /// The recorded store cannot be restored, or its directory cannot be used.
    #[error(transparent)]
    State(#[from] crate::store::StateDirError),
}

/// A running control plane.
pub struct ControlPlane {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    store: Store,
    registry: Arc<ProxyRegistry>,
    jwks: JwksCache,
    tokens: Arc<RwLock<BootstrapTokens>>,
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    stop: watch::Sender<bool>,
    /// Becomes true when a listener's task ends.
    exited: watch::Receiver<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    _certificate: CertManager,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Restores the recorded store (with a state directory), loads the CA and the configuration
    /// files, binds both listeners and starts serving. Invalid configuration files are logged
    /// and left out (the store keeps what it had of them, as later changes do); the recorded
    /// store, the CA and the listeners must work.
    pub async fn start(options: ControlPlaneOptions) -> Result<Self, StartError> {
        let trust_domain = TrustDomain::sanitized(&options.trust_domain)?;
        // First: a state file that cannot be restored stops the start before anything listens.
        let store = match &options.state_dir {
            Some(dir) => Store::open(dir)?,
            None => Store::new(),
        };
        store.set_pods_run_by_mesh(options.local_mesh);
        let ca = load_ca(&options.ca_dir, &trust_domain)?;
        let identity = SpiffeId::new(
            trust_domain.clone(),
            CONTROL_PLANE_NAMESPACE,
            CONTROL_PLANE_SERVICE_ACCOUNT,
        )?;

        // The control plane's own certificate, rotated like a workload's.
        let credentials = Credentials::new(ca.trust_bundle().clone());
        let source = LocalCa::new(ca.clone(), identity.clone(), KeyAlgorithm::EcdsaP256, None);
        let certificate = CertManager::spawn(
            Arc::new(source),
            credentials.clone(),
            RotationPolicy::default(),
        );
        certificate.ready().await;

        let tokens = Arc::new(RwLock::new(match &options.bootstrap_tokens {
            Some(file) => read_tokens(file, &trust_domain)?,
            None => BootstrapTokens::new(),
        }));

        for path in &options.config_paths {
            match sources::load(&store, path) {
                Ok(outcome) => {
                    tracing::info!(path = %path.display(), version = outcome.version, "configuration loaded")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "configuration refused; starting without it")
                }
            }
        }
        let jwks =
            JwksCache::new(options.jwks.clone()).map_err(|e| StartError::Tls(e.to_string()))?;
        let registry = Arc::new(ProxyRegistry::default());
        let (stop, _) = watch::channel(false);

        let mut background = Vec::new();
        background.push(follow_jwks_uris(
            store.clone(),
            jwks.clone(),
            stop.subscribe(),
        ));
        for path in &options.config_paths {
            background.push(sources::watch_path(
                store.clone(),
                path.clone(),
                options.poll_interval,
                stop.subscribe(),
            ));
        }

        // gRPC: the CA service and the config stream on one TLS port.
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let grpc_listener = bind(options.grpc_listen).await?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: options.grpc_listen,
                source,
            })?;
        let tls = ca_server_tls_config(
            credentials.clone(),
            TrustDomains::new(trust_domain.clone(), []),
        )
        .map_err(|e| StartError::Tls(e.to_string()))?;
        let authenticators = Chain::new()
            .with(PeerCertificate::new(credentials.clone()))
            .with_shared(tokens.clone());
        // Every certificate issued is recorded against the proxy stream that asked for it, so
        // `meshward proxy-status` shows the certificate each proxy holds.
        let ca_service =
            RecordingCa::new(CaService::new(ca.clone(), authenticators), registry.clone());
        let push = PushService::new(
            store.clone(),
            jwks.clone(),
            registry.clone(),
            PeerCertificate::new(credentials.clone()),
            stop.subscribe(),
        );
        let incoming = tls_incoming(grpc_listener, tls, stop.subscribe());
        let mut grpc_stop = stop.subscribe();
        let (exited_tx, exited) = watch::channel(false);
        let exited_tx = Arc::new(exited_tx);
        let grpc_exited = exited_tx.clone();
        let grpc = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .add_service(ca_service.into_server())
                .add_service(push.into_server())
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "control plane gRPC server failed");
            }
            grpc_exited.send_replace(true);
        });
        tracing::info!(addr = %grpc_addr, identity = %identity, "control plane gRPC (CA + config) listening");

        if !options.admin_listen.ip().is_loopback() {
            tracing::warn!(
                addr = %options.admin_listen,
                "the admin API has no authentication; anyone who can reach this address can change policy and obtain bootstrap tokens"
            );
        }
        let admin_listener = bind(options.admin_listen).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: options.admin_listen,
                source,
            })?;
        let admin_state = AdminState {
            store: store.clone(),
            registry: registry.clone(),
            jwks: jwks.clone(),
            tokens: tokens.clone(),
            trust_domain: trust_domain.clone(),
            roots_pem: ca.trust_bundle().to_pem(),
            origins: Arc::new(Origins::load(&options.config_paths, &options.origins_from)),
        };
        let mut admin_stop = stop.subscribe();
        let admin = tokio::spawn(async move {
            let result = axum::serve(admin_listener, router(admin_state))
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "control plane admin server failed");
            }
            exited_tx.send_replace(true);
        });
        tracing::info!(addr = %admin_addr, "control plane admin API listening");

        Ok(Self {
            grpc_addr,
            admin_addr,
            store,
            registry,
            jwks,
            tokens,
            ca,
            identity,
            stop,
            exited,
            servers: vec![grpc, admin],
            background,
            _certificate: certificate,
        })
    }

    /// The gRPC (CA + config stream) address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Proxy streams.
    pub fn registry(&self) -> &Arc<ProxyRegistry> {
        &self.registry
    }

    /// JWKS.
    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// The CA.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The identity proxies must find in the control plane's certificate.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Issues a bootstrap token for `namespace/service_account`.
    pub fn issue_token(&self, namespace: &str, service_account: &str) -> Result<String, String> {
        let identity = SpiffeId::new(self.ca.trust_domain().clone(), namespace, service_account)
            .map_err(|e| e.to_string())?;
        self.tokens
            .write()
            .map_err(|_| "the token table is unavailable".to_owned())?
            .issue(identity)
            .map_err(|e| e.to_string())
    }

    /// Resolves when a listener stopped by itself (an error), so a binary can exit.
    pub async fn stopped(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|e| *e).await;
    }

    /// Stops: config streams end (proxies keep their configuration and reconnect later), the
    /// listeners close, background tasks stop.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        for task in self.background {
            task.abort();
        }
        self.jwks.set_uris(&BTreeSet::new());
    }
}

fn load_ca(
    dir: &Path,
    trust_domain: &TrustDomain,
) -> Result<Arc<CertificateAuthority>, StartError> {
    let (ca, created) = CaDir::new(dir)
        .load_or_init(trust_domain.clone(), KeyAlgorithm::EcdsaP256)
        .map_err(|e| StartError::Ca {
            dir: dir.to_owned(),
            detail: e.to_string(),
        })?;
    if created {
        tracing::info!(dir = %dir.display(), "created a new self-signed mesh CA");
    }
    Ok(Arc::new(ca))
}

/// Reads `TOKEN NAMESPACE/SERVICE_ACCOUNT` lines (`#` starts a comment).
pub fn read_tokens(file: &Path, trust_domain: &TrustDomain) -> Result<BootstrapTokens, StartError> {
    let fail = |detail: String| StartError::Tokens {
        file: file.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))?;
    let mut tokens = BootstrapTokens::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(token), Some(who), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(fail(format!(
                "line {}: expected `TOKEN NAMESPACE/SERVICE_ACCOUNT`",
                i + 1
            )));
        };
        let Some((ns, sa)) = who.split_once('/') else {
            return Err(fail(format!(
                "line {}: `{who}`: expected NAMESPACE/SERVICE_ACCOUNT",
                i + 1
            )));
        };
        let identity = SpiffeId::new(trust_domain.clone(), ns, sa)
            .map_err(|e| fail(format!("line {}: {e}", i + 1)))?;
        tokens
            .insert(token, identity)
            .map_err(|e| fail(format!("line {}: {e}", i + 1)))?;
    }
    Ok(tokens)
}

/// Every `jwksUri` in a store version.
pub fn store_jwks_uris(state: &StoreState) -> BTreeSet<String> {
    let mut uris = BTreeSet::new();
    for entry in state.entries.iter() {
        match &entry.content {
            Content::Resource(r) => uris.extend(jwks_uris([&r.resource])),
            Content::Test(t) => uris.extend(jwks_uris(t.resources.iter().map(|r| &r.resource))),
        }
    }
    uris
}

/// Keeps the JWKS cache fetching exactly the URIs the store references.
fn follow_jwks_uris(
    store: Store,
    jwks: JwksCache,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.subscribe();
        loop {
            let state = changes.borrow_and_update().clone();
            jwks.set_uris(&store_jwks_uris(&state));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// Accepted TCP connections taken through the TLS handshake concurrently; only completed
/// handshakes reach the gRPC server. A failed or stalled handshake is logged and dropped.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "control plane: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "control plane: TLS handshake failed")
                    }
                    Err(_) => tracing::warn!(%peer, "control plane: TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
