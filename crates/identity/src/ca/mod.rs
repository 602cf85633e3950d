//! The certificate authority: a signing certificate and key (a self-signed root, or an
//! organisation's intermediate plugged in from Istio's `cacerts` files) that turns CSRs from
//! authenticated workloads into SPIFFE certificates.

mod csr;
mod store;

use std::time::{Duration, SystemTime};

use meshward_api::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

pub use csr::CsrError;
pub use store::{CA_CERT, CA_KEY, CERT_CHAIN, CaDir, PluginFiles, ROOT_CERT, StoreError};

use crate::bundle::{BundleError, TrustBundle};
use crate::cert::{CertInfo, CertParseError};
use crate::pem::{self, PemError};
use crate::workload::{KeyAlgorithm, WorkloadCertError, WorkloadCertificate};

/// §1.4: "NotBefore: issuance time **minus 2 minutes** (`ClockSkewGracePeriod`)".
pub const CLOCK_SKEW_GRACE: Duration = Duration::from_secs(2 * 60);

/// §1.7: self-signed root TTL "**10 years** (`CITADEL_SELF_SIGNED_CA_CERT_TTL`=3650 d)".
pub const DEFAULT_ROOT_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);

/// Lifetimes of workload certificates.
///
/// §1.4: "CA default when request ≤ 0: `DEFAULT_WORKLOAD_CERT_TTL`=24h; request >
/// `MAX_WORKLOAD_CERT_TTL` (default **90d**) ⇒ error `requested TTL … is greater than the max
/// allowed TTL`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Used when the request names no lifetime.
    pub default_ttl: Duration,
    /// Requests above this are refused.
    pub max_ttl: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Why the CA refused or failed to issue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// §1.4: a request above the maximum lifetime.
    #[error("requested TTL {requested:?} is greater than the max allowed TTL {max:?}")]
    TtlTooLong {
        /// What was asked for.
        requested: Duration,
        /// The cap.
        max: Duration,
    },
    /// §1.4: "issuance refused if the signing cert is already expired".
    #[error("the CA signing certificate expired at {not_after}; no certificate can be issued")]
    SigningCertExpired {
        /// When it expired.
        not_after: jiff::Timestamp,
    },
    /// The identity is not in the CA's trust domain.
    #[error("identity {identity} is outside this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        /// The identity asked for.
        identity: SpiffeId,
        /// The CA's trust domain.
        trust_domain: TrustDomain,
    },
    /// The CSR is unusable.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
    /// The signing material is inconsistent or unreadable.
    #[error("{0}")]
    Material(String),
    /// PEM input unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate cannot be parsed.
    #[error(transparent)]
    Parse(#[from] CertParseError),
    /// The trust bundle is unusable.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The issued credentials are unusable.
    #[error(transparent)]
    Workload(#[from] WorkloadCertError),
}

/// A validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: SystemTime,
    /// Last instant it is valid.
    pub not_after: SystemTime,
}

/// The CA: signs workload certificates with its signing key.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    signing_cert: CertificateDer<'static>,
    signing_info: CertInfo,
    /// What follows the leaf in an issued chain: the signing certificate, any intermediates
    /// above it, and the root last (§1.4 "Chain returned").
    chain_after_leaf: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    ttl: TtlPolicy,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("signing_cert", &self.signing_info.subject)
            .field("roots", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed root CA. §1.7: "Organisation = trust domain".
    pub fn generate_root(
        trust_domain: TrustDomain,
        algorithm: KeyAlgorithm,
        lifetime: Duration,
    ) -> Result<Self, CaError> {
        let key = algorithm.generate()?;
        // A key fingerprint in the name keeps two meshes' roots apart: with equal names a chain
        // from the other mesh fails as a bad signature instead of as an unknown issuer, and
        // `ca inspect` could not tell them apart.
        let fingerprint = crate::crypto::sha256_hex(key.der_bytes());
        let name = format!("meshward root CA {}", &fingerprint[..12]);
        let params = ca_params(&name, &trust_domain, lifetime, None)?;
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let key_pem = key.serialize_pem();
        Self::from_parts(
            trust_domain,
            key,
            key_pem,
            vec![der.clone()],
            TrustBundle::new([der], "root")?,
        )
    }

    /// Loads a CA from PEM material in Istio's `cacerts` layout. `cert_chain` is the signing
    /// certificate followed by its issuers (may be empty when the signing certificate is itself a
    /// root); `roots` is `root-cert.pem`, one or more roots.
    pub fn from_pem(
        trust_domain: TrustDomain,
        ca_cert_pem: &[u8],
        ca_key_pem: &[u8],
        cert_chain_pem: Option<&[u8]>,
        root_cert_pem: &[u8],
    ) -> Result<Self, CaError> {
        let signing = pem::certificates(ca_cert_pem, "ca-cert.pem")?;
        let signing_cert = signing
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Material("ca-cert.pem: expected a certificate".to_owned()))?;
        let key_text = std::str::from_utf8(ca_key_pem)
            .map_err(|_| CaError::Material("ca-key.pem: not UTF-8 PEM text".to_owned()))?;
        let key = KeyPair::from_pem(key_text).map_err(|e| {
            CaError::Material(format!("ca-key.pem: cannot read the private key: {e}"))
        })?;
        let mut chain = match cert_chain_pem {
            Some(text) if !text.iter().all(u8::is_ascii_whitespace) => {
                pem::certificates(text, "cert-chain.pem")?
            }
            _ => vec![signing_cert.clone()],
        };
        if chain.first() != Some(&signing_cert) {
            // Istio's cert-chain.pem starts with the signing certificate; accept a chain that
            // lists only the issuers above it too.
            chain.insert(0, signing_cert.clone());
        }
        let bundle = TrustBundle::from_pem(root_cert_pem, "root-cert.pem")?;
        Self::from_parts(trust_domain, key, key_text.to_owned(), chain, bundle)
    }

    fn from_parts(
        trust_domain: TrustDomain,
        key: KeyPair,
        key_pem: String,
        mut chain: Vec<CertificateDer<'static>>,
        bundle: TrustBundle,
    ) -> Result<Self, CaError> {
        let signing_cert = chain
            .first()
            .cloned()
            .ok_or_else(|| CaError::Material("empty CA certificate chain".to_owned()))?;
        let signing_info = CertInfo::parse(&signing_cert)?;
        if !signing_info.is_ca {
            return Err(CaError::Material(format!(
                "ca-cert.pem ({}) is not a CA certificate (BasicConstraints CA:FALSE)",
                signing_info.subject
            )));
        }
        if !key_matches_cert(&key, &signing_cert)? {
            return Err(CaError::Material(
                "ca-key.pem does not match the public key of ca-cert.pem".to_owned(),
            ));
        }
        // The chain ends with a root from the bundle: append it if cert-chain.pem stops below.
        let last = chain
            .last()
            .cloned()
            .unwrap_or_else(|| signing_cert.clone());
        if !bundle.contains(&last) {
            let last_info = CertInfo::parse(&last)?;
            let anchor = bundle
                .roots()
                .iter()
                .find(|root| {
                    CertInfo::parse(root).is_ok_and(|info| info.subject == last_info.issuer)
                })
                .ok_or_else(|| {
                    CaError::Material(format!(
                        "the CA chain ends at {:?}, issued by {:?}, which is not in root-cert.pem",
                        last_info.subject, last_info.issuer
                    ))
                })?;
            chain.push(anchor.clone());
        }
        let issuer = Issuer::from_ca_cert_der(&signing_cert, key)?;
        let this = Self {
            trust_domain,
            issuer,
            key_pem,
            signing_cert,
            signing_info,
            chain_after_leaf: chain,
            bundle,
            ttl: TtlPolicy::default(),
        };
        this.self_test()?;
        Ok(this)
    }

    /// Issues a throwaway certificate and verifies it against the bundle, so a plug-in CA whose
    /// files do not chain together is refused at load time instead of at the first handshake.
    fn self_test(&self) -> Result<(), CaError> {
        let probe = SpiffeId::new(self.trust_domain.clone(), "meshward-system", "ca-self-test")
            .map_err(|e| CaError::Material(e.to_string()))?;
        let now = SystemTime::now();
        let window = Validity {
            not_before: now - CLOCK_SKEW_GRACE,
            not_after: (now + Duration::from_secs(3600)).min(self.signing_not_after()),
        };
        let key = KeyAlgorithm::EcdsaP256.generate()?;
        let chain = self.sign_public_key(&key, &probe, window)?;
        crate::tls::verify_chain(&chain, &self.bundle, crate::tls::Usage::Client, now).map_err(
            |e| {
                CaError::Material(format!(
                    "a certificate signed by ca-cert.pem does not verify against root-cert.pem: {e}"
                ))
            },
        )
    }

    /// Sets the workload certificate lifetime policy.
    pub fn with_ttl_policy(mut self, ttl: TtlPolicy) -> Self {
        self.ttl = ttl;
        self
    }

    /// Adds roots to the trust bundle handed to workloads (root rotation: trust the old and the
    /// new root while workloads move over).
    pub fn add_trusted_roots(&mut self, roots: &TrustBundle) {
        self.bundle = self.bundle.merged(roots);
    }

    /// The trust domain this CA issues identities in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The trust bundle handed to workloads.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Facts about the signing certificate.
    pub fn signing_cert(&self) -> &CertInfo {
        &self.signing_info
    }

    /// The lifetime policy in force.
    pub fn ttl_policy(&self) -> TtlPolicy {
        self.ttl
    }

    /// `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`, `root-cert.pem` contents.
    pub fn to_files(&self) -> PluginFiles {
        PluginFiles {
            ca_cert: pem::encode_certificate(&self.signing_cert),
            ca_key: self.key_pem.clone(),
            cert_chain: self
                .chain_after_leaf
                .iter()
                .map(pem::encode_certificate)
                .collect(),
            root_cert: self.bundle.to_pem(),
        }
    }

    /// Signs a PEM CSR for `identity`, the **authenticated caller's** identity: the CSR's own
    /// subject and SANs are ignored (§1.4 "SAN value source: the authenticated caller identity,
    /// not whatever the CSR requested"), its public key is used verbatim (§1.5). Returns the
    /// chain, leaf first and root last.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        requested_ttl: Option<Duration>,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let public_key = csr::verified_public_key(csr_pem)?;
        let validity = self.validity_for(requested_ttl, SystemTime::now())?;
        self.sign_public_key(&public_key, identity, validity)
    }

    /// Generates a key locally and issues a certificate for it (`meshward ca issue`, tests).
    pub fn issue(
        &self,
        identity: &SpiffeId,
        algorithm: KeyAlgorithm,
        requested_ttl: Option<Duration>,
    ) -> Result<WorkloadCertificate, CaError> {
        let validity = self.validity_for(requested_ttl, SystemTime::now())?;
        self.issue_with_validity(identity, algorithm, validity)
    }

    /// Issues with an explicit validity window (no TTL policy; the window is still clamped to the
    /// signing certificate). For tests of expired and not-yet-valid certificates.
    pub fn issue_with_validity(
        &self,
        identity: &SpiffeId,
        algorithm: KeyAlgorithm,
        validity: Validity,
    ) -> Result<WorkloadCertificate, CaError> {
        let key = algorithm.generate()?;
        let chain = self.sign_public_key(&key, identity, validity)?;
        Ok(WorkloadCertificate::new(
            PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain,
            self.bundle.clone(),
        )?)
    }

    /// Creates an intermediate CA under this one, in the `cacerts` layout an organisation would
    /// hand to a cluster (Istio's `tools/certs` `make <cluster>-cacerts`).
    pub fn issue_intermediate(
        &self,
        common_name: &str,
        algorithm: KeyAlgorithm,
        lifetime: Duration,
    ) -> Result<PluginFiles, CaError> {
        let key = algorithm.generate()?;
        let mut params = ca_params(common_name, &self.trust_domain, lifetime, Some(0))?;
        let not_after = self.signing_not_after();
        params.not_after = params.not_after.min(x509_time(not_after));
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain_after_leaf.iter().cloned());
        Ok(PluginFiles {
            ca_cert: cert.pem(),
            ca_key: key.serialize_pem(),
            cert_chain: chain.iter().map(pem::encode_certificate).collect(),
            root_cert: self.bundle.to_pem(),
        })
    }

    /// §1.4 TTL rules: default when none is asked for, refuse above the max, clamp NotAfter to
    /// the signing certificate, refuse if the signing certificate has expired.
    fn validity_for(
        &self,
        requested: Option<Duration>,
        now: SystemTime,
    ) -> Result<Validity, CaError> {
        let ttl = match requested {
            None => self.ttl.default_ttl,
            Some(d) if d.is_zero() => self.ttl.default_ttl,
            Some(d) if d > self.ttl.max_ttl => {
                return Err(CaError::TtlTooLong {
                    requested: d,
                    max: self.ttl.max_ttl,
                });
            }
            Some(d) => d,
        };
        Ok(Validity {
            not_before: now - CLOCK_SKEW_GRACE,
            not_after: now.checked_add(ttl).unwrap_or(now),
        })
    }

    fn signing_not_after(&self) -> SystemTime {
        let secs = self.signing_info.not_after.as_second();
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// Signs `public_key` for `identity` over `validity`. Certificate shape per §1.4: empty
    /// subject, one URI SAN marked critical, DigitalSignature + KeyEncipherment, EKU ServerAuth +
    /// ClientAuth, CA=false.
    pub fn sign_public_key(
        &self,
        public_key: &impl PublicKeyData,
        identity: &SpiffeId,
        validity: Validity,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if identity.trust_domain() != &self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: identity.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let signer_expiry = self.signing_not_after();
        if SystemTime::now() > signer_expiry {
            return Err(CaError::SigningCertExpired {
                not_after: self.signing_info.not_after,
            });
        }
        let mut params = CertificateParams::default();
        // An empty subject makes rcgen mark the SAN extension critical, as RFC 5280 requires
        // and Istio does.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = x509_time(validity.not_before);
        params.not_after = x509_time(validity.not_after.min(signer_expiry));
        let leaf = params.signed_by(public_key, &self.issuer)?;
        let mut chain = Vec::with_capacity(1 + self.chain_after_leaf.len());
        chain.push(leaf.der().clone());
        chain.extend(self.chain_after_leaf.iter().cloned());
        Ok(chain)
    }
}

fn ca_params(
    common_name: &str,
    trust_domain: &TrustDomain,
    lifetime: Duration,
    path_len: Option<u8>,
) -> Result<CertificateParams, CaError> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain.as_str());
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = x509_time(now - CLOCK_SKEW_GRACE);
    params.not_after = x509_time(now.checked_add(lifetime).unwrap_or(now));
    Ok(params)
}

/// A certificate time, clamped below the end of year 9999 (what X.509 and the timestamp types
/// used to read certificates back can express), so an absurd lifetime becomes "never expires" in
/// practice instead of an overflow.
fn x509_time(t: SystemTime) -> time::OffsetDateTime {
    let max = time::macros::datetime!(9999-12-30 00:00:00 UTC);
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    time::OffsetDateTime::from_unix_timestamp(secs).map_or(max, |dt| dt.min(max))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // Serial uniqueness matters for revocation lists, not for security; if the OS RNG fails the
    // clock keeps serials distinct.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes = nanos.to_be_bytes();
    }
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte, so the length is stable
    SerialNumber::from_slice(&bytes)
}

fn key_matches_cert(key: &KeyPair, cert: &CertificateDer<'_>) -> Result<bool, CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| CaError::Material(format!("ca-cert.pem: {e}")))?;
    Ok(parsed.public_key().subject_public_key.data.as_ref() == key.der_bytes())
}

#[cfg(test)]
mod tests;
