//! Keeping a running mesh's processes alive, as kubelet does for `restartPolicy: Always`: when
//! a pod's app or proxy, or the control plane, exits for any reason, the supervisor starts it
//! again after a back-off that doubles from 0.5 s to at most 30 s (CrashLoopBackOff) and starts
//! over once the process has run for a minute. A failed start counts like a crash.
//!
//! A pod with a container down is not ready; after a restart it is ready again once its
//! readiness probe passes. `meshward get pods` shows the restarts. A restarted control plane
//! starts from the store the dead one recorded (see [`super::control::start`]); the sidecars
//! keep enforcing their last configuration meanwhile and reconnect on their own.
//!
//! One-off pods of `meshward run` are not restarted here: the `run` process owns them.
//!
//! In loopback mode a pod without sidecar has its plain forwarder in the proxy's slot, and it
//! is restarted like a sidecar; every process started is recorded in the [`super::ledger`] and
//! forgotten when it exits.

use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::control;
use super::ledger::{self, Group};
use super::loopback;
use super::mode::Mode;
use super::runtime::READY_TIMEOUT;
use super::state::{Home, MeshState, PodState};
use super::supervisor::{self, Binaries};

/// The first restart delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// The longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that ran this long before exiting is restarted after the first delay again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// A container of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    App,
    Proxy,
}

/// What a slot runs.
#[derive(Debug, Clone)]
enum What {
    ControlPlane,
    Pod {
        pod: Box<PodState>,
        container: Container,
    },
}

impl What {
    fn describe(&self) -> String {
        match self {
            What::ControlPlane => "the control plane".to_owned(),
            What::Pod { pod, container } => format!(
                "pod {} {}",
                pod.plan.key(),
                match container {
                    Container::App => "app",
                    Container::Proxy => "proxy",
                }
            ),
        }
    }
}

/// Exponential restart delays.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }

    /// The delay before restarting a process that ran for `ran`.
    fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

#[derive(Debug)]
enum Run {
    Running { child: Child, since: Instant },
    Waiting { until: Instant },
}

/// One supervised process.
#[derive(Debug)]
struct Slot {
    what: What,
    run: Run,
    backoff: Backoff,
}

/// A readiness probe running for a restarted pod.
#[derive(Debug)]
struct Probe {
    pod: String,
    child: Child,
}

/// The processes of a running mesh and their restarts.
#[derive(Debug)]
pub(crate) struct Keeper {
    home: Home,
    bins: Binaries,
    mode: Mode,
    stop: Arc<AtomicBool>,
    slots: Vec<Slot>,
    probes: Vec<Probe>,
}

// === impl Keeper ===

impl Keeper {
    /// Takes over `children`, the processes `up` started for `state` (the control plane and
    /// each pod's app and proxy), until `stop`.
    pub(crate) fn new(
        home: &Home,
        bins: &Binaries,
        children: Vec<Child>,
        state: &MeshState,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        let mut slots = Vec::new();
        for child in children {
            let pid = Some(child.id());
            let what = if state.control_plane_pid == pid {
                What::ControlPlane
            } else if let Some(pod) = state.pods.iter().find(|p| p.app_pid == pid) {
                What::Pod {
                    pod: Box::new(pod.clone()),
                    container: Container::App,
                }
            } else if let Some(pod) = state.pods.iter().find(|p| p.proxy_pid == pid) {
                What::Pod {
                    pod: Box::new(pod.clone()),
                    container: Container::Proxy,
                }
            } else {
                continue;
            };
            slots.push(Slot {
                what,
                run: Run::Running { child, since: now },
                backoff: Backoff::new(),
            });
        }
        Self {
            home: home.clone(),
            bins: bins.clone(),
            mode: Mode::of(state),
            stop,
            slots,
            probes: Vec::new(),
        }
    }

    /// Notices exits, restarts what is due and follows readiness probes. Called every few
    /// hundred milliseconds by the supervisor.
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            match &mut slot.run {
                Run::Running { child, since } => {
                    if let Ok(Some(status)) = child.try_wait() {
                        if self.mode == Mode::Loopback {
                            ledger::forget(&self.home, child.id());
                        }
                        let delay = slot.backoff.delay(since.elapsed());
                        slot.run = Run::Waiting { until: now + delay };
                        let what = slot.what.clone();
                        self.exited(&what, status, delay);
                    }
                }
                Run::Waiting { until } if now >= *until => {
                    let what = slot.what.clone();
                    match self.restart(&what) {
                        Ok(child) => {
                            if let Some(slot) = self.slots.get_mut(i) {
                                slot.run = Run::Running {
                                    child,
                                    since: Instant::now(),
                                };
                            }
                        }
                        Err(e) => {
                            if let Some(slot) = self.slots.get_mut(i) {
                                let delay = slot.backoff.delay(Duration::ZERO);
                                slot.run = Run::Waiting {
                                    until: Instant::now() + delay,
                                };
                                eprintln!(
                                    "warning: cannot restart {}: {e:#}; next attempt in {:.1}s",
                                    what.describe(),
                                    delay.as_secs_f64()
                                );
                            }
                        }
                    }
                }
                Run::Waiting { .. } => {}
            }
        }
        self.follow_probes();
    }

    /// Records an exit: the pod is not ready and its dead pid is forgotten (so that nothing
    /// ever signals a reused pid).
    fn exited(&self, what: &What, status: ExitStatus, delay: Duration) {
        eprintln!(
            "warning: {} exited ({status}); restarting it in {:.1}s (see `meshward logs`)",
            what.describe(),
            delay.as_secs_f64()
        );
        let result = match what {
            What::ControlPlane => self.home.update(|s| s.control_plane_pid = None),
            What::Pod { pod, container } => {
                let key = pod.plan.key();
                self.home.update(|s| {
                    if let Some(p) = s.pods.iter_mut().find(|p| p.plan.key() == key) {
                        p.ready = false;
                        match container {
                            Container::App => p.app_pid = None,
                            Container::Proxy => p.proxy_pid = None,
                        }
                    }
                })
            }
        };
        if let Err(e) = result {
            eprintln!("warning: cannot record the exit in the mesh state: {e}");
        }
    }

    /// Starts `what` again and records it.
    fn restart(&mut self, what: &What) -> anyhow::Result<Child> {
        match what {
            What::ControlPlane => {
                let child = control::start(&self.home, &self.bins, true)?;
                let pid = child.id();
                if self.mode == Mode::Loopback {
                    ledger::record(&self.home, pid, "control plane", Group::Shared)?;
                }
                self.home.update(|s| {
                    s.control_plane_pid = Some(pid);
                    s.control_plane_restarts = s.control_plane_restarts.saturating_add(1);
                })?;
                eprintln!("• control plane restarted (pid {pid})");
                Ok(child)
            }
            What::Pod { pod, container } => {
                let (home, bins) = (&self.home, &self.bins);
                let child = match (self.mode, container) {
                    (Mode::Netns, Container::App) => supervisor::start_app(home, pod, bins)?,
                    (Mode::Netns, Container::Proxy) => supervisor::start_proxy(home, pod, bins)?,
                    (Mode::Loopback, Container::App) => loopback::start_app(home, pod, bins)?,
                    (Mode::Loopback, Container::Proxy) => loopback::start_proxy(home, pod, bins)?,
                };
                let pid = child.id();
                let key = pod.plan.key();
                let container = *container;
                let current = self.home.update(|s| {
                    let restarts = s.restarts.entry(key.clone()).or_default();
                    match container {
                        Container::App => restarts.app = restarts.app.saturating_add(1),
                        Container::Proxy => restarts.proxy = restarts.proxy.saturating_add(1),
                    }
                    let p = s.pods.iter_mut().find(|p| p.plan.key() == key)?;
                    match container {
                        Container::App => p.app_pid = Some(pid),
                        Container::Proxy => p.proxy_pid = Some(pid),
                    }
                    Some(p.clone())
                })?;
                eprintln!("• {} restarted (pid {pid})", what.describe());
                if let Some(pod) = current.flatten() {
                    self.probe(&pod);
                }
                Ok(child)
            }
        }
    }

    /// Starts the readiness probe of `pod`, replacing one still running for it.
    fn probe(&mut self, pod: &PodState) {
        let key = pod.plan.key();
        self.stop_probes(|p| p.pod == key);
        let mut cmd = match self.mode {
            Mode::Netns => supervisor::probe_command(pod, &self.bins, true, READY_TIMEOUT),
            Mode::Loopback => loopback::probe_command(pod, &self.bins, true, READY_TIMEOUT),
        };
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match cmd.spawn() {
            Ok(child) => self.probes.push(Probe { pod: key, child }),
            Err(e) => eprintln!("warning: pod {key}: cannot run the readiness probe: {e}"),
        }
    }

    /// Marks pods ready whose probe passed.
    fn follow_probes(&mut self) {
        let mut passed = Vec::new();
        self.probes.retain_mut(|p| match p.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                if status.success() {
                    passed.push(p.pod.clone());
                } else {
                    eprintln!("warning: pod {} did not become ready again", p.pod);
                }
                false
            }
            Err(_) => false,
        });
        if passed.is_empty() {
            return;
        }
        let result = self.home.update(|s| {
            for p in s.pods.iter_mut().filter(|p| passed.contains(&p.plan.key())) {
                // Ready only if nothing died again while the probe ran.
                let app = p.app_pid.is_some();
                // Loopback pods without a sidecar have their plain forwarder there.
                let has_proxy = p.plan.sidecar || loopback::is_loopback_pod(p);
                let proxy = !has_proxy || p.proxy_pid.is_some();
                p.ready = app && proxy;
            }
        });
        if let Err(e) = result {
            eprintln!("warning: cannot record readiness in the mesh state: {e}");
        }
    }

    fn stop_probes(&mut self, which: impl Fn(&Probe) -> bool) {
        self.probes.retain_mut(|p| {
            if which(p) {
                let _ = p.child.kill();
                let _ = p.child.wait();
                false
            } else {
                true
            }
        });
    }

    /// Ends the probes and hands back the running processes, to be stopped.
    pub(crate) fn into_children(mut self) -> Vec<Child> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_probes(|_| true);
        self.slots
            .into_iter()
            .filter_map(|s| match s.run {
                Run::Running { child, .. } => Some(child),
                Run::Waiting { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_starts_over_after_a_stable_run() {
        let mut b = Backoff::new();
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (0..9).map(|_| b.delay(quick).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.delay(STABLE_AFTER), BACKOFF_INITIAL);
        assert_eq!(b.delay(quick), BACKOFF_INITIAL * 2);
    }
}
