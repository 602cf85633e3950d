//! Loopback mode: the local mesh for users without root. No network namespaces, no iptables:
//! every pod is a set of ordinary processes of the user, told where to listen.
//!
//! **Addresses.** Each pod gets its own address in 127.100.0.0/16 (allocated like netns mode's
//! pod IPs: 127.100.0.1, .2, …), which the whole 127.0.0.0/8 on Linux's `lo` answers without
//! any setup. A pod with a sidecar has its application on a second address, the same host part
//! in 127.101.0.0/16, so that the sidecar can own `POD_IP:port` and forward to `APP_IP:port`
//! (as a sidecar owns the pod's interface and reaches the app on localhost). A pod without a
//! sidecar serves on its pod address itself. Services keep their VIPs (10.96.0.0/16) as names
//! for the proxies; nothing routes them.
//!
//! **Ports.** An unprivileged user cannot bind ports below 1024
//! (`net.ipv4.ip_unprivileged_port_start`), and manifests often declare port 80. One rule,
//! whoever runs the mesh: every port below 1024 is served and dialled on the wire at
//! port + 10000 ([`PORT_SHIFT`]; 80 → 10080), by the application, the sidecar's inbound listener,
//! the sidecars' and forwarders' connections to mesh endpoints. Everything else — Services,
//! PeerAuthentication `portLevelMtls`, AuthorizationPolicy `ports`, access logs — sees the
//! declared port. A pod that declares both `p` and `p + 10000` is refused, and so is one that
//! declares 15000 or 15080, which its proxy uses on the pod's address.
//!
//! **Processes of a pod** (in their own process groups, recorded in the [`ledger`]):
//!
//! - the app: the `meshward.dev/run` command under `sh -c`, or the built-in echo app, with
//!   `APP_HOST` (where to listen: the app address, or the pod address without a sidecar),
//!   `PORT` (the first container port, on the wire) and `PORTS` (all of them, space-separated),
//!   `POD_IP`, `POD_NAME`, `POD_NAMESPACE`, `SERVICE_ACCOUNT`, and `http_proxy` pointing at its
//!   pod's proxy. A `meshward.dev/run` command must listen on `$APP_HOST:$PORT` — `0.0.0.0`
//!   would take the port from every other pod and from its own sidecar;
//! - with a sidecar: `meshward-proxy` against the control plane on 127.0.0.1:15012, with
//!   per-port inbound listeners on the pod address (`--inbound-ip`), the app address
//!   (`--app-host`), an explicit HTTP proxy on `POD_IP:15080` (`--http-proxy`), outbound
//!   connections bound to the pod address (`--outbound-bind`, so policies see the real source)
//!   and `--port-shift 10000`; its admin endpoint on `POD_IP:15000`;
//! - without a sidecar: `meshward-proxy --plain-forwarder` on `POD_IP:15080` (admin on
//!   `POD_IP:15000`): it resolves service names from the generated inventory and sends
//!   plaintext from the pod address, as the pod would through kube-proxy; when the destination
//!   refuses plaintext (STRICT) the client's connection is reset, as in netns mode.
//!
//! **Clients.** `meshward exec` and `meshward run` run the command as the invoking user with
//! `http_proxy`, `HTTP_PROXY`, `https_proxy` and `HTTPS_PROXY` set to `http://POD_IP:15080`,
//! `no_proxy` removed, and `POD_IP`, `POD_NAME`, `POD_NAMESPACE`: `curl http://backend/`
//! reaches the service through the pod's sidecar (or forwarder), which resolves the name as
//! Kubernetes DNS would.
//!
//! **Less faithful than netns mode.** Nothing is captured: a client that ignores `http_proxy`
//! reaches no service name, and one that dials a pod address directly bypasses its own
//! sidecar (the destination's sidecar still enforces everything). Every local user can reach
//! the pods' addresses and admin endpoints. The forwarders read services from the generated
//! inventory, so a Service added by `meshward apply` is known to sidecars only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::capture::ADMIN_PORT;
use super::control;
use super::ledger::{self, Group};
use super::plan::{PlanError, PodPlan};
use super::runtime::STOP_GRACE;
use super::state::{Home, PodState};
use super::supervisor::{self, Binaries, SuperviseError, log_file};

/// The pod network.
pub(crate) const POD_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(127, 100, 0, 0), 16);
/// The applications' network (same host part as the pod).
const APP_NET: Ipv4Addr = Ipv4Addr::new(127, 101, 0, 0);
/// Ports below 1024 are served and dialled at port + this.
pub(crate) const PORT_SHIFT: u16 = 10_000;
/// The proxy's explicit HTTP proxy on the pod address.
pub(crate) const HTTP_PROXY_PORT: u16 = 15080;
/// Ports the proxy uses on the pod address.
const PROXY_PORTS: [(u16, &str); 2] = [
    (ADMIN_PORT, "the proxy's admin port"),
    (HTTP_PROXY_PORT, "the proxy's explicit HTTP proxy"),
];
/// The variables that point HTTP clients at a proxy.
const PROXY_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"];

/// The port a container port is served at on the wire (see the module docs).
pub(crate) fn wire_port(port: u16) -> u16 {
    if port != 0 && port < 1024 {
        port + PORT_SHIFT
    } else {
        port
    }
}

/// The application address of the pod at `pod_ip`.
pub(crate) fn app_ip(pod_ip: Ipv4Addr) -> Ipv4Addr {
    let [_, _, c, d] = pod_ip.octets();
    let [a, b, _, _] = APP_NET.octets();
    Ipv4Addr::new(a, b, c, d)
}

/// Where a pod's application listens: its app address behind a sidecar, else its pod address.
pub(crate) fn app_host(pod: &PodPlan) -> Ipv4Addr {
    if pod.sidecar { app_ip(pod.ip) } else { pod.ip }
}

/// The pod's explicit HTTP proxy (its sidecar or its plain forwarder).
pub(crate) fn http_proxy(pod_ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((pod_ip, HTTP_PROXY_PORT))
}

/// The pod's proxy admin endpoint.
pub(crate) fn admin(pod_ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((pod_ip, ADMIN_PORT))
}

/// Where pods reach the control plane (see [`control::serve_loopback`]).
pub(crate) fn control_plane() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, control::GRPC_PORT))
}

/// Whether `pod` belongs to a loopback-mode mesh (it has no network namespace).
pub(crate) fn is_loopback_pod(pod: &PodState) -> bool {
    pod.netns.is_empty()
}

/// Refuses pods whose ports cannot be served in loopback mode (see the module docs).
pub(crate) fn check_ports(pods: &[PodPlan]) -> Result<(), PlanError> {
    for pod in pods {
        let ports = pod.ports();
        for &port in &ports {
            let twin = wire_port(port);
            if twin != port && ports.contains(&twin) {
                return Err(PlanError::ShiftedPortTaken {
                    pod: pod.key(),
                    port,
                    twin,
                    offset: PORT_SHIFT,
                });
            }
            if let Some((_, used_by)) = PROXY_PORTS.iter().find(|(p, _)| *p == wire_port(port)) {
                return Err(PlanError::ProxyPortTaken {
                    pod: pod.key(),
                    port,
                    used_by,
                });
            }
        }
    }
    Ok(())
}

/// Checks that this machine gives loopback mode its addresses (Linux answers all of
/// 127.0.0.0/8; other systems need aliases).
pub(crate) fn preflight() -> anyhow::Result<()> {
    for ip in [
        Ipv4Addr::new(127, 100, 0, 1),
        app_ip(Ipv4Addr::new(127, 100, 0, 1)),
    ] {
        std::net::TcpListener::bind((ip, 0)).with_context(|| {
            format!(
                "loopback mode needs the addresses 127.100.0.0/16 and 127.101.0.0/16, but {ip} cannot be bound (Linux has all of 127.0.0.0/8 on `lo`; elsewhere add aliases)"
            )
        })?;
    }
    Ok(())
}

/// Sets what a pod's app, or a command run as the pod, needs to know about it.
fn pod_env(cmd: &mut Command, p: &PodPlan) {
    cmd.env("POD_NAME", &p.name)
        .env("POD_NAMESPACE", &p.namespace)
        .env("POD_IP", p.ip.to_string())
        .env("SERVICE_ACCOUNT", &p.service_account);
}

/// Points HTTP clients at the pod's proxy (see the module docs).
fn proxy_env(cmd: &mut Command, pod_ip: Ipv4Addr) {
    let url = format!("http://{}", http_proxy(pod_ip));
    for var in PROXY_VARIABLES {
        cmd.env(var, &url);
    }
    cmd.env_remove("no_proxy").env_remove("NO_PROXY");
}

/// A command run as the pod `pod` by `meshward exec` or `meshward run`: as the invoking user,
/// with the pod's proxy and identity in its environment. `through_proxy` false leaves the
/// proxy variables out (`exec -c proxy`: the proxy's own view, not sent through it).
pub(crate) fn client_command(pod: &PodPlan, command: &[String], through_proxy: bool) -> Command {
    let (program, args) = command
        .split_first()
        .map_or(("true", &[][..]), |(p, a)| (p.as_str(), a));
    let mut cmd = Command::new(program);
    cmd.args(args);
    pod_env(&mut cmd, pod);
    if through_proxy {
        proxy_env(&mut cmd, pod.ip);
    }
    cmd
}

/// The mesh id to mark processes with (see [`ledger`]).
fn mesh_id(home: &Home) -> Result<String, SuperviseError> {
    ledger::begin(home).map_err(SuperviseError::Ledger)
}

/// Spawns `cmd` for `pod`'s `container`, logging to its log file, in a process group of its
/// own, marked and recorded as the mesh's.
fn spawn(
    home: &Home,
    pod: &PodPlan,
    container: &'static str,
    mut cmd: Command,
) -> Result<Child, SuperviseError> {
    let (out, err) = log_file(&home.pod_log(&pod.namespace, &pod.name, container))?;
    ledger::mark(&mut cmd, &mesh_id(home)?);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
        pod: pod.key(),
        container,
        source,
    })?;
    ledger::record(
        home,
        child.id(),
        &format!("{} {container}", pod.key()),
        Group::Own,
    )
    .map_err(SuperviseError::Ledger)?;
    Ok(child)
}

/// Starts the app of `pod` (see the module docs for its environment).
pub(crate) fn start_app(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
) -> Result<Child, SuperviseError> {
    let p = &pod.plan;
    let host = app_host(p);
    let ports: Vec<u16> = p.ports().into_iter().map(wire_port).collect();
    let mut cmd = match &p.run {
        Some(run) => {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", run]);
            cmd
        }
        None => {
            let mut cmd = Command::new(&bins.meshward);
            cmd.args(["echo", "--pod", &p.key(), "--host", &host.to_string()])
                .args(
                    ports
                        .iter()
                        .flat_map(|port| ["--port".to_owned(), port.to_string()]),
                );
            cmd
        }
    };
    pod_env(&mut cmd, p);
    proxy_env(&mut cmd, p.ip);
    cmd.env("APP_HOST", host.to_string()).env(
        "PORTS",
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    );
    match ports.first() {
        Some(port) => cmd.env("PORT", port.to_string()),
        None => cmd.env_remove("PORT"),
    };
    spawn(home, p, "app", cmd)
}

/// The sidecar's command line (see the module docs).
pub(crate) fn sidecar_command(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
    token: &Path,
) -> Command {
    let p = &pod.plan;
    let ip = p.ip.to_string();
    let mut cmd = Command::new(&bins.proxy);
    cmd.args(["--workload", &p.key()])
        .arg("--control-plane")
        .arg(control_plane().to_string())
        .arg("--ca-root")
        .arg(control::root_certificate(home))
        .arg("--token-file")
        .arg(token)
        .args(["--inbound-ip", &ip])
        .args(["--app-host", &app_ip(p.ip).to_string()])
        .args(["--http-proxy", &http_proxy(p.ip).to_string()])
        .args(["--outbound-bind", &ip])
        .args(["--port-shift", &PORT_SHIFT.to_string()])
        .args(["--admin", &admin(p.ip).to_string()])
        .env("NO_COLOR", "1");
    cmd
}

/// The plain forwarder's command line (see the module docs).
pub(crate) fn forwarder_command(home: &Home, pod: &PodState, bins: &Binaries) -> Command {
    let p = &pod.plan;
    let ip = p.ip.to_string();
    let mut cmd = Command::new(&bins.proxy);
    cmd.args(["--workload", &p.key(), "--plain-forwarder"])
        .arg("-f")
        .arg(control::resources_file(home))
        .arg(control::inventory_file(home))
        .args(["--http-proxy", &http_proxy(p.ip).to_string()])
        .args(["--outbound-bind", &ip])
        .args(["--port-shift", &PORT_SHIFT.to_string()])
        .args(["--admin", &admin(p.ip).to_string()])
        .env("NO_COLOR", "1");
    cmd
}

/// Starts `pod`'s sidecar, or its plain forwarder when it has none.
pub(crate) fn start_proxy(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
) -> Result<Child, SuperviseError> {
    let p = &pod.plan;
    let cmd = if p.sidecar {
        let token = supervisor::sidecar_token(home, pod)?;
        sidecar_command(home, pod, bins, &token)
    } else {
        forwarder_command(home, pod, bins)
    };
    spawn(home, p, "proxy", cmd)
}

/// The readiness probe of `pod`: every container port accepting connections where the app
/// listens (`app`: one-off pods have no app until their command runs), and its proxy's
/// `/ready`.
pub(crate) fn probe_command(
    pod: &PodState,
    bins: &Binaries,
    app: bool,
    timeout: Duration,
) -> Command {
    let p = &pod.plan;
    let mut cmd = Command::new(&bins.meshward);
    cmd.args(["probe", "--timeout-secs", &timeout.as_secs().to_string()]);
    if app {
        let host = IpAddr::V4(app_host(p));
        for port in p.ports() {
            cmd.args(["--tcp", &SocketAddr::new(host, wire_port(port)).to_string()]);
        }
    }
    cmd.args(["--ready", &admin(p.ip).to_string()]);
    cmd.stdin(Stdio::null());
    cmd
}

/// Waits until `pod` is ready (see [`probe_command`]).
pub(crate) fn wait_ready(
    pod: &PodState,
    bins: &Binaries,
    app: bool,
    timeout: Duration,
) -> Result<(), String> {
    supervisor::run_probe(pod, probe_command(pod, bins, app, timeout))
}

/// Stops every process the mesh can prove is its own (see [`ledger`]) and removes its
/// runtime files; returns how many processes were signalled. Nothing on the network to remove.
pub(crate) fn sweep(home: &Home) -> anyhow::Result<usize> {
    let stopped = ledger::sweep(home, STOP_GRACE);
    home.remove_runtime_files()?;
    Ok(stopped)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::mesh::plan::ContainerPlan;

    fn pod(ports: &[u16], sidecar: bool) -> PodPlan {
        PodPlan {
            namespace: "default".into(),
            name: "web-0".into(),
            deployment: None,
            service_account: "web".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            sidecar,
            containers: vec![ContainerPlan {
                name: "web".into(),
                ports: ports.to_vec(),
                port_names: BTreeMap::new(),
            }],
            run: None,
            ip: Ipv4Addr::new(127, 100, 1, 7),
        }
    }

    #[test]
    fn addresses_and_ports_follow_one_rule() {
        assert_eq!(
            app_ip(Ipv4Addr::new(127, 100, 1, 7)),
            Ipv4Addr::new(127, 101, 1, 7)
        );
        assert_eq!(app_host(&pod(&[80], true)), Ipv4Addr::new(127, 101, 1, 7));
        assert_eq!(app_host(&pod(&[80], false)), Ipv4Addr::new(127, 100, 1, 7));
        assert_eq!(wire_port(80), 10_080);
        assert_eq!(wire_port(1023), 11_023);
        assert_eq!(wire_port(1024), 1024);
        assert_eq!(wire_port(5678), 5678);
        assert_eq!(
            http_proxy(Ipv4Addr::new(127, 100, 0, 1)).to_string(),
            "127.100.0.1:15080"
        );
        assert_eq!(
            admin(Ipv4Addr::new(127, 100, 0, 1)).to_string(),
            "127.100.0.1:15000"
        );
    }

    #[test]
    fn ports_that_cannot_be_served_are_refused() {
        assert!(check_ports(&[pod(&[80, 8080, 5678], true)]).is_ok());
        let err = check_ports(&[pod(&[80, 10_080], true)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod default/web-0: container ports 80 and 10080 would share port 10080 in loopback mode, where ports below 1024 are served at port + 10000; change one of them or use netns mode"
        );
        let err = check_ports(&[pod(&[15080], false)]).unwrap_err();
        assert!(err.to_string().contains("explicit HTTP proxy"), "{err}");
        assert!(check_ports(&[pod(&[15000], true)]).is_err());
    }

    #[test]
    fn clients_go_through_their_pods_proxy() {
        let p = pod(&[80], true);
        let cmd = client_command(&p, &["curl".into(), "-s".into()], true);
        let env: BTreeMap<String, Option<String>> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(cmd.get_program(), "curl");
        assert_eq!(
            env["http_proxy"].as_deref(),
            Some("http://127.100.1.7:15080")
        );
        assert_eq!(
            env["HTTPS_PROXY"].as_deref(),
            Some("http://127.100.1.7:15080")
        );
        assert_eq!(env["no_proxy"], None, "no_proxy is removed");
        assert_eq!(env["POD_IP"].as_deref(), Some("127.100.1.7"));
        let direct = client_command(&p, &["env".into()], false);
        assert!(direct.get_envs().all(|(k, _)| k != "http_proxy"));
    }
}
