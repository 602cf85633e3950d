//! Where the proxy's workload certificate comes from in local mode: files written by
//! `meshward ca issue` (re-read when they change, so an external rotation is picked up), or a
//! CA directory from which the proxy issues and rotates its own certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshward_api::SpiffeId;
use meshward_identity::{
    CaDir, CertManager, Credentials, KeyAlgorithm, LocalCa, RotationPolicy, TrustBundle,
    TrustDomain, WorkloadCertificate,
};

/// How often certificate files are checked for changes.
const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why the proxy has no usable certificate source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertSourceError {
    /// A certificate file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The files do not form usable credentials.
    #[error("{dir}: {detail}")]
    Invalid {
        /// The directory.
        dir: PathBuf,
        /// Why.
        detail: String,
    },
    /// The certificate names another workload.
    #[error(
        "{dir}: the certificate is for {found}, but this proxy runs as {expected}; issue one with `meshward ca issue`"
    )]
    WrongIdentity {
        /// The directory.
        dir: PathBuf,
        /// The identity of this proxy's workload.
        expected: Box<SpiffeId>,
        /// The identity in the certificate.
        found: Box<SpiffeId>,
    },
}

/// The running certificate source; dropping it stops renewals and file watching.
#[derive(Debug)]
pub enum CertSource {
    /// Files re-read on change.
    Files(tokio::task::JoinHandle<()>),
    /// Issued and rotated from a local CA.
    Ca(CertManager),
}

impl Drop for CertSource {
    fn drop(&mut self) {
        if let Self::Files(task) = self {
            task.abort();
        }
    }
}

/// Reads `key.pem`, `cert-chain.pem`, `root-cert.pem` from `dir`.
pub fn read_cert_dir(dir: &Path) -> Result<WorkloadCertificate, CertSourceError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertSourceError::Io { path, source })
    };
    let (key, chain, roots) = (
        read("key.pem")?,
        read("cert-chain.pem")?,
        read("root-cert.pem")?,
    );
    WorkloadCertificate::from_pem(&key, &chain, &roots).map_err(|e| CertSourceError::Invalid {
        dir: dir.to_owned(),
        detail: e.to_string(),
    })
}

/// Loads the certificate in `dir` for `identity` and re-reads it whenever the files change.
pub fn from_cert_dir(
    dir: PathBuf,
    identity: &SpiffeId,
) -> Result<(Arc<Credentials>, CertSource), CertSourceError> {
    let cert = read_cert_dir(&dir)?;
    if cert.identity() != identity {
        return Err(CertSourceError::WrongIdentity {
            dir,
            expected: Box::new(identity.clone()),
            found: Box::new(cert.identity().clone()),
        });
    }
    let credentials =
        Credentials::with_certificate(cert).map_err(|e| CertSourceError::Invalid {
            dir: dir.clone(),
            detail: e.to_string(),
        })?;
    let watched = credentials.clone();
    let expected = identity.clone();
    let task = tokio::spawn(async move {
        let mut last = modified(&dir);
        loop {
            tokio::time::sleep(FILE_POLL_INTERVAL).await;
            let now = modified(&dir);
            if now == last {
                continue;
            }
            last = now;
            match read_cert_dir(&dir) {
                Ok(cert) if cert.identity() == &expected => {
                    let roots = cert.roots().clone();
                    let serial = cert.leaf().serial.clone();
                    match watched.set_certificate(cert) {
                        Ok(()) => {
                            watched.set_roots(roots);
                            tracing::info!(%serial, "reloaded the workload certificate from {}", dir.display());
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the new certificate files are unusable; keeping the current certificate")
                        }
                    }
                }
                Ok(cert) => tracing::error!(
                    found = %cert.identity(),
                    expected = %expected,
                    "the new certificate names another workload; keeping the current certificate"
                ),
                // Files are often rewritten one at a time: a half-written set is retried at the
                // next change.
                Err(e) => {
                    tracing::warn!(error = %e, "certificate files changed but cannot be used yet")
                }
            }
        }
    });
    Ok((credentials, CertSource::Files(task)))
}

/// Issues this proxy's certificate from the CA in `ca_dir` (created if missing) and rotates it.
pub async fn from_ca_dir(
    ca_dir: PathBuf,
    identity: &SpiffeId,
    ttl: Option<Duration>,
) -> Result<(Arc<Credentials>, CertSource), CertSourceError> {
    let trust_domain: TrustDomain = identity.trust_domain().clone();
    let (ca, _created) = CaDir::new(&ca_dir)
        .load_or_init(trust_domain, KeyAlgorithm::EcdsaP256)
        .map_err(|e| CertSourceError::Invalid {
            dir: ca_dir.clone(),
            detail: e.to_string(),
        })?;
    let roots: TrustBundle = ca.trust_bundle().clone();
    let credentials = Credentials::new(roots);
    let source = LocalCa::new(Arc::new(ca), identity.clone(), KeyAlgorithm::EcdsaP256, ttl);
    let manager = CertManager::spawn(
        Arc::new(source),
        credentials.clone(),
        RotationPolicy::default(),
    );
    manager.ready().await;
    Ok((credentials, CertSource::Ca(manager)))
}

fn modified(dir: &Path) -> Vec<Option<SystemTime>> {
    ["key.pem", "cert-chain.pem", "root-cert.pem"]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .collect()
}
