//! The two ways the local mesh runs, and how `up` picks one:
//!
//! - **netns** (root on Linux with `ip`, `iptables`, `setpriv`): each pod is a network namespace
//!   on a bridge, with Istio's iptables capture — the faithful mode;
//! - **loopback** (anyone, see [`super::loopback`]): each pod is a 127.x address, clients use
//!   their pod's sidecar as an HTTP proxy — less faithful, always available.
//!
//! `up` takes netns mode when it can and loopback mode otherwise, and says why; `--mode`
//! forces one. The mode is recorded in `state.json`, and every other command follows it.

use anyhow::bail;

use super::netns;
use super::state::MeshState;

/// How the local mesh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Network namespaces, a bridge and iptables capture (root on Linux).
    Netns,
    /// 127.x addresses and explicit proxies (no privileges).
    Loopback,
}

impl Mode {
    /// The name recorded in `state.json`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Netns => "netns",
            Mode::Loopback => "loopback",
        }
    }

    /// The mode of a running mesh (a state without one known is netns: it predates loopback
    /// mode).
    pub(crate) fn of(state: &MeshState) -> Self {
        if state.mode == Mode::Loopback.as_str() {
            Mode::Loopback
        } else {
            Mode::Netns
        }
    }

    /// The mode for `up`: `forced`, else netns when this machine allows it, else loopback; with
    /// the reason, for the progress output. A forced mode this machine cannot run is an error
    /// saying what is missing.
    pub(crate) fn choose(forced: Option<Mode>) -> anyhow::Result<(Mode, String)> {
        match forced {
            Some(Mode::Netns) => {
                if let Some(why) = netns_unavailable() {
                    bail!("netns mode {why}");
                }
                Ok((Mode::Netns, "--mode netns".to_owned()))
            }
            Some(Mode::Loopback) => {
                super::loopback::preflight()?;
                Ok((Mode::Loopback, "--mode loopback".to_owned()))
            }
            None => match netns_unavailable() {
                None => Ok((
                    Mode::Netns,
                    "root on Linux with iproute2, iptables and setpriv".to_owned(),
                )),
                Some(why) => {
                    super::loopback::preflight()?;
                    Ok((Mode::Loopback, format!("netns mode {why}")))
                }
            },
        }
    }
}

/// Why netns mode cannot run on this machine (`needs …`, to follow "netns mode"), `None`
/// when it can.
pub(crate) fn netns_unavailable() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("needs Linux".to_owned());
    }
    if !rustix::process::geteuid().is_root() {
        return Some("needs root, and this user is not root".to_owned());
    }
    let missing = netns::missing_tools();
    if !missing.is_empty() {
        return Some(format!(
            "needs {} (Debian: apt-get install iproute2 iptables util-linux)",
            missing.join(", ")
        ));
    }
    None
}
