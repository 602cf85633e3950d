//! `meshward up [-f FILE|DIR...] [-d] [--mode netns|loopback]`: starts a local mesh from
//! manifests — without `-f`, from the embedded default (seed 000's apps) — and keeps it running.
//!
//! In the foreground, `up` is the supervisor: it starts the pods, waits until all are ready,
//! then keeps them and the control plane running (restarting whatever exits, see
//! `mesh::restart`) until Ctrl-C or SIGTERM, and tears everything down. With `-d` it starts itself again
//! as a detached supervisor (`up --supervise`, in its own process group, output to
//! `logs/supervisor.log`) and returns once the supervisor reports every pod ready; the mesh then
//! runs until `meshward down`.
//!
//! The mode ([`Mode`]) is netns when this machine allows it (root on Linux with the tools),
//! otherwise loopback; the progress output says which and why, and `--mode` forces one.

use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use meshward_identity::CaDir;
use meshward_identity::KeyAlgorithm;

use crate::mesh::config;
use crate::mesh::control;
use crate::mesh::ledger::{self, Group};
use crate::mesh::loopback;
use crate::mesh::mode::Mode;
use crate::mesh::netns;
use crate::mesh::plan::{self, MeshPlan};
use crate::mesh::restart::Keeper;
use crate::mesh::runtime::{self, Progress, READY_TIMEOUT, STOP_GRACE};
use crate::mesh::state::{Home, MeshState, Phase, PodState, alive};
use crate::mesh::supervisor::{self, Binaries};

/// How often the supervisor looks at its processes.
const TICK: Duration = Duration::from_millis(200);

/// What to try on the embedded default (seed 000's frontend and backend), printed once it is ready.
const DEFAULT_NEXT_STEPS: &[&str] = &[
    "try: meshward exec deploy/frontend -- curl -s http://backend/   (mTLS, the echo names the caller's identity)",
    "then: meshward apply -f examples/seeds/000-frontend-backend-mtls-authz/01-peer-authentication.yaml (STRICT mTLS), 02-deny-all.yaml, 03-backend-allow-frontend.yaml",
    "and: meshward run intruder -- curl -s http://backend/   (403 RBAC: access denied)",
];

/// `meshward up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Manifests: files or folders (a folder's YAML/JSON files, not its subfolders). Without
    /// them, the embedded default: seed 000's frontend and backend.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    files: Vec<PathBuf>,
    /// Run in the background and return once every pod is ready.
    #[arg(short = 'd', long)]
    detach: bool,
    /// How pods run: `netns` (network namespaces and traffic capture; root on Linux) or
    /// `loopback` (127.x addresses, clients use their pod's sidecar as an HTTP proxy; no
    /// privileges). Default: netns when this machine allows it, else loopback.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Internal: this process is the detached supervisor.
    #[arg(long, hide = true)]
    supervise: bool,
}

/// Root, Linux and the tools netns mode needs; the error says what is missing.
pub(crate) fn preflight() -> anyhow::Result<()> {
    match crate::mesh::mode::netns_unavailable() {
        Some(why) => bail!("netns mode {why}"),
        None => Ok(()),
    }
}

/// What a command on the running mesh `state` needs: netns mode's preflight, or nothing for
/// loopback mode.
pub(crate) fn preflight_for(state: &MeshState) -> anyhow::Result<()> {
    match Mode::of(state) {
        Mode::Netns => preflight(),
        Mode::Loopback => Ok(()),
    }
}

/// Refuses to start a second mesh.
fn refuse_running(home: &Home) -> anyhow::Result<()> {
    if let Some(state) = home.read()? {
        if alive(state.supervisor_pid) {
            bail!(
                "a mesh is already running (supervisor pid {}); stop it with `meshward down`",
                state.supervisor_pid
            );
        }
        bail!(
            "a previous mesh was not cleaned up (its supervisor, pid {}, is gone); run `meshward down` first",
            state.supervisor_pid
        );
    }
    Ok(())
}

/// `meshward up`.
pub(crate) fn run(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let progress = Progress::new();
    let (mode, why) = Mode::choose(args.mode)?;
    let home = Home::from_env()?;
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .map(|f| std::fs::canonicalize(f).with_context(|| format!("cannot read `{}`", f.display())))
        .collect::<anyhow::Result<_>>()?;
    // Manifest errors are reported here, before anything is started.
    let resources = if files.is_empty() {
        plan::load_default()?
    } else {
        plan::load(&files)?
    };
    let plan = plan::plan_for(resources, mode)?;
    progress.step(format!("mode: {} ({why})", mode.as_str()));
    if files.is_empty() {
        progress.step(format!(
            "manifests: the embedded default, {}",
            plan::DEFAULT_MANIFEST_NAME
        ));
    }
    if args.detach && !args.supervise {
        refuse_running(&home)?;
        return detach(&home, &files, &plan, mode);
    }
    supervise(&home, &files, plan, mode, progress)
}

/// Starts the detached supervisor and follows its progress until the mesh is ready.
fn detach(home: &Home, files: &[PathBuf], plan: &MeshPlan, mode: Mode) -> anyhow::Result<ExitCode> {
    let progress = Progress::new();
    home.create()?;
    let log_path = home.supervisor_log();
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    // Kept open: if start-up fails, the supervisor removes its log with everything else, and
    // this handle still reads what it wrote.
    let mut reader = std::fs::File::open(&log_path)
        .with_context(|| format!("cannot read {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the meshward executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["up", "--supervise", "-d", "--mode", mode.as_str()]);
    if !files.is_empty() {
        cmd.arg("-f").args(files);
    }
    if mode == Mode::Loopback {
        // The supervisor and what it starts carry the mesh's id, so `down` can prove them ours.
        ledger::mark(&mut cmd, &ledger::begin(home)?);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start the mesh supervisor")?;
    progress.step(format!(
        "supervisor started (pid {}); starting {} pods, log: {}",
        child.id(),
        plan.pods.len(),
        log_path.display()
    ));
    let deadline = Instant::now() + READY_TIMEOUT + Duration::from_secs(30);
    let mut last_ready = usize::MAX;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut text = String::new();
            let _ = reader.rewind();
            let _ = reader.read_to_string(&mut text);
            eprint!("{text}");
            bail!("the mesh supervisor exited ({status}) before the mesh was ready");
        }
        if let Ok(Some(state)) = home.read()
            && state.supervisor_pid == child.id()
        {
            let ready = state.pods.iter().filter(|p| p.ready).count();
            if ready != last_ready && state.phase == Phase::Starting {
                progress.step(format!("pods ready: {ready}/{}", state.pods.len()));
                last_ready = ready;
            }
            if state.phase == Phase::Ready {
                progress.done(format!(
                    "mesh ready: {} pods, {} services (stop it with `meshward down`)",
                    state.pods.len(),
                    state.services.len()
                ));
                super::pods::print_table(&state, None);
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() > deadline {
            supervisor::signal(child.id(), rustix::process::Signal::TERM);
            let _ = child.wait();
            bail!("the mesh was not ready in time; see {}", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Signals that end the supervisor, watched on a small runtime of their own.
fn watch_signals() -> anyhow::Result<(tokio::runtime::Runtime, Arc<AtomicBool>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = ready_tx.send(false);
            return;
        };
        let _ = ready_tx.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        flag.store(true, Ordering::SeqCst);
    });
    if !ready_rx.recv().unwrap_or(false) {
        bail!("cannot install signal handlers");
    }
    Ok((rt, stop))
}

/// The supervisor: start, wait for a signal, tear down.
fn supervise(
    home: &Home,
    files: &[PathBuf],
    plan: MeshPlan,
    mode: Mode,
    progress: Progress,
) -> anyhow::Result<ExitCode> {
    let (_rt, stop) = watch_signals()?;
    let mut state = {
        let _lock = home.lock()?;
        refuse_running(home)?;
        let mut pods = Vec::new();
        for (n, p) in plan.pods.iter().enumerate() {
            // Loopback pods have no namespace and no link.
            let (netns, veth) = match mode {
                Mode::Netns => (
                    netns::netns_name(&p.namespace, &p.name),
                    netns::veth_name(u32::try_from(n).unwrap_or(u32::MAX)),
                ),
                Mode::Loopback => (String::new(), String::new()),
            };
            pods.push(PodState {
                netns,
                veth,
                plan: p.clone(),
                proxy_pid: None,
                app_pid: None,
                ready: false,
                one_off: None,
            });
        }
        let state = MeshState {
            mode: mode.as_str().to_owned(),
            supervisor_pid: std::process::id(),
            phase: Phase::Starting,
            manifests: files.to_vec(),
            next_link: u32::try_from(pods.len()).unwrap_or(u32::MAX),
            pods,
            services: plan.services.clone(),
            control_plane_pid: None,
            control_plane_restarts: 0,
            restarts: Default::default(),
        };
        home.write(&state)?;
        state
    };
    if mode == Mode::Loopback {
        control::serve_loopback();
        ledger::begin(home)?;
        ledger::record(home, std::process::id(), "supervisor", Group::Shared)?;
    }
    let mut children: Vec<Child> = Vec::new();
    let started = start(home, &plan, &mut state, &mut children, &stop, progress);
    let bins = match started {
        Ok(bins) => bins,
        Err(e) => {
            let message = format!("{e:#}");
            let _ = home.update(|s| s.phase = Phase::Failed(message.clone()));
            eprintln!("error: {message}");
            progress.step("tearing down");
            supervisor::stop_children(&mut children, STOP_GRACE);
            let current = home.read().ok().flatten();
            let _ = runtime::sweep(home, current.as_ref().or(Some(&state)));
            return Ok(ExitCode::FAILURE);
        }
    };
    home.update(|s| s.phase = Phase::Ready)?;
    progress.done(format!(
        "mesh ready: {} pods, {} services",
        state.pods.len(),
        state.services.len()
    ));
    if files.is_empty() {
        // The embedded default is seed 000's apps: point at the tutorial's next steps.
        for hint in DEFAULT_NEXT_STEPS {
            progress.step(*hint);
        }
    }
    progress.step("running; Ctrl-C or `meshward down` stops it");
    // From here on, whatever exits is restarted (`restart`) until the mesh is stopped.
    let mut keeper = Keeper::new(home, &bins, children, &state, stop.clone());
    while !stop.load(Ordering::SeqCst) {
        keeper.tick();
        std::thread::sleep(TICK);
    }
    progress.step("stopping the mesh");
    let _ = home.update(|s| s.phase = Phase::Stopping);
    let mut children = keeper.into_children();
    supervisor::stop_children(&mut children, STOP_GRACE);
    let current = home.read().ok().flatten();
    let removed = runtime::sweep(home, current.as_ref().or(Some(&state)))?;
    match mode {
        Mode::Netns => progress.done(format!(
            "mesh stopped: removed {} namespaces and {} links",
            removed.namespaces, removed.links
        )),
        Mode::Loopback => progress.done("mesh stopped: every process ended, files removed"),
    }
    Ok(ExitCode::SUCCESS)
}

fn start(
    home: &Home,
    plan: &MeshPlan,
    state: &mut MeshState,
    children: &mut Vec<Child>,
    stop: &AtomicBool,
    progress: Progress,
) -> anyhow::Result<Binaries> {
    let bins = Binaries::find()?;
    let mode = Mode::of(state);
    let interrupted = || -> anyhow::Result<()> {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    };
    progress.step(format!("mesh CA in {}", home.ca_dir().display()));
    let trust_domain = "cluster.local"
        .parse()
        .map_err(|e| anyhow::anyhow!("trust domain: {e}"))?;
    CaDir::new(home.ca_dir())
        .load_or_init(trust_domain, KeyAlgorithm::EcdsaP256)
        .with_context(|| format!("mesh CA in {}", home.ca_dir().display()))?;
    config::write_resources(&home.config_dir(), &plan.resources)?;
    config::write_inventory(
        &home.config_dir(),
        state.pods.iter().map(|p| &p.plan),
        &state.services,
    )?;
    match mode {
        Mode::Netns => {
            progress.step(format!(
                "network: bridge {} (10.244.0.1/16), service VIPs in 10.96.0.0/16",
                netns::BRIDGE
            ));
            netns::create_bridge()?;
        }
        Mode::Loopback => progress.step(format!(
            "addresses: pods in 127.100.0.0/16, their apps in 127.101.0.0/16, clients through their pod's HTTP proxy on port {}; ports below 1024 are served at port + {}",
            loopback::HTTP_PROXY_PORT,
            loopback::PORT_SHIFT
        )),
    }
    progress.step(format!(
        "control plane: CA and configuration on {}, admin API on 127.0.0.1:15014",
        control::grpc_address()
    ));
    // Another control plane on the admin port (another user's mesh, a `meshward
    // control-plane`) would look like ours starting; this mesh would then talk to it.
    if control::admin().get("/api/v1/status").is_ok() {
        bail!(
            "a control plane already answers on 127.0.0.1:15014 (another mesh, or `meshward control-plane`); stop it first"
        );
    }
    let control_plane = control::start(home, &bins, false)?;
    if mode == Mode::Loopback {
        ledger::record(home, control_plane.id(), "control plane", Group::Shared)?;
    }
    state.control_plane_pid = Some(control_plane.id());
    children.push(control_plane);
    let pid = state.control_plane_pid;
    home.update(|s| s.control_plane_pid = pid)?;
    let total = state.pods.len();
    for (i, pod) in state.pods.iter().enumerate() {
        interrupted()?;
        if mode == Mode::Netns {
            runtime::create_pod(pod, state).with_context(|| format!("pod {}", pod.plan.key()))?;
        }
        let p = &pod.plan;
        progress.step(format!(
            "[{}/{total}] pod {} {} ({}{})",
            i + 1,
            p.key(),
            p.ip,
            match (mode, p.sidecar) {
                (Mode::Netns, true) => "sidecar, ".to_owned(),
                (Mode::Netns, false) => "no sidecar, ".to_owned(),
                (Mode::Loopback, true) => format!(
                    "sidecar, HTTP proxy {}, app on {}, ",
                    loopback::http_proxy(p.ip),
                    loopback::app_host(p)
                ),
                (Mode::Loopback, false) => format!(
                    "no sidecar, plain forwarder {}, ",
                    loopback::http_proxy(p.ip)
                ),
            },
            pod.plan
                .run
                .as_deref()
                .map(|r| format!("runs `{r}`"))
                .unwrap_or_else(|| "echo app".to_owned())
        ));
    }
    for i in 0..state.pods.len() {
        interrupted()?;
        let Some(pod) = state.pods.get_mut(i) else {
            continue;
        };
        let started = runtime::start_pod(home, pod, &bins, true, mode)?;
        children.extend(started);
    }
    let pods_now = state.pods.clone();
    home.update(|s| s.pods = pods_now)?;
    progress.step(format!("waiting for {total} pods to be ready"));
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = state
            .pods
            .iter()
            .map(|pod| {
                let bins = &bins;
                scope.spawn(move || {
                    let r = runtime::wait_ready(pod, bins, true, mode);
                    if r.is_ok() {
                        let key = pod.plan.key();
                        let _ = home.update(|s| {
                            if let Some(p) = s.pods.iter_mut().find(|p| p.plan.key() == key) {
                                p.ready = true;
                            }
                        });
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("probe thread failed".to_owned()))
            })
            .collect()
    });
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if !failures.is_empty() {
        bail!(
            "{}\n(see the pods' logs under {})",
            failures.join("\n"),
            home.logs_dir().display()
        );
    }
    for pod in &mut state.pods {
        pod.ready = true;
    }
    Ok(bins)
}
