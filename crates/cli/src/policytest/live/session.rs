//! The machine-wide part of a live run: the bridge, the control plane (in this process, so the
//! runner reads proxy ACKs and issues certificates directly) and the mesh state file that lets
//! `meshward down` clean up after a crash. One session serves every document; the control plane
//! is restarted per document so each starts from an empty store with the document's trust
//! domain.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshward_control::{ControlPlane, ControlPlaneOptions};
use meshward_identity::{
    CaDir, CertificateAuthority, KeyAlgorithm, TrustDomain, WorkloadCertificate,
};

use crate::mesh::netns;
use crate::mesh::plan::BRIDGE_IP;
use crate::mesh::runtime;
use crate::mesh::state::{Home, MeshState, Phase};
use crate::mesh::supervisor::Binaries;

/// How long proxies get to connect and ACK a document's configuration.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A running live session. Dropping it removes everything it created.
pub(crate) struct Session {
    pub(crate) home: Home,
    pub(crate) bins: Binaries,
    runtime: tokio::runtime::Runtime,
    control: Option<ControlPlane>,
    /// A CA the mesh does not trust, for `trustedCa: false` principals.
    rogue: Option<CertificateAuthority>,
    /// Veth numbers are never reused within a session (a deleted link may linger briefly).
    pub(crate) next_link: u32,
    finished: bool,
}

impl Session {
    /// Checks the machine, refuses to run beside another mesh, creates the bridge and records
    /// the session in state.json.
    pub(crate) fn start() -> anyhow::Result<Self> {
        crate::commands::up::preflight()?;
        let home = Home::from_env()?;
        let bins = Binaries::find()?;
        {
            let _lock = home.lock()?;
            if let Some(state) = home.read()? {
                bail!(
                    "a local mesh is running or was not cleaned up (supervisor pid {}); `meshward test --live` needs the machine's mesh network for itself: run `meshward down` first",
                    state.supervisor_pid
                );
            }
            home.write(&empty_state(0))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let session = Self {
            home,
            bins,
            runtime,
            control: None,
            rogue: None,
            next_link: 0,
            finished: false,
        };
        netns::create_bridge()?;
        Ok(session)
    }

    /// Records the document's pods so `meshward down` finds them after a crash.
    pub(crate) fn record(&self, state: &MeshState) -> anyhow::Result<()> {
        let _lock = self.home.lock()?;
        self.home.write(state)?;
        Ok(())
    }

    /// A mesh state for this session (pods are filled in by the caller).
    pub(crate) fn state(&self) -> MeshState {
        empty_state(self.next_link)
    }

    /// (Re)starts the control plane with `trust_domain`: an empty store for the next document.
    pub(crate) fn restart_control_plane(&mut self, trust_domain: &str) -> anyhow::Result<()> {
        if let Some(old) = self.control.take() {
            self.runtime.block_on(old.stop());
        }
        let mut options = ControlPlaneOptions::new(self.home.ca_dir());
        options.grpc_listen =
            std::net::SocketAddr::from((BRIDGE_IP, crate::mesh::control::GRPC_PORT));
        // Not the usual 15014: nothing talks to it, and it must not clash with anything.
        options.admin_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        options.trust_domain = trust_domain.to_owned();
        // The previous one's listener may take a moment to be released.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.runtime.block_on(ControlPlane::start(options.clone())) {
                Ok(started) => {
                    self.control = Some(started);
                    return Ok(());
                }
                Err(meshward_control::StartError::Bind { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e).context("cannot start the control plane"),
            }
        }
    }

    pub(crate) fn control(&self) -> anyhow::Result<&ControlPlane> {
        self.control
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the control plane is not running"))
    }

    /// A bootstrap token for the proxy of `namespace/service_account`, written where the
    /// proxy (uid 1337 with read-search capability) can read it.
    pub(crate) fn token_file(
        &self,
        namespace: &str,
        pod: &str,
        service_account: &str,
    ) -> anyhow::Result<PathBuf> {
        let token = self
            .control()?
            .issue_token(namespace, service_account)
            .map_err(|e| anyhow::anyhow!("bootstrap token for {namespace}/{pod}: {e}"))?;
        let path = self.home.token_file(namespace, pod);
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

    /// Applies the document's configuration; `Err` carries the control plane's refusal.
    pub(crate) fn apply(
        &self,
        files: &[meshward_control::InputFile],
    ) -> anyhow::Result<Result<u64, Vec<String>>> {
        let store = self.control()?.store();
        Ok(match store.apply(meshward_control::Source::Api, files) {
            Ok(outcome) => Ok(outcome.version),
            Err(e) => Err(e.lines().to_vec()),
        })
    }

    /// Waits until every listed proxy (`namespace/name`) has ACKed `version` or later.
    pub(crate) fn wait_acked(
        &self,
        proxies: &[(String, String)],
        version: u64,
    ) -> anyhow::Result<()> {
        let registry = self.control()?.registry().clone();
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let pending: Vec<String> = proxies
                .iter()
                .filter(|(ns, name)| {
                    !registry
                        .connected(ns, name)
                        .iter()
                        .any(|p| p.acked_version.is_some_and(|v| v >= version))
                })
                .map(|(ns, name)| format!("{ns}/{name}"))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "proxies did not ACK configuration version {version} within {}s: {}",
                    ACK_TIMEOUT.as_secs(),
                    pending.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A certificate for `id` from the mesh CA, or from a CA the mesh does not trust.
    pub(crate) fn issue(
        &mut self,
        id: &meshward_identity::SpiffeId,
        trusted: bool,
    ) -> anyhow::Result<(WorkloadCertificate, String)> {
        let control = self
            .control
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the control plane is not running"))?;
        let roots = control.ca().trust_bundle().to_pem();
        let cert = if trusted && id.trust_domain() == control.ca().trust_domain() {
            control.ca().issue(id, KeyAlgorithm::EcdsaP256, None)?
        } else if trusted {
            // The CA signs only its own trust domain; a peer from another one (the cases about
            // aliases and foreign trust domains) gets the same root and key, loaded for that
            // domain: a certificate the mesh's roots verify, naming exactly that identity.
            CaDir::new(self.home.ca_dir())
                .load(id.trust_domain().clone())?
                .issue(id, KeyAlgorithm::EcdsaP256, None)?
        } else {
            if self.rogue.is_none() {
                let td: TrustDomain = id.trust_domain().clone();
                self.rogue = Some(CertificateAuthority::generate_root(
                    td,
                    KeyAlgorithm::EcdsaP256,
                    Duration::from_secs(24 * 3600),
                )?);
            }
            match &self.rogue {
                Some(ca) => ca.issue(id, KeyAlgorithm::EcdsaP256, None)?,
                None => bail!("no untrusted CA"),
            }
        };
        Ok((cert, roots))
    }

    /// Stops the control plane and removes every namespace, link, rule, process and runtime
    /// file of the session.
    pub(crate) fn finish(&mut self) -> anyhow::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        if let Some(old) = self.control.take() {
            self.runtime.block_on(old.stop());
        }
        let state = self.home.read().ok().flatten();
        runtime::sweep(&self.home, state.as_ref())?;
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("warning: cleaning up the live mesh: {e:#}; run `meshward down`");
        }
    }
}

fn empty_state(next_link: u32) -> MeshState {
    MeshState {
        mode: "netns".to_owned(),
        supervisor_pid: std::process::id(),
        phase: Phase::Ready,
        manifests: Vec::new(),
        pods: Vec::new(),
        services: Vec::new(),
        next_link,
        control_plane_pid: None,
        control_plane_restarts: 0,
        restarts: Default::default(),
    }
}
