//! `meshward-proxy`: the sidecar binary. Local mode: configuration from files (the same
//! manifests `meshward check` reads), certificates from `meshward ca issue` files or a CA
//! directory. Control-plane mode (`--control-plane`): both from `meshward control-plane`.
//! `--plain-forwarder`: no identity, only an explicit HTTP proxy that sends plaintext (the
//! stand-in for a pod without sidecar where there is no traffic capture, see
//! [`meshward_proxy::forwarder`]).
//!
//! For hosts without traffic capture or privileges (the local mesh's loopback mode),
//! `--port-shift N` serves and dials ports below 1024 at port + N, and `--outbound-bind IP`
//! makes outbound connections leave from the pod's address (see [`meshward_proxy::wire`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use meshward_proxy::control::ControlOptions;
use meshward_proxy::forwarder::{ForwarderOptions, run_forwarder};
use meshward_proxy::run::{CertOrigin, InboundOption, ProxyOptions, run};
use meshward_proxy::wire::{PortShift, SourceBind};

/// The meshward sidecar: mTLS, PeerAuthentication, authorization and JWT on a workload's traffic.
#[derive(Debug, Parser)]
#[command(name = "meshward-proxy", version, about)]
struct Args {
    /// The workload this proxy serves, as NAMESPACE/NAME (declared in the configuration).
    #[arg(long)]
    workload: String,
    /// Configuration files or folders (Kubernetes and Istio manifests, `workloads` declarations);
    /// re-read when they change.
    #[arg(short = 'f', long = "filename", required_unless_present = "control_plane", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Take configuration and the workload certificate from this control plane (`host:port` of
    /// `meshward control-plane`'s gRPC port) instead of files.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["files", "cert_dir", "ca_dir"])]
    control_plane: Option<String>,
    /// The CA's `host:port` when it is not the control plane's.
    #[arg(long, value_name = "ADDR", requires = "control_plane")]
    ca_address: Option<String>,
    /// Root certificates (PEM) the control plane's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    ca_root: Option<PathBuf>,
    /// A file holding the bootstrap token that obtains the first certificate from the CA.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    token_file: Option<PathBuf>,
    /// The mesh trust domain (control-plane mode).
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Directory with key.pem, cert-chain.pem and root-cert.pem (from `meshward ca issue`).
    #[arg(long, conflicts_with = "ca_dir")]
    cert_dir: Option<PathBuf>,
    /// CA directory (from `meshward ca init`): the proxy issues and rotates its own certificate.
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Certificate lifetime when issuing from --ca-dir, in seconds.
    #[arg(long, value_name = "SECONDS")]
    cert_ttl: Option<u64>,
    /// Receive inbound traffic redirected by iptables on this address (Istio's 15006), instead
    /// of one listener per workload port.
    #[arg(long, value_name = "ADDR")]
    inbound_capture: Option<SocketAddr>,
    /// Address for the per-port inbound listeners (default: the workload's address).
    #[arg(long, value_name = "IP", conflicts_with = "inbound_capture")]
    inbound_ip: Option<IpAddr>,
    /// Where the application listens (it serves the workload's ports on this address).
    #[arg(long, default_value = "127.0.0.1")]
    app_host: IpAddr,
    /// Explicit HTTP proxy for outbound traffic (absolute-form requests and CONNECT).
    #[arg(long, value_name = "ADDR")]
    http_proxy: Option<SocketAddr>,
    /// Receive outbound traffic redirected by iptables on this address (Istio's 15001).
    #[arg(long, value_name = "ADDR")]
    outbound_capture: Option<SocketAddr>,
    /// Admin server (/ready, /stats/prometheus, /config_dump, /certs).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Serve and dial every port below 1024 at port + N on the wire (inbound listeners, the
    /// application, mesh endpoints), for hosts where the proxy and the application cannot bind
    /// privileged ports. Policies, routes and logs keep the declared port. N ≥ 1024.
    #[arg(long, value_name = "N")]
    port_shift: Option<PortShift>,
    /// Bind outbound connections to this local address (the pod's), so their destination sees
    /// it as the source; used only towards destinations it can reach (a loopback address only
    /// towards loopback destinations).
    #[arg(long, value_name = "IP")]
    outbound_bind: Option<IpAddr>,
    /// Run as the plain forwarder of a pod without sidecar: no identity, no inbound side, only
    /// the explicit HTTP proxy (`--http-proxy`, required), sending plaintext; an upstream that
    /// closes without answering resets the client's connection. Configuration from `-f`.
    #[arg(
        long,
        requires = "http_proxy",
        conflicts_with_all = ["control_plane", "cert_dir", "ca_dir", "inbound_capture", "outbound_capture"]
    )]
    plain_forwarder: bool,
    /// Log lines as JSON.
    #[arg(long)]
    log_json: bool,
    /// Worker threads (Istio's `concurrency`). 1 runs everything on one thread, which is the
    /// cheapest per request for a sidecar that shares its pod's CPU; 0 means one per core.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
}

fn main() -> ExitCode {
    meshward_identity::crypto::install_default_provider();
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let Some((namespace, name)) = args.workload.split_once('/') else {
        eprintln!(
            "error: --workload {}: expected NAMESPACE/NAME",
            args.workload
        );
        return ExitCode::from(2);
    };
    let port_shift = args.port_shift.unwrap_or(PortShift::NONE);
    let outbound_bind = args.outbound_bind.map(SourceBind::new).unwrap_or_default();
    if args.plain_forwarder {
        let Some(http_proxy) = args.http_proxy else {
            eprintln!("error: --plain-forwarder needs --http-proxy ADDR");
            return ExitCode::from(2);
        };
        let options = ForwarderOptions {
            workload: (namespace.to_owned(), name.to_owned()),
            files: args.files,
            http_proxy,
            admin: args.admin,
            port_shift,
            outbound_bind,
        };
        return block_on(args.concurrency, run_forwarder(options, shutdown_signal()));
    }
    let control = match (&args.control_plane, &args.ca_root) {
        (Some(address), Some(root)) => {
            let mut options = ControlOptions::new(address.clone(), root.clone());
            options.ca_address = args.ca_address.clone();
            options.token_file = args.token_file.clone();
            options.trust_domain = args.trust_domain.clone();
            options.pod_address = args.inbound_ip;
            options.cert_ttl = args.cert_ttl.map(Duration::from_secs);
            Some(options)
        }
        (Some(_), None) => {
            eprintln!("error: --control-plane needs --ca-root FILE (the mesh root certificates)");
            return ExitCode::from(2);
        }
        (None, _) => None,
    };
    let certs = match (&args.cert_dir, &args.ca_dir) {
        // Unused in control-plane mode: the certificate comes from the control plane's CA.
        _ if control.is_some() => CertOrigin::Files(PathBuf::new()),
        (Some(dir), _) => CertOrigin::Files(dir.clone()),
        (None, Some(dir)) => CertOrigin::CaDir {
            dir: dir.clone(),
            ttl: args.cert_ttl.map(Duration::from_secs),
        },
        (None, None) => {
            eprintln!("error: give the workload certificate: --cert-dir DIR or --ca-dir DIR");
            return ExitCode::from(2);
        }
    };
    let options = ProxyOptions {
        workload: (namespace.to_owned(), name.to_owned()),
        files: args.files,
        certs,
        inbound: match args.inbound_capture {
            Some(addr) => InboundOption::Capture(addr),
            None => InboundOption::PerPort(args.inbound_ip),
        },
        app_host: args.app_host,
        http_proxy: args.http_proxy,
        outbound_capture: args.outbound_capture,
        admin: args.admin,
        control,
        port_shift,
        outbound_bind,
    };
    block_on(args.concurrency, run(options, shutdown_signal()))
}

/// Runs `proxy` to completion on a runtime of `concurrency` workers.
fn block_on(
    concurrency: usize,
    proxy: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let runtime = match build_runtime(concurrency) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A single-threaded runtime for `--concurrency 1` (no work stealing, no cross-thread wake-ups),
/// otherwise a work-stealing one with that many workers.
fn build_runtime(concurrency: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if concurrency == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if concurrency > 1 {
        builder.worker_threads(concurrency);
    }
    builder.enable_all().build()
}

/// SIGTERM (what Kubernetes and `meshward down` send) or Ctrl-C.
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
