//! `meshward get pods [-n NS | -A] [-o table|json|yaml]`: the pods of the running mesh. In
//! loopback mode the table also says where each pod's app listens and which HTTP proxy its
//! clients use (`exec` sets it), and the structured output has `mode`, `app_ip` and
//! `http_proxy`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::mesh::loopback;
use crate::mesh::mode::Mode;
use crate::mesh::state::{Home, MeshState, Phase, PodState, alive};
use crate::output::{Format, print_structured, print_table as print_rows, table};

/// `meshward get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(subcommand)]
    what: GetWhat,
}

#[derive(Debug, Subcommand)]
enum GetWhat {
    /// Pods of the local mesh (`meshward up`).
    #[command(alias = "pod", alias = "po")]
    Pods(PodsArgs),
    /// Resources and proxies of the control plane (`commands::get`).
    #[command(flatten)]
    Control(super::get::GetResource),
}

/// `get pods` options.
#[derive(Debug, Args)]
pub(crate) struct PodsArgs {
    /// Only this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Every namespace (the default).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Format,
}

/// A pod as listed.
#[derive(Debug, Serialize)]
struct PodView {
    namespace: String,
    name: String,
    ready: String,
    status: &'static str,
    /// Restarts of its containers by the supervisor (`mesh::restart`).
    restarts: u32,
    ip: String,
    service_account: String,
    sidecar: bool,
    deployment: Option<String>,
    one_off: bool,
    /// `netns` or `loopback`.
    mode: &'static str,
    /// Loopback mode: where the app listens (the pod address without a sidecar).
    #[serde(skip_serializing_if = "Option::is_none")]
    app_ip: Option<String>,
    /// Loopback mode: the pod's explicit HTTP proxy (sidecar or plain forwarder).
    #[serde(skip_serializing_if = "Option::is_none")]
    http_proxy: Option<String>,
}

fn view(state: &MeshState, p: &PodState) -> PodView {
    let restarts = state
        .restarts
        .get(&p.plan.key())
        .copied()
        .unwrap_or_default()
        .total();
    let containers: Vec<Option<u32>> = if p.one_off.is_some() {
        vec![p.proxy_pid.filter(|_| p.plan.sidecar)]
    } else if p.plan.sidecar {
        vec![p.app_pid, p.proxy_pid]
    } else {
        vec![p.app_pid]
    };
    let expected = containers.len();
    let running = containers
        .iter()
        .flatten()
        .filter(|&&pid| alive(pid))
        .count();
    // As kubectl names them: a pod whose container the supervisor is about to restart is in
    // CrashLoopBackOff; one-off pods (`meshward run`) are not restarted.
    let status = if running == expected && p.ready {
        "Running"
    } else if running == expected
        || (!p.ready && (p.one_off.is_some() || state.phase == Phase::Starting))
    {
        "Starting"
    } else if p.one_off.is_none() && state.phase == Phase::Ready {
        "CrashLoopBackOff"
    } else {
        "Error"
    };
    let mode = Mode::of(state);
    let loopback = mode == Mode::Loopback;
    PodView {
        mode: mode.as_str(),
        app_ip: loopback.then(|| loopback::app_host(&p.plan).to_string()),
        http_proxy: loopback.then(|| loopback::http_proxy(p.plan.ip).to_string()),
        namespace: p.plan.namespace.clone(),
        name: p.plan.name.clone(),
        ready: format!("{running}/{expected}"),
        status,
        restarts,
        ip: p.plan.ip.to_string(),
        service_account: p.plan.service_account.clone(),
        sidecar: p.plan.sidecar,
        deployment: p.plan.deployment.clone(),
        one_off: p.one_off.is_some(),
    }
}

/// Prints pods as a table (loopback mode adds the app address and the HTTP proxy).
fn print_table_of(views: &[PodView], mode: Mode) {
    let mut t = table();
    let mut header = vec![
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "IP",
        "SERVICE ACCOUNT",
        "SIDECAR",
    ];
    if mode == Mode::Loopback {
        header.extend(["APP", "HTTP PROXY"]);
    }
    t.set_header(header);
    for v in views {
        let mut row = vec![
            v.namespace.clone(),
            v.name.clone(),
            v.ready.clone(),
            v.status.to_owned(),
            v.restarts.to_string(),
            v.ip.clone(),
            v.service_account.clone(),
            if v.sidecar { "yes" } else { "no" }.to_owned(),
        ];
        if mode == Mode::Loopback {
            row.push(v.app_ip.clone().unwrap_or_default());
            row.push(v.http_proxy.clone().unwrap_or_default());
        }
        t.add_row(row);
    }
    print_rows(&mut t, "");
}

/// Prints the pods of `state` (optionally one namespace) as a table.
pub(crate) fn print_table(state: &MeshState, namespace: Option<&str>) {
    let views: Vec<PodView> = state
        .pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| p.plan.namespace == ns))
        .map(|p| view(state, p))
        .collect();
    let mode = Mode::of(state);
    if mode == Mode::Loopback {
        println!(
            "mode: loopback (ports below 1024 are served at port + {}; `meshward exec` points clients at their pod's HTTP proxy)",
            loopback::PORT_SHIFT
        );
    }
    print_table_of(&views, mode);
}

/// `meshward get` (until the control plane's `get` takes over and calls [`run_pods`]).
pub(crate) fn run(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let args = match &args.what {
        GetWhat::Pods(args) => args,
        GetWhat::Control(what) => return super::get::run(what),
    };
    run_pods(args)
}

/// `meshward get pods`: reads `state.json`, so it needs no control plane.
pub(crate) fn run_pods(args: &PodsArgs) -> anyhow::Result<ExitCode> {
    let Some(state) = Home::from_env()?.read()? else {
        bail!("no mesh is running (start one with `meshward up`)");
    };
    let namespace = args.namespace.as_deref().filter(|_| !args.all_namespaces);
    match args.output {
        Format::Table => print_table(&state, namespace),
        format => {
            let views: Vec<PodView> = state
                .pods
                .iter()
                .filter(|p| namespace.is_none_or(|ns| p.plan.namespace == ns))
                .map(|p| view(&state, p))
                .collect();
            print_structured(&views, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
