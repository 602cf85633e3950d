//! The mesh's state on disk: `~/.meshward/` (or `$MESHWARD_HOME`).
//!
//! ```text
//! ca/                     the mesh CA (kept by `down`: it is the mesh's identity, reused next time)
//! state.json              what is running: pods, services, processes (removed by `down`)
//! state.lock              serialises read-modify-write of state.json between commands
//! config/                 the proxies' configuration (generated; see `config`)
//! store/                  the control plane's store, recorded (its `--state-dir`; see `control`)
//! processes.json          loopback mode: the processes started, with their proof (see `ledger`)
//! logs/<ns>/<pod>/{proxy,app}.log, logs/supervisor.log
//! ```
//!
//! One mesh per machine: network names (`mw0`, `mw-*`), the loopback ranges and the control
//! plane's ports are global, so a second `up` is refused while state.json names a live
//! supervisor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{PodPlan, ServicePlan};

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    /// I/O on a state file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// state.json is not what this version writes.
    #[error("{path}: not a meshward state file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No home directory to put `.meshward` in.
    #[error("cannot find the home directory: set HOME or MESHWARD_HOME")]
    NoHome,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The directory layout.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    root: PathBuf,
}

impl Home {
    /// `$MESHWARD_HOME`, else `$HOME/.meshward`.
    pub(crate) fn from_env() -> Result<Self, StateError> {
        if let Some(dir) = std::env::var_os("MESHWARD_HOME").filter(|d| !d.is_empty()) {
            return Ok(Self {
                root: PathBuf::from(dir),
            });
        }
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .ok_or(StateError::NoHome)?;
        Ok(Self {
            root: PathBuf::from(home).join(".meshward"),
        })
    }

    /// A home at `root` (tests).
    #[cfg(test)]
    pub(crate) fn at(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// The mesh home itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    /// The CA directory.
    pub(crate) fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    /// state.json.
    pub(crate) fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    fn lock_file(&self) -> PathBuf {
        self.root.join("state.lock")
    }
    /// Generated configuration.
    pub(crate) fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    /// The control plane's recorded store: what a restarted control plane serves.
    pub(crate) fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    /// Logs.
    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// A pod's log of `container` (`proxy` or `app`).
    pub(crate) fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs_dir()
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }
    /// A sidecar's bootstrap token for the CA.
    pub(crate) fn token_file(&self, namespace: &str, pod: &str) -> PathBuf {
        self.root
            .join("tokens")
            .join(format!("{namespace}.{pod}.token"))
    }
    /// The detached supervisor's own log.
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.logs_dir().join("supervisor.log")
    }
    /// The processes a loopback-mode mesh started (see `ledger`).
    pub(crate) fn processes_file(&self) -> PathBuf {
        self.root.join("processes.json")
    }

    /// Creates the root.
    pub(crate) fn create(&self) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))
    }

    /// Takes the state lock (released when the guard drops).
    pub(crate) fn lock(&self) -> Result<File, StateError> {
        self.create()?;
        let path = self.lock_file();
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }

    /// Reads state.json, `None` when there is none.
    pub(crate) fn read(&self) -> Result<Option<MeshState>, StateError> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Parse { path, source })
    }

    /// Writes state.json atomically (readers never see half a file).
    pub(crate) fn write(&self, state: &MeshState) -> Result<(), StateError> {
        let path = self.state_file();
        let text = serde_json::to_string_pretty(state).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, text.as_bytes())
    }

    /// Reads, changes and writes state.json under the lock.
    pub(crate) fn update<T>(
        &self,
        change: impl FnOnce(&mut MeshState) -> T,
    ) -> Result<Option<T>, StateError> {
        let _lock = self.lock()?;
        let Some(mut state) = self.read()? else {
            return Ok(None);
        };
        let out = change(&mut state);
        self.write(&state)?;
        Ok(Some(out))
    }

    /// Removes everything but the CA.
    pub(crate) fn remove_runtime_files(&self) -> Result<(), StateError> {
        for dir in [
            self.config_dir(),
            self.store_dir(),
            self.logs_dir(),
            self.root.join("tokens"),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&dir)(e)),
            }
        }
        for file in [self.state_file(), self.processes_file(), self.lock_file()] {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&file)(e)),
            }
        }
        Ok(())
    }
}

/// Writes `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Where the mesh is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "phase", content = "message")]
pub(crate) enum Phase {
    /// Creating pods.
    Starting,
    /// Every pod is ready.
    Ready,
    /// Start-up failed (the message says why); the supervisor is tearing down.
    Failed(String),
    /// Tearing down.
    Stopping,
}

/// A pod as run: its plan plus what was created for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PodState {
    /// What it is.
    #[serde(flatten)]
    pub(crate) plan: PodPlan,
    /// Its network namespace (`mw-…`); empty in loopback mode, which has none.
    pub(crate) netns: String,
    /// The host end of its veth pair (`mw-…`); empty in loopback mode.
    pub(crate) veth: String,
    /// The proxy's pid: its sidecar, or in loopback mode for a pod without sidecar its plain
    /// forwarder (see `loopback`).
    #[serde(default)]
    pub(crate) proxy_pid: Option<u32>,
    /// The app's pid.
    #[serde(default)]
    pub(crate) app_pid: Option<u32>,
    /// Whether it passed its readiness checks.
    #[serde(default)]
    pub(crate) ready: bool,
    /// Created by `meshward run` (process `owner`), removed when its command ends.
    #[serde(default)]
    pub(crate) one_off: Option<u32>,
}

/// state.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MeshState {
    /// `netns` (root on Linux) or `loopback` (see `mode`).
    pub(crate) mode: String,
    /// The supervisor process (`meshward up`).
    pub(crate) supervisor_pid: u32,
    /// Where start-up is.
    #[serde(flatten)]
    pub(crate) phase: Phase,
    /// The manifests given to `up`.
    pub(crate) manifests: Vec<PathBuf>,
    /// Pods.
    pub(crate) pods: Vec<PodState>,
    /// Services.
    pub(crate) services: Vec<ServicePlan>,
    /// Next number for a veth name.
    pub(crate) next_link: u32,
    /// The control plane process.
    #[serde(default)]
    pub(crate) control_plane_pid: Option<u32>,
    /// How often the supervisor restarted the control plane (see `restart`).
    #[serde(default)]
    pub(crate) control_plane_restarts: u32,
    /// How often the supervisor restarted each pod's containers, by `ns/name` (pods that never
    /// restarted are absent).
    #[serde(default)]
    pub(crate) restarts: BTreeMap<String, Restarts>,
}

/// Restarts of one pod's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Restarts {
    /// The app.
    pub(crate) app: u32,
    /// The proxy.
    pub(crate) proxy: u32,
}

impl Restarts {
    /// Both containers together, as `kubectl get pods` counts them.
    pub(crate) fn total(self) -> u32 {
        self.app.saturating_add(self.proxy)
    }
}

impl MeshState {
    /// Addresses in use.
    pub(crate) fn pod_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.pods.iter().map(|p| p.plan.ip)
    }

    /// The pod `ns/name`, or for `deploy/NAME` (also `deployment/`) its first replica.
    pub(crate) fn find_pod(&self, namespace: &str, target: &str) -> Option<&PodState> {
        let deployment = target
            .strip_prefix("deploy/")
            .or_else(|| target.strip_prefix("deployment/"));
        let name = target.strip_prefix("pod/").unwrap_or(target);
        self.pods.iter().find(|p| {
            p.plan.namespace == namespace
                && match deployment {
                    Some(d) => p.plan.deployment.as_deref() == Some(d),
                    None => p.plan.name == name,
                }
        })
    }
}

/// Whether a process is alive (signal 0). Zombies count as gone: they no longer run anything.
pub(crate) fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if rustix::process::test_kill_process(pid).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat", pid = pid.as_raw_nonzero())) {
        // Field 3, after the parenthesised command name, is the state; Z is a zombie.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_finds_deployment_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            root: dir.path().join("mw"),
        };
        assert!(home.read().unwrap().is_none());
        let pod = |name: &str, deployment: Option<&str>| PodState {
            plan: PodPlan {
                namespace: "default".into(),
                name: name.into(),
                deployment: deployment.map(Into::into),
                service_account: "default".into(),
                labels: Default::default(),
                annotations: Default::default(),
                sidecar: true,
                containers: vec![],
                run: None,
                ip: Ipv4Addr::new(10, 244, 0, 2),
            },
            netns: format!("mw-default-{name}"),
            veth: "mw-v1".into(),
            proxy_pid: None,
            app_pid: None,
            ready: false,
            one_off: None,
        };
        let state = MeshState {
            mode: "netns".into(),
            supervisor_pid: 1,
            phase: Phase::Failed("boom".into()),
            manifests: vec![],
            pods: vec![pod("test", None), pod("backend-0", Some("backend"))],
            services: vec![],
            next_link: 2,
            control_plane_pid: None,
            control_plane_restarts: 0,
            restarts: BTreeMap::new(),
        };
        home.write(&state).unwrap();
        assert_eq!(home.read().unwrap().unwrap(), state);
        let found = state.find_pod("default", "deploy/backend").unwrap();
        assert_eq!(found.plan.name, "backend-0");
        assert_eq!(state.find_pod("default", "test").unwrap().plan.name, "test");
        assert!(state.find_pod("other", "test").is_none());
        home.update(|s| s.phase = Phase::Ready).unwrap();
        assert_eq!(home.read().unwrap().unwrap().phase, Phase::Ready);
        home.update(|s| {
            s.restarts
                .insert("default/test".into(), Restarts { app: 1, proxy: 2 });
        })
        .unwrap();
        assert_eq!(
            home.read().unwrap().unwrap().restarts["default/test"].total(),
            3
        );
        home.remove_runtime_files().unwrap();
        assert!(home.read().unwrap().is_none());
    }

    #[test]
    fn our_own_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
    }
}
