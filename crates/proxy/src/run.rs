//! Starting a proxy: configuration, certificates, listeners, admin server, and a graceful drain
//! on SIGTERM. `main.rs` parses arguments into [`ProxyOptions`] and calls [`run`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshward_identity::MeshTls;
use tokio::net::TcpListener;

use crate::certs::{self, CertSource};
use crate::config;
use crate::inbound::{AppTarget, Inbound, ListenerMode};
use crate::observe::admin::{AdminState, Readiness, serve_admin};
use crate::outbound::{Outbound, OutboundConfig};
use crate::state::{ProxyState, StateHandle};
use crate::wire::{PortShift, SourceBind};

mod dump;
mod lifecycle;

use dump::{BoundListeners, ListenersCell};
pub(crate) use lifecycle::{Drain, telemetry_for};

/// Where the workload certificate comes from.
#[derive(Debug, Clone)]
pub enum CertOrigin {
    /// `key.pem`, `cert-chain.pem`, `root-cert.pem` in a directory (re-read on change).
    Files(PathBuf),
    /// Issue and rotate from the CA in this directory.
    CaDir {
        /// The CA directory.
        dir: PathBuf,
        /// Requested lifetime.
        ttl: Option<Duration>,
    },
}

/// How inbound connections arrive.
#[derive(Debug, Clone)]
pub enum InboundOption {
    /// iptables REDIRECT to one port (Istio's 15006).
    Capture(SocketAddr),
    /// One listener per workload port on this address (default: the workload's address).
    PerPort(Option<IpAddr>),
}

/// Everything needed to start a proxy.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The workload this proxy serves: namespace and name.
    pub workload: (String, String),
    /// Configuration files and folders.
    pub files: Vec<PathBuf>,
    /// The certificate source.
    pub certs: CertOrigin,
    /// Inbound listener mode.
    pub inbound: InboundOption,
    /// Where the application listens (same ports as the workload's).
    pub app_host: IpAddr,
    /// Explicit HTTP proxy port for outbound traffic.
    pub http_proxy: Option<SocketAddr>,
    /// Capture port for outbound traffic (Istio's 15001).
    pub outbound_capture: Option<SocketAddr>,
    /// Admin server address.
    pub admin: SocketAddr,
    /// Configuration and certificate from a control plane instead of `files` and `certs`.
    pub control: Option<crate::control::ControlOptions>,
    /// Where the workload's ports below 1024 are served and dialled (see [`crate::wire`]).
    pub port_shift: PortShift,
    /// The local address outbound connections leave from.
    pub outbound_bind: SourceBind,
}

/// Runs the proxy until `shutdown` resolves, then drains.
pub async fn run(
    options: ProxyOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (namespace, name) = options.workload.clone();
    // Kept alive until the proxy stops: certificate rotation and the control-plane stream.
    let mut _cert_source: Option<CertSource> = None;
    let mut _cert_manager = None;
    let mut control = None;
    let (state, credentials) = match &options.control {
        Some(control_options) => {
            let boot = crate::control::bootstrap_certificate(control_options, &namespace).await?;
            let trust_domains =
                meshward_api::TrustDomains::new(boot.identity.trust_domain().clone(), []);
            let client = crate::control::ControlClient::connect(
                control_options,
                &namespace,
                &name,
                boot.credentials.clone(),
                trust_domains,
                boot.identity.clone(),
            )
            .await?;
            let state = client.state().clone();
            let credentials = boot.credentials.clone();
            _cert_manager = Some(boot.manager);
            control = Some(client);
            (state, credentials)
        }
        None => {
            let mesh = config::load_mesh(&options.files)?;
            let state = StateHandle::new(ProxyState::build(mesh, &namespace, &name, 1)?);
            let identity = state.load().identity.clone();
            let (credentials, source) = match &options.certs {
                CertOrigin::Files(dir) => certs::from_cert_dir(dir.clone(), &identity)?,
                CertOrigin::CaDir { dir, ttl } => {
                    certs::from_ca_dir(dir.clone(), &identity, *ttl).await?
                }
            };
            _cert_source = Some(source);
            (state, credentials)
        }
    };
    let initial = state.load();
    let identity = initial.identity.clone();
    let tls = MeshTls::new(credentials.clone(), initial.trust_domains.clone());

    let (telemetry, metrics) = telemetry_for(&state);
    let drain = Drain::new();

    // Admin first, so readiness can be polled while the rest starts.
    let readiness = Readiness::new();
    let admin_listener = TcpListener::bind(options.admin).await?;
    let dump_state = state.clone();
    let cert_view = credentials.clone();
    let listeners = ListenersCell::default();
    let dump_listeners = listeners.clone();
    let dump_control = control.as_ref().map(|c| c.status());
    let admin = AdminState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        config_dump: Arc::new(move || {
            let status = dump_control.as_ref().map(|s| s.borrow().clone());
            dump::config_dump(&dump_state.load(), dump_listeners.get(), status.as_ref())
        }),
        certs: Arc::new(move || dump::certs_dump(&cert_view)),
    };
    let admin_task = tokio::spawn(serve_admin(admin_listener, admin, drain.stopped()));

    let inbound_capture = matches!(options.inbound, InboundOption::Capture(_));
    let mode = match options.inbound {
        InboundOption::Capture(addr) => ListenerMode::Capture { addr },
        InboundOption::PerPort(ip) => ListenerMode::PerPort {
            bind_ip: ip.unwrap_or(initial.workload().address),
            ports: initial.workload().ports.iter().map(|p| p.port).collect(),
        },
    };
    let inbound = Inbound::new(
        state.clone(),
        tls.clone(),
        AppTarget::on_host(options.app_host),
        mode,
    )
    .with_port_shift(options.port_shift)
    .with_handshake_counts(metrics.tls_handshakes())
    .with_request_details(telemetry.logs_requests())
    .with_events(match &control {
        // A token with an unknown `kid` asks the control plane for a fresh JWKS.
        Some(client) => {
            crate::control::jwks_refresh_sink(telemetry.inbound_sink(), client.refresh_sender())
        }
        None => telemetry.inbound_sink(),
    })
    .bind()
    .await?;
    let inbound_addrs = inbound.local_addrs();
    for addr in &inbound_addrs {
        tracing::info!(%addr, "inbound listener");
    }
    let inbound_task = tokio::spawn(inbound.run(drain.stopped()));

    let mut outbound_config = OutboundConfig::new(state.clone(), tls);
    outbound_config.http_proxy_addr = options.http_proxy;
    outbound_config.transparent_addr = options.outbound_capture;
    outbound_config.event_sink = telemetry.outbound_sink();
    outbound_config.request_details = telemetry.logs_requests();
    outbound_config.handshakes = metrics.tls_handshakes();
    outbound_config.port_shift = options.port_shift;
    outbound_config.source = options.outbound_bind;
    let outbound = Outbound::new(outbound_config).bind().await?;
    if let Some(addr) = outbound.http_proxy_addr() {
        tracing::info!(%addr, "outbound HTTP proxy");
    }
    if let Some(addr) = outbound.transparent_addr() {
        tracing::info!(%addr, "outbound capture listener");
    }
    // Set once; the cell cannot already be full, and a second value would change nothing.
    let _ = listeners.set(BoundListeners {
        inbound: inbound_addrs,
        inbound_capture,
        http_proxy: outbound.http_proxy_addr(),
        outbound_capture: outbound.transparent_addr(),
    });
    let outbound_task = tokio::spawn(outbound.run(drain.stopped()));

    // In control-plane mode the stream replaces the file watcher.
    let watcher = match &control {
        Some(_) => tokio::spawn(async {}),
        None => config::watch(options.files.clone(), namespace, name, state.clone()),
    };
    readiness.set_ready(true);
    tracing::info!(identity = %identity, "meshward-proxy ready");

    shutdown.await;
    tracing::info!("shutting down: draining connections");
    readiness.set_ready(false);
    watcher.abort();
    drain.start();
    let _ = inbound_task.await;
    let _ = outbound_task.await;
    let _ = admin_task.await;
    Ok(())
}
