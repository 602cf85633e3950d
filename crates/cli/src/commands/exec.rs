//! `meshward exec POD|deploy/NAME [-n NS] -- CMD...`: runs a command inside a pod's network
//! namespace, as root, so its traffic is captured exactly like the pod's app (through the
//! sidecar when the pod has one). The command's exit code is returned.
//!
//! `-c proxy` runs it as the sidecar's user (uid/gid 1337) instead, like `kubectl exec -c
//! istio-proxy`: that traffic is exempt from capture, so it leaves the pod as plaintext and
//! skips the client side of the mesh (what several tutorials do without noticing).
//!
//! In loopback mode there is no namespace to enter: CMD runs as the invoking user with
//! `http_proxy`/`HTTP_PROXY`/`https_proxy`/`HTTPS_PROXY` pointing at the pod's sidecar (or, for
//! a pod without one, its plain forwarder) on `POD_IP:15080`, `no_proxy` removed, and `POD_IP`,
//! `POD_NAME`, `POD_NAMESPACE` set, so `curl http://backend/` goes through the pod's proxy,
//! which resolves the name (see `mesh::loopback`). `-c proxy` leaves the proxy variables out:
//! nothing then resolves service names, and pod addresses are dialled directly.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use crate::mesh::loopback;
use crate::mesh::mode::Mode;
use crate::mesh::state::Home;

/// `meshward exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The pod: its name, or `deploy/NAME` for a replica of a Deployment.
    pod: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The container whose view to take: `app` (captured) or `proxy` (uid 1337, not captured).
    #[arg(short = 'c', long, default_value = "app", value_parser = ["app", "proxy"])]
    container: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// The exit code of a finished process (128 + signal when it was killed, as shells report).
pub(crate) fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `meshward exec`.
pub(crate) fn run(args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let Some(state) = Home::from_env()?.read()? else {
        bail!("no mesh is running (start one with `meshward up`)");
    };
    super::up::preflight_for(&state)?;
    let Some(pod) = state.find_pod(&args.namespace, &args.pod) else {
        bail!(
            "no pod `{}` in namespace `{}` (see `meshward get pods`)",
            args.pod,
            args.namespace
        );
    };
    if args.container == "proxy" && !pod.plan.sidecar {
        bail!("pod {} has no sidecar", pod.plan.key());
    }
    if Mode::of(&state) == Mode::Loopback {
        let status = loopback::client_command(&pod.plan, &args.command, args.container == "app")
            .status()
            .with_context(|| format!("cannot run `{}`", args.command.join(" ")))?;
        return Ok(exit_code(status));
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.netns]);
    if args.container == "proxy" {
        let uid = crate::mesh::capture::PROXY_UID;
        cmd.arg("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--"]);
    }
    let status = cmd
        .args(&args.command)
        .status()
        .with_context(|| format!("cannot run a command in pod {}", pod.plan.key()))?;
    Ok(exit_code(status))
}
