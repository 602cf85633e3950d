//! Reading a CSR on the CA side: only its public key and self-signature matter.

use rcgen::SubjectPublicKeyInfo;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not PEM, or not a `CERTIFICATE REQUEST` block.
    #[error("the CSR is not a PEM \"CERTIFICATE REQUEST\": {0}")]
    NotPem(String),
    /// The DER does not parse.
    #[error("the CSR cannot be parsed: {0}")]
    Malformed(String),
    /// §1.5: "verify CSR self-signature (failure ⇒ CSR error)".
    #[error("the CSR signature does not verify with its own public key")]
    BadSignature,
    /// The key type is not one the CA signs for.
    #[error("the CSR's public key algorithm is not supported (use ECDSA P-256/P-384 or RSA): {0}")]
    UnsupportedKey(String),
}

/// The CSR's public key, after checking the CSR is signed by the matching private key (proof of
/// possession). Subject, SANs and requested extensions are deliberately not read.
pub(super) fn verified_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CsrError> {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| CsrError::NotPem(e.to_string()))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CsrError::Malformed(e.to_string()))?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let spki = csr.certification_request_info.subject_pki.raw;
    SubjectPublicKeyInfo::from_der(spki).map_err(|e| CsrError::UnsupportedKey(e.to_string()))
}
