//! The live credentials of one workload: its current certificate and the roots it trusts.
//!
//! Handshakes read them at the moment they start, so a rotated certificate or a new root is used
//! by the next connection while established connections keep what they negotiated
//! (authentication.md §1.6: "existing connections keep their handshake-time certs").

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use jiff::Timestamp;
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;

use crate::bundle::TrustBundle;
use crate::workload::{WorkloadCertError, WorkloadCertificate};

/// How often an expired certificate is reported while handshakes keep failing.
const EXPIRY_LOG_INTERVAL_SECS: i64 = 10;

/// A certificate ready for handshakes.
#[derive(Debug)]
pub struct ActiveCert {
    /// The credentials.
    pub cert: WorkloadCertificate,
    /// The same, in rustls form.
    pub certified: Arc<CertifiedKey>,
}

/// Roots ready for verification.
#[derive(Debug)]
pub struct ActiveRoots {
    /// The bundle.
    pub bundle: TrustBundle,
    /// The same, as a rustls root store.
    pub store: Arc<RootCertStore>,
}

/// The current certificate and trust bundle of a workload, swapped atomically.
#[derive(Debug)]
pub struct Credentials {
    cert: ArcSwapOption<ActiveCert>,
    roots: ArcSwap<ActiveRoots>,
    last_expiry_log: AtomicI64,
}

impl Credentials {
    /// Credentials with no certificate yet (every handshake fails closed until one arrives).
    pub fn new(roots: TrustBundle) -> Arc<Self> {
        Arc::new(Self {
            cert: ArcSwapOption::empty(),
            roots: ArcSwap::from_pointee(active_roots(roots)),
            last_expiry_log: AtomicI64::new(i64::MIN),
        })
    }

    /// Credentials holding `cert` and trusting the roots delivered with it.
    pub fn with_certificate(cert: WorkloadCertificate) -> Result<Arc<Self>, WorkloadCertError> {
        let this = Self::new(cert.roots().clone());
        this.set_certificate(cert)?;
        Ok(this)
    }

    /// Makes `cert` the certificate for new handshakes.
    pub fn set_certificate(&self, cert: WorkloadCertificate) -> Result<(), WorkloadCertError> {
        let certified = cert.certified_key()?;
        self.cert
            .store(Some(Arc::new(ActiveCert { cert, certified })));
        Ok(())
    }

    /// Replaces the trust bundle for new handshakes.
    pub fn set_roots(&self, roots: TrustBundle) {
        self.roots.store(Arc::new(active_roots(roots)));
    }

    /// The current certificate, whether or not it is still valid.
    pub fn certificate(&self) -> Option<Arc<ActiveCert>> {
        self.cert.load_full()
    }

    /// The current roots.
    pub fn roots(&self) -> Arc<ActiveRoots> {
        self.roots.load_full()
    }

    /// The certificate to present in a handshake starting now, or `None` when there is none or
    /// it has expired: a workload never presents an expired certificate, so new handshakes fail
    /// closed until a renewal lands.
    pub fn usable_certified_key(&self) -> Option<Arc<CertifiedKey>> {
        let active = self.cert.load();
        let Some(active) = active.as_ref() else {
            tracing::error!("no workload certificate yet: refusing to complete an mTLS handshake");
            return None;
        };
        let now = Timestamp::now();
        if now > active.cert.not_after() {
            self.log_expired(&active.cert, now);
            return None;
        }
        Some(active.certified.clone())
    }

    fn log_expired(&self, cert: &WorkloadCertificate, now: Timestamp) {
        let second = now.as_second();
        let last = self.last_expiry_log.load(Ordering::Relaxed);
        if second.saturating_sub(last) >= EXPIRY_LOG_INTERVAL_SECS
            && self
                .last_expiry_log
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                identity = %cert.identity(),
                not_after = %cert.not_after(),
                "WORKLOAD CERTIFICATE EXPIRED and was not renewed: new mTLS handshakes fail until a new certificate is issued"
            );
        }
    }
}

fn active_roots(bundle: TrustBundle) -> ActiveRoots {
    let store = bundle.root_store();
    ActiveRoots { bundle, store }
}
