//! The processes of a pod in netns mode (loopback mode's are in [`super::loopback`]), started
//! inside its namespace with `ip netns exec` (which execs the command, so the child's pid is the
//! process's own):
//!
//! - the app: the `meshward.dev/run` command under `sh -c`, or the built-in echo app, as root
//!   (its traffic is captured like any application's), with `APP_HOST=0.0.0.0`, `PORT` (the
//!   first container port), `PORTS` (all of them), `POD_IP`, `POD_NAME`, `POD_NAMESPACE` and
//!   `SERVICE_ACCOUNT` in its environment;
//! - the proxy (`meshward-proxy`), as uid/gid 1337 through `setpriv`, which is what exempts its
//!   own traffic from capture. It keeps one ambient capability, `CAP_DAC_READ_SEARCH`, so it can
//!   read the mesh CA and configuration under the (root-owned, often 0700) mesh home, as Istio's
//!   proxy reads mounted secrets; it can write nothing there.
//!
//! Output goes to `logs/<ns>/<pod>/{app,proxy}.log`. Readiness is checked from inside the
//! namespace by the hidden `meshward probe` (the proxy's `/ready` on its loopback admin port,
//! and every container port accepting connections). Stopping is SIGTERM, a grace period, then
//! SIGKILL.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::capture::{ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT, PROXY_UID};
use super::state::{Home, PodState, StateError, alive};

/// A process could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SuperviseError {
    /// A binary is missing.
    #[error(
        "cannot find `meshward-proxy` next to {exe} or on PATH: build it (cargo build -p meshward-proxy) or set MESHWARD_PROXY"
    )]
    NoProxy {
        /// This executable.
        exe: String,
    },
    /// Spawning failed.
    #[error("pod {pod}: cannot start the {container}: {source}")]
    Spawn {
        /// `ns/name`.
        pod: String,
        /// `app` or `proxy`.
        container: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be opened.
    #[error("{path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control plane gave no bootstrap token.
    #[error("pod {pod}: {reason}")]
    Token {
        /// `ns/name`.
        pod: String,
        /// Why.
        reason: String,
    },
    /// This executable's path is unknown.
    #[error("cannot find the meshward executable: {0}")]
    SelfExe(std::io::Error),
    /// The process ledger (loopback mode) could not be written.
    #[error("cannot record the process: {0}")]
    Ledger(#[source] StateError),
}

/// The binaries pods run.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    /// `meshward` (the echo app, the probe).
    pub(crate) meshward: PathBuf,
    /// `meshward-proxy`.
    pub(crate) proxy: PathBuf,
}

impl Binaries {
    /// This executable, and `meshward-proxy` from `$MESHWARD_PROXY`, beside this executable
    /// (also one directory up, where cargo puts binaries next to `deps/` test executables), or
    /// on PATH.
    pub(crate) fn find() -> Result<Self, SuperviseError> {
        let meshward = std::env::current_exe().map_err(SuperviseError::SelfExe)?;
        let proxy = std::env::var_os("MESHWARD_PROXY")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| {
                let dir = meshward.parent()?;
                [dir.join("meshward-proxy"), dir.join("../meshward-proxy")]
                    .into_iter()
                    .find(|p| p.is_file())
            })
            .or_else(|| {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join("meshward-proxy"))
                        .find(|p| p.is_file())
                })
            })
            .ok_or_else(|| SuperviseError::NoProxy {
                exe: meshward.display().to_string(),
            })?;
        Ok(Self { meshward, proxy })
    }
}

pub(crate) fn log_file(path: &Path) -> Result<(File, File), SuperviseError> {
    let err = |source| SuperviseError::Log {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let copy = file.try_clone().map_err(err)?;
    Ok((file, copy))
}

/// Starts the app of `pod`.
pub(crate) fn start_app(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
) -> Result<Child, SuperviseError> {
    let p = &pod.plan;
    let (out, err) = log_file(&home.pod_log(&p.namespace, &p.name, "app"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.netns]);
    match &p.run {
        Some(run) => {
            cmd.args(["sh", "-c", run]);
        }
        None => {
            cmd.arg(&bins.meshward)
                .args(["echo", "--pod", &p.key()])
                .args(
                    p.ports()
                        .iter()
                        .flat_map(|port| ["--port".to_owned(), port.to_string()]),
                );
        }
    }
    // Where to listen, as loopback mode says it too (see `loopback`): anywhere in the pod's
    // namespace, on the declared ports.
    let ports: Vec<String> = p.ports().iter().map(u16::to_string).collect();
    if let Some(port) = ports.first() {
        cmd.env("PORT", port);
    }
    cmd.env("APP_HOST", "0.0.0.0")
        .env("PORTS", ports.join(" "))
        .env("POD_NAME", &p.name)
        .env("POD_NAMESPACE", &p.namespace)
        .env("POD_IP", p.ip.to_string())
        .env("SERVICE_ACCOUNT", &p.service_account)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C on `meshward up` reaches the supervisor, which stops
        // the pods in order, rather than every pod at once.
        .process_group(0);
    cmd.spawn().map_err(|source| SuperviseError::Spawn {
        pod: p.key(),
        container: "app",
        source,
    })
}

/// The proxy's command line. The control plane is not wired in yet: each proxy reads the
/// generated configuration directory (`config`) and issues its own certificate from the mesh
/// CA. Switching to the control plane replaces `-f` and `--ca-dir` with `--control-plane`.
pub(crate) fn proxy_command(home: &Home, pod: &PodState, bins: &Binaries, token: &Path) -> Command {
    let p = &pod.plan;
    let uid = PROXY_UID.to_string();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.netns, "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args([
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            "--",
        ])
        .arg(&bins.proxy)
        .args(["--workload", &p.key()])
        .arg("--control-plane")
        .arg(super::control::grpc_address())
        .arg("--ca-root")
        .arg(super::control::root_certificate(home))
        .arg("--token-file")
        .arg(token)
        .arg("--inbound-capture")
        .arg(format!("0.0.0.0:{INBOUND_PORT}"))
        .arg("--outbound-capture")
        .arg(format!("0.0.0.0:{OUTBOUND_PORT}"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{ADMIN_PORT}"))
        // Log files, not a terminal: no colour codes.
        .env("NO_COLOR", "1");
    cmd
}

/// A bootstrap token from the control plane for `pod`'s sidecar (both mesh modes), in a file the
/// proxy reads once to get its first certificate.
pub(crate) fn sidecar_token(home: &Home, pod: &PodState) -> Result<PathBuf, SuperviseError> {
    super::control::bootstrap_token(home, pod).map_err(|e| SuperviseError::Token {
        pod: pod.plan.key(),
        reason: format!("{e:#}"),
    })
}

/// Starts the proxy of `pod`.
pub(crate) fn start_proxy(
    home: &Home,
    pod: &PodState,
    bins: &Binaries,
) -> Result<Child, SuperviseError> {
    let p = &pod.plan;
    let (out, err) = log_file(&home.pod_log(&p.namespace, &p.name, "proxy"))?;
    let token = sidecar_token(home, pod)?;
    let mut cmd = proxy_command(home, pod, bins, &token);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    cmd.spawn().map_err(|source| SuperviseError::Spawn {
        pod: p.key(),
        container: "proxy",
        source,
    })
}

/// The readiness probe of `pod`: `meshward probe` inside its namespace. `app` says whether to
/// check the container ports (one-off pods have no app until their command runs).
pub(crate) fn probe_command(
    pod: &PodState,
    bins: &Binaries,
    app: bool,
    timeout: Duration,
) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &pod.netns])
        .arg(&bins.meshward)
        .args(["probe", "--timeout-secs", &timeout.as_secs().to_string()]);
    if app {
        for port in pod.plan.ports() {
            cmd.args(["--tcp", &format!("127.0.0.1:{port}")]);
        }
    }
    if pod.plan.sidecar {
        cmd.args(["--ready", &format!("127.0.0.1:{ADMIN_PORT}")]);
    }
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
    run_probe(pod, probe_command(pod, bins, app, timeout))
}

/// Runs a readiness probe `command` for `pod` (either mode's [`probe_command`]) to its end.
pub(crate) fn run_probe(pod: &PodState, mut command: Command) -> Result<(), String> {
    let out = command.output().map_err(|e| {
        format!(
            "pod {}: cannot run the readiness probe: {e}",
            pod.plan.key()
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pod {} did not become ready: {}",
            pod.plan.key(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `meshward probe`: succeeds once every `tcp` address accepts a connection and every `ready`
/// admin address answers `GET /ready` with 200; fails after `timeout` naming what was not
/// ready.
pub(crate) fn probe_main(tcp: &[SocketAddr], ready: &[SocketAddr], timeout: Duration) -> ExitCode {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        pending.clear();
        for addr in tcp {
            if TcpStream::connect_timeout(addr, Duration::from_millis(500)).is_err() {
                pending.push(format!("nothing listens on {addr}"));
            }
        }
        for addr in ready {
            if !http_ready(*addr) {
                pending.push(format!("proxy at {addr} is not ready (GET /ready)"));
            }
        }
        if pending.is_empty() {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{}", pending.join("; "));
    ExitCode::FAILURE
}

fn http_ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    let head = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
    head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
}

/// Sends `signal` to `pid`, ignoring processes that are gone.
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// SIGTERM to each pid, then SIGKILL to those still alive after `grace`.
pub(crate) fn terminate_pids(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids {
        if alive(pid) {
            signal(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Stops children (SIGTERM, grace, SIGKILL) and reaps them.
pub(crate) fn stop_children(children: &mut [Child], grace: Duration) {
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    for &pid in &pids {
        signal(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    for child in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}
