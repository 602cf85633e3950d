//! Bringing pods up and down, shared by `up` (the supervisor), `run` (one-off pods) and `down`
//! (which must also work after a crash: in netns mode from state.json and a sweep of `mw`
//! names, in loopback mode from the process ledger).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::process::Child;
use std::time::Duration;

use super::capture::{self, VipPort};
use super::hosts;
use super::ledger;
use super::loopback;
use super::mode::Mode;
use super::netns;
use super::plan::{PodPlan, ServicePlan};
use super::state::{Home, MeshState, PodState};
use super::supervisor::{self, Binaries};

/// How long a pod may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long processes get between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Progress lines on stderr (plain lines: they read the same on a terminal, in CI logs and in
/// the detached supervisor's log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    quiet: bool,
}

impl Progress {
    /// Progress that prints.
    pub(crate) fn new() -> Self {
        Self { quiet: false }
    }
    /// Progress that prints only on a terminal (for `run`, whose stderr belongs to its command).
    pub(crate) fn terminal_only() -> Self {
        Self {
            quiet: !std::io::stderr().is_terminal(),
        }
    }
    /// A step.
    pub(crate) fn step(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("• {}", text.as_ref());
        }
    }
    /// A finished step.
    pub(crate) fn done(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("✓ {}", text.as_ref());
        }
    }
}

/// The service ports a pod without sidecar reaches through DNAT, with their endpoints.
pub(crate) fn vip_ports<'a>(
    services: &[ServicePlan],
    pods: impl Iterator<Item = &'a PodPlan> + Clone,
) -> Vec<VipPort> {
    let mut out = Vec::new();
    for s in services {
        for port in &s.ports {
            let endpoints = pods
                .clone()
                .filter(|p| s.selects(p))
                .filter_map(|p| port.target_on(p).map(|t| (p.ip, t)))
                .collect();
            out.push(VipPort {
                vip: s.ip,
                port: port.port,
                endpoints,
            });
        }
    }
    out
}

/// Creates a pod's namespace, network, hosts file and capture (or service) rules.
pub(crate) fn create_pod(pod: &PodState, state: &MeshState) -> anyhow::Result<()> {
    let p = &pod.plan;
    netns::create_pod_network(&pod.netns, &pod.veth, p.ip)?;
    hosts::write(
        &pod.netns,
        &hosts::hosts_file(&p.namespace, &p.name, p.ip, &state.services),
    )?;
    if p.sidecar {
        capture::apply(&pod.netns, &capture::sidecar_rules())?;
    }
    // kube-proxy's part, appended after the capture rules: traffic that the sidecar does not
    // capture (pods without one, and the proxy's own uid 1337, e.g. `exec -c proxy`) still
    // reaches services by VIP, as on a Kubernetes node.
    let vips = vip_ports(&state.services, state.pods.iter().map(|p| &p.plan));
    if let Some(rules) = capture::service_rules(&vips) {
        capture::apply(&pod.netns, &rules)?;
    }
    Ok(())
}

/// Stops every process in the pod's namespace and deletes the namespace, its link and hosts
/// file. Never fails: it is the cleanup path.
pub(crate) fn delete_pod(netns_name: &str, veth: &str) -> usize {
    let pids = netns::netns_pids(netns_name);
    supervisor::terminate_pids(&pids, STOP_GRACE);
    netns::delete_pod_network(netns_name, veth);
    hosts::remove(netns_name);
    pids.len()
}

/// Starts a pod's app (unless `with_app` is false) and proxy — in loopback mode also the plain
/// forwarder of a pod without sidecar, in `proxy_pid`; returns the children and records their
/// pids in `pod`.
pub(crate) fn start_pod(
    home: &Home,
    pod: &mut PodState,
    bins: &Binaries,
    with_app: bool,
    mode: Mode,
) -> anyhow::Result<Vec<Child>> {
    let mut children = Vec::new();
    if with_app {
        let app = match mode {
            Mode::Netns => supervisor::start_app(home, pod, bins)?,
            Mode::Loopback => loopback::start_app(home, pod, bins)?,
        };
        pod.app_pid = Some(app.id());
        children.push(app);
    }
    let proxy = match mode {
        Mode::Netns if pod.plan.sidecar => Some(supervisor::start_proxy(home, pod, bins)?),
        Mode::Netns => None,
        Mode::Loopback => Some(loopback::start_proxy(home, pod, bins)?),
    };
    if let Some(proxy) = proxy {
        pod.proxy_pid = Some(proxy.id());
        children.push(proxy);
    }
    Ok(children)
}

/// Waits until `pod` is ready (`app`: check its container ports too).
pub(crate) fn wait_ready(
    pod: &PodState,
    bins: &Binaries,
    app: bool,
    mode: Mode,
) -> Result<(), String> {
    match mode {
        Mode::Netns => supervisor::wait_ready(pod, bins, app, READY_TIMEOUT),
        Mode::Loopback => loopback::wait_ready(pod, bins, app, READY_TIMEOUT),
    }
}

/// What `down` found and removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    /// Network namespaces.
    pub(crate) namespaces: usize,
    /// Processes.
    pub(crate) processes: usize,
    /// Links (veths and the bridge).
    pub(crate) links: usize,
    /// Host iptables rules.
    pub(crate) rules: usize,
}

/// Removes everything meshward may have created: the pods of `state`, and any `mw` namespace,
/// link, `/etc/netns/mw-*` directory or `meshward` host rule left by a crash; then the runtime
/// files (the CA stays). A loopback-mode mesh has only processes to stop ([`loopback::sweep`]).
pub(crate) fn sweep(home: &Home, state: Option<&MeshState>) -> anyhow::Result<Removed> {
    if state.is_some_and(|s| Mode::of(s) == Mode::Loopback) {
        return Ok(Removed {
            processes: loopback::sweep(home)?,
            ..Removed::default()
        });
    }
    let mut removed = Removed {
        // Processes of a loopback mesh whose state.json is gone.
        processes: ledger::sweep(home, STOP_GRACE),
        ..Removed::default()
    };
    let existing: BTreeSet<String> = netns::list_netns().into_iter().collect();
    // Namespace → host veth (unknown for namespaces found only by the sweep).
    let mut namespaces: BTreeMap<String, String> = existing
        .iter()
        .map(|n| (n.clone(), String::new()))
        .collect();
    if let Some(state) = state {
        if let Some(pid) = state
            .control_plane_pid
            .filter(|pid| super::state::alive(*pid))
        {
            supervisor::terminate_pids(&[pid], STOP_GRACE);
            removed.processes += 1;
        }
        for pod in &state.pods {
            // Recorded pids are only signalled while their namespace still exists, so a pid
            // reused by an unrelated process after a reboot is never touched.
            if existing.contains(&pod.netns) {
                let pids: Vec<u32> = [pod.app_pid, pod.proxy_pid].into_iter().flatten().collect();
                supervisor::terminate_pids(&pids, STOP_GRACE);
            }
            namespaces.insert(pod.netns.clone(), pod.veth.clone());
        }
    }
    for (ns, veth) in &namespaces {
        removed.processes += delete_pod(ns, veth);
        if existing.contains(ns) {
            removed.namespaces += 1;
        }
    }
    for link in netns::list_links() {
        let _ = netns::run("ip", &["link", "del", &link]);
        removed.links += 1;
    }
    removed.rules = netns::list_host_rules().len();
    netns::delete_host_rules();
    for dir in hosts::list() {
        let _ = std::fs::remove_dir_all(dir);
    }
    home.remove_runtime_files()?;
    Ok(removed)
}
