//! The trust bundle: every root a workload accepts. Holding several roots is what makes root
//! rotation possible without downtime (authentication.md §1.7: `root-cert.pem` and
//! `meshConfig.caCertificates[]` add roots side by side).

use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::cert::{CertInfo, CertParseError};
use crate::pem::{self, PemError};

/// A bundle that cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The PEM text is unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A root is not a parsable certificate.
    #[error("{what}: root #{index}: {source}")]
    Parse {
        /// Input name.
        what: String,
        /// Position in the bundle, from 1.
        index: usize,
        /// Why.
        source: CertParseError,
    },
    /// A root is not usable as a trust anchor.
    #[error("{what}: root #{index} cannot be used as a trust anchor: {detail}")]
    Anchor {
        /// Input name.
        what: String,
        /// Position in the bundle, from 1.
        index: usize,
        /// Why.
        detail: String,
    },
    /// A root is not a CA certificate.
    #[error(
        "{what}: root #{index} ({subject}) is not a CA certificate (BasicConstraints CA:FALSE)"
    )]
    NotCa {
        /// Input name.
        what: String,
        /// Position in the bundle, from 1.
        index: usize,
        /// Its subject.
        subject: String,
    },
}

/// An ordered, de-duplicated set of root certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// A bundle of the given roots; each must parse and be a CA.
    pub fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
        what: &str,
    ) -> Result<Self, BundleError> {
        let mut bundle = Self::default();
        for (i, root) in roots.into_iter().enumerate() {
            let info = CertInfo::parse(&root).map_err(|source| BundleError::Parse {
                what: what.to_owned(),
                index: i + 1,
                source,
            })?;
            if !info.is_ca {
                return Err(BundleError::NotCa {
                    what: what.to_owned(),
                    index: i + 1,
                    subject: info.subject,
                });
            }
            webpki::anchor_from_trusted_cert(&root).map_err(|e| BundleError::Anchor {
                what: what.to_owned(),
                index: i + 1,
                detail: e.to_string(),
            })?;
            if !bundle.roots.contains(&root) {
                bundle.roots.push(root);
            }
        }
        Ok(bundle)
    }

    /// Every root in a PEM file such as `root-cert.pem`.
    pub fn from_pem(text: &[u8], what: &str) -> Result<Self, BundleError> {
        Self::new(pem::certificates(text, what)?, what)
    }

    /// This bundle plus the roots of `other` (a root rotation's overlap period).
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        let mut roots = self.roots.clone();
        for root in &other.roots {
            if !roots.contains(root) {
                roots.push(root.clone());
            }
        }
        TrustBundle { roots }
    }

    /// The roots, in order.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether `cert` is one of the roots.
    pub fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == cert.as_ref())
    }

    /// Number of roots.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether there are no roots (then nothing verifies: fail closed).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The bundle as PEM, one block per root.
    pub fn to_pem(&self) -> String {
        self.roots.iter().map(pem::encode_certificate).collect()
    }

    /// The rustls root store. Every root was checked in `new`, so none is skipped.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        let (_added, _ignored) = store.add_parsable_certificates(self.roots.iter().cloned());
        Arc::new(store)
    }
}
