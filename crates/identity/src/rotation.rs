//! Keeping a workload's certificate fresh.
//!
//! authentication.md §1.6: pilot-agent re-issues "at `created + (1 − g) × (expire − created)`
//! where g = `SECRET_GRACE_PERIOD_RATIO` (0.5) ± uniform jitter up to
//! `SECRET_GRACE_PERIOD_RATIO_JITTER` (0.01), clamped to [0,1]. With a 24 h cert ⇒ ≈ 12 h";
//! ztunnel, "on renewal failure keeps the still‑valid cert and retries". New certificates are
//! published to [`Credentials`] (so the next handshake uses them; established connections keep
//! theirs) and to watchers. A certificate that expires without renewal is logged as an error and
//! new handshakes fail closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use meshward_api::SpiffeId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::CertificateAuthority;
use crate::crypto::random_unit;
use crate::tls::Credentials;
use crate::workload::{KeyAlgorithm, WorkloadCertificate};

/// A failed attempt to obtain a certificate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// A boxed future returned by [`CertificateSource::fetch`].
pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<WorkloadCertificate, FetchError>> + Send + 'a>>;

/// Where a workload's certificates come from: the CA in the same process, or the CA service
/// over gRPC.
pub trait CertificateSource: Send + Sync + 'static {
    /// Generates a key and obtains a certificate for it.
    fn fetch(&self) -> FetchFuture<'_>;
}

/// Issues from a CA in this process (the local mesh's control plane, tests, benchmarks).
#[derive(Debug, Clone)]
pub struct LocalCa {
    ca: Arc<CertificateAuthority>,
    identity: SpiffeId,
    algorithm: KeyAlgorithm,
    ttl: Option<Duration>,
}

impl LocalCa {
    /// Certificates for `identity` from `ca`, with the CA's default lifetime unless `ttl` is set.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        identity: SpiffeId,
        algorithm: KeyAlgorithm,
        ttl: Option<Duration>,
    ) -> Self {
        Self {
            ca,
            identity,
            algorithm,
            ttl,
        }
    }
}

impl CertificateSource for LocalCa {
    fn fetch(&self) -> FetchFuture<'_> {
        let result = self
            .ca
            .issue(&self.identity, self.algorithm, self.ttl)
            .map_err(|e| FetchError(e.to_string()));
        Box::pin(std::future::ready(result))
    }
}

/// Rotation timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotationPolicy {
    /// `SECRET_GRACE_PERIOD_RATIO`: the share of the lifetime left when renewal starts.
    pub grace_ratio: f64,
    /// `SECRET_GRACE_PERIOD_RATIO_JITTER`: the ratio varies uniformly by up to this much.
    pub jitter: f64,
    /// First retry delay after a failed renewal; doubles up to `max_retry_delay`.
    pub initial_retry_delay: Duration,
    /// Longest delay between retries.
    pub max_retry_delay: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            grace_ratio: 0.5,
            jitter: 0.01,
            initial_retry_delay: Duration::from_millis(500),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

impl RotationPolicy {
    /// How long after `received` to renew a certificate valid until `not_after`, given a
    /// uniform random `unit` in [0, 1).
    pub fn renew_after(&self, received: Timestamp, not_after: Timestamp, unit: f64) -> Duration {
        let jitter = self.jitter * (2.0 * unit - 1.0);
        let grace = (self.grace_ratio + jitter).clamp(0.0, 1.0);
        let lifetime = not_after.duration_since(received).as_secs_f64().max(0.0);
        Duration::from_secs_f64(lifetime * (1.0 - grace))
    }
}

/// What watchers see.
#[derive(Debug, Clone, Default)]
pub enum CertState {
    /// No certificate yet.
    #[default]
    Pending,
    /// The current certificate, and how many have been obtained so far.
    Ready {
        /// The certificate in use for new handshakes.
        cert: Arc<WorkloadCertificate>,
        /// 1 for the first certificate, 2 after the first rotation, …
        generation: u64,
    },
}

/// A running rotation loop. Dropping the handle stops it.
#[derive(Debug)]
pub struct CertManager {
    state: watch::Receiver<CertState>,
    task: JoinHandle<()>,
}

impl CertManager {
    /// Starts obtaining and renewing certificates from `source` into `credentials`.
    pub fn spawn(
        source: Arc<dyn CertificateSource>,
        credentials: Arc<Credentials>,
        policy: RotationPolicy,
    ) -> Self {
        let (tx, rx) = watch::channel(CertState::Pending);
        let task = tokio::spawn(rotate(source, credentials, policy, tx));
        Self { state: rx, task }
    }

    /// A receiver of every new certificate.
    pub fn subscribe(&self) -> watch::Receiver<CertState> {
        self.state.clone()
    }

    /// The current state.
    pub fn current(&self) -> CertState {
        self.state.borrow().clone()
    }

    /// Waits for the first certificate.
    pub async fn ready(&self) -> Arc<WorkloadCertificate> {
        let mut rx = self.state.clone();
        loop {
            if let CertState::Ready { cert, .. } = &*rx.borrow_and_update() {
                return cert.clone();
            }
            if rx.changed().await.is_err() {
                // The loop never exits on its own; this only happens during shutdown.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn rotate(
    source: Arc<dyn CertificateSource>,
    credentials: Arc<Credentials>,
    policy: RotationPolicy,
    tx: watch::Sender<CertState>,
) {
    let mut generation = 0u64;
    let mut retry_delay = policy.initial_retry_delay;
    let mut current_expiry: Option<Timestamp> = None;
    loop {
        match source.fetch().await {
            Ok(cert) => {
                let received = Timestamp::now();
                let not_after = cert.not_after();
                if let Err(e) = credentials.set_certificate(cert.clone()) {
                    tracing::error!(error = %e, "the new workload certificate is unusable; keeping the previous one");
                    tokio::time::sleep(retry_delay).await;
                    retry_delay = (retry_delay * 2).min(policy.max_retry_delay);
                    continue;
                }
                if !cert.roots().is_empty() {
                    credentials.set_roots(cert.roots().clone());
                }
                generation += 1;
                current_expiry = Some(not_after);
                retry_delay = policy.initial_retry_delay;
                let wait = policy.renew_after(received, not_after, random_unit());
                tracing::info!(
                    identity = %cert.identity(),
                    serial = %cert.leaf().serial,
                    %not_after,
                    renew_in_secs = wait.as_secs(),
                    "workload certificate installed"
                );
                tx.send_replace(CertState::Ready {
                    cert: Arc::new(cert),
                    generation,
                });
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let now = Timestamp::now();
                match current_expiry {
                    Some(expiry) if now > expiry => tracing::error!(
                        error = %e,
                        expired_at = %expiry,
                        "WORKLOAD CERTIFICATE EXPIRED and renewal failed: new mTLS handshakes are refused until a certificate is issued"
                    ),
                    Some(expiry) => tracing::warn!(
                        error = %e,
                        valid_until = %expiry,
                        retry_in_ms = retry_delay.as_millis() as u64,
                        "certificate renewal failed; the current certificate stays in use"
                    ),
                    None => tracing::warn!(
                        error = %e,
                        retry_in_ms = retry_delay.as_millis() as u64,
                        "obtaining the first workload certificate failed"
                    ),
                }
                // Wake at expiry at the latest, so the expiry is reported when it happens.
                let until_expiry = current_expiry
                    .map(|expiry| expiry.duration_since(now).unsigned_abs())
                    .filter(|d| !d.is_zero());
                let wait = until_expiry.map_or(retry_delay, |d| d.min(retry_delay));
                tokio::time::sleep(wait).await;
                retry_delay = (retry_delay * 2).min(policy.max_retry_delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_life_within_the_jitter() {
        let policy = RotationPolicy::default();
        let received = Timestamp::from_second(1_000_000).unwrap();
        let not_after = Timestamp::from_second(1_000_000 + 24 * 3600).unwrap();
        let mid = policy.renew_after(received, not_after, 0.5);
        assert_eq!(mid, Duration::from_secs(12 * 3600));
        // ±1 % of 24 h = ±864 s.
        let early = policy.renew_after(received, not_after, 0.999_999);
        let late = policy.renew_after(received, not_after, 0.0);
        assert!(early >= Duration::from_secs(12 * 3600 - 865), "{early:?}");
        assert!(late <= Duration::from_secs(12 * 3600 + 865), "{late:?}");
        assert!(early < mid && mid < late);
    }

    #[test]
    fn an_expired_certificate_renews_immediately() {
        let policy = RotationPolicy::default();
        let received = Timestamp::from_second(2_000).unwrap();
        let not_after = Timestamp::from_second(1_000).unwrap();
        assert_eq!(policy.renew_after(received, not_after, 0.5), Duration::ZERO);
    }
}
