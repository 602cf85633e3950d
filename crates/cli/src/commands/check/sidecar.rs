//! Whether the destination's sidecar enforces what `meshward check` computed on: a live answer
//! comes from the control plane's current configuration, and a sidecar that has not ACKed it
//! (STALE), refused it (NACKED) or lost its stream (DISCONNECTED) keeps enforcing an earlier one
//! (the last configuration it accepted), as an Envoy that `istioctl proxy-status` does not show
//! SYNCED does.
//!
//! The states are `meshward proxy-status`'s, read from the same `GET /api/v1/proxies` through
//! [`proxy_status::views`], so the two commands cannot disagree.

use meshward_policy::Mesh;
use serde::{Deserialize, Serialize};

use crate::commands::control_api::ControlPlaneUrl;
use crate::commands::proxy_status;

/// The sync state of the destination's sidecar.
#[derive(Debug, Serialize)]
pub(crate) struct SidecarSync {
    /// The destination workload, `ns/name`.
    pub(crate) workload: String,
    /// The worst state of its connected proxies.
    pub(crate) state: SyncState,
    /// Its proxies (one per pod address), as `meshward proxy-status` shows them.
    pub(crate) proxies: Vec<ProxySync>,
    /// Why the live proxy may enforce something else than this answer; `None` when SYNCED or
    /// when there is no sidecar.
    pub(crate) warning: Option<String>,
}

/// `proxy-status`'s configuration states, and what a workload without a live stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SyncState {
    /// The destination has no sidecar: nothing to sync, nothing enforced.
    NoSidecar,
    /// The proxy ACKed the last version sent.
    Synced,
    /// Nothing could be sent to it yet.
    Waiting,
    /// It has not answered the last version sent.
    Stale,
    /// It refused the last version sent, and keeps its previous configuration.
    Nacked,
    /// Its stream is closed.
    Disconnected,
    /// No proxy of the workload has connected to this control plane.
    NotConnected,
}

/// One proxy of the destination, as `proxy-status -o json` has it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProxySync {
    #[serde(default)]
    pod_address: String,
    /// `CONNECTED` or `DISCONNECTED`.
    status: String,
    config: SyncState,
    #[serde(default)]
    version_sent: Option<u64>,
    #[serde(default)]
    version_acked: Option<u64>,
    #[serde(default)]
    last_nack: Option<Nack>,
    #[serde(default)]
    waiting: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Nack {
    version: u64,
    error: String,
}

// === impl SidecarSync ===

impl SidecarSync {
    /// One phrase for the table.
    pub(crate) fn summary(&self) -> String {
        let w = &self.workload;
        match self.state {
            SyncState::NoSidecar => format!("{w} has no sidecar"),
            SyncState::NotConnected => format!("no sidecar of {w} is connected"),
            SyncState::Synced => format!("the sidecar of {w} is SYNCED"),
            SyncState::Waiting => format!("the sidecar of {w} is WAITING"),
            SyncState::Stale => format!("the sidecar of {w} is STALE"),
            SyncState::Nacked => format!("the sidecar of {w} is NACKED"),
            SyncState::Disconnected => format!("the sidecar of {w} is DISCONNECTED"),
        }
    }
}

/// The sync state of the sidecar(s) of `destination` (`ns/name`).
pub(crate) fn sidecar_sync(
    control_plane: &ControlPlaneUrl,
    mesh: &Mesh,
    destination: &str,
) -> anyhow::Result<SidecarSync> {
    let (namespace, name) = destination
        .split_once('/')
        .unwrap_or(("default", destination));
    let has_sidecar = mesh
        .inventory
        .workload(namespace, name)
        .is_some_and(|w| w.sidecar);
    if !has_sidecar {
        return Ok(judge(destination, false, Vec::new()));
    }
    let body = control_plane.get("/api/v1/proxies")?;
    let mut proxies: Vec<ProxySync> = Vec::new();
    for view in proxy_status::views(&body, Some(namespace))? {
        let value = serde_json::to_value(&view)?;
        if value["workload"] == name {
            proxies.push(serde_json::from_value(value)?);
        }
    }
    Ok(judge(destination, true, proxies))
}

/// The worst state among the connected proxies (a pod that moved leaves its old, closed stream
/// behind); DISCONNECTED when none is connected.
fn judge(destination: &str, has_sidecar: bool, proxies: Vec<ProxySync>) -> SidecarSync {
    let worst = proxies
        .iter()
        .filter(|p| p.status == "CONNECTED")
        .max_by_key(|p| p.config);
    let state = match (has_sidecar, proxies.is_empty(), worst) {
        (false, _, _) => SyncState::NoSidecar,
        (true, true, _) => SyncState::NotConnected,
        (true, false, None) => SyncState::Disconnected,
        (true, false, Some(p)) => p.config,
    };
    let d = destination;
    let warning = match state {
        SyncState::NoSidecar | SyncState::Synced => None,
        SyncState::NotConnected => Some(format!(
            "no sidecar of {d} is connected to the control plane: nothing shows that it enforces this configuration"
        )),
        SyncState::Disconnected => Some(format!(
            "the sidecar of {d} is DISCONNECTED from the control plane: it keeps enforcing the last configuration it accepted, which may not be this one"
        )),
        SyncState::Nacked => {
            let nack = worst.and_then(|p| p.last_nack.as_ref());
            Some(format!(
                "the sidecar of {d} is NACKED: it refused version {}{} and keeps enforcing its previous configuration, which may differ from this answer",
                nack.map_or(0, |n| n.version),
                nack.and_then(|n| n.error.lines().next())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ))
        }
        SyncState::Stale => Some(format!(
            "the sidecar of {d} is STALE: it has not ACKed version {} yet and may still enforce an older configuration than this answer",
            worst.and_then(|p| p.version_sent).unwrap_or_default()
        )),
        SyncState::Waiting => Some(format!(
            "the sidecar of {d} is WAITING: it has received no configuration yet{}",
            worst
                .and_then(|p| p.waiting.as_deref())
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        )),
    };
    SidecarSync {
        workload: destination.to_owned(),
        state,
        proxies,
        warning,
    }
}

#[cfg(test)]
mod tests;
