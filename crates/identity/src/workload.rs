//! A workload's certificate and key, and the CSR a workload sends to obtain one.

use std::sync::Arc;

use jiff::Timestamp;
use meshward_api::SpiffeId;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::bundle::{BundleError, TrustBundle};
use crate::cert::{CertInfo, CertParseError};
use crate::crypto::provider;
use crate::pem::{self, PemError};

/// The key algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256: what ztunnel uses, fast to sign and verify (the default).
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 with SHA-256: pilot-agent's default for Envoy sidecars (§1.4).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// Generates a fresh key pair.
    pub fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            Self::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Self::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Rsa2048 => "rsa-2048",
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ecdsa-p256" | "ecdsa" | "p256" => Ok(Self::EcdsaP256),
            "rsa-2048" | "rsa" => Ok(Self::Rsa2048),
            other => Err(format!(
                "unknown key algorithm {other:?}: expected ecdsa-p256 or rsa-2048"
            )),
        }
    }
}

/// Errors building or reading workload credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadCertError {
    /// Key generation or CSR encoding failed.
    #[error("generating the key or CSR failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM input unusable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The leaf certificate cannot be parsed.
    #[error("the leaf certificate is unreadable: {0}")]
    Leaf(#[from] CertParseError),
    /// The leaf carries no SPIFFE identity.
    #[error("the leaf certificate has no SPIFFE URI SAN (found URI SANs: {found:?})")]
    NoIdentity {
        /// The URI SANs it does carry.
        found: Vec<String>,
    },
    /// The key does not fit the certificate, or rustls cannot use it.
    #[error("the private key cannot be used with this certificate: {0}")]
    Key(String),
    /// The roots are unusable.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// A key and the certificate chain the CA issued for it (leaf first, root last), plus the
/// trust bundle delivered with it.
#[derive(Debug, Clone)]
pub struct WorkloadCertificate {
    identity: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
    leaf: CertInfo,
    roots: TrustBundle,
}

impl WorkloadCertificate {
    /// Assembles credentials from a PKCS#8 key, the issued chain and the trust bundle.
    pub fn new(
        key: PrivatePkcs8KeyDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        roots: TrustBundle,
    ) -> Result<Self, WorkloadCertError> {
        let first = chain
            .first()
            .ok_or(WorkloadCertError::Pem(PemError::NoCertificate {
                what: "certificate chain".to_owned(),
            }))?;
        let leaf = CertInfo::parse(first)?;
        let identity = leaf
            .spiffe_id()
            .ok_or_else(|| WorkloadCertError::NoIdentity {
                found: leaf.uri_sans.clone(),
            })?;
        let this = Self {
            identity,
            chain,
            key_pkcs8: key.secret_pkcs8_der().to_vec(),
            leaf,
            roots,
        };
        // Fail now, not at the first handshake, if the key does not belong to the leaf.
        this.certified_key()?;
        Ok(this)
    }

    /// Reads `key.pem`, `cert-chain.pem` and `root-cert.pem` contents.
    pub fn from_pem(
        key_pem: &[u8],
        chain_pem: &[u8],
        root_pem: &[u8],
    ) -> Result<Self, WorkloadCertError> {
        let key = match pem::private_key(key_pem, "key.pem")? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(WorkloadCertError::Key(
                    "key.pem must hold a PKCS#8 \"PRIVATE KEY\"".to_owned(),
                ));
            }
        };
        let chain = pem::certificates(chain_pem, "cert-chain.pem")?;
        let roots = TrustBundle::from_pem(root_pem, "root-cert.pem")?;
        Self::new(key, chain, roots)
    }

    /// The identity in the leaf's URI SAN.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Leaf first, then intermediates, then the root (what an Istio sidecar presents, §1.4).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// Facts about the leaf.
    pub fn leaf(&self) -> &CertInfo {
        &self.leaf
    }

    /// The roots this workload trusts.
    pub fn roots(&self) -> &TrustBundle {
        &self.roots
    }

    /// The leaf's NotAfter.
    pub fn not_after(&self) -> Timestamp {
        self.leaf.not_after
    }

    /// The key and chain in the form rustls signs with.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, WorkloadCertError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let certified = CertifiedKey::from_der(self.chain.clone(), key, &provider())
            .map_err(|e| WorkloadCertError::Key(e.to_string()))?;
        Ok(Arc::new(certified))
    }

    /// `key.pem` contents (PKCS#8).
    pub fn key_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.key_pkcs8)
    }

    /// `cert-chain.pem` contents.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(pem::encode_certificate).collect()
    }
}

/// A freshly generated key and the PEM CSR that asks the CA to certify it.
pub struct CertificateRequest {
    /// The CSR in PEM, as `IstioCertificateRequest.csr` carries it.
    pub csr_pem: String,
    /// The private key, PKCS#8 DER; it never leaves the workload.
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl CertificateRequest {
    /// Generates a key and a CSR naming `identity` in a URI SAN, as Istio's agents do. The CA
    /// ignores what the CSR asks for and uses the authenticated caller's identity (§1.4).
    pub fn generate(
        identity: &SpiffeId,
        algorithm: KeyAlgorithm,
    ) -> Result<Self, WorkloadCertError> {
        let key = algorithm.generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
        let csr = params.serialize_request(&key)?;
        Ok(Self {
            csr_pem: csr.pem()?,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}
