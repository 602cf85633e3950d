//! One document's pods: namespaces on the bridge (with the addresses the test declares), the
//! echo app and a sidecar per pod, a client namespace without sidecar for `principal` and
//! `plaintext` sources, and running the in-namespace client there. Built from the mesh module's
//! pieces: [`runtime::create_pod`] for the network, hosts file and capture rules,
//! [`supervisor`] for processes and readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::session::Session;
use super::wire::{Probe, ProbeResult};
use crate::mesh::capture::PROXY_UID;
use crate::mesh::netns;
use crate::mesh::plan::{Allocator, BRIDGE_IP, DeclaredPlan, POD_NET, PodPlan, SERVICE_NET};
use crate::mesh::runtime::{self, READY_TIMEOUT};
use crate::mesh::state::{MeshState, PodState};
use crate::mesh::supervisor;

/// The namespace and name of the client pod (no sidecar, never a workload of the test).
pub(crate) const CLIENT_NAMESPACE: &str = "meshward-live";
const CLIENT_POD: &str = "client";
/// Processes get this long between SIGTERM and SIGKILL: the namespace goes away anyway.
const STOP_GRACE: Duration = Duration::from_millis(300);

/// A document's running pods.
pub(crate) struct DocMesh {
    /// What runs (recorded in state.json); the client pod is last.
    pub(crate) state: MeshState,
    children: Vec<Child>,
    stopped: bool,
}

/// Where a probe is sent from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Spot {
    /// A workload's pod; `as_proxy` runs the client as the proxy's uid, whose traffic the
    /// capture rules leave alone (a plaintext or `principal` source using the pod's address).
    Pod { key: String, as_proxy: bool },
    /// The client pod.
    Outside,
}

impl DocMesh {
    /// Creates the pods of `declared` and the client pod holding `sources`, starts their apps
    /// and sidecars (trust domain `trust_domain`) and waits until all are ready.
    pub(crate) fn start(
        session: &mut Session,
        declared: &DeclaredPlan,
        sources: &BTreeSet<Ipv4Addr>,
        trust_domain: &str,
    ) -> anyhow::Result<Self> {
        let mut state = session.state();
        let mut ips = Allocator::pods();
        for p in &declared.plan.pods {
            ips.reserve(p.ip);
        }
        for s in sources {
            ips.reserve(*s);
        }
        let client = PodPlan {
            namespace: CLIENT_NAMESPACE.to_owned(),
            name: CLIENT_POD.to_owned(),
            deployment: None,
            service_account: "default".to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            sidecar: false,
            containers: Vec::new(),
            run: None,
            ip: ips.allocate()?,
        };
        for plan in declared.plan.pods.iter().chain(std::iter::once(&client)) {
            state.pods.push(PodState {
                netns: netns::netns_name(&plan.namespace, &plan.name),
                veth: netns::veth_name(session.next_link),
                plan: plan.clone(),
                proxy_pid: None,
                app_pid: None,
                ready: false,
                one_off: None,
            });
            session.next_link += 1;
        }
        state.services = declared.plan.services.clone();
        state.next_link = session.next_link;
        session.record(&state)?;
        let mut mesh = Self {
            state,
            children: Vec::new(),
            stopped: false,
        };
        // A pod that failed half-way must not stay: the next document reuses its names.
        if let Err(e) = mesh.bring_up(session, declared, sources, trust_domain) {
            mesh.stop(session);
            return Err(e);
        }
        Ok(mesh)
    }

    fn bring_up(
        &mut self,
        session: &Session,
        declared: &DeclaredPlan,
        sources: &BTreeSet<Ipv4Addr>,
        trust_domain: &str,
    ) -> anyhow::Result<()> {
        let mesh = self;
        for pod in &mesh.state.pods {
            runtime::create_pod(pod, &mesh.state)
                .with_context(|| format!("pod {}", pod.plan.key()))?;
        }
        mesh.add_addresses(&declared.extra_addresses, sources)?;
        let count = mesh.state.pods.len().saturating_sub(1);
        for i in 0..count {
            let Some(pod) = mesh.state.pods.get(i).cloned() else {
                continue;
            };
            let app = supervisor::start_app(&session.home, &pod, &session.bins)?;
            let app_pid = app.id();
            mesh.children.push(app);
            let proxy_pid = if pod.plan.sidecar {
                let proxy = start_proxy(session, &pod, trust_domain)?;
                let pid = proxy.id();
                mesh.children.push(proxy);
                Some(pid)
            } else {
                None
            };
            if let Some(p) = mesh.state.pods.get_mut(i) {
                p.app_pid = Some(app_pid);
                p.proxy_pid = proxy_pid;
            }
        }
        session.record(&mesh.state)?;
        let bins = &session.bins;
        let failures: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = mesh
                .state
                .pods
                .iter()
                .take(count)
                .map(|pod| {
                    scope.spawn(move || supervisor::wait_ready(pod, bins, true, READY_TIMEOUT))
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some("readiness probe thread failed".to_owned()),
                })
                .collect()
        });
        if !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }
        Ok(())
    }

    /// Declared addresses outside the pod range, and the client's source addresses. A pod
    /// holding a declared address X uses it as the source towards peers (its pod-range address
    /// is only for the control plane on the bridge), and every namespace reaches X on the link.
    /// Nothing here adds a route on the host: these addresses exist only between namespaces on
    /// the bridge.
    fn add_addresses(
        &self,
        extra: &BTreeMap<String, Ipv4Addr>,
        sources: &BTreeSet<Ipv4Addr>,
    ) -> anyhow::Result<()> {
        let pod_net = format!("{}/{}", POD_NET.0, POD_NET.1);
        let service_net = format!("{}/{}", SERVICE_NET.0, SERVICE_NET.1);
        let in_pod_range = |ip: &Ipv4Addr| Allocator::pods().contains(*ip);
        let foreign: BTreeSet<Ipv4Addr> = extra
            .values()
            .chain(sources.iter())
            .filter(|ip| !in_pod_range(ip))
            .copied()
            .collect();
        if foreign.is_empty() && sources.is_empty() {
            return Ok(());
        }
        let last = self.state.pods.len().saturating_sub(1);
        for (i, pod) in self.state.pods.iter().enumerate() {
            let mut owned: Vec<Ipv4Addr> = Vec::new();
            let mut lines = Vec::new();
            if let Some(x) = extra.get(&pod.plan.key()) {
                owned.push(*x);
                lines.push(format!("addr add {x}/32 dev eth0"));
                lines.push(format!("route replace {pod_net} dev eth0 src {x}"));
                lines.push(format!(
                    "route add {BRIDGE_IP}/32 dev eth0 src {}",
                    pod.plan.ip
                ));
                lines.push(format!(
                    "route replace {service_net} via {BRIDGE_IP} dev eth0 src {x}"
                ));
            }
            if i == last {
                for s in sources {
                    owned.push(*s);
                    lines.push(format!("addr add {s}/32 dev eth0"));
                }
            }
            // A pod with a declared address leaves from it towards everyone else too.
            let src = extra
                .get(&pod.plan.key())
                .map(|x| format!(" src {x}"))
                .unwrap_or_default();
            for f in foreign.iter().filter(|f| !owned.contains(f)) {
                lines.push(format!("route add {f}/32 dev eth0{src}"));
            }
            if lines.is_empty() {
                continue;
            }
            let mut input = lines.join("\n");
            input.push('\n');
            netns::run_with_input("ip", &["-n", &pod.netns, "-batch", "-"], Some(&input))
                .with_context(|| format!("addresses of pod {}", pod.plan.key()))?;
        }
        Ok(())
    }

    /// The pod `ns/name`.
    pub(crate) fn pod(&self, key: &str) -> Option<&PodState> {
        self.state.pods.iter().find(|p| p.plan.key() == key)
    }

    /// Runs `probes` from `spot` in one client process.
    pub(crate) fn run_probes(
        &self,
        session: &Session,
        spot: &Spot,
        probes: &[Probe],
    ) -> anyhow::Result<Vec<ProbeResult>> {
        let (netns, as_proxy) = match spot {
            Spot::Pod { key, as_proxy } => (
                self.pod(key)
                    .map(|p| p.netns.clone())
                    .ok_or_else(|| anyhow::anyhow!("no pod {key}"))?,
                *as_proxy,
            ),
            Spot::Outside => (
                self.state
                    .pods
                    .last()
                    .map(|p| p.netns.clone())
                    .ok_or_else(|| anyhow::anyhow!("no client pod"))?,
                false,
            ),
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns]);
        if as_proxy {
            let uid = PROXY_UID.to_string();
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--"]);
        }
        cmd.arg(&session.bins.meshward)
            .arg("live-client")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start the live client")?;
        let input = serde_json::to_vec(probes)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&input)
                .context("cannot hand the probes to the live client")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "the live client failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("the live client's answer is not valid")
    }

    /// Stops every process and removes the pods.
    pub(crate) fn stop(&mut self, session: &Session) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        supervisor::stop_children(&mut self.children, STOP_GRACE);
        for pod in &self.state.pods {
            runtime::delete_pod(&pod.netns, &pod.veth);
        }
        let _ = session.record(&session.state());
    }
}

/// Starts the sidecar of `pod` against the session's control plane, in the document's trust
/// domain.
fn start_proxy(session: &Session, pod: &PodState, trust_domain: &str) -> anyhow::Result<Child> {
    let p = &pod.plan;
    let token = session.token_file(&p.namespace, &p.name, &p.service_account)?;
    let (out, err) = supervisor::log_file(&session.home.pod_log(&p.namespace, &p.name, "proxy"))?;
    let mut cmd = supervisor::proxy_command(&session.home, pod, &session.bins, &token);
    cmd.arg("--trust-domain")
        .arg(trust_domain)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    cmd.spawn()
        .with_context(|| format!("pod {}: cannot start the proxy", p.key()))
}
