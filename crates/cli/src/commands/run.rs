//! `meshward run NAME [-n NS] [--no-sidecar] [--service-account SA] -- CMD...`: a one-off pod,
//! like `kubectl run NAME -it --rm --image=curl -- CMD`.
//!
//! The pod (label `run: NAME`, service account `default` unless given) joins the running mesh:
//! it is added to state.json and the proxies' inventory, gets a namespace, hosts file and capture
//! rules (or kube-proxy rules without a sidecar), and its proxy is started and waited for. CMD
//! then runs inside the pod as its container, with this terminal; when it ends the pod is
//! removed and CMD's exit code is returned. Ctrl-C goes to CMD; this process outlives it to
//! clean up.
//!
//! In loopback mode the pod is a 127.x address with its sidecar (or, with `--no-sidecar`, its
//! plain forwarder), and CMD runs as this user with `http_proxy` pointing at it, as `meshward
//! exec` runs commands (see `mesh::loopback`).

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use crate::mesh::config;
use crate::mesh::ledger;
use crate::mesh::loopback;
use crate::mesh::mode::Mode;
use crate::mesh::netns;
use crate::mesh::plan::{Allocator, ContainerPlan, PodPlan};
use crate::mesh::runtime::{self, Progress, STOP_GRACE};
use crate::mesh::state::{Home, PodState, alive};
use crate::mesh::supervisor::{self, Binaries};

/// `meshward run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The pod's name.
    name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Run without a sidecar (outside the mesh: plaintext, no identity).
    #[arg(long)]
    no_sidecar: bool,
    /// The pod's service account (its mesh identity).
    #[arg(long, default_value = "default")]
    service_account: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// `meshward run`.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    let Some(state) = home.read()? else {
        bail!("no mesh is running (start one with `meshward up`)");
    };
    super::up::preflight_for(&state)?;
    let mode = Mode::of(&state);
    let progress = Progress::terminal_only();
    let bins = Binaries::find()?;
    // While CMD runs, Ctrl-C and SIGTERM must not kill this process: it removes the pod after.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _signals = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    });

    let pod = add_pod(&home, args, mode)?;
    let outcome = run_in_pod(&home, &pod, &bins, args, progress, mode);
    progress.step(format!("removing pod {}", pod.plan.key()));
    remove_pod(&home, &pod, mode);
    outcome
}

/// Registers the pod in state.json and the proxies' inventory.
fn add_pod(home: &Home, args: &RunArgs, mode: Mode) -> anyhow::Result<PodState> {
    let added = home.update(|state| -> anyhow::Result<PodState> {
        if !alive(state.supervisor_pid) {
            bail!("the mesh supervisor is gone; run `meshward down`, then `meshward up`");
        }
        if state
            .pods
            .iter()
            .any(|p| p.plan.namespace == args.namespace && p.plan.name == args.name)
        {
            bail!(
                "a pod `{}` already exists in namespace `{}`",
                args.name,
                args.namespace
            );
        }
        let mut ips = Allocator::pods_for(mode);
        for ip in state.pod_ips() {
            ips.reserve(ip);
        }
        let (netns, veth) = match mode {
            Mode::Netns => {
                let link = state.next_link;
                state.next_link = link.saturating_add(1);
                (
                    netns::netns_name(&args.namespace, &args.name),
                    netns::veth_name(link),
                )
            }
            Mode::Loopback => (String::new(), String::new()),
        };
        let pod = PodState {
            plan: PodPlan {
                namespace: args.namespace.clone(),
                name: args.name.clone(),
                deployment: None,
                service_account: args.service_account.clone(),
                labels: BTreeMap::from([("run".to_owned(), args.name.clone())]),
                annotations: BTreeMap::new(),
                sidecar: !args.no_sidecar,
                containers: vec![ContainerPlan {
                    name: args.name.clone(),
                    ports: vec![],
                    port_names: BTreeMap::new(),
                }],
                run: Some(args.command.join(" ")),
                ip: ips.allocate()?,
            },
            netns,
            veth,
            proxy_pid: None,
            app_pid: None,
            ready: false,
            one_off: Some(std::process::id()),
        };
        state.pods.push(pod.clone());
        config::write_inventory(
            &home.config_dir(),
            state.pods.iter().map(|p| &p.plan),
            &state.services,
        )?;
        Ok(pod)
    })?;
    match added {
        Some(pod) => pod,
        None => bail!("no mesh is running (start one with `meshward up`)"),
    }
}

fn run_in_pod(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
    args: &RunArgs,
    progress: Progress,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let state = home
        .read()?
        .context("the mesh stopped while the pod was being created")?;
    progress.step(format!(
        "pod {} ({}, {})",
        pod.plan.key(),
        pod.plan.ip,
        if pod.plan.sidecar {
            "sidecar"
        } else {
            "no sidecar"
        }
    ));
    if mode == Mode::Netns {
        runtime::create_pod(pod, &state).with_context(|| format!("pod {}", pod.plan.key()))?;
    }
    let mut running = pod.clone();
    let mut children: Vec<Child> = runtime::start_pod(home, &mut running, bins, false, mode)?;
    let key = pod.plan.key();
    let proxy_pid = running.proxy_pid;
    home.update(|s| {
        if let Some(p) = s.pods.iter_mut().find(|p| p.plan.key() == key) {
            p.proxy_pid = proxy_pid;
        }
    })?;
    let outcome = (|| {
        runtime::wait_ready(&running, bins, false, mode).map_err(anyhow::Error::msg)?;
        home.update(|s| {
            if let Some(p) = s.pods.iter_mut().find(|p| p.plan.key() == key) {
                p.ready = true;
            }
        })?;
        let mut cmd = match mode {
            Mode::Netns => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &pod.netns])
                    .args(&args.command)
                    .env("POD_NAME", &pod.plan.name)
                    .env("POD_NAMESPACE", &pod.plan.namespace)
                    .env("POD_IP", pod.plan.ip.to_string());
                cmd
            }
            Mode::Loopback => loopback::client_command(&pod.plan, &args.command, true),
        };
        let status = cmd
            .status()
            .with_context(|| format!("cannot run the command in pod {key}"))?;
        Ok(super::exec::exit_code(status))
    })();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    supervisor::stop_children(&mut children, STOP_GRACE);
    if mode == Mode::Loopback {
        for pid in pids {
            ledger::forget(home, pid);
        }
    }
    outcome
}

/// Removes the pod's network and processes and takes it out of the state and inventory (a
/// loopback pod's processes are stopped already, and it has nothing else).
fn remove_pod(home: &Home, pod: &PodState, mode: Mode) {
    if mode == Mode::Netns {
        runtime::delete_pod(&pod.netns, &pod.veth);
    }
    let key = pod.plan.key();
    let _ = home.update(|state| {
        state.pods.retain(|p| p.plan.key() != key);
        let _ = config::write_inventory(
            &home.config_dir(),
            state.pods.iter().map(|p| &p.plan),
            &state.services,
        );
    });
}
