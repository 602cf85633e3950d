//! The plain forwarder (`meshward-proxy --plain-forwarder`): what a pod *without* a sidecar
//! gets in the local mesh's loopback mode, where there is no network namespace, no hosts file
//! and no kube-proxy. It stands in for those, not for a sidecar:
//!
//! - clients reach it as an explicit HTTP proxy (`http_proxy=http://POD_IP:15080`) and name
//!   services as Kubernetes DNS would (`backend`, `backend.ns`, `…svc.cluster.local`, a
//!   `clusterIP`), resolved against the mesh's inventory like a sidecar resolves them;
//! - it has no identity and enforces nothing: every connection is plaintext, whatever
//!   DestinationRules or auto mTLS would pick for a sidecar;
//! - its connections leave from the pod's address (`--outbound-bind`) and reach mesh endpoints
//!   at their wire ports (`--port-shift`), so the destination sidecar sees the same thing as a
//!   plaintext client in netns mode;
//! - when the destination closes or resets the connection without answering (PeerAuthentication
//!   STRICT), the client's connection is reset too — curl exits 56 — instead of the 503 a
//!   sidecar would give.
//!
//! It reads the mesh from files (`-f`, re-read when they change), as a proxy's local mode does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use meshward_identity::tls::Credentials;
use meshward_identity::{MeshTls, TrustBundle};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config;
use crate::observe::admin::{AdminState, Readiness, serve_admin};
use crate::outbound::{Outbound, OutboundConfig};
use crate::run::{Drain, telemetry_for};
use crate::state::{ProxyState, StateHandle};
use crate::wire::{PortShift, SourceBind};

/// Everything needed to start a plain forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// The pod it serves: namespace and name (declared in the configuration, without sidecar).
    pub workload: (String, String),
    /// Configuration files and folders (the mesh's inventory).
    pub files: Vec<PathBuf>,
    /// The explicit HTTP proxy address.
    pub http_proxy: SocketAddr,
    /// Admin server address (`/ready`, `/stats/prometheus`, `/config_dump`).
    pub admin: SocketAddr,
    /// Where mesh endpoints' ports below 1024 listen on the wire.
    pub port_shift: PortShift,
    /// The pod's address, which connections leave from.
    pub outbound_bind: SourceBind,
}

/// Runs the forwarder until `shutdown` resolves, then drains.
pub async fn run_forwarder(
    options: ForwarderOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (namespace, name) = options.workload.clone();
    let mesh = config::load_mesh(&options.files)?;
    let state = StateHandle::new(ProxyState::build(mesh, &namespace, &name, 1)?);
    let initial = state.load();
    // No certificate ever: the connector originates plaintext only, so nothing reads these.
    let credentials = Credentials::new(TrustBundle::default());
    let tls = MeshTls::new(credentials, initial.trust_domains.clone());

    let (telemetry, metrics) = telemetry_for(&state);
    let drain = Drain::new();

    let readiness = Readiness::new();
    let admin_listener = TcpListener::bind(options.admin).await?;
    let dump_state = state.clone();
    let http_proxy = options.http_proxy;
    let admin = AdminState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        config_dump: Arc::new(move || {
            let state = dump_state.load();
            json!({
                "mode": "plain-forwarder",
                "workload": state.workload().key(),
                "version": state.version,
                "http_proxy": http_proxy.to_string(),
            })
        }),
        certs: Arc::new(|| json!({"certificates": []})),
    };
    let admin_task = tokio::spawn(serve_admin(admin_listener, admin, drain.stopped()));

    let mut outbound_config = OutboundConfig::new(state.clone(), tls);
    outbound_config.http_proxy_addr = Some(options.http_proxy);
    outbound_config.event_sink = telemetry.outbound_sink();
    outbound_config.request_details = telemetry.logs_requests();
    outbound_config.port_shift = options.port_shift;
    outbound_config.source = options.outbound_bind;
    outbound_config.plain_forwarder = true;
    let outbound = Outbound::new(outbound_config).bind().await?;
    if let Some(addr) = outbound.http_proxy_addr() {
        tracing::info!(%addr, "plain forwarder: explicit HTTP proxy");
    }
    let outbound_task = tokio::spawn(outbound.run(drain.stopped()));
    let watcher = config::watch(options.files.clone(), namespace, name, state.clone());
    readiness.set_ready(true);
    tracing::info!(workload = %initial.workload().key(), "meshward-proxy plain forwarder ready");

    shutdown.await;
    readiness.set_ready(false);
    watcher.abort();
    drain.start();
    let _ = outbound_task.await;
    let _ = admin_task.await;
    Ok(())
}
