//! Hidden commands the local mesh runs inside pods: the echo app, the readiness probe, and the
//! admin-endpoint GET behind `proxy-config` and `edges`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// `meshward echo --pod NS/NAME [--host IP] --port P...`.
#[derive(Debug, Args)]
pub(crate) struct EchoArgs {
    /// The pod it serves (reported in every reply).
    #[arg(long, default_value = "unknown")]
    pod: String,
    /// Ports to serve (none: idle until stopped, like a container without ports).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// The address to serve them on.
    #[arg(long, default_value = "0.0.0.0")]
    host: std::net::IpAddr,
}

/// `meshward echo`.
pub(crate) fn echo(args: &EchoArgs) -> anyhow::Result<ExitCode> {
    if args.ports.is_empty() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    crate::mesh::echo::serve(args.host, &args.ports, args.pod.clone())?;
    Ok(ExitCode::SUCCESS)
}

/// `meshward probe --tcp ADDR... --ready ADDR... --timeout-secs N`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// Addresses that must accept TCP connections.
    #[arg(long)]
    tcp: Vec<SocketAddr>,
    /// Proxy admin addresses whose `/ready` must answer 200.
    #[arg(long)]
    ready: Vec<SocketAddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

/// `meshward probe`.
pub(crate) fn probe(args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    Ok(crate::mesh::supervisor::probe_main(
        &args.tcp,
        &args.ready,
        Duration::from_secs(args.timeout_secs),
    ))
}

/// `meshward admin-get PATH` (run inside a pod's network namespace).
#[derive(Debug, Args)]
pub(crate) struct AdminGetArgs {
    /// The admin path, e.g. `/config_dump`.
    path: String,
}

/// `meshward admin-get`: prints the body of the pod's proxy admin answer.
pub(crate) fn admin_get(args: &AdminGetArgs) -> anyhow::Result<ExitCode> {
    crate::mesh::pod_admin::admin_get_main(&args.path)
}
