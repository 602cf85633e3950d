//! `meshward logs POD|deploy/NAME [-n NS] [-c proxy|app]`: a pod container's output.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::mesh::state::Home;

/// A container of a local pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
enum Container {
    /// The application (or the built-in echo app).
    #[default]
    App,
    /// The sidecar (meshward-proxy): access log and proxy messages.
    Proxy,
}

/// `meshward logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The pod: its name, or `deploy/NAME`.
    pod: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Which container.
    #[arg(short = 'c', long, value_enum, default_value_t)]
    container: Container,
}

/// `meshward logs`.
pub(crate) fn run(args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    let Some(state) = home.read()? else {
        bail!("no mesh is running (start one with `meshward up`)");
    };
    let Some(pod) = state.find_pod(&args.namespace, &args.pod) else {
        bail!(
            "no pod `{}` in namespace `{}` (see `meshward get pods`)",
            args.pod,
            args.namespace
        );
    };
    let container = match args.container {
        Container::App => "app",
        Container::Proxy => {
            if !pod.plan.sidecar {
                bail!("pod {} has no sidecar", pod.plan.key());
            }
            "proxy"
        }
    };
    let path = home.pod_log(&pod.plan.namespace, &pod.plan.name, container);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
