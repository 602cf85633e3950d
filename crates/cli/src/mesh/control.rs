//! The local mesh's control plane: `meshward control-plane` as a process in the host's network
//! namespace, serving the pods on the bridge address, or on 127.0.0.1 in loopback mode (the CA
//! and the configuration stream, as istiod's 15012) and the CLI on loopback (the admin API that `apply`, `get` and `delete` use).
//! It watches the mesh's generated configuration (`up`'s resources and the inventory of pods and
//! services, as two sources), so pods added by `meshward run` reach it like any change. Each sidecar gets a bootstrap token for its service account from the
//! admin API, as Kubernetes gives a pod its service-account token; the proxy trades it for its
//! first certificate and then renews through the CA.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::plan::BRIDGE_IP;
use super::state::{Home, PodState};
use super::supervisor::{Binaries, log_file};
use crate::commands::control_api::{ControlPlaneUrl, DEFAULT_CONTROL_PLANE};

/// The gRPC port (CA and configuration stream) on the bridge.
pub(crate) const GRPC_PORT: u16 = 15012;
/// How long the control plane may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Set once this process serves a loopback-mode mesh (see [`serve_loopback`]).
static LOOPBACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes this process's control plane serve the pods on 127.0.0.1 instead of the bridge: in
/// loopback mode there is no bridge, and pods are processes on the host. A process runs one
/// mesh, so the supervisor of a loopback mesh says so once, before [`start`], and every later
/// restart follows.
pub(crate) fn serve_loopback() {
    LOOPBACK.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Where pods reach the control plane: the bridge address in netns mode, 127.0.0.1 in loopback
/// mode (both on istiod's port 15012).
pub(crate) fn grpc_address() -> String {
    if LOOPBACK.load(std::sync::atomic::Ordering::SeqCst) {
        format!("127.0.0.1:{GRPC_PORT}")
    } else {
        format!("{BRIDGE_IP}:{GRPC_PORT}")
    }
}

/// The admin API, as the CLI's default `--control-plane` expects it.
pub(crate) fn admin() -> ControlPlaneUrl {
    ControlPlaneUrl {
        url: DEFAULT_CONTROL_PLANE.to_owned(),
    }
}

/// The admin API's `host:port`.
fn admin_address() -> &'static str {
    DEFAULT_CONTROL_PLANE.trim_start_matches("http://")
}

/// The generated resources of `up`'s manifests (written by `config`).
pub(crate) fn resources_file(home: &Home) -> PathBuf {
    home.config_dir().join("resources.json")
}

/// The generated pods and services (written by `config`, rewritten by `meshward run`).
pub(crate) fn inventory_file(home: &Home) -> PathBuf {
    home.config_dir().join("inventory.json")
}

/// The root certificate proxies check the control plane's certificate against.
pub(crate) fn root_certificate(home: &Home) -> PathBuf {
    home.ca_dir().join("root-cert.pem")
}

/// Starts the control plane (the bridge must exist) and waits until its admin API answers.
///
/// It records its store in [`Home::store_dir`] (`--state-dir`): every change it accepts, from
/// the generated files or `meshward apply|delete`, is on disk before it is acknowledged. A
/// `restarted` control plane restores that store before it serves any proxy, so no proxy ever
/// sees a configuration without what was applied to the one before it, however it died. A first
/// start (`up`) begins from an empty store: a new mesh never inherits an earlier one's.
pub(crate) fn start(home: &Home, bins: &Binaries, restarted: bool) -> anyhow::Result<Child> {
    let log = home.logs_dir().join("control-plane.log");
    let (out, err) = log_file(&log)?;
    let state_dir = home.store_dir();
    if !restarted {
        match std::fs::remove_dir_all(&state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| state_dir.display().to_string()),
        }
    }
    let mut cmd = Command::new(&bins.meshward);
    // The generated resources and the inventory are two sources: `meshward run` rewrites the
    // inventory alone. A reload writes only what its file changed, so neither undoes what
    // `meshward apply|delete` did to the other's resources (or its own).
    cmd.arg("control-plane")
        .arg("-f")
        .arg(resources_file(home))
        .arg(inventory_file(home))
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--local-mesh");
    // `describe` then names the files given to `up` (where unchanged), not the generated copy.
    let manifests = home.read().ok().flatten().map(|s| s.manifests);
    if let Some(manifests) = manifests.filter(|m| !m.is_empty()) {
        cmd.arg("--origins-from").args(manifests);
    }
    cmd.arg("--listen")
        .arg(grpc_address())
        .arg("--admin")
        .arg(admin_address())
        .arg("--ca-dir")
        .arg(home.ca_dir())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = cmd.spawn().context("cannot start the control plane")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if admin().get("/api/v1/status").is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the control plane exited ({status}); see {}", log.display());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the control plane did not answer on {} within {}s; see {}",
                admin_address(),
                START_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Obtains a bootstrap token for `pod`'s service account and writes it where only root (and
/// the proxy, through its read capability) can read it; returns the file.
pub(crate) fn bootstrap_token(home: &Home, pod: &PodState) -> anyhow::Result<PathBuf> {
    let p = &pod.plan;
    let answer = admin().request(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"namespace": p.namespace, "serviceAccount": p.service_account})),
    )?;
    let token = answer
        .body
        .get("token")
        .and_then(|t| t.as_str())
        .filter(|_| (200..300).contains(&answer.status))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pod {}: no bootstrap token: {}",
                p.key(),
                crate::commands::control_api::error_text(&answer)
            )
        })?;
    let path = home.token_file(&p.namespace, &p.name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| path.display().to_string())?;
    std::io::Write::write_all(&mut file, token.as_bytes())
        .with_context(|| path.display().to_string())?;
    Ok(path)
}
