//! `meshward down`: stops the mesh and removes every namespace, link, rule, process and runtime
//! file it created. Works after a crash too: besides what state.json lists, it sweeps every
//! `mw-*` namespace and link, the `mw0` bridge, `/etc/netns/mw-*` and host iptables rules with
//! the `meshward` comment. The mesh CA (`~/.meshward/ca`) is kept for the next `up`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::mesh::runtime::{self, Progress};
use crate::mesh::state::{Home, alive};
use crate::mesh::supervisor;

/// `meshward down`.
#[derive(Debug, Args)]
pub(crate) struct DownArgs {}

/// How long the supervisor gets to tear down on its own before `down` sweeps anyway.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(30);

/// `meshward down`.
pub(crate) fn run(_args: &DownArgs) -> anyhow::Result<ExitCode> {
    super::up::preflight()?;
    let progress = Progress::new();
    let home = Home::from_env()?;
    let state = home.read()?;
    if let Some(state) = &state {
        let pid = state.supervisor_pid;
        if pid != std::process::id() && alive(pid) {
            progress.step(format!("stopping the mesh supervisor (pid {pid})"));
            supervisor::signal(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + SUPERVISOR_GRACE;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                progress.step(format!("supervisor {pid} did not stop in time: killing it"));
                supervisor::signal(pid, rustix::process::Signal::KILL);
            }
        }
    } else {
        progress.step("no mesh state found; sweeping anything left by an earlier mesh");
    }
    // The supervisor normally removed everything; what remains (a crash, a one-off pod of
    // `meshward run`) is swept here.
    let removed = runtime::sweep(&home, state.as_ref())?;
    progress.done(format!(
        "mesh removed (left over: {} namespaces, {} processes, {} links, {} host rules)",
        removed.namespaces, removed.processes, removed.links, removed.rules
    ));
    Ok(ExitCode::SUCCESS)
}
