//! `meshward down`: stops the mesh and removes every namespace, link, rule, process and runtime
//! file it created. Works after a crash too: besides what state.json lists, it sweeps every
//! `mw-*` namespace and link, the `mw0` bridge, `/etc/netns/mw-*` and host iptables rules with
//! the `meshward` comment. The mesh CA (`~/.meshward/ca`) is kept for the next `up`, so
//! certificates and roots exported from it stay valid, unless `--purge` is given (as
//! `minikube delete --purge` removes its kept CA too).
//!
//! A loopback-mode mesh has nothing on the network: `down` needs no root, and stops exactly the
//! processes the mesh's ledger proves are its own (recorded pid and start time, or the mesh's
//! id in their environment; see `mesh::ledger`) — never a process that merely reuses a
//! recorded pid.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::mesh::ledger;
use crate::mesh::loopback;
use crate::mesh::mode::{Mode, netns_unavailable};
use crate::mesh::runtime::{self, Progress};
use crate::mesh::state::{Home, MeshState, alive};
use crate::mesh::supervisor;

/// `meshward down`.
#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    /// Also remove the mesh CA (`~/.meshward/ca`, its root key included) and then the mesh
    /// home: nothing of meshward is left on the machine. The next `up` creates a new root.
    #[arg(long)]
    purge: bool,
}

/// How long the supervisor gets to tear down on its own before `down` sweeps anyway.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(30);

/// `meshward down`.
pub(crate) fn run(args: &DownArgs) -> anyhow::Result<ExitCode> {
    let progress = Progress::new();
    let home = Home::from_env()?;
    let state = home.read()?;
    let mode = state.as_ref().map(Mode::of);
    match mode {
        Some(Mode::Netns) => super::up::preflight()?,
        Some(Mode::Loopback) => {}
        None => progress.step("no mesh state found; sweeping anything left by an earlier mesh"),
    }
    if let Some(state) = &state {
        stop_supervisor(&home, state, progress);
    }
    // The supervisor normally removed everything; what remains (a crash, a one-off pod of
    // `meshward run`) is swept here. Without a state, only a root user can sweep what a
    // netns mesh may have left, and anyone what a loopback mesh's ledger lists.
    let netns_sweep = match mode {
        Some(mode) => mode == Mode::Netns,
        None => netns_unavailable().is_none(),
    };
    if netns_sweep {
        let removed = runtime::sweep(&home, state.as_ref())?;
        progress.done(format!(
            "mesh removed (left over: {} namespaces, {} processes, {} links, {} host rules)",
            removed.namespaces, removed.processes, removed.links, removed.rules
        ));
    } else {
        let processes = loopback::sweep(&home)?;
        progress.done(format!(
            "mesh removed (left over: {processes} processes; loopback mode has nothing on the network)"
        ));
    }
    if args.purge {
        purge(&home, progress)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes the CA, then the mesh home if nothing else is in it. Only what meshward creates is
/// removed recursively: `MESHWARD_HOME` may name a folder that holds other things too.
fn purge(home: &Home, progress: Progress) -> anyhow::Result<()> {
    let ca = home.ca_dir();
    match std::fs::remove_dir_all(&ca) {
        Ok(()) => progress.step(format!("mesh CA removed ({})", ca.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot remove the mesh CA {}: {e}", ca.display()),
    }
    let root = home.root();
    match std::fs::remove_dir(root) {
        Ok(()) => progress.done(format!("purged: {} removed", root.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            progress.done("purged: nothing of meshward is left")
        }
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => progress.done(format!(
            "purged; {} kept: it holds files meshward did not create",
            root.display()
        )),
        Err(e) => anyhow::bail!("cannot remove {}: {e}", root.display()),
    }
    Ok(())
}

/// Asks the supervisor to tear down and waits for it (then kills it). In loopback mode it is
/// signalled only while the ledger proves it is the mesh's supervisor.
fn stop_supervisor(home: &Home, state: &MeshState, progress: Progress) {
    let pid = state.supervisor_pid;
    if pid == std::process::id() || !alive(pid) {
        return;
    }
    let ours = || match Mode::of(state) {
        Mode::Netns => alive(pid),
        Mode::Loopback => ledger::proves(home, pid),
    };
    if !ours() {
        progress.step(format!(
            "pid {pid} is not this mesh's supervisor any more (the pid was reused); left alone"
        ));
        return;
    }
    progress.step(format!("stopping the mesh supervisor (pid {pid})"));
    supervisor::signal(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + SUPERVISOR_GRACE;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Proven again before the kill: a loopback supervisor that removed its ledger is about to
    // exit on its own, and its pid may not be signalled once it could belong to anyone.
    if alive(pid) && ours() {
        progress.step(format!("supervisor {pid} did not stop in time: killing it"));
        supervisor::signal(pid, rustix::process::Signal::KILL);
    }
}
