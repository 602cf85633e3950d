//! `meshward control-plane`: runs `meshward-control` (istiod's role) until SIGTERM or Ctrl-C.
//!
//! It loads and watches `--config` files and folders, serves the CA and the proxies' config
//! stream on one TLS port (`--listen`, istiod's 15012) and the admin API used by
//! `meshward apply|delete|get` on `--admin` (loopback, default 15014). With `--state-dir`, every
//! accepted change is recorded there before it is acknowledged and restored on the next start
//! (see `meshward_control::store::persist`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meshward_control::{ControlPlane, ControlPlaneOptions};

/// `meshward control-plane` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlPlaneArgs {
    /// Files or folders of manifests to load and watch (re-read when they change; an invalid
    /// change is refused and the last good configuration stays).
    #[arg(long = "config", short = 'f', value_name = "DIR|FILE", num_args = 1..)]
    config: Vec<PathBuf>,
    /// gRPC address for the CA service and the proxies' config stream (TLS).
    #[arg(long, value_name = "ADDR", default_value = meshward_control::server::DEFAULT_GRPC_ADDR)]
    listen: SocketAddr,
    /// Admin API address (plain HTTP: keep it on loopback).
    #[arg(long, value_name = "ADDR", default_value = meshward_control::server::DEFAULT_ADMIN_ADDR)]
    admin: SocketAddr,
    /// The CA directory (created with a new root if empty) [default: ~/.meshward/ca].
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The mesh trust domain.
    #[arg(long, value_name = "TD", default_value = meshward_api::spiffe::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Record the store here (every accepted change is written and fsynced before it is
    /// acknowledged) and restore it on start, so a restarted control plane serves what the last
    /// one accepted; an unreadable or corrupt state file stops the start. Without it, what
    /// `apply|delete` changed is lost with the process.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Bootstrap tokens for the CA: lines `TOKEN NAMESPACE/SERVICE_ACCOUNT`.
    #[arg(long, value_name = "FILE")]
    bootstrap_tokens: Option<PathBuf>,
    /// Extra root certificates (PEM) trusted when fetching `jwksUri` over HTTPS.
    #[arg(long, value_name = "FILE")]
    jwks_ca_file: Option<PathBuf>,
    /// The pods and services are run by the local mesh (`meshward up` passes this): `apply` and
    /// `delete` leave Deployments, Pods and Services out, with a warning, since the mesh runs
    /// them as `meshward up` started them.
    #[arg(long)]
    local_mesh: bool,
    /// Manifests the watched files restate (`meshward up` passes the files it was given, of
    /// which it generates `resources.json`): `describe` locates a resource they hold unchanged
    /// at their own file and line. Read once, at start.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    origins_from: Vec<PathBuf>,
    /// Log lines as JSON.
    #[arg(long)]
    log_json: bool,
}

fn default_ca_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "cannot find the default CA directory ~/.meshward/ca: $HOME is not set; pass --ca-dir DIR",
    )?;
    Ok(PathBuf::from(home).join(".meshward").join("ca"))
}

pub(crate) fn run(args: &ControlPlaneArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_json);
    let mut options = ControlPlaneOptions::new(match &args.ca_dir {
        Some(dir) => dir.clone(),
        None => default_ca_dir()?,
    });
    options.config_paths = args.config.clone();
    options.grpc_listen = args.listen;
    options.admin_listen = args.admin;
    options.trust_domain = args.trust_domain.clone();
    options.bootstrap_tokens = args.bootstrap_tokens.clone();
    options.state_dir = args.state_dir.clone();
    options.local_mesh = args.local_mesh;
    options.origins_from = args.origins_from.clone();
    if let Some(file) = &args.jwks_ca_file {
        let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let bundle = meshward_identity::TrustBundle::from_pem(&pem, &file.display().to_string())?;
        options.jwks.extra_roots = bundle.roots().to_vec();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let control_plane = ControlPlane::start(options).await?;
        println!(
            "meshward control plane: gRPC (CA + config) on {}, admin API on http://{}",
            control_plane.grpc_addr(),
            control_plane.admin_addr()
        );
        tokio::select! {
            () = shutdown_signal() => {}
            () = control_plane.stopped() => {
                anyhow::bail!("a control plane listener stopped unexpectedly");
            }
        }
        control_plane.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

fn init_logging(json: bool) {
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let result = if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .try_init()
    };
    // Already initialised (tests, or another command set it up): keep that one.
    let _ = result;
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
